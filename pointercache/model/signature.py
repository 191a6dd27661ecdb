"""The signature gate: does a model's input schema fit what the serving code produces?

A signature is ``{"inputs": [{"name": "amount", "type": "double", "required": true}, ...],
"preprocessing": "2"}`` with MLflow's column types. The serving code declares the columns it
produces (``--expect-signature FILE``); a candidate model carries the columns it expects (from
the manifest, or MLflow's ``MLmodel``). Before a flip, ``gate`` compares them:

- ``strict``: both sides name the same columns and every type is compatible;
- ``subset``: every column the model *requires* is produced with a compatible type; extra
  serving columns and unproduced optional model columns are fine (listed, not refused).

A type is compatible when it is the same, or a lossless widening from what serving produces to
what the model expects — MLflow's own safe conversions: integer→long, integer→double,
float→double. Everything else is a type change: narrowing (double→float, long→integer),
long→double (loses precision past 2**53), integer→float, and any change to or from boolean,
string, binary or datetime. A model input the serving side marks ``"required": false`` (produced
only sometimes) does not satisfy a required model input. ``preprocessing`` must be equal when
both sides declare it. A model without a (column-based) signature is allowed with a warning by
default (``unsigned="refuse"`` blocks it instead); tensor-based MLflow signatures are treated as
"no signature" because their shapes cannot be compared with a column list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pointercache.base.log import log
from pointercache.errors import ConfigError, InvalidManifest, SignatureMismatch

COLUMN_TYPES = ("boolean", "integer", "long", "float", "double", "string", "binary", "datetime")
"""MLflow column types a signature may use."""
WIDENINGS = frozenset({("integer", "long"), ("integer", "double"), ("float", "double")})
"""(produced by serving, expected by the model) pairs accepted although the types differ."""
MAX_INPUTS = 10_000
MAX_FILE_BYTES = 1 << 20
Mode = Literal["strict", "subset"]
"""How the gate compares: the same columns (``strict``) or what the model requires (``subset``)."""
Unsigned = Literal["allow", "refuse"]
"""What the gate does with a model that has no comparable signature."""


def compatible(produced: str, expected: str) -> bool:
    """Tell whether a column serving produces as ``produced`` may feed ``expected``."""
    return produced == expected or (produced, expected) in WIDENINGS


@dataclass(frozen=True, slots=True)
class Column:
    """One named input column."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class Signature:
    """The named input columns of a model, or those the serving code produces."""

    inputs: tuple[Column, ...]
    preprocessing: str | None = None

    @classmethod
    def parse(cls, obj: object) -> Signature:
        """Validate a signature object; ``inputs`` may also be MLflow's JSON string form.

        Raises ``InvalidManifest`` (a registry's answer is malformed); ``load_expected`` turns
        that into ``ConfigError`` for the serving side's file.
        """
        if not isinstance(obj, dict):
            raise InvalidManifest(f"signature: expected an object, got {type(obj).__name__}")
        inputs = obj.get("inputs")
        if isinstance(inputs, str):
            try:
                inputs = json.loads(inputs)
            except ValueError as exc:
                raise InvalidManifest(f"signature.inputs: not valid JSON ({exc})") from None
        if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
            raise InvalidManifest(f"signature.inputs: expected a list of at most {MAX_INPUTS}")
        columns = tuple(_column(i, raw) for i, raw in enumerate(inputs))
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise InvalidManifest("signature.inputs: duplicate column names")
        pre = obj.get("preprocessing")
        if pre is not None and (isinstance(pre, bool) or not isinstance(pre, str | int)):
            raise InvalidManifest("signature.preprocessing: expected a string or an integer")
        return cls(columns, None if pre is None else str(pre))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in ``pointer.json``."""
        out: dict[str, Any] = {
            "inputs": [
                {"name": c.name, "type": c.type, "required": c.required} for c in self.inputs
            ]
        }
        if self.preprocessing is not None:
            out["preprocessing"] = self.preprocessing
        return out


def _column(index: int, raw: object) -> Column:
    where = f"signature.inputs[{index}]"
    if not isinstance(raw, dict):
        raise InvalidManifest(f"{where}: expected an object")
    name, type_ = raw.get("name"), raw.get("type")
    if type_ == "tensor" or "tensor-spec" in raw:
        raise InvalidManifest(f"{where}: tensor-based signatures are not supported")
    if not isinstance(name, str) or not name or len(name) > 1024:  # noqa: PLR2004
        raise InvalidManifest(f"{where}.name: expected a non-empty string")
    if type_ not in COLUMN_TYPES:
        raise InvalidManifest(f"{where}.type: {type_!r} is not one of {', '.join(COLUMN_TYPES)}")
    required = raw.get("required", not raw.get("optional", False))  # MLflow < 2.10: "optional"
    if not isinstance(required, bool):
        raise InvalidManifest(f"{where}.required: expected true or false")
    return Column(name, str(type_), required)


def from_mlmodel(mlmodel: dict[str, Any]) -> Signature | None:
    """Read the ``signature`` of a parsed ``MLmodel`` document; None if absent or unsupported.

    Tensor-based and non-column signatures (arrays, objects, unnamed columns) give None with a
    warning: the gate then treats the model as unsigned.
    """
    block = mlmodel.get("signature")
    if not isinstance(block, dict) or block.get("inputs") in (None, "", "[]"):
        return None
    try:
        return Signature.parse(block)
    except InvalidManifest as exc:
        log.warning("signature-unsupported", reason=str(exc))
        return None


def load_expected(path: Path) -> Signature:
    """Read the serving code's signature file; ``ConfigError`` if missing or invalid."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"--expect-signature {path}: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"--expect-signature {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return Signature.parse(json.loads(data))
    except ValueError as exc:
        raise ConfigError(f"--expect-signature {path}: not valid JSON ({exc})") from None
    except InvalidManifest as exc:
        raise ConfigError(f"--expect-signature {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class SignatureDiff:
    """How a model's inputs differ from what serving produces."""

    mode: Mode
    missing: tuple[str, ...] = ()
    """Model inputs serving does not (always) produce (strict: all of them; subset: required)."""
    extra: tuple[str, ...] = ()
    """Columns serving produces that the model does not take (refused in strict mode only)."""
    type_changes: tuple[dict[str, str], ...] = ()
    """``{"name", "model", "serving"}`` for each column whose types are not compatible."""
    preprocessing: dict[str, str] | None = None
    """``{"model", "serving"}`` when both declare a preprocessing version and they differ."""
    unsigned: bool = False
    """The model has no comparable signature; nothing was compared."""

    @property
    def ok(self) -> bool:
        """True when nothing blocks the model (the unsigned policy is decided by ``gate``)."""
        blocked = bool(self.missing or self.type_changes or self.preprocessing)
        return not blocked and (self.mode == "subset" or not self.extra)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for logs, events and ``/status``."""
        return {
            "mode": self.mode,
            "missing": list(self.missing),
            "extra": list(self.extra),
            "type_changes": [dict(t) for t in self.type_changes],
            "preprocessing": self.preprocessing,
            "unsigned": self.unsigned,
        }

    def summary(self) -> str:
        """One line naming what does not fit."""
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.extra and self.mode == "strict":
            parts.append("extra " + ", ".join(self.extra))
        parts.extend(f"{t['name']} {t['serving']}->{t['model']}" for t in self.type_changes)
        if self.preprocessing:
            p = self.preprocessing
            parts.append(f"preprocessing {p['serving']} (serving) vs {p['model']} (model)")
        return "; ".join(parts) or "compatible"


def check(model_sig: Signature | None, expected: Signature, mode: str = "strict") -> SignatureDiff:
    """Compare a model's signature with what serving produces, in ``strict`` or ``subset`` mode."""
    if mode not in ("strict", "subset"):
        raise ConfigError(f"--signature-mode {mode!r}: expected strict or subset")
    mode_: Mode = "strict" if mode == "strict" else "subset"
    if model_sig is None:
        return SignatureDiff(mode_, unsigned=True)
    produced = {c.name: c for c in expected.inputs}
    model = {c.name: c for c in model_sig.inputs}
    missing = tuple(
        c.name
        for c in model_sig.inputs
        if (mode_ == "strict" or c.required)
        and (c.name not in produced or (c.required and not produced[c.name].required))
    )
    changes = tuple(
        {"name": c.name, "model": c.type, "serving": produced[c.name].type}
        for c in model_sig.inputs
        if c.name in produced and not compatible(produced[c.name].type, c.type)
    )
    pre = None
    if None not in (model_sig.preprocessing, expected.preprocessing) and (
        model_sig.preprocessing != expected.preprocessing
    ):
        pre = {"model": str(model_sig.preprocessing), "serving": str(expected.preprocessing)}
    extra = tuple(c.name for c in expected.inputs if c.name not in model)
    return SignatureDiff(mode_, missing, extra, changes, pre)


@dataclass(frozen=True, slots=True)
class SignatureGate:
    """The gate as configured: what serving produces, how to compare, what to do unsigned."""

    expected: Signature
    """The columns the serving code produces (``--expect-signature``)."""
    mode: Mode = "strict"
    """``strict`` or ``subset`` (``--signature-mode``)."""
    unsigned: Unsigned = "allow"
    """``allow`` (with a logged reason) or ``refuse`` (``--unsigned-model``)."""

    def check(self, model_sig: Signature | dict[str, Any] | None) -> str | None:
        """``gate`` with these settings: ``SignatureMismatch``, a warning, or None."""
        return gate(model_sig, self.expected, self.mode, unsigned=self.unsigned)


def gate(
    model_sig: Signature | dict[str, Any] | None,
    expected: Signature | None,
    mode: Mode = "strict",
    *,
    unsigned: Unsigned = "allow",
) -> str | None:
    """Raise ``SignatureMismatch`` if the model must not be served; else return a warning or None.

    The warning (an unsigned model allowed) is the caller's to log, once per candidate.

    ``model_sig`` may be a raw signature object (as in ``Candidate.signature``); a malformed or
    tensor-based one counts as unsigned. With no ``expected`` signature the gate is off.
    """
    if expected is None:
        return None
    if isinstance(model_sig, dict):
        try:
            model_sig = Signature.parse(model_sig)
        except InvalidManifest as exc:
            log.warning("signature-unsupported", reason=str(exc))
            model_sig = None
    diff = check(model_sig, expected, mode)
    if diff.unsigned:
        if unsigned == "refuse":
            raise SignatureMismatch("model has no comparable input signature", diff.as_dict())
        return "model has no comparable input signature; the signature gate was skipped"
    if not diff.ok:
        raise SignatureMismatch(f"signature mismatch ({mode}): {diff.summary()}", diff.as_dict())
    return None
