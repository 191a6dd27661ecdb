"""Train and register real scikit-learn models the way a data scientist does, in a subprocess.

``python -m tests.sklearn_models '<json>'`` with ``{"model": NAME, "versions": [[col, ...], ...],
"aliases": {"production": 1}}``: for each column list, fits a ``LogisticRegression`` on a small
random frame with those (float) columns, logs it with
``mlflow.sklearn.log_model(..., signature=infer_signature(X, y), registered_model_name=NAME)``
and prints one JSON line: the registered version numbers, in order. The tracking URI, S3 endpoint
and credentials come from the environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_S3_ENDPOINT_URL``,
``AWS_*``). A subprocess keeps mlflow's and scikit-learn's imports and warnings out of pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from tests.servers import MotoServer

REPO = Path(__file__).resolve().parent.parent


def log_models(
    tracking_uri: str, moto: MotoServer, spec: dict[str, Any], timeout: float = 300
) -> list[str]:
    """Run this module in a subprocess; return the registered versions (``spec`` as above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(moto.env())
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_S3_ENDPOINT_URL=moto.endpoint_url,
        GIT_PYTHON_REFRESH="quiet",
        PYTHONWARNINGS="ignore",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.sklearn_models", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"logging models failed: {proc.stderr[-3000:]}")
    versions: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return versions


def _main(spec: dict[str, Any]) -> list[str]:
    warnings.simplefilter("ignore")
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    client = mlflow.MlflowClient()
    versions = []
    for columns in spec["versions"]:
        frame = pd.DataFrame({c: rng.normal(size=64) for c in columns})
        target = (frame.sum(axis=1) > 0).astype("int64")
        model = LogisticRegression().fit(frame, target)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(frame, model.predict(frame)),
                registered_model_name=spec["model"],
                # Stated, not inferred: inference imports the model in another interpreter,
                # which costs most of a minute on a busy machine and changes nothing here.
                pip_requirements=["scikit-learn"],
            )
        versions.append(str(info.registered_model_version))
    for alias, index in spec.get("aliases", {}).items():
        client.set_registered_model_alias(spec["model"], alias, versions[index])
    return versions


if __name__ == "__main__":
    print(json.dumps(_main(json.loads(sys.argv[1]))))
