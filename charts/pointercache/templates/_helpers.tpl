{{/*
pointercache library chart: helpers shared by the public templates.

Every public template takes the parent chart's root context (`.`) and reads its values from
`.Values.pointercache`, so the dependency must keep the name `pointercache`.
Public templates (see docs/chart.md):
  pointercache.initContainers       init container (+ the native sidecar)   -> under initContainers:
  pointercache.containers           the classic sidecar (empty when native) -> under containers:
  pointercache.volumeMounts         read-only shared volume for YOUR model container
  pointercache.volumes              shared emptyDir, /tmp, node cache, LKG, secrets -> under volumes:
  pointercache.podSecurityContext   recommended pod securityContext
  pointercache.serviceAccountName   the ServiceAccount the pod should use
  pointercache.automountServiceAccountToken  true only when the pod needs the API
  pointercache.manifests            ServiceAccount, Role, RoleBinding, LKG ConfigMap (when enabled)
  pointercache.scrapeAnnotations    prometheus.io/* pod annotations for the sidecar's /metrics
*/}}

{{/*
pointercache.values: the library's values as YAML (use with fromYaml); fails with a clear message
when the parent chart does not carry them.
*/}}
{{- define "pointercache.values" -}}
{{- if not (kindIs "map" .Values.pointercache) -}}
{{- fail "pointercache: values not found under .Values.pointercache; add the library as a dependency named \"pointercache\"" -}}
{{- end -}}
{{- toYaml .Values.pointercache -}}
{{- end -}}

{{/*
pointercache.fullname: "<release>-pointercache", truncated to 63 characters (a DNS label).
*/}}
{{- define "pointercache.fullname" -}}
{{- printf "%s-pointercache" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
pointercache.labels: labels of the objects the library renders.
*/}}
{{- define "pointercache.labels" -}}
app.kubernetes.io/name: pointercache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: model-pointer
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
{{- end -}}

{{/*
pointercache.image: "repository:tag[@digest]"; the tag defaults to the library chart's appVersion
(root context).
*/}}
{{- define "pointercache.image" -}}
{{- $v := .Values.pointercache -}}
{{- $app := "" -}}
{{- with .Subcharts -}}{{- with .pointercache -}}{{- $app = .Chart.AppVersion -}}{{- end -}}{{- end -}}
{{- $tag := $v.image.tag | default $app | default "latest" -}}
{{- if $v.image.digest -}}
{{- printf "%s:%s@%s" $v.image.repository $tag $v.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $v.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
pointercache.num: a number as a flag value: integral values without an exponent ("68719476736"),
others as written ("0.5"). Helm reads YAML numbers as float64, and toString would print 1e+06.
*/}}
{{- define "pointercache.num" -}}
{{- if eq (float64 .) (floor .) -}}{{ int64 . }}{{- else -}}{{ toString . }}{{- end -}}
{{- end -}}

{{/*
pointercache.lkgConfigMapName: the cluster LKG ConfigMap name (root context).
*/}}
{{- define "pointercache.lkgConfigMapName" -}}
{{- $name := .Values.pointercache.clusterLKG.configMapName -}}
{{- if not $name -}}{{- $name = printf "%s-lkg" (include "pointercache.fullname" .) -}}{{- end -}}
{{- $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
pointercache.serviceAccountName: the ServiceAccount the pod should run as (root context).
*/}}
{{- define "pointercache.serviceAccountName" -}}
{{- $v := .Values.pointercache -}}
{{- if $v.rbac.serviceAccountName -}}
{{- $v.rbac.serviceAccountName -}}
{{- else if $v.rbac.create -}}
{{- include "pointercache.fullname" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/*
pointercache.automountServiceAccountToken: "true" only when something in the pod uses the API
(RBAC enabled or a ServiceAccount named), else "false" (root context).
*/}}
{{- define "pointercache.automountServiceAccountToken" -}}
{{- $v := .Values.pointercache -}}
{{- if or $v.rbac.create $v.rbac.serviceAccountName -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
pointercache.podSecurityContext: the recommended pod securityContext (a map, root context).
*/}}
{{- define "pointercache.podSecurityContext" -}}
{{- toYaml .Values.pointercache.podSecurityContext -}}
{{- end -}}

{{/*
pointercache.secretsDir: where the projected registry credentials and the expected signature are
mounted in both containers (read-only). The file names under it are fixed: registry-token,
registry-basic-auth, signature.json.
*/}}
{{- define "pointercache.secretsDir" -}}/etc/pointercache/secrets{{- end -}}

{{/*
pointercache.adminDir: where the sidecar's admin token Secret is mounted (file "token").
*/}}
{{- define "pointercache.adminDir" -}}/etc/pointercache/admin{{- end -}}

{{/*
pointercache.scrapeAnnotations: the prometheus.io/scrape, /port and /path pod annotations for the
sidecar's /metrics, for Prometheus configurations that discover pods by annotation (a map, root
context). Usage, in the pod template's metadata:
  annotations: {{- include "pointercache.scrapeAnnotations" . | nindent 8 }}
*/}}
{{- define "pointercache.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.pointercache.sidecar.port | toString | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/*
pointercache.secretsProjected: true when registry credentials or the expected signature are
projected into both containers (takes the values map).
*/}}
{{- define "pointercache.secretsProjected" -}}
{{- $c := .credentials -}}
{{- if or $c.registryToken.secretName $c.registryBasicAuth.secretName .signature.configMap -}}true{{- end -}}
{{- end -}}
