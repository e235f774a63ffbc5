"""Train a coder, evaluate it on dev/test and log one MLflow run.

    python scripts/train.py experiment=quickstart
    python scripts/train.py data=codiesp_p_en trainer.num_train_epochs=5
    torchrun --nproc_per_node=2 scripts/train.py experiment=quickstart trainer.use_cpu=true   # DDP
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.train")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.train import train

    result = run_or_exit(lambda: train(cfg))
    if not result.run_id:  # a non-zero torchrun rank: rank 0 reports the run
        return
    m = result.metrics
    log.info(
        "run %s finished in %.0fs: test MAP %.4f, micro-F1 %.4f, P@8 %.4f, label coverage %.3f",
        result.run_id, result.wall_seconds, m["test_map"], m["test_micro_f1"], m["test_p_at_8"],
        m["test_label_coverage"],
    )
    print(f"run_id={result.run_id}")


if __name__ == "__main__":
    quiet_environment()
    main()
