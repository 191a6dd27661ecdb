{{/*
pointercache.env.common: environment shared by the init container and the sidecar: the
POINTERCACHE_* settings both roles read (names from pointercache/sync/settings.py: --flag-name <->
POINTERCACHE_FLAG_NAME). Root context.
*/}}
{{- define "pointercache.env.common" -}}
{{- $v := .Values.pointercache -}}
- name: POINTERCACHE_MODEL
  value: {{ $v.model | quote }}
- name: POINTERCACHE_SELECTOR
  value: {{ $v.selector | quote }}
{{- with $v.registries }}
- name: POINTERCACHE_REGISTRY
  value: {{ join " " . | quote }}
{{- end }}
- name: POINTERCACHE_REGISTRY_TIMEOUT
  value: {{ include "pointercache.num" $v.registryTimeout | quote }}
- name: POINTERCACHE_ROOT
  value: {{ $v.volume.mountPath | quote }}
{{- if $v.nodeCache.type }}
- name: POINTERCACHE_LKG_DIR
  value: {{ $v.nodeCache.mountPath | quote }}
- name: POINTERCACHE_CACHE_MAX_BYTES
  value: {{ include "pointercache.num" $v.nodeCache.maxBytes | quote }}
{{- end }}
{{- if $v.pinned.version }}
- name: POINTERCACHE_PINNED_VERSION
  value: {{ $v.pinned.version | quote }}
- name: POINTERCACHE_PINNED_URI
  value: {{ $v.pinned.uri | quote }}
{{- with $v.pinned.digest }}
- name: POINTERCACHE_PINNED_DIGEST
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if $v.signature.configMap }}
- name: POINTERCACHE_EXPECT_SIGNATURE
  value: {{ include "pointercache.secretsDir" . }}/signature.json
- name: POINTERCACHE_SIGNATURE_MODE
  value: {{ $v.signature.mode | quote }}
- name: POINTERCACHE_UNSIGNED_MODEL
  value: {{ $v.signature.unsignedModel | quote }}
{{- end }}
{{- with $v.allow }}
- name: POINTERCACHE_ALLOW
  value: {{ join " " . | quote }}
{{- end }}
- name: POINTERCACHE_MAX_ARTIFACT_BYTES
  value: {{ include "pointercache.num" $v.maxArtifactBytes | quote }}
- name: POINTERCACHE_KEEP_VERSIONS
  value: {{ include "pointercache.num" $v.keepVersions | quote }}
- name: POINTERCACHE_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
{{- if $v.credentials.registryToken.secretName }}
- name: POINTERCACHE_REGISTRY_TOKEN_FILE
  value: {{ include "pointercache.secretsDir" . }}/registry-token
{{- end }}
{{- if $v.credentials.registryBasicAuth.secretName }}
- name: POINTERCACHE_REGISTRY_BASIC_AUTH_FILE
  value: {{ include "pointercache.secretsDir" . }}/registry-basic-auth
{{- end }}
{{- include "pointercache.env.aws" $v }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
pointercache.env.aws: S3 settings for boto3's standard chain (takes the values map). Static keys
come from an existing Secret only; without one, IRSA / Pod Identity / instance roles apply.
*/}}
{{- define "pointercache.env.aws" -}}
{{- $a := .credentials.aws -}}
{{- with $a.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $a.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if $a.secretName }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $a.secretName }}
      key: {{ $a.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $a.secretName }}
      key: {{ $a.secretAccessKeyKey }}
{{- with $a.sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $a.secretName }}
      key: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
pointercache.env.init: settings only the init container reads (--deadline, --lkg-cluster-dir).
Root context.
*/}}
{{- define "pointercache.env.init" -}}
{{- $v := .Values.pointercache -}}
- name: POINTERCACHE_DEADLINE
  value: {{ include "pointercache.num" $v.init.deadline | quote }}
{{- if $v.clusterLKG.enabled }}
- name: POINTERCACHE_LKG_CLUSTER_DIR
  value: {{ $v.clusterLKG.mountPath | quote }}
{{- end }}
{{- end -}}

{{/*
pointercache.env.sidecar: settings only the sidecar reads (polling, status server, admin token,
readiness mode, the model server's reload hooks, cluster LKG mirror, and the pod identity used
for annotations and Events when the RBAC for them is enabled). Root context.
*/}}
{{- define "pointercache.env.sidecar" -}}
{{- $v := .Values.pointercache -}}
- name: POINTERCACHE_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POINTERCACHE_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if and $v.rbac.create (or $v.rbac.podAnnotations $v.rbac.events) }}
- name: POINTERCACHE_REPORT_TO_POD
  value: "true"
{{- end }}
- name: POINTERCACHE_POLL_INTERVAL
  value: {{ include "pointercache.num" $v.sidecar.pollInterval | quote }}
- name: POINTERCACHE_POLL_JITTER
  value: {{ include "pointercache.num" $v.sidecar.pollJitter | quote }}
- name: POINTERCACHE_STALE_GRACE
  value: {{ include "pointercache.num" $v.sidecar.staleGrace | quote }}
- name: POINTERCACHE_LISTEN
  value: {{ printf "0.0.0.0:%d" (int $v.sidecar.port) | quote }}
{{- with $v.sidecar.prefetchSelector }}
- name: POINTERCACHE_PREFETCH_SELECTOR
  value: {{ . | quote }}
{{- end }}
{{- if $v.sidecar.adminTokenSecret.name }}
- name: POINTERCACHE_ADMIN_TOKEN_FILE
  value: {{ include "pointercache.adminDir" . }}/token
{{- end }}
- name: POINTERCACHE_READY_WHEN
  value: {{ $v.sidecar.readyWhen | quote }}
- name: POINTERCACHE_ON_FLIP_TIMEOUT
  value: {{ include "pointercache.num" $v.sidecar.reload.timeout | quote }}
{{- with $v.sidecar.reload.onFlipUrls }}
- name: POINTERCACHE_ON_FLIP_URL
  value: {{ join " " . | quote }}
{{- end }}
{{- with $v.sidecar.reload.loadedProbeUrl }}
- name: POINTERCACHE_LOADED_PROBE_URL
  value: {{ . | quote }}
{{- end }}
{{- if and $v.clusterLKG.enabled $v.clusterLKG.mirror }}
- name: POINTERCACHE_LKG_CONFIGMAP
  value: {{ printf "%s/%s" .Release.Namespace (include "pointercache.lkgConfigMapName" .) | quote }}
{{- end }}
{{- end -}}
