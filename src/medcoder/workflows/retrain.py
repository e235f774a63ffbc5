"""Reviews become training data: retrain a ``@candidate`` on reviewed notes; what
``scripts/retrain.py`` calls.

The chain (docs/retrain.md), each step the existing workflow's own function:

1. **Split** the reviewed notes of a review export (``labels.jsonl``) by note into a held-out slice
   and a training part (:func:`medcoder.data.splits.split_reviewed`: a per-note seeded draw, so a
   note keeps its side across retrains). Only *verified* notes (the export's ``verified``: every
   auto-accepted code of the note decided by a reviewer or audited) may be held out; the others
   only train. Both lists' sha256 and sizes go to MLflow; never text. The run's
   ``retrain/reviewed_split.json`` lists (ids only) the held-out notes, this run's training part, and
   every reviewed note trained on along the warm-start chain (:data:`CHAIN_KEY`), which the next
   retrain never holds out.
2. **Train** (:func:`medcoder.workflows.train.train`) the configured recipe on the original train
   split + the training part, warm-started from the serving model, under certification design
   ``reviewed``: the tuning dev is the recipe's own, the ``certify`` split is the held-out slice.
3. **Calibrate** (:func:`medcoder.workflows.calibrate.calibrate`): calibrator and decision
   threshold on the tuning dev, τ certified on the held-out reviewed notes only.
4. **Export** (:func:`medcoder.workflows.export.export_run`): the bundle, a new registered version,
   alias ``@candidate`` (never ``@champion``).
5. **Compare** candidate and serving model on the same held-out notes, both scored by
   ``Coder.load(...).probabilities`` (the one inference path), with
   :func:`medcoder.evaluation.comparison.compare_systems` (bootstrap CIs, paired permutation
   tests); the comparison is attached to the candidate's run. Promotion stays a person's decision
   (``scripts/promote.py``).

Why one workflow rather than a documented chain of scripts: the honesty of the result rests on the
held-out slice being the same notes in steps 2-5 and never trained on; here it is computed once,
checked disjoint in code before anything trains, pinned by the export file's digest (calibrate and
export rebuild the partition from the run's config and refuse a changed file), and the serving
model is pinned to one registry version for both the warm start and the comparison.

Every input is checked before the first MLflow run is opened (bad input: one line, exit 2, nothing
written): the config, the serving model, the export, the split, the partition.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from medcoder.atomic import AtomicFileSet
from medcoder.data.loaders import load_reviewed
from medcoder.data.splits import (
    CARVE_DESIGNS,
    CERTIFY_SPLIT,
    REVIEWED_DESIGN,
    ReviewedSplit,
    split_reviewed,
)
from medcoder.errors import BundleError, ConfigError, DataError
from medcoder.evaluation.comparison import (
    Comparison,
    check_metric,
    compare_systems,
    leaderboard_markdown,
)
from medcoder.evaluation.note_predictions import NotePredictions, build_note_predictions
from medcoder.inference.bundle import read_manifest
from medcoder.inference.coder import Coder, resolve_bundle
from medcoder.modeling.views import NEURAL
from medcoder.tracking import setup_experiment
from medcoder.tracking.registry import (
    CHAMPION,
    check_alias,
    check_registered_model_name,
    tag_version,
)
from medcoder.training.warm_start import check_warm_start_ref
from medcoder.workflows.compare import check_compare_config
from medcoder.workflows.config_checks import check_train_config, fusion_views
from medcoder.workflows.factories import build_corpus, build_tracking, config_dict
from medcoder.workflows.jsonsafe import finite

log = logging.getLogger(__name__)

__all__ = ["RETRAIN_KEYS", "RetrainResult", "ServingModel", "retrain", "score_held_out"]

#: Top-level keys of ``configs/retrain.yaml`` that are not ``scripts/train.py``'s: they are removed
#: from the training run's config (the ``calibration``/``routing`` groups go to calibration).
RETRAIN_KEYS = ("reviewed", "serving", "holdout", "registered_model_name", "candidate_alias", "batch_size",
                "compare", "calibration", "routing")
#: Metrics that read the decision threshold (a note's predicted set): exact from per-note records
#: only under one global threshold (medcoder.evaluation.note_predictions).
_THRESHOLD_METRICS = ("micro_f1", "micro_precision", "micro_recall")
#: Where the comparison goes inside the candidate's run (artifacts) and its output folder.
ARTIFACT_DIR = "retrain"
FILES = ("comparison.md", "comparison.json")  # json last: the completion marker
SPLIT_FILE = "reviewed_split.json"
#: The key of :data:`SPLIT_FILE` listing every reviewed note trained on along the warm-start chain:
#: the serving model's own list plus this run's training part. A later retrain never holds them out.
CHAIN_KEY = "trained_cumulative"


@dataclass(frozen=True)
class ServingModel:
    """The model that serves now, pinned: for ``models:/name@alias`` the version the alias pointed
    to when the retrain started (warm start and comparison use that version even if the alias
    moves meanwhile)."""

    ref: str
    bundle_dir: Path
    bundle_id: str
    source_run_id: str | None
    registered_name: str | None = None
    version: str | None = None

    @property
    def load_ref(self) -> str:
        """What ``Coder.load`` reads: the pinned registry version, or the folder."""
        if self.registered_name and self.version:
            return f"models:/{self.registered_name}/{self.version}"
        return str(self.bundle_dir)

    @property
    def label(self) -> str:
        return f"serving {self.load_ref}"


@dataclass
class RetrainResult:
    run_id: str
    registered_name: str | None
    version: str | None
    alias: str
    bundle_dir: Path
    split: ReviewedSplit
    serving: ServingModel
    comparison: Comparison
    files: dict[str, Path]
    dropped_metrics: list[str] = field(default_factory=list)

    @property
    def promote_command(self) -> str:
        """What a person runs after reading the comparison (a retrain never promotes)."""
        return _promote(self.registered_name, self.version)


# --------------------------------------------------------------------------------------------
# the door: every model-free check


@dataclass(frozen=True)
class _Settings:
    reviewed: str
    serving: str
    holdout_fraction: float
    holdout_min_notes: int
    holdout_seed: int
    registered_model_name: str
    alias: str
    batch_size: int
    compare: dict[str, Any]
    tuning: str
    neural: bool


def _settings(cfg: DictConfig) -> _Settings:
    """The retrain-only keys, checked (one line each) before anything is read or opened."""
    for key in ("reviewed", "serving"):
        value = cfg.get(key)
        if value is None or not str(value).strip():
            raise ConfigError(f"{key} is required", hint="python scripts/retrain.py reviewed=<export>/labels.jsonl "
                                                         "serving=models:/<name>@champion")
    holdout = dict(OmegaConf.to_container(cfg.holdout, resolve=True)) if cfg.get("holdout") is not None else {}
    unknown = sorted(set(holdout) - {"fraction", "min_notes", "seed"})
    if unknown:
        raise ConfigError(f"holdout.{unknown[0]} is not a key", hint="holdout has fraction, min_notes and seed")
    alias = check_alias("candidate_alias", cfg.get("candidate_alias", "candidate"))
    if alias.lower() == CHAMPION:
        raise ConfigError(f"candidate_alias={alias}: a retrain never moves @{CHAMPION}",
                          hint="promotion is a person's decision: scripts/promote.py after reading the comparison")
    name = check_registered_model_name("registered_model_name", cfg.get("registered_model_name", "medcoder-icd10"))
    batch = cfg.get("batch_size", 8)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch_size={batch!r} is not valid", hint="an integer >= 1")
    if cfg.get("max_samples_per_split"):
        raise ConfigError(f"max_samples_per_split={cfg.max_samples_per_split}: a retrain uses every note",
                          hint="set max_samples_per_split=null (a cut would drop the reviewed training notes)")
    cert = dict(OmegaConf.to_container(cfg.certification, resolve=True)) if cfg.get("certification") else {}
    tuning = str(cert.get("design", "none"))
    if tuning not in CARVE_DESIGNS:
        raise ConfigError(f"certification.design={tuning}: a retrain sets design {REVIEWED_DESIGN} itself",
                          hint=f"give the recipe's tuning design: one of {', '.join(CARVE_DESIGNS)}")
    compare = dict(OmegaConf.to_container(cfg.compare, resolve=True)) if cfg.get("compare") is not None else {}
    # scripts/compare.py's own checks, on a stand-in selection (the systems are fixed here).
    check_compare_config(OmegaConf.create({**compare, "baseline": "serving", "run_ids": ["candidate", "serving"],
                                           "tags": None, "parent": None, "experiment_name": None}))
    for metric in compare["metrics"]:
        check_metric(str(metric))
    plain = config_dict(cfg)
    return _Settings(
        reviewed=str(cfg.reviewed), serving=str(cfg.serving),
        holdout_fraction=holdout.get("fraction", 0.3), holdout_min_notes=holdout.get("min_notes", 20),
        holdout_seed=holdout.get("seed", 0), registered_model_name=name, alias=alias, batch_size=int(batch),
        compare=compare, tuning=tuning, neural=NEURAL in (fusion_views(plain) or []),
    )


# --------------------------------------------------------------------------------------------
# the serving model


def resolve_serving(ref: str) -> ServingModel:
    """The serving model, pinned: ``models:/name@alias`` (or ``models:/name/<n>``) -> its version
    number and verified bundle folder (the bundle cache); a folder -> itself, verified."""
    if ref.startswith("models:/"):
        try:
            name, version = _registered_version(ref)
        except MlflowException as exc:
            raise BundleError(f"serving={ref}: not found in {mlflow.get_tracking_uri()} "
                              f"({str(exc).splitlines()[0]})",
                              hint="check the name and alias (scripts/promote.py) and tracking.uri") from exc
        if version is None:
            raise ConfigError(f"serving={ref} names no version", hint="use models:/<name>@champion or models:/<name>/<n>")
        pinned = f"models:/{name}/{version}"
        folder = resolve_bundle(pinned)
        manifest = read_manifest(folder)
        return ServingModel(ref, folder, manifest.bundle_id, manifest.source_run_id, name, version)
    if ref.startswith(("runs:/", "mlflow-artifacts:/")):
        raise ConfigError(f"serving={ref}: give a registered model or a bundle folder",
                          hint="serving=models:/<name>@champion or serving=<bundle folder>")
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise BundleError(f"serving={folder}: no such directory",
                          hint="give the bundle folder that serves now, or models:/<name>@champion")
    from medcoder.inference.bundle import verify_bundle

    manifest = verify_bundle(folder)
    return ServingModel(ref, folder.resolve(), manifest.bundle_id, manifest.source_run_id)


def _registered_version(ref: str) -> tuple[str, str | None]:
    """``(name, version)`` of ``models:/name@alias`` or ``models:/name/<n>`` (None: another form)."""
    rest = ref[len("models:/"):].rstrip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        return name, str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    name, _, version = rest.rpartition("/")
    return (name, version) if name and version.isdigit() else (rest, None)


def _serving_training_ids(serving: ServingModel) -> set[str]:
    """Reviewed notes the serving model was trained on along its whole warm-start chain, where it
    came from a retrain: its source run's ``retrain/reviewed_split.json`` (:data:`CHAIN_KEY`, the
    cumulative list; ``train`` in a file written before the list existed); empty when the run has no
    such file (not a retrained model) or the bundle names no source run.

    Why a failure to read it is an error, not "nothing trained": a held-out note the serving model
    (or a model it was warm-started from) trained on would certify the candidate on notes its
    weights have seen, and an unreachable store or a run of another store must not pass for that.
    """
    if not serving.source_run_id:
        return set()
    where = f"serving={serving.ref}: its source run {serving.source_run_id} ({ARTIFACT_DIR}/{SPLIT_FILE})"
    hint = "point tracking.uri at the store that holds the serving model's run"
    try:
        listed = {a.path for a in mlflow.MlflowClient().list_artifacts(serving.source_run_id, ARTIFACT_DIR)}
        if f"{ARTIFACT_DIR}/{SPLIT_FILE}" not in listed:
            return set()  # not a retrained model
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=serving.source_run_id,
                                                       artifact_path=f"{ARTIFACT_DIR}/{SPLIT_FILE}", dst_path=tmp)
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except MlflowException as exc:
        raise BundleError(f"{where}: cannot read the reviewed notes it trained on ({str(exc).splitlines()[0][:200]})",
                          hint=hint) from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{where}: unreadable ({type(exc).__name__})", hint=hint) from None
    ids = raw.get(CHAIN_KEY, raw.get("train", [])) if isinstance(raw, dict) else None
    if not isinstance(ids, list):
        raise BundleError(f"{where}: no list of trained note ids", hint=hint)
    return {str(i) for i in ids}


# --------------------------------------------------------------------------------------------
# the stages' configs


def _train_config(cfg: DictConfig, s: _Settings, reviewed_path: Path, digest: str, serving: ServingModel) -> DictConfig:
    """``scripts/train.py``'s config of the candidate: the recipe as composed, certification design
    ``reviewed`` (the recipe's design kept as ``tuning``), warm-started from the serving bundle."""
    plain = config_dict(cfg)
    for key in RETRAIN_KEYS:
        plain.pop(key, None)
    cert = dict(plain.get("certification") or {})
    plain["certification"] = {
        "design": REVIEWED_DESIGN, "tuning": s.tuning, "fraction": float(cert.get("fraction", 0.2)),
        "seed": int(cert.get("seed", plain.get("seed", 0))), "reviewed": str(reviewed_path), "reviewed_sha256": digest,
        "holdout_fraction": float(s.holdout_fraction), "holdout_min_notes": int(s.holdout_min_notes),
        "holdout_seed": int(s.holdout_seed),
    }
    if s.neural:
        plain["warm_start"] = str(serving.bundle_dir)
    else:
        log.warning("fusion.views=%s has no neural view: the candidate's views are fitted afresh (nothing to "
                    "warm-start)", fusion_views(plain))
        plain["warm_start"] = None
    plain["run_name"] = f"{plain.get('run_name') or 'medcoder'}-retrain"
    return OmegaConf.create(plain)


def _calibrate_config(cfg: DictConfig, s: _Settings, run_id: str) -> DictConfig:
    plain = config_dict(cfg)
    return OmegaConf.create({
        "paths": plain["paths"], "tracking": plain["tracking"], "calibration": plain["calibration"],
        "routing": plain["routing"], "run_id": run_id, "calibration_split": "dev", "evaluation_split": "test",
        "data": None, "batch_size": s.batch_size, "use_state_cache": False,
    })


def _export_config(cfg: DictConfig, s: _Settings, run_id: str, registered_name: str) -> DictConfig:
    plain = config_dict(cfg)
    return OmegaConf.create({
        "paths": plain["paths"], "tracking": plain["tracking"], "run_id": run_id,
        "output_dir": str(Path(plain["paths"]["output_dir"]) / "bundles" / run_id), "overwrite": False,
        "mlflow_model": {"log": True, "registered_model_name": registered_name, "alias": s.alias, "promote": False},
        "quantize": None, "quantize_max_map_drop": None, "batch_size": s.batch_size,
    })


# --------------------------------------------------------------------------------------------
# comparison on the held-out notes


def score_held_out(ref: str | Path, ids: list[str], texts: list[str], gold: list[list[str]], *,
                   batch_size: int = 8) -> tuple[NotePredictions, str | None]:
    """A bundle's per-note predictions on the held-out notes, scored by ``Coder.load(ref)``
    (calibrated probabilities: the one inference path); the decision threshold is the bundle's.

    Returns the predictions and the bundle's threshold mode where it is not one global threshold
    (then threshold metrics are not exact from per-note records, and the caller drops them)."""
    coder = Coder.load(ref)
    probs = coder.probabilities(texts, batch_size=batch_size)
    rule = coder.policy.decision_threshold
    threshold = float(getattr(rule, "global_threshold_", 0.5))
    mode = getattr(rule, "mode", "global")
    preds = build_note_predictions(ids, probs, coder.label_space.codes, gold, threshold=threshold, split=CERTIFY_SPLIT)
    return preds, (None if mode == "global" else str(mode))


# --------------------------------------------------------------------------------------------
# the workflow


def retrain(cfg: DictConfig) -> RetrainResult:
    """Split the reviewed notes, train + calibrate + export a ``@candidate``, compare it with the
    serving model on the held-out reviewed notes, attach the comparison to the candidate's run."""
    from medcoder.workflows.calibrate import calibrate
    from medcoder.workflows.export import export_run
    from medcoder.workflows.train import train

    # -- 1. every check before anything is written ------------------------------------------
    s = _settings(cfg)
    notes, reviewed_path, digest = load_reviewed(s.reviewed)
    # Only verified notes (every auto-accepted code decided by a reviewer or audited) are held out.
    split = split_reviewed(list(notes["id"]), fraction=s.holdout_fraction, min_notes=s.holdout_min_notes,
                           seed=s.holdout_seed, source=f"reviewed={reviewed_path}", verified=list(notes["verified"]))
    setup_experiment(build_tracking(cfg))
    serving = resolve_serving(s.serving)
    chain = _serving_training_ids(serving)
    trained_before = chain & set(split.held_out)
    if trained_before:
        raise DataError(f"reviewed={reviewed_path}: {len(trained_before)} held-out notes trained the serving model "
                        f"or a model it was warm-started from (its run {serving.source_run_id} lists them as "
                        "training notes)",
                        hint="keep holdout.fraction and holdout.seed of the earlier retrain; a note that trained "
                             "while unverified and is verified now cannot certify either: leave it out of the export")
    registered_name = serving.registered_name or s.registered_model_name
    train_cfg = _train_config(cfg, s, reviewed_path, digest, serving)
    check_train_config(train_cfg)
    if train_cfg.warm_start:
        check_warm_start_ref(str(train_cfg.warm_start))  # a serving bundle without model/ fails here, not after
    # The partition train, calibrate and export will all rebuild from the run's config: built here
    # first, so a held-out note that is also a train/dev note is refused before anything trains.
    corpus = build_corpus(train_cfg.data, train_cfg.certification)
    certify = corpus[CERTIFY_SPLIT]
    if sorted(map(str, certify["id"])) != list(split.held_out):  # the certify split is the held-out slice
        raise RuntimeError("the certify split is not the held-out slice of the reviewed notes")
    log.info("reviewed notes: %d held out (certify + compare), %d join %d train notes; serving %s (bundle %s)",
             len(split.held_out), len(split.train), len(corpus["train"]) - len(split.train), serving.load_ref,
             serving.bundle_id)

    # -- 2-4. train, calibrate, export -------------------------------------------------------
    run = train(train_cfg)
    run_id = run.run_id
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"reviewed.{k}": v for k, v in split.to_dict().items()})
        mlflow.log_params({"reviewed.file_sha256": digest, "reviewed.n_notes": len(notes)})
        mlflow.set_tags({"medcoder.retrain.serving": serving.load_ref, "medcoder.retrain.serving_bundle_id":
                         serving.bundle_id, "medcoder.retrain.held_out_sha256": split.held_out_sha256})
        # Ids only (never text): what a later retrain checks its held-out slice against.
        mlflow.log_dict({"held_out": list(split.held_out), "train": list(split.train),
                         CHAIN_KEY: sorted(chain | set(split.train)),
                         **{k: v for k, v in split.to_dict().items()}}, f"{ARTIFACT_DIR}/{SPLIT_FILE}")
    calibrate(_calibrate_config(cfg, s, run_id))
    exported = export_run(_export_config(cfg, s, run_id, registered_name))

    # -- 5. compare on the held-out notes ----------------------------------------------------
    ids, texts = [str(i) for i in certify["id"]], list(certify["text"])
    gold = [list(c) for c in certify["codes"]]
    candidate, cand_mode = score_held_out(exported.bundle_dir, ids, texts, gold, batch_size=s.batch_size)
    baseline, base_mode = score_held_out(serving.load_ref, ids, texts, gold, batch_size=s.batch_size)
    metrics = [str(m) for m in s.compare["metrics"]]
    dropped: list[str] = []
    if cand_mode or base_mode:
        dropped = [m for m in metrics if m in _THRESHOLD_METRICS]
        metrics = [m for m in metrics if m not in _THRESHOLD_METRICS]
        log.warning("a per-code decision threshold: %s left out of the comparison (exact under one threshold only)",
                    dropped)
        if not metrics:
            raise ConfigError("compare.metrics: only threshold metrics, and a bundle uses per-code thresholds",
                              hint="add map or p_at_8 to compare.metrics")
    boot, perm = s.compare["bootstrap"], s.compare["permutation"]
    comp = compare_systems({"candidate": candidate, "serving": baseline}, "serving", metrics,
                           n_resamples=int(boot["n_resamples"]), permutation_resamples=int(perm["n_resamples"]),
                           confidence_level=float(boot["confidence_level"]), method=str(boot["method"]),
                           random_state=int(s.compare["random_state"]),
                           batch=None if s.compare.get("batch") is None else int(s.compare["batch"]))
    version = exported.registered_version
    labels = {"candidate": f"candidate {registered_name} v{version} (run {run_id[:8]})" if version
              else f"candidate (run {run_id[:8]})", "serving": serving.label}
    report = {**comp.to_dict(), "labels": labels, "dropped_metrics": dropped,
              "held_out": {"n_notes": len(ids), "sha256": split.held_out_sha256},
              "trained_on_reviewed": {"n_notes": len(split.train), "sha256": split.train_sha256},
              "reviewed_file_sha256": digest, "candidate": {"run_id": run_id, "registered_name": registered_name,
                                                            "version": version, "alias": s.alias,
                                                            "bundle_id": exported.manifest.bundle_id},
              "serving": {"ref": serving.ref, "pinned": serving.load_ref, "bundle_id": serving.bundle_id},
              "note": "Both models scored by Coder.load(...).probabilities on the held-out reviewed notes; the "
                      "candidate's calibrator and decision threshold were fitted on its tuning dev, its tau "
                      "certified on these notes, so the ranking and threshold metrics here are out-of-sample "
                      "for both models."}
    heading = (f"# Retrained candidate vs serving model\n\nHeld-out reviewed notes: {len(ids)} "
               f"(sha256 of ids {split.held_out_sha256[:12]}...); the candidate trained on {len(split.train)} other "
               f"reviewed notes. Promote only after reading this: `{_promote(registered_name, version)}`.\n\n")
    out = Path(str(cfg.paths.output_dir)) / "runs" / run_id / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    with AtomicFileSet(list(paths.values())) as files:
        files.write_text(paths["comparison.md"], heading + leaderboard_markdown(comp, labels))
        files.write_text(paths["comparison.json"], json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    with mlflow.start_run(run_id=run_id):
        for path in paths.values():
            mlflow.log_artifact(str(path), ARTIFACT_DIR)
        first = comp.results["candidate"][metrics[0]]
        mlflow.log_metrics({f"held_out_{m}": comp.results["candidate"][m].estimate.value for m in metrics}
                           | {f"held_out_serving_{m}": comp.results["serving"][m].estimate.value for m in metrics}
                           | ({f"held_out_delta_{metrics[0]}": first.delta.value} if first.delta else {}))
    if version:
        tag_version(registered_name, version, {"medcoder.retrain.held_out_sha256": split.held_out_sha256,
                                               "medcoder.retrain.serving": serving.load_ref})
    return RetrainResult(run_id, registered_name if version else None, version, s.alias, exported.bundle_dir, split,
                         serving, comp, paths, dropped)


def _promote(name: str | None, version: str | None) -> str:
    if name and version:
        return f"python scripts/promote.py registered_model_name={name} version={version}"
    return "no registered version: deploy the bundle folder by hand"
