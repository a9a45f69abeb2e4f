"""Train and log the small custom models the MLflow runtime's tests serve.

Runs inside the MLflow test environment (`mlflow_env`), never inside the test process,
which has no MLflow:

    <mlflow venv>/bin/python -m tests.integration.runtimes.mlflow_models DEST \
        [--tracking-uri URI --register NAME]

writes, each with its signature (so the scoring server enforces column names):

- DEST/sklearn: a scikit-learn logistic regression on the iris data set (shipped with
  scikit-learn, nothing downloaded), input columns sepal_length … petal_width;
- DEST/xgboost: an XGBoost classifier on the same columns;
- DEST/pyfunc: a pyfunc model whose `predict` calls custom code shipped with the model
  (`code_paths`), here a module `modelport_test_scoring` that is nowhere else;
- DEST/broken: a pyfunc model whose class lives in a module the model does not carry
  (`modelport_test_missing`), as a model whose dependency the image lacks: it fails to
  load with `ModuleNotFoundError`;
- DEST/expected.json: each model's predictions for `ROWS`, computed here, which the tests
  compare with what the endpoint answers.

With --tracking-uri and --register, the scikit-learn model is also logged to that MLflow
tracking server and registered as NAME (version 1) with the alias `champion`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [6.3, 3.3, 6.0, 2.5]]
CUSTOM_CODE = '''
"""Custom scoring code that only the logged model carries (code_paths)."""


def weighted_sum(row):
    return round(2.0 * row["sepal_length"] + 0.5 * row["petal_width"] - 1.0, 6)
'''
MISSING_MODULE = '''
"""A pyfunc model class in a module that is not shipped with the model."""

import mlflow


class Missing(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)
'''


def main(argv: list[str] | None = None) -> int:
    import mlflow
    import numpy as np
    import pandas as pd
    import xgboost
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser()
    parser.add_argument("dest", type=Path)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--register")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)

    iris = load_iris()
    features = pd.DataFrame(iris.data, columns=COLUMNS)
    labels = iris.target
    rows = pd.DataFrame(ROWS, columns=COLUMNS)
    expected: dict[str, Any] = {"columns": COLUMNS, "rows": ROWS}

    sk = LogisticRegression(max_iter=500).fit(features, labels)
    sk_signature = infer_signature(features, sk.predict(features))
    expected["sklearn"] = sk.predict(rows).tolist()

    xgb = xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=0)
    xgb.fit(features, labels)
    expected["xgboost"] = np.asarray(xgb.predict(rows)).tolist()
    xgb_signature = infer_signature(features, xgb.predict(features))

    code = Path(tempfile.mkdtemp()) / "modelport_test_scoring.py"
    code.write_text(CUSTOM_CODE)
    (code.parent / "modelport_test_missing.py").write_text(MISSING_MODULE)
    sys.path.insert(0, str(code.parent))
    import modelport_test_missing  # type: ignore[import-not-found]
    import modelport_test_scoring  # type: ignore[import-not-found]

    class Scorer(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import modelport_test_scoring as scoring

            scale = float((params or {}).get("scale", 1.0))
            return [scoring.weighted_sum(row) * scale for _, row in model_input.iterrows()]

    py_signature = infer_signature(
        features, [modelport_test_scoring.weighted_sum(r) for _, r in features.iterrows()],
        params={"scale": 1.0},
    )  # fmt: skip
    expected["pyfunc"] = [modelport_test_scoring.weighted_sum(r) for _, r in rows.iterrows()]

    for name in ("sklearn", "xgboost", "pyfunc", "broken"):
        target = args.dest / name
        if target.exists():
            import shutil

            shutil.rmtree(target)
    mlflow.sklearn.save_model(sk, args.dest / "sklearn", signature=sk_signature)
    mlflow.xgboost.save_model(xgb, args.dest / "xgboost", signature=xgb_signature)
    mlflow.pyfunc.save_model(
        args.dest / "pyfunc", python_model=Scorer(), signature=py_signature,
        code_paths=[str(code)],
    )  # fmt: skip
    mlflow.pyfunc.save_model(
        args.dest / "broken", python_model=modelport_test_missing.Missing(),
        signature=py_signature,
    )  # fmt: skip
    if args.tracking_uri and args.register:
        mlflow.set_tracking_uri(args.tracking_uri)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                sk, name="model", signature=sk_signature, registered_model_name=args.register
            )
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(args.register, "champion", "1")
        expected["registered"] = {"name": args.register, "version": "1", "uri": info.model_uri}
    (args.dest / "expected.json").write_text(json.dumps(expected, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
