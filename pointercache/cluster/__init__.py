"""What the sidecar writes to the Kubernetes API: the cluster LKG ConfigMap, pod annotations
and Events.
"""
