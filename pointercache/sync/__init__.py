"""Settings, wiring, and the one resolve → stage → publish path both roles run.

This is the lowest layer that knows which role (init container or sidecar) it runs in.
"""
