"""The signature gate: model inputs against what the serving code produces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pointercache.errors import ConfigError, InvalidManifest, SignatureMismatch
from pointercache.model.signature import (
    COLUMN_TYPES,
    Signature,
    check,
    compatible,
    from_mlmodel,
    gate,
    load_expected,
)


def sig(*cols: str | tuple[str, str, bool], pre: str | None = None) -> Signature:
    """Build a signature from "name:type" strings or (name, type, required) tuples."""
    inputs: list[dict[str, Any]] = []
    for col in cols:
        if isinstance(col, tuple):
            name, type_, required = col
        else:
            (name, type_), required = col.split(":"), True
        inputs.append({"name": name, "type": type_, "required": required})
    obj: dict[str, Any] = {"inputs": inputs}
    if pre is not None:
        obj["preprocessing"] = pre
    return Signature.parse(obj)


FRAUD_MODEL = sig("amount:double", "merchant_category:string", "hour:integer")
FRAUD_SERVING_GEO = sig(
    "amount:double",
    "merchant_category:string",
    "hour:integer",
    "geo_lat:double",
    "geo_lon:double",
    "ip_country:string",
)


@pytest.mark.parametrize("mode", ["strict", "subset"])
def test_identical_signatures_pass(mode: str) -> None:
    """The same columns with the same types pass in both modes."""
    diff = check(FRAUD_MODEL, FRAUD_MODEL, mode)
    assert diff.ok
    assert gate(FRAUD_MODEL, FRAUD_MODEL, mode) is None


def test_fraud_serving_adds_geolocation_strict_mismatch() -> None:
    """Serving that adds geo features the model lacks is refused in strict mode with `extra`."""
    diff = check(FRAUD_MODEL, FRAUD_SERVING_GEO, "strict")
    assert not diff.ok
    assert diff.extra == ("geo_lat", "geo_lon", "ip_country")
    assert diff.missing == ()
    assert diff.type_changes == ()
    with pytest.raises(SignatureMismatch) as info:
        gate(FRAUD_MODEL, FRAUD_SERVING_GEO, "strict")
    assert info.value.diff["extra"] == ["geo_lat", "geo_lon", "ip_country"]
    assert "geo_lat" in str(info.value)


def test_fraud_serving_adds_geolocation_subset_ok() -> None:
    """In subset mode the extra geo features are listed but do not block the model."""
    diff = check(FRAUD_MODEL, FRAUD_SERVING_GEO, "subset")
    assert diff.ok
    assert diff.extra == ("geo_lat", "geo_lon", "ip_country")
    assert gate(FRAUD_MODEL, FRAUD_SERVING_GEO, "subset") is None


@pytest.mark.parametrize("mode", ["strict", "subset"])
def test_fraud_model_requires_geolocation_mismatch(mode: str) -> None:
    """A model requiring geo features serving does not produce is refused in both modes."""
    diff = check(FRAUD_SERVING_GEO, FRAUD_MODEL, mode)
    assert not diff.ok
    assert diff.missing == ("geo_lat", "geo_lon", "ip_country")
    with pytest.raises(SignatureMismatch) as info:
        gate(FRAUD_SERVING_GEO, FRAUD_MODEL, mode)
    assert info.value.diff["missing"] == ["geo_lat", "geo_lon", "ip_country"]


@pytest.mark.parametrize("mode", ["strict", "subset"])
def test_double_to_float_narrowing_is_a_type_change(mode: str) -> None:
    """Serving a double to a model expecting float is a narrowing: a type change in both modes."""
    model = sig("amount:float", "hour:integer")
    serving = sig("amount:double", "hour:integer")
    diff = check(model, serving, mode)
    assert not diff.ok
    assert diff.type_changes == ({"name": "amount", "model": "float", "serving": "double"},)
    with pytest.raises(SignatureMismatch, match="amount double->float"):
        gate(model, serving, mode)


@pytest.mark.parametrize("mode", ["strict", "subset"])
def test_preprocessing_version_mismatch(mode: str) -> None:
    """Different preprocessing versions block the model in both modes."""
    diff = check(sig("a:double", pre="2"), sig("a:double", pre="3"), mode)
    assert not diff.ok
    assert diff.preprocessing == {"model": "2", "serving": "3"}


@pytest.mark.parametrize(("model_pre", "serving_pre"), [("2", None), (None, "2"), (None, None)])
def test_preprocessing_only_enforced_when_both_declare(
    model_pre: str | None, serving_pre: str | None
) -> None:
    """A preprocessing version declared on one side only is not compared."""
    assert check(sig("a:double", pre=model_pre), sig("a:double", pre=serving_pre)).ok


def test_integer_preprocessing_equals_string() -> None:
    """preprocessing 2 (a number) and "2" (a string) are the same version."""
    model = Signature.parse({"inputs": [], "preprocessing": 2})
    assert check(model, sig(pre="2")).ok


COMPATIBLE = [
    ("integer", "long"),
    ("integer", "double"),
    ("float", "double"),
    *((t, t) for t in COLUMN_TYPES),
]
INCOMPATIBLE = [
    ("long", "integer"),
    ("double", "float"),
    ("double", "integer"),
    ("long", "double"),
    ("integer", "float"),
    ("float", "long"),
    ("boolean", "integer"),
    ("integer", "boolean"),
    ("string", "binary"),
    ("binary", "string"),
    ("datetime", "string"),
    ("string", "datetime"),
    ("long", "datetime"),
    ("double", "string"),
]


@pytest.mark.parametrize("mode", ["strict", "subset"])
@pytest.mark.parametrize(("produced", "expected"), COMPATIBLE)
def test_compatible_pairs(mode: str, produced: str, expected: str) -> None:
    """Same types and lossless widenings (serving → model) pass in both modes."""
    assert compatible(produced, expected)
    assert check(sig(f"x:{expected}"), sig(f"x:{produced}"), mode).ok


@pytest.mark.parametrize("mode", ["strict", "subset"])
@pytest.mark.parametrize(("produced", "expected"), INCOMPATIBLE)
def test_incompatible_pairs(mode: str, produced: str, expected: str) -> None:
    """Narrowing, precision loss and cross-kind changes are type changes in both modes."""
    assert not compatible(produced, expected)
    diff = check(sig(f"x:{expected}"), sig(f"x:{produced}"), mode)
    assert not diff.ok
    assert diff.type_changes == ({"name": "x", "model": expected, "serving": produced},)


def test_optional_model_input_not_produced() -> None:
    """An optional model input serving does not produce is missing in strict, fine in subset."""
    model = sig("a:double", ("b", "string", False))
    serving = sig("a:double")
    assert check(model, serving, "strict").missing == ("b",)
    assert check(model, serving, "subset").ok


@pytest.mark.parametrize("mode", ["strict", "subset"])
def test_sometimes_produced_does_not_satisfy_required(mode: str) -> None:
    """A required model input that serving marks optional (not always produced) is missing."""
    diff = check(sig("a:double", "b:string"), sig("a:double", ("b", "string", False)), mode)
    assert diff.missing == ("b",)


def test_unsigned_model_allowed_with_warning_by_default() -> None:
    """A model without a signature passes the gate with a warning reason."""
    warning = gate(None, FRAUD_MODEL, "strict")
    assert warning is not None
    assert "no comparable input signature" in warning
    assert check(None, FRAUD_MODEL).unsigned


def test_unsigned_model_refused_when_configured() -> None:
    """With unsigned='refuse', a model without a signature is blocked."""
    with pytest.raises(SignatureMismatch) as info:
        gate(None, FRAUD_MODEL, "subset", unsigned="refuse")
    assert info.value.diff["unsigned"] is True


def test_gate_off_without_expected_signature() -> None:
    """Without an expected signature the gate lets everything through silently."""
    assert gate(FRAUD_MODEL, None) is None
    assert gate({"inputs": "not json"}, None) is None


def test_gate_accepts_raw_candidate_signature() -> None:
    """gate parses a raw signature object such as Candidate.signature."""
    raw = FRAUD_SERVING_GEO.to_dict()
    with pytest.raises(SignatureMismatch):
        gate(raw, FRAUD_MODEL, "subset")
    assert gate(FRAUD_MODEL.to_dict(), FRAUD_SERVING_GEO, "subset") is None


def test_gate_treats_tensor_signature_as_unsigned() -> None:
    """A tensor-based signature cannot be compared: it counts as no signature."""
    tensor = {"inputs": [{"name": "x", "type": "tensor", "tensor-spec": {"dtype": "float32"}}]}
    assert gate(tensor, FRAUD_MODEL) is not None
    with pytest.raises(SignatureMismatch):
        gate(tensor, FRAUD_MODEL, unsigned="refuse")


def test_bad_mode_is_a_config_error() -> None:
    """An unknown signature mode is a configuration error."""
    with pytest.raises(ConfigError):
        check(FRAUD_MODEL, FRAUD_MODEL, "loose")


# The `signature` block exactly as MLflow writes it into MLmodel (Model.to_dict()).
MLMODEL = {
    "flavors": {"python_function": {}},
    "signature": {
        "inputs": '[{"type": "double", "name": "amount", "required": true}, '
        '{"type": "long", "name": "hour", "required": false}]',
        "outputs": '[{"type": "double", "required": true}]',
        "params": None,
    },
}
MLMODEL_TENSOR = {
    "signature": {
        "inputs": '[{"name": "x", "type": "tensor", '
        '"tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]',
        "outputs": None,
        "params": None,
    }
}


def test_from_mlmodel_reads_column_signature() -> None:
    """MLflow's JSON-string inputs are read into named, typed columns with `required`."""
    got = from_mlmodel(MLMODEL)
    assert got is not None
    assert [(c.name, c.type, c.required) for c in got.inputs] == [
        ("amount", "double", True),
        ("hour", "long", False),
    ]
    assert got.to_dict()["inputs"][1] == {"name": "hour", "type": "long", "required": False}


@pytest.mark.parametrize(
    "doc",
    [
        MLMODEL_TENSOR,
        {"flavors": {}},
        {"signature": None},
        {"signature": {"inputs": None}},
        {"signature": {"inputs": '[{"type": "double"}]'}},
        {"signature": {"inputs": '[{"type": "array", "items": {"type": "double"}, "name": "v"}]'}},
    ],
)
def test_from_mlmodel_unsupported_or_absent_is_none(doc: dict[str, Any]) -> None:
    """Tensor, unnamed-column, complex-type or absent signatures read as no signature."""
    assert from_mlmodel(doc) is None


def test_legacy_optional_flag() -> None:
    """Older MLflow's `optional: true` means not required."""
    got = Signature.parse({"inputs": '[{"type": "long", "name": "h", "optional": true}]'})
    assert got.inputs[0].required is False


@pytest.mark.slow
def test_from_mlmodel_matches_real_mlflow_output() -> None:
    """The MLmodel signature written by the installed MLflow reads the same way."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    schema = Schema([ColSpec("double", "amount"), ColSpec("long", "hour", required=False)])
    doc = Model(signature=ModelSignature(inputs=schema)).to_dict()
    assert from_mlmodel(doc) == from_mlmodel(MLMODEL)


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"inputs": "{"},
        {"inputs": {}},
        {"inputs": [{"name": "a", "type": "decimal"}]},
        {"inputs": [{"name": "", "type": "double"}]},
        {"inputs": [{"type": "double"}]},
        {"inputs": [{"name": "a", "type": "double"}, {"name": "a", "type": "long"}]},
        {"inputs": [{"name": "a", "type": "double", "required": "yes"}]},
        {"inputs": [], "preprocessing": True},
        {"inputs": [], "preprocessing": 2.5},
    ],
)
def test_parse_refuses_malformed(obj: object) -> None:
    """Malformed signatures are refused with InvalidManifest."""
    with pytest.raises(InvalidManifest):
        Signature.parse(obj)


def test_load_expected_reads_file(tmp_path: Path) -> None:
    """The serving code's signature file is read and validated."""
    path = tmp_path / "expect.json"
    path.write_text(json.dumps(FRAUD_SERVING_GEO.to_dict() | {"preprocessing": "2"}))
    got = load_expected(path)
    assert got.preprocessing == "2"
    assert [c.name for c in got.inputs][-1] == "ip_country"


@pytest.mark.parametrize(
    "content",
    [None, "{not json", '{"inputs": [{"name": "a", "type": "int"}]}', "x" * (2 << 20)],
)
def test_load_expected_errors_are_config_errors(tmp_path: Path, content: str | None) -> None:
    """A missing, malformed, wrongly typed or oversized expectation file is a ConfigError."""
    path = tmp_path / "expect.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="--expect-signature"):
        load_expected(path)
