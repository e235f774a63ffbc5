"""Compare runs on the same test notes: bootstrap CIs, paired permutation tests, one MLflow run.

    python scripts/compare.py run_ids=[<id>,<id>] baseline=<id>
    python scripts/compare.py parent=<sweep parent run id> baseline=<id>
    python scripts/compare.py experiment_name=medcoder 'tags={medcoder.model:minilm}' baseline=<id>
    python scripts/compare.py run_ids=[<a>,<b>] baseline=<a> metrics=[map,micro_f1,p_at_8,r_at_15]
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.compare")


OLD_KEY, NEW_KEY = "experiment=", "experiment_name="


def renamed_overrides(argv: list[str]) -> list[str]:
    """``experiment=<name>`` (the old, documented spelling) as ``experiment_name=<name>``.

    Why: ``experiment`` is also Hydra's config group of training presets (configs/experiment/), so
    Hydra refused ``experiment=medcoder`` before compare.py ever saw it. The key is now
    ``experiment_name``; the old spelling keeps working, with a warning, until it is removed.
    """
    out = []
    for arg in argv:
        if arg.startswith(OLD_KEY):
            print(f"warning: {OLD_KEY}... is now {NEW_KEY}... (experiment is Hydra's group of training presets)",
                  file=sys.stderr)
            arg = NEW_KEY + arg[len(OLD_KEY):]
        out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="compare")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.compare import compare

    result = run_or_exit(lambda: compare(cfg))
    comp = result.comparison
    first = comp.metrics[0]
    for name in comp.systems:
        r = comp.results[name][first]
        vs = "baseline" if r.p_value is None else f"Δ {r.delta.value:+.4f}, p = {r.p_value:.4g}"
        log.info("%s %s %.4f [%.4f, %.4f] (%s)", name, first, r.estimate.value, r.estimate.low,
                 r.estimate.high, vs)
    if result.skipped:
        log.info("left out (no per-note predictions): %s", ", ".join(result.skipped))
    log.info("leaderboard: %s", result.files["leaderboard.md"])
    print(f"comparison_run_id={result.run_id}")


if __name__ == "__main__":
    quiet_environment()
    sys.argv[1:] = renamed_overrides(sys.argv[1:])
    main()
