"""The bundle as an MLflow model: a ``PythonModel`` wrapping :class:`~medcoder.inference.Coder`.

Why a wrapper and not ``mlflow.transformers``: the transformers flavour would serve raw logits;
the product is a *calibrated, routed* prediction with an audit trail, which only ``Coder`` makes.
The bundle travels as the model's ``bundle`` artifact, so ``models:/name@alias`` resolves to the
same verified directory that ``scripts/predict.py`` reads.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd

#: Invented, not taken from any corpus: MLflow stores the input example as an artifact, and no
#: clinical text may end up in artifacts.
INPUT_EXAMPLE = pd.DataFrame({
    "id": ["example-1"],
    "text": ["Follow-up visit. Known type 2 diabetes mellitus and essential hypertension, both stable."],
})
OUTPUT_COLUMNS = ("id", "document_decision", "document_reasons", "codes", "bundle_id", "codeset_fy",
                  "policy_version", "input_sha256", "timestamp")


def predictions_frame(preds: list[Any]) -> pd.DataFrame:
    """DataFrame of :class:`DocumentPrediction` rows; ``codes`` is a JSON string per note.

    JSON strings rather than nested objects: the signature stays a flat table that every MLflow
    serving path (REST, Spark UDF, batch) handles the same way.
    """
    rows = []
    for p in preds:
        d = p.to_dict()
        rows.append({
            **{k: d[k] for k in OUTPUT_COLUMNS if k not in ("codes", "document_reasons", "codeset_fy")},
            "document_reasons": ";".join(d["document_reasons"]),
            "codes": json.dumps(d["codes"], ensure_ascii=False),
            "codeset_fy": -1 if d["codeset_fy"] is None else int(d["codeset_fy"]),
        })
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


class MedCoderModel(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[id, text]) -> DataFrame`` of routed predictions (see OUTPUT_COLUMNS)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from medcoder.inference.coder import Coder

        self.coder = Coder.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if "text" not in model_input.columns:
            raise ValueError(f"input needs a 'text' column (and optionally 'id'); got {list(model_input.columns)}")
        texts = ["" if pd.isna(t) else str(t) for t in model_input["text"]]
        ids = [str(i) for i in model_input["id"]] if "id" in model_input.columns else None
        batch_size = int((params or {}).get("batch_size", 8))
        return predictions_frame(self.coder.predict(texts, ids, batch_size=batch_size, progress=False))
