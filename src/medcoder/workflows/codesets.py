"""What ``scripts/codeset_diff.py`` and ``scripts/migrate_labels.py`` do, callable from tests.

Why here and not in the scripts: scripts only compose the config (DESIGN.md); the work, its
outputs and its MLflow record are package code with tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medcoder.codesets.base import CodeSet
from medcoder.codesets.diff import CodeSetDiff, diff_codesets, write_diff
from medcoder.codesets.migration import MigrationResult, migrate_dataset, write_migration
from medcoder.codesets.registry import is_available, load_codeset
from medcoder.constraints import check_path_part
from medcoder.errors import ConfigError

__all__ = ["check_codeset_diff_config", "check_migrate_labels_config", "run_codeset_diff", "run_migrate_labels"]

logger = logging.getLogger(__name__)


def _check_year(key: str, value: Any, *, optional: bool = False) -> None:
    """A fiscal year is an integer: it is also part of the default ``output_dir``
    (``fy2025_to_fy2026``, ``<data.name>_fy2026``), so ``to_fy=../../x`` must stop here."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1000 <= value <= 9999:
        raise ConfigError(f"{key}={ascii(value)} is not a fiscal year", hint=f"e.g. {key}=2026")


def check_codeset_diff_config(cfg: Mapping[str, Any]) -> None:
    """What ``scripts/codeset_diff.py`` can check before loading or writing anything (one line)."""
    _check_year("from_fy", cfg.get("from_fy"))
    _check_year("to_fy", cfg.get("to_fy"))
    if cfg.get("output_dir") in (None, ""):
        raise ConfigError("output_dir is not set", hint="output_dir=<a new folder>")


def run_codeset_diff(cfg: Mapping[str, Any]) -> tuple[CodeSetDiff, dict[str, Path]]:
    """Diff ``from_fy`` -> ``to_fy`` (each optionally from an order file) and write the outputs.

    An existing ``output_dir`` is fine, but a file there that medcoder did not write is never
    replaced (:func:`~medcoder.codesets.diff.write_diff`)."""
    check_codeset_diff_config(cfg)
    old = load_codeset(cfg["from_fy"], order_file=cfg.get("from_order_file"))
    new = load_codeset(cfg["to_fy"], order_file=cfg.get("to_order_file"))
    diff = diff_codesets(old, new)
    return diff, write_diff(diff, cfg["output_dir"])


def _reference(cfg: Mapping[str, Any], to_fy: int) -> CodeSet | None:
    """``from_fy`` when given (an ICD-10-CM year the corpus was coded with), else ``to_fy - 1``
    when that year is available, else None (see :mod:`medcoder.codesets.migration`)."""
    from_fy = cfg.get("from_fy")
    if from_fy is not None:
        return load_codeset(from_fy, order_file=cfg.get("from_order_file"))
    if is_available(to_fy - 1):
        return load_codeset(to_fy - 1)
    logger.warning("no code set for FY%d: splits/deletions cannot be detected (set from_fy)", to_fy - 1)
    return None


def check_migrate_labels_config(cfg: DictConfig) -> None:
    """What ``scripts/migrate_labels.py`` can check before loading or writing anything (one line).

    ``data.name`` and ``to_fy`` name the default output folder
    (``outputs/migrated/<data.name>_fy<to_fy>``): ``data.name=../../..`` wrote note text outside
    the outputs (issue 22), so each is checked as one folder name / a year first.
    """
    check_path_part("data.name", cfg.data.get("name"))
    _check_year("to_fy", cfg.get("to_fy"))
    _check_year("from_fy", cfg.get("from_fy"), optional=True)
    if cfg.get("output_dir") in (None, ""):
        raise ConfigError("output_dir is not set", hint="output_dir=<a new folder>")


def run_migrate_labels(cfg: DictConfig) -> tuple[MigrationResult, dict[str, Path]]:
    """Load ``cfg.data``, migrate it to ``cfg.to_fy``, write corpus + report, log to MLflow.

    An existing ``output_dir`` is fine, but an entry there that medcoder did not write is never
    replaced (:func:`~medcoder.codesets.migration.write_migration`)."""
    from medcoder.workflows.factories import build_corpus

    check_migrate_labels_config(cfg)
    # Same format as the input: CodiEsp's release layout, CSV or JSONL.
    fmt = {"csv": "csv", "codiesp": "codiesp"}.get(cfg.data.get("format"), "jsonl")
    if cfg.data.get("code_type", "D") != "D":
        raise ConfigError(
            f"data.code_type={cfg.data.code_type!r}: only diagnosis (ICD-10-CM) corpora can be migrated",
            hint="use a D corpus, e.g. data=codiesp_d_en",
        )
    target = load_codeset(cfg.to_fy, order_file=cfg.get("order_file"), conversion_table=cfg.get("conversion_table"))
    reference = _reference(cfg, target.fiscal_year)
    data = build_corpus(cfg.data)
    result = migrate_dataset(data, target, reference, on_unmappable=cfg.get("on_unmappable", "keep"))
    paths = write_migration(result, cfg.output_dir, fmt=fmt, language=cfg.data.get("language") or "en")
    if cfg.get("log_mlflow", True):
        _log_mlflow(cfg, result, paths)
    return result, paths


def _log_mlflow(cfg: DictConfig, result: MigrationResult, paths: dict[str, Path]) -> None:
    """One run: counts as metrics, the report files (codes and ids only) as artifacts. The
    migrated corpus holds note text and is never logged."""
    import mlflow

    from medcoder.tracking.mlflow_utils import git_sha, log_config, setup_experiment
    from medcoder.workflows.factories import build_tracking, config_dict

    setup_experiment(build_tracking(cfg))
    s = result.summary()
    metrics = {f"codes_{k}": v for k, v in s["distinct_codes"].items()}
    metrics |= {f"occurrences_{k}": v for k, v in s["code_occurrences"].items()}
    metrics |= {k: s[k] for k in ("n_distinct_codes", "n_code_occurrences", "n_docs_changed", "n_docs_flagged",
                                   "n_docs_with_unmappable", "distinct_codes_not_billable_in_target")}
    tags = {
        "medcoder.task": "migrate_labels",
        "medcoder.data": str(cfg.data.get("name", cfg.data.get("format"))),
        "medcoder.codeset_fy": str(result.to_fy),
        "medcoder.git_sha": git_sha(Path(__file__).parent),
    }
    with mlflow.start_run(run_name=f"migrate-{tags['medcoder.data']}-fy{result.to_fy}", tags=tags):
        log_config(config_dict(cfg))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for key in ("report", "code_mapping", "flagged_documents"):
            mlflow.log_artifact(str(paths[key]), artifact_path="migration")
