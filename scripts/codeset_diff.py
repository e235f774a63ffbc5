"""What changed between two ICD-10-CM fiscal years: a CSV of changed codes and a short summary.

    python scripts/codeset_diff.py from_fy=2025 to_fy=2026
    python scripts/codeset_diff.py from_fy=2026 to_fy=2027 to_order_file=icd10cm_order_2027.txt
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.codeset_diff")


@hydra.main(version_base="1.3", config_path="../configs", config_name="codeset_diff")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.codesets import run_codeset_diff

    diff, paths = run_or_exit(lambda: run_codeset_diff(cfg))
    log.info("%s", diff.summary_text())
    log.info("wrote %s and %s", paths["csv"], paths["summary"])


if __name__ == "__main__":
    quiet_environment()
    main()
