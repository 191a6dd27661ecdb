{{/*
pointercache.initContainers: list items for the pod's `initContainers:`: the one-shot init
container (resolve, fetch, verify, publish) and, when sidecar.native, the sidecar as a native
sidecar (restartPolicy: Always + startupProbe on /startupz), after the init container so it
starts with a model already published. Root context. Usage:
  initContainers:
    {{- include "pointercache.initContainers" . | nindent 8 }}
*/}}
{{- define "pointercache.initContainers" -}}
{{- include "pointercache.validate" . -}}
{{- $v := .Values.pointercache -}}
{{- if and (eq $v.nodeCache.type "hostPath") $v.nodeCache.prepare -}}
{{ include "pointercache.prepareCache" . }}
{{ end -}}
- name: pointercache-init
  image: {{ include "pointercache.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["init"]
  env:
    {{- include "pointercache.env.common" . | nindent 4 }}
    {{- include "pointercache.env.init" . | nindent 4 }}
  volumeMounts:
    {{- include "pointercache.mounts" (dict "root" . "role" "init") | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  resources:
    {{- toYaml $v.init.resources | nindent 4 }}
  terminationMessagePath: /dev/termination-log
  terminationMessagePolicy: FallbackToLogsOnError
{{- if $v.sidecar.native }}
{{ include "pointercache.sidecar" (dict "root" . "native" true) }}
{{- end }}
{{- end -}}

{{/*
pointercache.prepareCache: (nodeCache.prepare) a one-shot container that gives the hostPath
directory to the image's user: root, but with CAP_CHOWN only, no escalation, read-only root.
kubelet applies no fsGroup to hostPath volumes, and DirectoryOrCreate makes them root-owned.
*/}}
{{- define "pointercache.prepareCache" -}}
{{- $v := .Values.pointercache -}}
- name: pointercache-prepare-cache
  image: {{ include "pointercache.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command: ["chown", {{ printf "%d:%d" (int $v.securityContext.runAsUser) (int $v.securityContext.runAsGroup) | quote }}, {{ $v.nodeCache.mountPath | quote }}]
  volumeMounts:
    - name: pointercache-node-cache
      mountPath: {{ $v.nodeCache.mountPath }}
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities:
      drop: [ALL]
      add: [CHOWN]
    seccompProfile:
      type: RuntimeDefault
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      cpu: 100m
      memory: 32Mi
{{- end -}}

{{/*
pointercache.containers: list items for the pod's `containers:`: the classic sidecar, or nothing
when sidecar.native (it is then among the init containers). Root context. Usage:
  containers:
    {{- include "pointercache.containers" . | nindent 8 }}
    - name: model ...
*/}}
{{- define "pointercache.containers" -}}
{{- include "pointercache.validate" . -}}
{{- if not .Values.pointercache.sidecar.native -}}
{{ include "pointercache.sidecar" (dict "root" . "native" false) }}
{{- end -}}
{{- end -}}

{{/*
pointercache.sidecar: the sidecar container (one list item). Takes a dict: root (root context),
native (bool). Native: restartPolicy Always + startupProbe on /startupz, so the pod's containers
start only once a verified model is published; never on /readyz, which with readyWhen=loaded
waits for the model container, which would then never start. Readiness: /readyz; liveness:
/healthz.
*/}}
{{- define "pointercache.sidecar" -}}
{{- $root := .root -}}
{{- $v := $root.Values.pointercache -}}
- name: pointercache-sidecar
  image: {{ include "pointercache.image" $root | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["sidecar"]
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  env:
    {{- include "pointercache.env.common" $root | nindent 4 }}
    {{- include "pointercache.env.sidecar" $root | nindent 4 }}
  ports:
    - name: pc-status
      containerPort: {{ $v.sidecar.port }}
      protocol: TCP
  volumeMounts:
    {{- include "pointercache.mounts" (dict "root" $root "role" "sidecar") | nindent 4 }}
  {{- if .native }}
  startupProbe:
    httpGet:
      path: /startupz
      port: pc-status
    periodSeconds: {{ $v.sidecar.startupProbe.periodSeconds }}
    failureThreshold: {{ $v.sidecar.startupProbe.failureThreshold }}
    timeoutSeconds: 2
  {{- end }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: pc-status
    periodSeconds: {{ $v.sidecar.readinessProbe.periodSeconds }}
    failureThreshold: {{ $v.sidecar.readinessProbe.failureThreshold }}
    timeoutSeconds: 2
  livenessProbe:
    httpGet:
      path: /healthz
      port: pc-status
    periodSeconds: {{ $v.sidecar.livenessProbe.periodSeconds }}
    failureThreshold: {{ $v.sidecar.livenessProbe.failureThreshold }}
    timeoutSeconds: 2
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  resources:
    {{- toYaml $v.sidecar.resources | nindent 4 }}
  terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}

{{/*
pointercache.volumeMounts: list items for YOUR model container's `volumeMounts:`: the shared
volume, read-only, at volume.mountPath (read <mountPath>/model and <mountPath>/pointer.json).
Root context.
*/}}
{{- define "pointercache.volumeMounts" -}}
- name: pointercache
  mountPath: {{ .Values.pointercache.volume.mountPath }}
  readOnly: true
{{- end -}}

{{/*
pointercache.mounts: volume mounts of the init container and the sidecar. Takes a dict: root,
role ("init" or "sidecar").
*/}}
{{- define "pointercache.mounts" -}}
{{- $root := .root -}}
{{- $v := $root.Values.pointercache -}}
- name: pointercache
  mountPath: {{ $v.volume.mountPath }}
- name: pointercache-tmp
  mountPath: /tmp
{{- if $v.nodeCache.type }}
- name: pointercache-node-cache
  mountPath: {{ $v.nodeCache.mountPath }}
{{- end }}
{{- if and $v.clusterLKG.enabled (eq .role "init") }}
- name: pointercache-lkg
  mountPath: {{ $v.clusterLKG.mountPath }}
  readOnly: true
{{- end }}
{{- if include "pointercache.secretsProjected" $v }}
- name: pointercache-secrets
  mountPath: {{ include "pointercache.secretsDir" $root }}
  readOnly: true
{{- end }}
{{- if and $v.sidecar.adminTokenSecret.name (eq .role "sidecar") }}
- name: pointercache-admin
  mountPath: {{ include "pointercache.adminDir" $root }}
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ tpl (toYaml .) $root }}
{{- end }}
{{- end -}}
