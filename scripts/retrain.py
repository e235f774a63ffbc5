"""Reviews become training data: retrain a @candidate on reviewed notes (docs/retrain.md).

    python scripts/retrain.py reviewed=<export_dir>/labels.jsonl serving=models:/medcoder-icd10@champion
    python scripts/retrain.py reviewed=<export_dir> serving=outputs/bundles/<run_id> experiment=quickstart

Trains the configured recipe on train + the reviewed notes' training part (warm-started from the
serving model), certifies τ on the held-out reviewed notes only, registers the bundle as @candidate,
compares it with the serving model on the same held-out notes (CIs) and prints the promote command.
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.retrain")


def _ci(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]"


@hydra.main(version_base="1.3", config_path="../configs", config_name="retrain")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.retrain import retrain

    result = run_or_exit(lambda: retrain(cfg))
    comp = result.comparison
    parts = []
    for m in comp.metrics:
        cand, serv = comp.results["candidate"][m], comp.results["serving"][m]
        delta = f"Δ {cand.delta.value:+.4f} {_ci(cand.delta.low, cand.delta.high)}, p={cand.p_value:.3g}" \
            if cand.delta is not None and cand.p_value is not None else ""
        parts.append(f"{m} {cand.estimate.value:.4f} {_ci(cand.estimate.low, cand.estimate.high)} vs "
                     f"{serv.estimate.value:.4f} {_ci(serv.estimate.low, serv.estimate.high)} ({delta})")
    version = f"{result.registered_name} v{result.version} @{result.alias}" if result.version else "not registered"
    print(f"run_id={result.run_id} candidate={version} held_out={comp.n_notes} notes; " + "; ".join(parts)
          + f"; promote (a person's decision): {result.promote_command}")


if __name__ == "__main__":
    quiet_environment()
    main()
