{{/*
pointercache.volumes: list items for the pod's `volumes:`: the shared emptyDir, a /tmp emptyDir
(the containers run with a read-only root filesystem), the optional node cache (hostPath or an
existing PVC), the optional cluster LKG ConfigMap (optional: true, so a missing ConfigMap never
blocks a pod), projected Secret/ConfigMap files, the projected API token of the pointercache
containers (when they use the API: the pod automounts none, so the model container never holds
it; the same token, CA bundle and namespace kubelet would mount, as a bound token kubelet
rotates), and extraVolumes. Root context. Usage:
  volumes:
    {{- include "pointercache.volumes" . | nindent 8 }}
*/}}
{{- define "pointercache.volumes" -}}
{{- include "pointercache.validate" . -}}
{{- $v := .Values.pointercache -}}
- name: pointercache
  {{- $empty := dict -}}
  {{- with $v.volume.medium }}{{ $_ := set $empty "medium" . }}{{ end -}}
  {{- with $v.volume.sizeLimit }}{{ $_ := set $empty "sizeLimit" . }}{{ end }}
  emptyDir: {{ toJson $empty }}
- name: pointercache-tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if eq $v.nodeCache.type "hostPath" }}
- name: pointercache-node-cache
  hostPath:
    path: {{ $v.nodeCache.hostPath }}
    type: {{ $v.nodeCache.hostPathType }}
{{- else if eq $v.nodeCache.type "pvc" }}
- name: pointercache-node-cache
  persistentVolumeClaim:
    claimName: {{ $v.nodeCache.claimName }}
{{- end }}
{{- if $v.clusterLKG.enabled }}
- name: pointercache-lkg
  configMap:
    name: {{ include "pointercache.lkgConfigMapName" . }}
    optional: true
{{- end }}
{{- if include "pointercache.secretsProjected" $v }}
- name: pointercache-secrets
  projected:
    defaultMode: 0444
    sources:
      {{- with $v.credentials.registryToken.secretName }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $v.credentials.registryToken.key }}
              path: registry-token
      {{- end }}
      {{- with $v.credentials.registryBasicAuth.secretName }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $v.credentials.registryBasicAuth.key }}
              path: registry-basic-auth
      {{- end }}
      {{- with $v.signature.configMap }}
      - configMap:
          name: {{ . }}
          items:
            - key: {{ $v.signature.key }}
              path: signature.json
      {{- end }}
{{- end }}
{{- if include "pointercache.usesApi" $v }}
- name: pointercache-api-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end }}
{{- with $v.sidecar.adminTokenSecret.name }}
- name: pointercache-admin
  secret:
    secretName: {{ . }}
    defaultMode: 0444
    items:
      - key: {{ $v.sidecar.adminTokenSecret.key }}
        path: token
{{- end }}
{{- with $v.extraVolumes }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end -}}
