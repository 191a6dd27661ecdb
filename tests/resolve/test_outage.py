"""MLflow outages: a stopped server and a server that never answers are SourceUnavailable."""

from __future__ import annotations

import asyncio

import pytest

from pointercache.errors import SourceUnavailable
from pointercache.model.candidate import Selector
from pointercache.resolve.sources import SourceOptions
from pointercache.resolve.sources.mlflow import MlflowSource
from tests.mlflow_server import MlflowServer


async def test_black_hole_server_is_unavailable_within_the_timeout(black_hole: str) -> None:
    """A server that accepts and never replies gives SourceUnavailable, not a hang."""
    source = MlflowSource(f"mlflow+http://{black_hole}", SourceOptions(timeout=0.3))
    try:
        # The outer bound is a safety net against a hang, far above the source timeout.
        async with asyncio.timeout(10):
            with pytest.raises(SourceUnavailable, match="timed out"):
                await source.resolve("recommender", Selector.parse("alias:production"))
    finally:
        await source.aclose()


async def test_stopped_server_is_unavailable(mlflow_outage: MlflowServer) -> None:
    """After the registry stops, resolving is SourceUnavailable (connection refused)."""
    mlflow = mlflow_outage
    model = mlflow.new_model()
    version = mlflow.create_version(model)
    mlflow.set_alias(model, "production", version)
    source = MlflowSource(mlflow.registry_uri, SourceOptions(timeout=5.0))
    try:
        assert (await source.resolve(model, Selector.parse("alias:production"))).version
        mlflow.stop(grace=0.5)  # an outage, not a maintenance window
        async with asyncio.timeout(10):
            with pytest.raises(SourceUnavailable):
                await source.resolve(model, Selector.parse("alias:production"))
    finally:
        await source.aclose()
