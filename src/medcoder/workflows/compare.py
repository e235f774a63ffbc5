"""Compare training runs with uncertainty; what ``scripts/compare.py`` calls.

Steps: select runs (``experiment_name`` / tags / sweep parent / explicit ids) -> fetch each run's per-note
predictions (:mod:`medcoder.evaluation.note_predictions`; older runs: rebuilt from their TREC
ranking + the corpus) -> bootstrap CIs and paired permutation tests against the baseline
(:mod:`medcoder.evaluation.comparison`) -> one MLflow run of kind ``comparison`` holding the
leaderboard (Markdown, CSV), ``comparison.json`` and the plot, which are also written atomically
under ``output_dir``.

Why a run of its own: a comparison is a result with inputs (run ids, seeds, resample counts) that
someone will want to find and re-check later, next to the runs it compares.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from medcoder.atomic import AtomicFileSet
from medcoder.errors import ConfigError, MedcoderError
from medcoder.evaluation.comparison import (
    Comparison,
    compare_systems,
    leaderboard_csv,
    leaderboard_markdown,
    plot_comparison,
)
from medcoder.evaluation.note_predictions import (
    NotePredictions,
    from_trec,
    note_predictions_filename,
    read_note_predictions,
)
from medcoder.tracking import log_config, setup_experiment
from medcoder.workflows.factories import build_tracking, config_dict
from medcoder.workflows.jsonsafe import finite

log = logging.getLogger(__name__)

KIND_TAG = "medcoder.kind"
KIND = "comparison"
COMPARED_TAG = "medcoder.compared_runs"
BASELINE_TAG = "medcoder.baseline_run"
PARENT_RUN_TAG = "mlflow.parentRunId"
#: MLflow caps a tag value (8000 characters in MLflow 3); comparison.json always has the full list.
MAX_TAG_CHARS = 5000
FILES = ("leaderboard.md", "leaderboard.csv", "comparison.png", "comparison.json")  # json last: the marker


@dataclass
class CompareResult:
    run_id: str                    # the comparison's own MLflow run
    output_dir: Path
    comparison: Comparison
    files: dict[str, Path]
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why it was left out


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def _tag_filters(tags: Any) -> dict[str, str]:
    """``tags`` as ``{key: value}``: a mapping (``tags={medcoder.model:minilm}``; nested keys from
    ``+tags.a.b=v`` are joined with dots) or a list of ``"key=value"`` strings."""
    if tags is None:
        return {}
    if OmegaConf.is_config(tags):
        tags = OmegaConf.to_container(tags, resolve=True)
    if isinstance(tags, str):
        tags = [tags]
    out: dict[str, str] = {}
    if isinstance(tags, Mapping):
        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for k, v in node.items():
                if isinstance(v, Mapping):
                    walk(v, f"{prefix}{k}.")
                else:
                    out[f"{prefix}{k}"] = str(v)
        walk(tags, "")
        return out
    for item in tags:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"tags: {item!r} is not key=value",
                              hint="write tags={medcoder.model:minilm} or 'tags=[\"medcoder.model=minilm\"]'")
        out[key.strip()] = value.strip()
    return out


def check_compare_config(cfg: DictConfig) -> None:
    """Every check that needs no MLflow store, so a typo costs no download (and no mlflow.db)."""
    if not str(cfg.baseline).strip():  # `baseline: ???` unset raises here, before MLflow is touched
        raise ConfigError("baseline is empty", hint="baseline=<run id of the reference run>")
    metrics = list(cfg.metrics)
    if not metrics:
        raise ConfigError("metrics=[]: nothing to compare", hint="e.g. metrics=[map,micro_f1,p_at_8]")
    for key, value, low in (("bootstrap.n_resamples", cfg.bootstrap.n_resamples, 1),
                            ("permutation.n_resamples", cfg.permutation.n_resamples, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{key}={value!r} must be an integer >= {low}", hint=f"e.g. {key}=9999")
    level = cfg.bootstrap.confidence_level
    if not isinstance(level, float | int) or not 0 < level < 1:
        raise ConfigError(f"bootstrap.confidence_level={level!r} must be in (0, 1)",
                          hint="e.g. bootstrap.confidence_level=0.95")
    if str(cfg.bootstrap.method).lower() not in ("bca", "percentile", "basic"):
        raise ConfigError(f"bootstrap.method={cfg.bootstrap.method!r} is not BCa, percentile or basic",
                          hint="bootstrap.method=BCa")
    if cfg.batch is not None and (not isinstance(cfg.batch, int) or cfg.batch < 1):
        raise ConfigError(f"batch={cfg.batch!r} must be null or an integer >= 1", hint="batch=1000")
    if not isinstance(cfg.random_state, int):
        raise ConfigError(f"random_state={cfg.random_state!r} must be an integer", hint="random_state=0")
    _tag_filters(cfg.tags)
    if "experiment" in cfg:  # e.g. ++experiment=<name>: the key's old name
        raise ConfigError("experiment is not a key of scripts/compare.py (Hydra's experiment group holds the "
                          "training presets)", hint="select the runs of an MLflow experiment with experiment_name=<name>")
    if not (cfg.experiment_name or cfg.tags or cfg.parent or cfg.run_ids):
        raise ConfigError("no runs selected",
                          hint="give run_ids=[<id>,<id>], parent=<sweep run id>, experiment_name=<name> "
                               "or tags={key:value}")


# --------------------------------------------------------------------------------------------
# selecting runs
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def _get_run(client: MlflowClient, run_id: str, what: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"{what}={run_id!r}: no such run in {mlflow.get_tracking_uri()}",
                          hint="copy the id printed by scripts/train.py (run_id=...) or see `mlflow ui`") from exc


def _is_training_run(run: Run) -> bool:
    """Comparisons, sweep parents and other bookkeeping runs carry ``medcoder.kind``; skip them."""
    kind = run.data.tags.get(KIND_TAG, "")
    return not kind and run.data.tags.get("medcoder.sweep_parent") != "true"


def select_runs(client: MlflowClient, cfg: DictConfig) -> tuple[list[Run], set[str]]:
    """The runs to compare, in a stable order, and the ids that were named explicitly.

    Filters (``experiment_name``, ``tags``, ``parent``) combine with AND and select FINISHED training
    runs; ``run_ids`` are added as given (any status: the user asked for them by name).
    """
    explicit = [str(r) for r in (cfg.run_ids or [])]
    runs: dict[str, Run] = {}
    for rid in explicit:
        runs[rid] = _get_run(client, rid, "run_ids")
    tags = _tag_filters(cfg.tags)
    if cfg.experiment_name or tags or cfg.parent:
        clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in tags.items()]
        clauses.append("attributes.status = 'FINISHED'")
        if cfg.experiment_name:
            exp = client.get_experiment_by_name(str(cfg.experiment_name))
            if exp is None:
                names = sorted(e.name for e in client.search_experiments())
                raise ConfigError(f"experiment_name={cfg.experiment_name!r}: no such experiment in "
                                  f"{mlflow.get_tracking_uri()}",
                                  hint=f"have {names}")
            experiment_ids = [exp.experiment_id]
        else:
            experiment_ids = [e.experiment_id for e in client.search_experiments()]
        if cfg.parent:
            parent = _get_run(client, str(cfg.parent), "parent")
            clauses.append(f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}'")
            if not cfg.experiment_name:
                experiment_ids = [parent.info.experiment_id]
        found = client.search_runs(experiment_ids, " and ".join(clauses), max_results=10_000,
                                   order_by=["attributes.start_time ASC"])
        matched = [r for r in found if _is_training_run(r)]
        if not matched:
            what = ", ".join(f"{k}={v}" for k, v in (("experiment_name", cfg.experiment_name), ("tags", tags or None),
                                                     ("parent", cfg.parent)) if v)
            raise ConfigError(f"no FINISHED training runs match {what} in {mlflow.get_tracking_uri()}",
                              hint="check the names in `mlflow ui`, or list runs with run_ids=[...]")
        for run in matched:
            runs.setdefault(run.info.run_id, run)
    return list(runs.values()), set(explicit)


# --------------------------------------------------------------------------------------------
# per-note predictions of a run
# --------------------------------------------------------------------------------------------


def _artifact_names(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def _download(run_id: str, path: str, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def load_run_predictions(client: MlflowClient, run: Run, split: str, dst: Path, *,
                         fallback_to_trec: bool = True) -> NotePredictions:
    """A run's per-note predictions on ``split``: its artifact, else (older runs) its TREC ranking
    plus the gold codes of the corpus named in its ``config.yaml``."""
    rid = run.info.run_id
    names = _artifact_names(client, rid)
    fname = note_predictions_filename(split)
    folder = dst / rid
    if fname in names:
        return read_note_predictions(_download(rid, fname, folder))
    trec = f"codiesp_run_{split}.trec"
    if not fallback_to_trec or trec not in names or not {"labels.json", "config.yaml"} <= names:
        also = f" (nor {trec} with labels.json and config.yaml)" if fallback_to_trec else ""
        raise ConfigError(f"run {rid} has no artifact {fname!r}{also}",
                          hint="re-train it with this version of medcoder, or leave it out of the comparison")
    # Imported here: only old runs need the corpus loaders (datasets, the model factories).
    from medcoder.data import LabelSpace
    from medcoder.workflows.factories import build_corpus

    threshold = run.data.metrics.get("decision_threshold")
    if threshold is None or not math.isfinite(threshold):
        raise ConfigError(f"run {rid} has no metric 'decision_threshold' (needed to rebuild {fname} from {trec})",
                          hint="leave the run out or re-train it")
    train_cfg = OmegaConf.load(_download(rid, "config.yaml", folder))
    label_space = LabelSpace.from_json(_download(rid, "labels.json", folder))
    splits = build_corpus(train_cfg.data)
    if split not in splits:
        raise ConfigError(f"run {rid}: split {split!r} is not in its corpus", hint=f"have {list(splits)}")
    gold = dict(zip(map(str, splits[split]["id"]), splits[split]["codes"], strict=True))
    log.info("run %s has no %s: rebuilt from %s and the corpus of its config", rid, fname, trec)
    return from_trec(_download(rid, trec, folder), gold, label_space.codes, threshold=float(threshold), split=split)


def load_view_predictions(client: MlflowClient, run: Run, split: str, dst: Path) -> dict[str, NotePredictions]:
    """Each view of a fused run alone (``<run id>:<view>``), from its per-view artifacts (none for
    neural-only runs): the views are compared on exactly the notes of the fused system."""
    rid = run.info.run_id
    prefix, suffix = note_predictions_filename(split, "x").split("_x", 1)
    out = {}
    for name in sorted(_artifact_names(client, rid)):
        if name.startswith(prefix + "_") and name.endswith(suffix):
            view = name[len(prefix) + 1: -len(suffix)]
            out[f"{rid}:{view}"] = read_note_predictions(_download(rid, name, dst / rid))
    return out


# --------------------------------------------------------------------------------------------
# the workflow
# --------------------------------------------------------------------------------------------


def _label(run: Run) -> str:
    name = run.info.run_name or ""
    return f"{name} ({run.info.run_id[:8]})" if name else run.info.run_id


def compare(cfg: DictConfig) -> CompareResult:
    """Select runs, compute CIs and paired tests, log the comparison run, write its files."""
    check_compare_config(cfg)
    experiment_id = setup_experiment(build_tracking(cfg))
    client = MlflowClient()
    runs, explicit = select_runs(client, cfg)
    baseline = str(cfg.baseline)
    if baseline.split(":", 1)[0] not in {r.info.run_id for r in runs}:
        _get_run(client, baseline.split(":", 1)[0], "baseline")  # an unknown id is said as such
        raise ConfigError(f"baseline={baseline} is not among the {len(runs)} selected runs",
                          hint="add it: run_ids=[...,<baseline id>], or pick one of the selected runs")
    systems: dict[str, NotePredictions] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            rid = run.info.run_id
            try:
                systems[rid] = load_run_predictions(client, run, str(cfg.split), Path(tmp),
                                                    fallback_to_trec=bool(cfg.fallback_to_trec))
                if cfg.get("views", False):
                    systems.update(load_view_predictions(client, run, str(cfg.split), Path(tmp)))
            except MedcoderError as exc:
                if rid in explicit or rid == baseline:
                    raise
                skipped[rid] = exc.message  # matched by a filter: leave it out, say so
                log.warning("left out: %s", exc.message)
    if len(systems) < 2:
        raise ConfigError(f"{len(systems)} run(s) with per-note predictions; a comparison needs at least 2",
                          hint="select more runs" + (f" ({len(skipped)} were left out, see the log)" if skipped else ""))
    for rid, run in ((r.info.run_id, r) for r in runs):
        if rid in systems and run.info.status != "FINISHED":
            log.warning("run %s is %s, not FINISHED", rid, run.info.status)
    comp = compare_systems(
        systems, baseline, list(cfg.metrics), n_resamples=int(cfg.bootstrap.n_resamples),
        permutation_resamples=int(cfg.permutation.n_resamples),
        confidence_level=float(cfg.bootstrap.confidence_level), method=str(cfg.bootstrap.method),
        random_state=int(cfg.random_state), batch=None if cfg.batch is None else int(cfg.batch),
    )
    labels = {r.info.run_id: _label(r) for r in runs}
    labels.update({k: f"{labels[k.split(':', 1)[0]]} / {k.split(':', 1)[1]} alone" for k in systems if ":" in k})

    report = comp.to_dict()
    report.update({"labels": {k: labels[k] for k in comp.systems}, "skipped": skipped,
                   "sources": {k: systems[k].source for k in comp.systems}})

    ids = ",".join(comp.systems)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"compare-{len(comp.systems)}-runs", tags={
        KIND_TAG: KIND, BASELINE_TAG: baseline,
        COMPARED_TAG: ids if len(ids) <= MAX_TAG_CHARS else ids[: MAX_TAG_CHARS - 3] + "...",
    }) as run:
        log_config(config_dict(cfg))
        mlflow.log_metrics({"n_runs": len(comp.systems), "n_notes": comp.n_notes})
        out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.paths.output_dir) / "comparisons" / run.info.run_id
        out.mkdir(parents=True, exist_ok=True)
        report["comparison_run_id"] = run.info.run_id
        paths = {name: out / name for name in FILES}
        fig = plot_comparison(comp, labels)
        with AtomicFileSet(list(paths.values())) as files:
            files.write_text(paths["leaderboard.md"], leaderboard_markdown(comp, labels))
            files.write_text(paths["leaderboard.csv"], leaderboard_csv(comp, labels))
            fig.savefig(files.open(paths["comparison.png"], "wb"), format="png", dpi=120)
            files.write_text(paths["comparison.json"], json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
        for path in paths.values():
            mlflow.log_artifact(str(path))
    log.info("compared %d runs on %d %s notes (baseline %s); %s", len(comp.systems), comp.n_notes, comp.split,
             baseline, out)
    return CompareResult(run.info.run_id, out, comp, paths, skipped)
