"""The Kubernetes API adapter: configuration, the client, error translation, watch streams.

``kubernetes`` is imported only by ``client`` and ``errors``, and only when first used.
"""
