"""Hydra ``--multirun`` sweeps as MLflow parent/child runs, with seeds aggregated to mean ± sd.

Why this shape: MLflow's own notion of a sweep is a parent run whose children carry the
``mlflow.parentRunId`` tag (``mlflow.start_run(parent_run_id=...)``); the UI nests them and
``scripts/compare.py parent=<id>`` takes them as a group. Hydra gives every job of one
``-m`` invocation the same ``hydra.sweep.dir``, so that folder identifies the sweep: the first job
creates the parent (under a file lock, so parallel launchers create one), every job finds it.

After each child finishes, :func:`update_sweep_summary` re-reads all FINISHED children and
rewrites the parent's ``sweep_summary.md``/``.json``: children are grouped by their overrides
*without* the seed (``seed``, ``trainer.seed``), and each metric is given as mean, sample sd and n
per group. Re-computing from MLflow after every job (rather than keeping state in the launcher)
means a crashed or re-run job cannot leave a stale summary; the parent ends FINISHED.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SWEEP_TAG = "medcoder.sweep_id"
PARENT_TAG = "medcoder.sweep_parent"
GROUP_TAG = "medcoder.sweep_group"
OVERRIDES_TAG = "medcoder.sweep_overrides"
#: Override keys that are repetitions of one setting, not different settings.
SEED_KEYS = ("seed", "trainer.seed")
#: Metrics summarised on the parent (those a child does not have are skipped).
SUMMARY_METRICS = (
    "test_map", "test_micro_f1", "test_p_at_8", "dev_map", "test_macro_f1",
    "test_auto_accept_coverage", "test_auto_accept_precision", "tau_accept", "train_wall_seconds",
)


@dataclass(frozen=True)
class SweepJob:
    """What one Hydra multirun job knows about its sweep."""

    sweep_dir: Path
    overrides: tuple[str, ...]

    @property
    def sweep_id(self) -> str:
        return hashlib.sha256(str(self.sweep_dir.resolve()).encode()).hexdigest()[:16]



def current_sweep_job() -> SweepJob | None:
    """The running Hydra job's sweep, or None outside ``--multirun`` (or outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a core dependency
        return None
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return SweepJob(Path(hc.sweep.dir), tuple(hc.overrides.task))


def sweep_parent_run(job: SweepJob, experiment_id: str, kind: str) -> str:
    """The id of the sweep's parent run, created by the first job that asks."""
    client = MlflowClient()
    job.sweep_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(job.sweep_dir / ".mlflow_parent.lock")):
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{job.sweep_id}' and tags.`{PARENT_TAG}` = 'true'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=f"sweep-{kind}-{job.sweep_dir.name}", tags={
            SWEEP_TAG: job.sweep_id, PARENT_TAG: "true", "medcoder.kind": f"{kind}_sweep",
            "medcoder.sweep_dir": str(job.sweep_dir.resolve()),
        })
        log.info("sweep parent run %s (%s)", run.info.run_id, job.sweep_dir)
        return run.info.run_id


def child_tags(job: SweepJob) -> dict[str, str]:
    return {SWEEP_TAG: job.sweep_id, OVERRIDES_TAG: json.dumps(list(job.overrides))[:7000]}


def _as_dict(overrides: Sequence[str]) -> dict[str, str]:
    return dict(o.lstrip("+~").split("=", 1) if "=" in o else (o, "") for o in overrides)


def setting_labels(children_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Each child's setting: the override keys whose value differs across the sweep, seeds excluded.

    Why derived here and not per job: a job sees its resolved overrides (``seed=2``), not which
    keys the command line swept, and fixed overrides (paths, data files) only clutter a label.
    """
    parsed = [_as_dict(o) for o in children_overrides]
    keys = sorted({k for p in parsed for k in p} - set(SEED_KEYS))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [" ".join(f"{k}={p.get(k, '(default)')}" for k in varying) or "(one setting)" for p in parsed]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


def summarise(children: Iterable[tuple[str, str, dict[str, float]]],
              metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict[str, Any]]:
    """``(run_id, group, metrics)`` per child -> one row per group: n, run ids, mean/sd per metric."""
    groups: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for run_id, group, values in children:
        groups.setdefault(group, []).append((run_id, values))
    rows = []
    for group, members in sorted(groups.items()):
        row: dict[str, Any] = {"group": group, "n": len(members), "run_ids": [r for r, _ in members]}
        for m in metrics:
            vals = [v[m] for _, v in members if m in v and not math.isnan(v[m])]
            if vals:
                mean, sd = _mean_sd(vals)
                row[m] = {"mean": mean, "sd": sd, "n": len(vals)}
        rows.append(row)
    return rows


def summary_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = SUMMARY_METRICS) -> str:
    shown = [m for m in metrics if any(m in r for r in rows)]
    lines = ["| setting | n | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for r in rows:
        cells = []
        for m in shown:
            if m not in r:
                cells.append("")
            elif r[m]["n"] > 1:
                cells.append(f"{r[m]['mean']:.4f} ± {r[m]['sd']:.4f}")
            else:
                cells.append(f"{r[m]['mean']:.4f}")
        lines.append(f"| {r['group']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± sample sd over seeds (runs that differ only in `seed`/`trainer.seed`).\n"


def update_sweep_summary(parent_run_id: str) -> list[dict[str, Any]]:
    """Recompute the parent's summary from its FINISHED children; the parent ends FINISHED."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=10_000,
    )
    finished = [c for c in children if c.info.status == "FINISHED"]
    labels = setting_labels([json.loads(c.data.tags.get(OVERRIDES_TAG, "[]")) for c in finished])
    for c, label in zip(finished, labels, strict=True):
        client.set_tag(c.info.run_id, GROUP_TAG, label)
    done = [(c.info.run_id, label, dict(c.data.metrics)) for c, label in zip(finished, labels, strict=True)]
    rows = summarise(done)
    client.log_text(parent_run_id, summary_markdown(rows), "sweep_summary.md")
    client.log_text(parent_run_id, json.dumps(rows, indent=2), "sweep_summary.json")
    if len(rows) == 1:  # one setting over seeds: its mean/sd as the parent's own metrics
        for m in SUMMARY_METRICS:
            if m in rows[0]:
                client.log_metric(parent_run_id, f"{m}_mean", rows[0][m]["mean"])
                if not math.isnan(rows[0][m]["sd"]):
                    client.log_metric(parent_run_id, f"{m}_sd", rows[0][m]["sd"])
    client.log_metric(parent_run_id, "n_children_finished", len(done))
    client.set_terminated(parent_run_id, "FINISHED")
    return rows


def start_child_or_run(experiment_id: str, kind: str, **start_kwargs: Any):
    """``mlflow.start_run`` as a child of the sweep's parent under ``--multirun``, else as asked.

    Returns ``(active_run_context, parent_run_id or None)``.
    """
    job = current_sweep_job()
    if job is None or start_kwargs.get("run_id"):
        return mlflow.start_run(**start_kwargs), None
    parent = sweep_parent_run(job, experiment_id, kind)
    # The tag MLflow itself sets for nested runs; set directly because start_run(parent_run_id=)
    # requires the parent to be ACTIVE and the parent is FINISHED between jobs.
    tags = {**start_kwargs.pop("tags", {}), **child_tags(job), "mlflow.parentRunId": parent}
    return mlflow.start_run(tags=tags, **start_kwargs), parent
