"""Score a calibrated run's evidence spans against CodiEsp-X gold spans; write its CodiEsp-X
submission and official F1. Results go to the same MLflow run and outputs/runs/<run_id>/.

    python scripts/evaluate_evidence.py run_id=<id>
    python scripts/evaluate_evidence.py run_id=<id> split=dev evidence_top_k=5
"""

import logging
import math

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.evaluate_evidence")


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate_evidence")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.evaluate_evidence import evaluate_evidence, metric_prefixes

    result = run_or_exit(lambda: evaluate_evidence(cfg))
    m = result.metrics
    ev, x = metric_prefixes(result.split)
    sources = sorted({k[len(ev):-len("_char_f1")] for k in m if k.startswith(ev) and k.endswith("_char_f1")})
    for s in sources:
        log.info("%s evidence on %s: char P/R/F1 %s/%s/%s, hit rate %s, IoU %s, coverage %s", s, result.split,
                 *(_fmt(m[f"{ev}{s}_{k}"]) for k in ("char_precision", "char_recall", "char_f1", "hit_rate", "iou",
                                                      "coverage")))
    log.info("auto-accepted codes whose evidence overlaps a gold span: %s of %d", _fmt(m[f"{ev}auto_accept_overlap"]),
             int(m[f"{ev}n_auto_accepted"]))
    log.info("CodiEsp-X F1 %s (P %s, R %s); report %s; submission %s (%.0f s)", _fmt(m[f"{x}f1"]),
             _fmt(m[f"{x}precision"]), _fmt(m[f"{x}recall"]), result.report_path, result.submission_path,
             result.seconds)


if __name__ == "__main__":
    quiet_environment()
    main()
