{{/*
example.fullname: "<release>-<chart>" unless the release name already contains the chart name,
truncated to 63 characters.
*/}}
{{- define "example.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
example.selectorLabels: labels that select this release's model-server pods (immutable).
*/}}
{{- define "example.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
example.labels: labels of every object of the chart.
*/}}
{{- define "example.labels" -}}
{{ include "example.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
example.demoModel: the demo model file's exact bytes (JSON). Its sha256 and size go into the
manifest, so the init container verifies what it stages.
*/}}
{{- define "example.demoModel" -}}
{{- dict "kind" "linear" "weights" .Values.demoModel.weights "bias" .Values.demoModel.bias | toJson -}}
{{- end -}}

{{/*
example.validate: guards the schema cannot express.
*/}}
{{- define "example.validate" -}}
{{- if and (not .Values.demoModel.enabled) (has "file:///etc/pointercache-example/manifest.json" .Values.pointercache.registries) -}}
{{- fail "demoModel.enabled=false: point pointercache.registries at your registry (and drop pointercache.extraVolumes/extraVolumeMounts of demo-model)" -}}
{{- end -}}
{{- if not .Values.demoModel.enabled -}}
{{- range .Values.pointercache.extraVolumes -}}
{{- if eq .name "demo-model" -}}
{{- fail "demoModel.enabled=false: drop the demo-model entries of pointercache.extraVolumes and pointercache.extraVolumeMounts (their ConfigMap is no longer rendered)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway(s) the route attaches to" -}}
{{- end -}}
{{- if and .Values.httpRoute.envoyRateLimit.enabled (not .Values.httpRoute.enabled) -}}
{{- fail "httpRoute.envoyRateLimit limits the chart's HTTPRoute: set httpRoute.enabled=true too" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.tlsSecretName (not .Values.ingress.host) -}}
{{- fail "ingress.tlsSecretName needs ingress.host" -}}
{{- end -}}
{{- end -}}
