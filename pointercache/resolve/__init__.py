"""Which version to serve: the resolution chain and the registry sources it asks."""
