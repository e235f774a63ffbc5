"""medcoder.evaluation: metric functions and the offline ``evaluate`` module.

The metric functions are plain numpy/scikit-learn (see :mod:`medcoder.evaluation.metrics` for
the shared conventions). :func:`load_metric` wraps them as an ``evaluate`` module loaded from a
file path, because ``evaluate.load("f1")`` needs the Hugging Face Hub and training runs offline.
``evaluate`` (and ``datasets``) are imported only inside :func:`load_metric`, so importing the
metrics stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcoder.evaluation.metrics import (
    CODIESP_MAP_DEPTH,
    METRIC_KEYS,
    ReliabilityCurve,
    codiesp_map,
    compute_all,
    ece,
    macro_auc,
    macro_f1,
    mean_average_precision,
    micro_auc,
    micro_f1,
    micro_precision,
    micro_recall,
    precision_at_k,
    recall_at_k,
    reliability_curve,
    tune_global_threshold,
)

if TYPE_CHECKING:
    import evaluate

#: The metric script; ``evaluate.load`` accepts this path (or its folder) without network.
METRIC_SCRIPT: Path = Path(__file__).resolve().parent / "medcoder_metric" / "medcoder_metric.py"


def load_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """Load the medcoder metric module by path; works with ``HF_HUB_OFFLINE=1``.

    ``kwargs`` go to ``evaluate.load`` (e.g. ``keep_in_memory=True`` to avoid Arrow cache files,
    ``experiment_id`` for concurrent runs).
    """
    import evaluate

    return evaluate.load(str(METRIC_SCRIPT), **kwargs)


__all__ = [
    "CODIESP_MAP_DEPTH",
    "METRIC_KEYS",
    "METRIC_SCRIPT",
    "ReliabilityCurve",
    "codiesp_map",
    "compute_all",
    "ece",
    "load_metric",
    "macro_auc",
    "macro_f1",
    "mean_average_precision",
    "micro_auc",
    "micro_f1",
    "micro_precision",
    "micro_recall",
    "precision_at_k",
    "recall_at_k",
    "reliability_curve",
    "tune_global_threshold",
]
