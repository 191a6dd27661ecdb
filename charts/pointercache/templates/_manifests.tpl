{{/*
pointercache.manifests: the library's own objects, as YAML documents, for one template file of
the parent chart (`{{ include "pointercache.manifests" . }}`):
  - the cluster LKG ConfigMap (clusterLKG.enabled and clusterLKG.create), rendered without `data`
    so that upgrades never overwrite what the sidecars wrote;
  - with rbac.create: a ServiceAccount, a Role and a RoleBinding with the least privilege for the
    features switched on (each rule named by resourceNames where Kubernetes allows it; `create`
    on ConfigMaps only when the chart does not create the LKG ConfigMap itself).
Renders nothing with the defaults. Root context.
*/}}
{{- define "pointercache.manifests" -}}
{{- include "pointercache.validate" . -}}
{{- $v := .Values.pointercache -}}
{{- $name := include "pointercache.fullname" . -}}
{{- if and $v.clusterLKG.enabled $v.clusterLKG.create }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "pointercache.lkgConfigMapName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "pointercache.labels" . | nindent 4 }}
  annotations:
    # Sidecars write the last-known-good pointers here; keep them when the release is removed.
    helm.sh/resource-policy: keep
{{- end }}
{{- if $v.rbac.create }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "pointercache.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "pointercache.labels" . | nindent 4 }}
  {{- with $v.rbac.serviceAccountAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# Never mounted by itself: pointercache's containers get a projected token, the model none.
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "pointercache.labels" . | nindent 4 }}
rules:
  {{- include "pointercache.rbacRules" . | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "pointercache.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "pointercache.serviceAccountName" . }}
    namespace: {{ .Release.Namespace }}
{{- end }}
{{- end -}}

{{/*
pointercache.rbacRules: the Role's rules, one per feature switched on (root context). A Role with
no feature on gets an empty rule list (the ServiceAccount then only identifies the pod, e.g. IRSA).
*/}}
{{- define "pointercache.rbacRules" -}}
{{- $v := .Values.pointercache -}}
{{- $rules := list -}}
{{- if and $v.rbac.lkgConfigMap $v.clusterLKG.enabled $v.clusterLKG.mirror -}}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "configmaps") "resourceNames" (list (include "pointercache.lkgConfigMapName" .)) "verbs" (list "get" "watch" "update" "patch")) -}}
{{- if not $v.clusterLKG.create -}}
{{- /* The sidecar creates the ConfigMap on 404; RBAC cannot restrict create by name. */ -}}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "configmaps") "verbs" (list "create")) -}}
{{- end -}}
{{- end -}}
{{- $sources := list -}}
{{- range $v.registries -}}
{{- if hasPrefix "configmap://" . -}}
{{- $parts := splitList "/" (trimPrefix "configmap://" .) -}}
{{- if and (eq (len $parts) 2) (eq (first $parts) $.Release.Namespace) -}}
{{- $sources = append $sources (last $parts) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $v.rbac.configMapSources $sources -}}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "configmaps") "resourceNames" (uniq $sources) "verbs" (list "get" "list" "watch")) -}}
{{- end -}}
{{- if $v.rbac.podAnnotations -}}
{{- $rules = append $rules (dict "apiGroups" (list "") "resources" (list "pods") "verbs" (list "get" "patch")) -}}
{{- end -}}
{{- if $v.rbac.events -}}
{{- $rules = append $rules (dict "apiGroups" (list "" "events.k8s.io") "resources" (list "events") "verbs" (list "create" "patch")) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
