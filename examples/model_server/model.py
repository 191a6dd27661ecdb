"""The example model: a linear scorer stored as one small JSON document (no pickle).

``{"kind": "linear", "weights": {"amount": 0.002, "age_days": -0.01}, "bias": 0.5}``; the
artifact is that file, or a directory holding it as ``model.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

MAX_MODEL_BYTES = 1 << 20
"""A model file larger than this is refused before it is parsed."""


class ModelError(ValueError):
    """The artifact is not a valid linear model, or a request does not fit it."""


@dataclass(frozen=True)
class LinearModel:
    """``prediction = bias + sum(weights[name] * features[name])``."""

    weights: dict[str, float]
    bias: float

    def predict(self, features: object) -> float:
        """Score one row; every weighted feature must be present and finite."""
        if not isinstance(features, dict):
            raise ModelError("features: expected an object of name -> number")
        total = self.bias
        for name, weight in self.weights.items():
            value = features.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModelError(f"features.{name}: expected a number")
            if not math.isfinite(value):
                raise ModelError(f"features.{name}: expected a finite number")
            total += weight * float(value)
        return total


def load(path: Path) -> LinearModel:
    """Load the model at ``path`` (the JSON file, or a directory holding ``model.json``)."""
    file = path / "model.json" if path.is_dir() else path
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"{file}: cannot read ({exc.strerror})") from exc
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"{file}: larger than {MAX_MODEL_BYTES} bytes")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"{file}: not valid JSON") from exc
    return _parse(raw)


def _parse(raw: Any) -> LinearModel:
    if not isinstance(raw, dict) or raw.get("kind") != "linear":
        raise ModelError('model: expected {"kind": "linear", "weights": {...}, "bias": ...}')
    weights = raw.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise ModelError("model.weights: expected a non-empty object of name -> number")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ModelError(f"model.weights.{name}: expected a number")
    bias = raw.get("bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, int | float):
        raise ModelError("model.bias: expected a number")
    return LinearModel(weights={k: float(v) for k, v in weights.items()}, bias=float(bias))
