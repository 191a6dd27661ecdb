"""The sidecar role: keep the published model in step with the registry, serve status."""
