"""``evaluate`` metric module for medcoder: multi-label ICD coding metrics in one call.

``evaluate.load("f1")`` needs the Hub, which is not reachable where medcoder trains, so the
project ships this script and loads it by path (``medcoder.evaluation.load_metric()``).
``evaluate`` copies the script into its modules cache before importing it, so it must only use
absolute imports; all the arithmetic lives in ``medcoder.evaluation.metrics``, which keeps this
file a thin adapter and guarantees the same numbers as ``compute_all``.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from medcoder.evaluation.metrics import compute_all, tune_global_threshold

_DESCRIPTION = """\
Multi-label ICD coding metrics: CodiEsp MAP (gold codes outside the label space count),
micro/macro F1, micro precision/recall, P@5/8/15, R@10/15, micro/macro ROC AUC and ECE over
(note, code) pairs. When no threshold is given, the micro-F1-optimal global threshold is tuned on
the given data and returned as ``threshold``.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one list of label-space scores in [0, 1] per note (column order = label_codes).
    references: one list of {0, 1} gold indicators per note, same columns.
    threshold: decision threshold (predict ``score >= threshold``); None tunes it on this data.
    gold_codes: optional full gold code list per note, including codes outside the label space.
    label_codes: the code of each column; required with gold_codes.
    n_gold: optional number of gold codes per note (for R@k when gold_codes is not given).
Returns:
    dict of floats: map, micro_f1, macro_f1, micro_precision, micro_recall, p_at_5, p_at_8,
    p_at_15, r_at_10, r_at_15, micro_auc, macro_auc, ece, threshold.
"""

_CITATION = """\
@inproceedings{miranda2020codiesp,
  title={Overview of Automatic Clinical Coding: Annotations, Guidelines, and Solutions for
         non-English Clinical Cases at CodiEsp Track of CLEF eHealth 2020},
  author={Miranda-Escalada, Antonio and Gonzalez-Agirre, Aitor and Armengol-Estap{\\'e}, Jordi
          and Krallinger, Martin},
  booktitle={CLEF (Working Notes)},
  year={2020}
}
"""


class MedcoderMetric(evaluate.Metric):
    """All medcoder evaluation metrics for one split, via ``medcoder.evaluation.compute_all``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        threshold: float | None = None,
        gold_codes: list[list[str]] | None = None,
        label_codes: list[str] | None = None,
        n_gold=None,
    ) -> dict[str, float]:
        probs = np.asarray(predictions, dtype=np.float64)
        y_true = np.asarray(references, dtype=np.int64)
        if threshold is None:
            threshold = tune_global_threshold(probs, y_true)
        result = compute_all(
            probs,
            y_true,
            threshold=float(threshold),
            gold_codes=gold_codes,
            label_codes=label_codes,
            n_gold=n_gold,
        )
        result["threshold"] = float(threshold)
        return result
