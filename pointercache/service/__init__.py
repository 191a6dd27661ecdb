"""The sidecar's long-running service: the refresh loop, its typed state, the HTTP server,
telemetry and reporting to the cluster.
"""
