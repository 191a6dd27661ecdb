{{/*
pointercache.validate: guards for what values.schema.json cannot express (combinations, cluster
version, secrets in the wrong place). Renders nothing; fails with one readable line. Root context.
*/}}
{{- define "pointercache.validate" -}}
{{- $v := .Values.pointercache -}}
{{- if not $v.model -}}
{{- fail "pointercache.model is required: the registered model name to serve (--model)" -}}
{{- end -}}
{{- if and (not $v.registries) (not $v.pinned.version) -}}
{{- fail "pointercache: nothing to resolve the model from: set pointercache.registries and/or pointercache.pinned.version + pointercache.pinned.uri" -}}
{{- end -}}
{{- if ne (empty $v.pinned.version) (empty $v.pinned.uri) -}}
{{- fail "pointercache.pinned.version and pointercache.pinned.uri go together" -}}
{{- end -}}
{{- if and $v.pinned.digest (not $v.pinned.version) -}}
{{- fail "pointercache.pinned.digest needs pointercache.pinned.version and pointercache.pinned.uri" -}}
{{- end -}}
{{- $uris := concat $v.registries (list $v.pinned.uri $v.credentials.aws.endpointUrl $v.sidecar.reload.loadedProbeUrl) $v.allow $v.sidecar.reload.onFlipUrls -}}
{{- range $uris -}}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" . -}}
{{- fail (printf "pointercache: %q carries credentials in the URI; reference an existing Secret under pointercache.credentials instead" (regexReplaceAll "://[^/?#]*@" . "://***@")) -}}
{{- end -}}
{{- if regexMatch "(?i)[?&](x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|token|access_token)=" . -}}
{{- fail (printf "pointercache: %q looks presigned (credentials in the query string); reference an existing Secret under pointercache.credentials instead" (regexReplaceAll "\\?.*$" . "?***")) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.signature.unsignedModel "refuse") (not $v.signature.configMap) -}}
{{- fail "pointercache.signature.unsignedModel=refuse needs pointercache.signature.configMap (--expect-signature): without the expected signature there is no gate" -}}
{{- end -}}
{{- if eq $v.nodeCache.type "hostPath" -}}
{{- if not $v.nodeCache.hostPath -}}
{{- fail "pointercache.nodeCache.type=hostPath needs pointercache.nodeCache.hostPath (a node directory writable by UID 10001)" -}}
{{- end -}}
{{- if eq (clean $v.nodeCache.hostPath) "/" -}}
{{- fail "pointercache.nodeCache.hostPath must not be the node's root directory" -}}
{{- end -}}
{{- end -}}
{{- if and $v.nodeCache.prepare (ne $v.nodeCache.type "hostPath") -}}
{{- fail "pointercache.nodeCache.prepare is for type=hostPath only (a PVC gets its group from podSecurityContext.fsGroup)" -}}
{{- end -}}
{{- if and (eq $v.nodeCache.type "pvc") (not $v.nodeCache.claimName) -}}
{{- fail "pointercache.nodeCache.type=pvc needs pointercache.nodeCache.claimName (an existing PersistentVolumeClaim)" -}}
{{- end -}}
{{- if and (eq $v.nodeCache.type "") (or $v.nodeCache.hostPath $v.nodeCache.claimName) -}}
{{- fail "pointercache.nodeCache.hostPath/claimName are set but pointercache.nodeCache.type is empty: set type to hostPath or pvc" -}}
{{- end -}}
{{- if and $v.sidecar.native (not (semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version)) -}}
{{- fail (printf "pointercache.sidecar.native needs Kubernetes >= 1.29 (this cluster: %s); set pointercache.sidecar.native=false for a classic sidecar" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $v.clusterLKG.enabled $v.clusterLKG.mirror (not $v.rbac.create) (not $v.rbac.serviceAccountName) -}}
{{- fail "pointercache.clusterLKG.mirror needs the Kubernetes API: set pointercache.rbac.create=true, or pointercache.rbac.serviceAccountName to an account you grant, or clusterLKG.mirror=false" -}}
{{- end -}}
{{- $paths := list (clean $v.volume.mountPath) "/tmp" (include "pointercache.secretsDir" .) (include "pointercache.adminDir" .) -}}
{{- if $v.nodeCache.type -}}{{- $paths = append $paths (clean $v.nodeCache.mountPath) -}}{{- end -}}
{{- if $v.clusterLKG.enabled -}}{{- $paths = append $paths (clean $v.clusterLKG.mountPath) -}}{{- end -}}
{{- range $i, $a := $paths -}}
{{- range $j, $b := $paths -}}
{{- if and (ne $i $j) (or (eq $a $b) (hasPrefix (printf "%s/" $a) $b)) -}}
{{- fail (printf "pointercache: mount paths overlap: %s and %s (volume.mountPath, nodeCache.mountPath, clusterLKG.mountPath, /tmp, %s and %s must be distinct and not nested)" $a $b (include "pointercache.secretsDir" .) (include "pointercache.adminDir" .)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $v.extraEnv -}}
{{- if hasPrefix "POINTERCACHE_" .name -}}
{{- fail (printf "pointercache.extraEnv: %s is set by the chart; use the matching pointercache value instead" .name) -}}
{{- end -}}
{{- if and (hasKey . "value") (regexMatch "(?i)(secret|token|passw|credential|private|api_?key|access_?key)" .name) -}}
{{- fail (printf "pointercache.extraEnv: %s looks secret; use valueFrom.secretKeyRef to an existing Secret, never a plain value" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
