"""An example model server that reads its model from the pointercache shared volume.

It loads a tiny linear model published under ``<root>/model``, hot-reloads every new version the
sidecar publishes (``pointercache.reader.watch``), and is ready only once a model is loaded.
"""
