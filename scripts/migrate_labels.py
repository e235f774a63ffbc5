"""Move a labeled corpus to another ICD-10-CM fiscal year; write the migrated corpus and a report.

    python scripts/migrate_labels.py data=codiesp_d_en to_fy=2026
    python scripts/migrate_labels.py data=jsonl data.train=a.jsonl data.dev=b.jsonl data.test=c.jsonl \
        to_fy=2026 conversion_table=conversion_2026.csv
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.migrate_labels")


@hydra.main(version_base="1.3", config_path="../configs", config_name="migrate_labels")
def main(cfg: DictConfig) -> None:
    import json

    from medcoder.workflows.codesets import run_migrate_labels

    result, paths = run_or_exit(lambda: run_migrate_labels(cfg))
    log.info("%s", result.summary_text())
    log.info("report: %s (per code: %s; documents to review: %s)", paths["report"], paths["code_mapping"],
             paths["flagged_documents"])
    override = json.loads(paths["report"].read_text())["data_override"]
    log.info("train on the migrated corpus with: python scripts/train.py %s", override)


if __name__ == "__main__":
    quiet_environment()
    main()
