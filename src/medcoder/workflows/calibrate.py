"""Calibrate a trained run and choose its routing policy; what ``scripts/calibrate.py`` calls.

Steps: load the run's model -> score the calibration split (dev) and the evaluation split
(test) -> fit calibrator -> decision threshold -> tau_accept with the precision guarantee (LTT)
-> report ECE/Brier before/after and routing quality on test -> log all to the same MLflow run.

Every config group is turned into objects once, at the door (:func:`calibrate`): the calibrator,
and a :class:`~medcoder.routing.RoutingPolicy` holding its decision-threshold settings, rules and
:class:`~medcoder.calibration.RiskTargets` (``medcoder.workflows.factories``). Below it nothing
reads the config. Scoring (:func:`score_splits`) and fitting (:func:`fit_calibration`) are separate
functions so that ``scripts/export.py quantize=int8`` re-fits a quantised bundle's calibration with
exactly these steps on its own scores (:meth:`CalibrationPlan.from_calibration_json` rebuilds the
objects from the run's ``calibration.json`` with their own ``from_dict``), instead of a second copy.

One population (issue 19): the splits are scored by the inference path's own function
(:func:`~medcoder.inference.coder.score_for_routing`, with the policy's ``evidence_top_k``), and the
routing inputs of both splits come from :func:`~medcoder.inference.coder.routing_inputs`, as in
``Coder.predict``. So every rule, ``no_evidence`` included, removes the same codes before
Learn-then-Test, in the test evaluation and in the bundle; ``calibration.json`` records the set of
(note, code) pairs certification counted (``certified_accepted``: count and digest,
:func:`accepted_pairs_sha256`) so a bundle's predictions on the calibration notes can be checked
against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from datasets import DatasetDict
from omegaconf import DictConfig

from medcoder.atomic import atomic_write_text
from medcoder.calibration.calibrators import BaseCalibrator, make_calibrator
from medcoder.calibration.plots import plot_reliability
from medcoder.calibration.report import calibration_report
from medcoder.calibration.risk_control import AcceptThresholdResult
from medcoder.data import LabelSpace
from medcoder.data.splits import ALL_LABELS_DESIGN, CERTIFY_SPLIT
from medcoder.errors import ConfigError
from medcoder.inference.coder import (
    DEFAULT_MAX_NOTE_CHARS,
    ScoredNotes,
    routing_inputs,
    score_for_routing,
)
from medcoder.modeling import HybridScorer
from medcoder.modeling.hybrid import TUNING_MODEL_DIR
from medcoder.modeling.scoring import sigmoid
from medcoder.modeling.stacker import rank_in_note
from medcoder.routing.evaluation import accept_frontier, precision_coverage_curve, routing_metrics
from medcoder.routing.plots import plot_precision_coverage
from medcoder.routing.policy import DEFAULT_EVIDENCE_TOP_K, RoutingPolicy
from medcoder.tracking import flatten, setup_experiment
from medcoder.tracking.artifacts import download_run
from medcoder.tracking.sweeps import current_sweep_job, start_child_or_run, update_sweep_summary
from medcoder.workflows.config_checks import check_calibrate_config
from medcoder.workflows.factories import (
    build_calibrator,
    build_corpus,
    build_routing,
    build_tracking,
    certification_settings,
    config_dict,
)

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1


@dataclass
class CalibrationResult:
    run_id: str
    metrics: dict[str, float]
    calibration: dict[str, Any]
    message: str


def truncated_by_length(texts: Sequence[str]) -> np.ndarray:
    """Notes the inference path cuts before scoring (longer than ``Coder.max_note_chars``, by
    default :data:`~medcoder.inference.coder.DEFAULT_MAX_NOTE_CHARS`) and flags ``truncated``."""
    return np.array([len(t) > DEFAULT_MAX_NOTE_CHARS for t in texts], dtype=bool)


def _split_arrays(split: Any, label_space: LabelSpace, notes: ScoredNotes) -> dict[str, np.ndarray]:
    codes = list(split["codes"])
    return {
        "y": label_space.encode(codes),
        "truncated": notes.truncated,
        "empty": notes.empty,
        "n_gold": np.array([len(set(c)) for c in codes], dtype=float),
    }


def accepted_pairs_sha256(pairs: Iterable[tuple[str, str]]) -> str:
    """A digest of a set of auto-accepted ``(note id, code)`` pairs (order and repeats ignored):
    what ``calibration.json`` records of the set certification counted, so the set a bundle
    accepts on the same notes can be compared with it without storing note ids in the file."""
    lines = sorted({f"{note_id}\t{code}" for note_id, code in pairs})
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


#: Candidate codes per note for the decision-range calibration report.
CANDIDATE_TOP_K = 15


@dataclass
class ScoredSplits:
    """The calibration and evaluation splits scored by one scorer: what :func:`fit_calibration` reads."""

    splits: DatasetDict
    logits: dict[str, np.ndarray]
    notes: dict[str, ScoredNotes]
    arrays: dict[str, dict[str, np.ndarray]]
    evidence_top_k: int = DEFAULT_EVIDENCE_TOP_K

    def with_split(self, other: ScoredSplits) -> ScoredSplits:
        """These splits plus ``other``'s (scored by another model, e.g. a refitted run's tuning model)."""
        if other.evidence_top_k != self.evidence_top_k:
            raise ValueError(f"evidence_top_k {other.evidence_top_k} != {self.evidence_top_k}")
        return ScoredSplits(DatasetDict({**self.splits, **other.splits}), {**self.logits, **other.logits},
                            {**self.notes, **other.notes}, {**self.arrays, **other.arrays}, self.evidence_top_k)


def score_splits(hybrid: HybridScorer, corpus: DatasetDict, names: tuple[str, ...], label_space: LabelSpace, *,
                 limit: int | None = None, batch_size: int = 8, cache_dir: Path | None = None,
                 progress: bool = True, evidence_top_k: int = DEFAULT_EVIDENCE_TOP_K) -> ScoredSplits:
    """Take ``names`` (calibration, evaluation) of ``corpus`` (first ``limit`` notes each) and
    score them as ``Coder.predict`` scores notes (:func:`~medcoder.inference.coder.score_for_routing`):
    every view of ``hybrid``, fused, with the evidence ``evidence_top_k`` gives (the policy's; the
    ``no_evidence`` rule reads it), each note cut at ``Coder.max_note_chars``'s default.

    ``cache_dir`` is ignored (kept for callers): the frozen-encoder states cached by training are
    float16, so their scores differ from the inference path's (by up to ~2e-3 in a logit), and a
    τ certified on them would not be certified for the bundle's. ``batch_size`` should be the one
    the bundle predicts with (``Coder.predict``'s default, 8): the encoder's float results may
    depend on which chunks share a batch.

    A note is ``truncated`` (routed to review, so never among the codes that certify τ) where the
    inference path flags it: the neural view read only its first ``max_chunks`` chunks, or it is
    longer than ``Coder.max_note_chars`` (:func:`truncated_by_length`).
    """
    if cache_dir is not None:
        log.warning("calibration scores notes as the bundle will (no state cache: cached float16 states give "
                    "other scores); ignoring cache_dir=%s", cache_dir)
    splits = corpus
    for name in names:
        if name not in splits:
            raise ConfigError(f"calibration split {name!r} is not in the corpus", hint=f"have {list(splits)}")
    splits = DatasetDict({
        n: splits[n].select(range(min(len(splits[n]), int(limit)))) if limit else splits[n]
        for n in names
    })
    logits, notes, arrays = {}, {}, {}
    for n in splits:
        notes[n] = score_for_routing(hybrid, list(splits[n]["text"]), evidence_top_k=evidence_top_k,
                                     batch_size=batch_size, progress=progress, max_note_chars=DEFAULT_MAX_NOTE_CHARS)
        logits[n] = notes[n].fused.logits
        arrays[n] = _split_arrays(splits[n], label_space, notes[n])
    return ScoredSplits(splits, logits, notes, arrays, evidence_top_k)


@dataclass
class FittedCalibration:
    """What :func:`fit_calibration` fitted and measured (``calibration`` is ``calibration.json``)."""

    calibration: dict[str, Any]
    metrics: dict[str, float]
    result: AcceptThresholdResult
    curve: Any
    reports: dict[str, dict[str, Any]]
    #: ``(n_notes, n_codes)`` of the calibration split: the pairs Learn-then-Test counted as accepted
    #: at the certified τ (all False when none was certified); what the bundle accepts on those notes.
    certified: np.ndarray | None = None


@dataclass
class CalibrationPlan:
    """What :func:`fit_calibration` fits, built once: an unfitted calibrator and an unfitted
    routing policy (decision-threshold settings, rules, :class:`RiskTargets`)."""

    calibrator: BaseCalibrator
    policy: RoutingPolicy

    @classmethod
    def from_calibration_json(cls, calibration: dict[str, Any]) -> CalibrationPlan:
        """The procedure a ``calibration.json`` was fitted with, unfitted again: refitting it on
        other scores (a quantised model's) repeats the same procedure, not a default one. Files
        written before ``min_coverage`` was recorded used none (0.0; a warning says so)."""
        cal, targets = calibration["calibrator"], calibration["targets"]
        if "min_coverage" not in targets:
            log.warning("calibration.json records no routing.min_coverage (written before it was recorded); "
                        "refitting with 0.0")
        policy = RoutingPolicy.from_dict({**calibration["policy"], "targets": targets}).unfitted()
        return cls(make_calibrator(cal["method"], **dict(cal.get("params") or {})), policy)


def fit_calibration(plan: CalibrationPlan, scored: ScoredSplits, label_space: LabelSpace, *, run_id: str,
                    cal_name: str, eval_name: str, cert_name: str | None = None,
                    cal_space: LabelSpace | None = None) -> FittedCalibration:
    """Fit calibrator and decision threshold on ``cal_name``, certify tau_accept (LTT) on
    ``cert_name`` (default ``cal_name``: the design ``none`` of runs trained before issue 19);
    report on ``eval_name``.

    Why two splits: labels that tuned the calibrator or the decision threshold (which fixes the
    predicted codes and so LTT's start) are not untouched, and a guarantee certified on them is
    weaker than stated. The training run's ``certification`` design carves ``certify`` out of
    dev or moves tuning to an inner train split (:func:`medcoder.data.splits.carve_certification`).

    Returns ``calibration.json``'s content and the metrics :func:`calibrate` logs; nothing is
    written or logged here. ``plan``'s calibrator and policy are fitted in place.

    Order matters for one population: the decision threshold is fitted first, which fixes the
    predicted codes; the flags (``no_evidence`` included) are computed for exactly those codes
    (:func:`~medcoder.inference.coder.routing_inputs`); only then is τ certified on the codes no
    rule blocks. ``Coder.predict`` builds its inputs with the same function and the same policy.

    ``cal_space``: the label space of the model that scored ``cal_name`` when it is not the run's
    (a refitted run's ``tuning_model/``, ``certification.refit``): the calibrator and the decision
    threshold are fitted on its scores and carried over to the run's codes, which a pooled
    calibrator and a global threshold can be (:func:`check_carries_over`).
    """
    logits, arrays = scored.logits, scored.arrays
    cert_name = cert_name or cal_name
    cal, cert, ev = arrays[cal_name], arrays[cert_name], arrays[eval_name]
    if scored.evidence_top_k != plan.policy.evidence_top_k:
        raise ValueError(f"the splits were scored with evidence_top_k={scored.evidence_top_k} but the policy "
                         f"routes with {plan.policy.evidence_top_k}: score_splits(..., evidence_top_k="
                         "plan.policy.evidence_top_k)")

    # -- calibrator ----------------------------------------------------------------------------
    calibrator = plan.calibrator.fit(logits[cal_name], cal["y"])
    probs = {n: calibrator.transform(logits[n]) for n in logits}
    before = calibration_report(sigmoid(logits[eval_name]), ev["y"])
    after = calibration_report(probs[eval_name], ev["y"])
    # Where decisions happen: each note's top CANDIDATE_TOP_K codes by fused score, uniform bins
    # (the all-pairs figures above are dominated by ~99% of pairs near 0).
    candidates = rank_in_note(logits[eval_name]) < CANDIDATE_TOP_K
    cand_before = calibration_report(sigmoid(logits[eval_name]), ev["y"], 10, strategy="uniform", mask=candidates)
    cand_after = calibration_report(probs[eval_name], ev["y"], 10, strategy="uniform", mask=candidates)

    # -- decision threshold + routing policy (tau certified by Learn-then-Test) ---------------------
    policy = plan.policy
    if not policy.decision_threshold.is_fitted:  # as RoutingPolicy.fit would, before the flags need it
        policy.decision_threshold.fit(np.asarray(probs[cal_name], dtype=np.float64), cal["y"])
        if cal_space is not None:
            policy.decision_threshold.for_codes(len(label_space))
    # the calibration split's own routing inputs are not needed (τ is certified on cert_name)
    inputs = {n: routing_inputs(policy, label_space, scored.notes[n], probs[n])
              for n in dict.fromkeys((cert_name, eval_name))}
    policy.fit(inputs[cert_name], cert["y"])  # τ by LTT on policy.eligible_mask(inputs): every rule applied
    result, targets = policy.accept_result_, policy.targets
    log.info("certified on %s: %s", cert_name, result.message)
    _, certified, _ = policy.route_arrays(inputs[cert_name])
    if int(certified.sum()) != result.n_calibration_accepted:  # the same rules and τ: cannot differ
        raise RuntimeError(f"routing accepts {int(certified.sum())} calibration codes, Learn-then-Test counted "
                             f"{result.n_calibration_accepted}")
    cal_ids = [str(i) for i in scored.splits[cert_name]["id"]]
    certified_pairs = [(cal_ids[i], label_space.codes[j]) for i, j in zip(*np.nonzero(certified), strict=True)]
    predicted, accept, reasons = policy.route_arrays(inputs[eval_name])
    routing = routing_metrics(accept, predicted, ev["y"], ev["n_gold"], delta=targets.delta, reason_counts=reasons)

    metrics = {
        f"{eval_name}_ece_uncalibrated": before["ece"],
        f"{eval_name}_ece_calibrated": after["ece"],
        f"{eval_name}_ece_candidates_uncalibrated": cand_before["ece"],
        f"{eval_name}_ece_candidates_calibrated": cand_after["ece"],
        f"{eval_name}_brier_uncalibrated": before["brier"],
        f"{eval_name}_brier_calibrated": after["brier"],
        "tau_accept": float("nan") if result.tau is None else float(result.tau),
        "tau_feasible": float(result.feasible),
        f"{cert_name}_auto_accept_precision_calibration": result.calibration_precision,
        **{f"{eval_name}_{k}": v for k, v in routing.items()},
    }
    metrics = {k: float("nan") if v is None else float(v) for k, v in metrics.items()}
    policy_dict = policy.to_dict()
    policy_dict.pop("targets", None)  # recorded once, under "targets"
    calibration = {
        "schema_version": SCHEMA_VERSION,
        "run_id": str(run_id),
        "calibration_split": cal_name,
        # Which model scored it: the run's own, or (a refitted run) the tuning model that never saw it.
        "calibration_model": "tuning_model" if cal_space is not None else "run",
        # The labels Learn-then-Test read; nothing was tuned on them unless it equals calibration_split.
        "certification_split": cert_name,
        "calibrator": calibrator.to_dict(),
        "policy": policy_dict,
        "targets": targets.to_dict(),
        "guarantee": result.to_dict(include_grid=False),
        # The (note id, code) pairs the guarantee counted: Coder.predict on these notes accepts
        # exactly them (tests/integration/test_one_population.py).
        "certified_accepted": {"split": cert_name, "n": len(certified_pairs),
                               "sha256": accepted_pairs_sha256(certified_pairs)},
        "evaluation": {"split": eval_name, **{k: float(v) for k, v in routing.items()},
                       "ece_uncalibrated": before["ece"], "ece_calibrated": after["ece"],
                       "candidates": {"top_k": CANDIDATE_TOP_K, "uncalibrated": cand_before,
                                      "calibrated": cand_after}},
    }
    calibration["frontier"] = accept_frontier(policy, inputs[cert_name], cert["y"], inputs[eval_name], ev["y"],
                                              cal_name=cert_name, eval_name=eval_name)
    for row in calibration["frontier"]:
        log.info("if target_precision were %.2f: tau=%s, %s auto-accepted on %s (precision %s)",
                 row["target_precision"], row["tau"], row[f"{eval_name}_n_auto_accepted"], eval_name,
                 row[f"{eval_name}_auto_accept_precision"])
    curve = precision_coverage_curve(probs[eval_name], ev["y"], predicted)
    return FittedCalibration(calibration, metrics, result, curve,
                             {"before": before, "after": after, "cand_before": cand_before, "cand_after": cand_after},
                             certified)


def score_calibration_splits(hybrid: HybridScorer, tuning: tuple[HybridScorer, LabelSpace] | None,
                             corpus: DatasetDict, label_space: LabelSpace, *, cal_name: str, cert_name: str,
                             eval_name: str, **scoring: Any) -> ScoredSplits:
    """The three splits calibration reads, scored by the run's model; with a refitted run's
    ``tuning`` model (:func:`tuning_model`), the calibration split by that one instead: the tuning
    notes are in the refitted model's training set, their scores must come from the model fitted
    without them. ``scoring``: :func:`score_splits`'s keyword arguments."""
    names = tuple(dict.fromkeys((cal_name, cert_name, eval_name)))
    scored = score_splits(hybrid, corpus, tuple(n for n in names if tuning is None or n != cal_name), label_space,
                          **scoring)
    if tuning is None:
        return scored
    log.info("%s is scored by the run's tuning model (certification.refit)", cal_name)
    return scored.with_split(score_splits(tuning[0], corpus, (cal_name,), tuning[1], **scoring))


def tuning_model(directory: Path) -> tuple[HybridScorer, LabelSpace] | None:
    """A refitted run's tuning model (``certification.refit``) and its label space, or None."""
    if not (directory / "labels.json").is_file():
        return None
    space = LabelSpace.from_json(directory / "labels.json")
    return HybridScorer.load(directory, space.frequency_array()), space


def check_carries_over(plan: CalibrationPlan, cal_name: str, cert_name: str) -> None:
    """A refitted run's calibrator and decision threshold are fitted on the tuning model's codes and
    applied to the run's: a per-code calibrator or threshold cannot be (one-line ``ConfigError``),
    and the split that certifies must not be the one that tunes."""
    if not plan.calibrator.pooled:
        raise ConfigError(f"calibration.method={plan.calibrator.name} fits each code apart, but this run was "
                          "refitted (certification.refit): its calibration split was scored by the tuning model, "
                          "whose codes are not the run's", hint="use calibration=temperature or calibration=isotonic")
    if plan.policy.decision_threshold.mode != "global":
        raise ConfigError(f"calibration.decision_threshold.mode={plan.policy.decision_threshold.mode} with a "
                          "refitted run (certification.refit): per-code thresholds belong to the tuning model's "
                          "codes", hint="set calibration.decision_threshold.mode=global")
    if cal_name == cert_name:
        raise ConfigError(f"calibration_split={cal_name} also certifies, but this run was refitted on it "
                          "(certification.refit)", hint="calibrate with the run's own certification design")


def refuse_all_labels(run_id: str, certification_cfg: Any) -> None:
    """A run of design ``all_labels`` was fitted on every labelled note: no labels are left that
    could fit its calibrator or certify τ without having trained it (one-line ``ConfigError``)."""
    if certification_settings(certification_cfg)["design"] == ALL_LABELS_DESIGN:
        raise ConfigError(f"run {run_id} was trained with certification.design={ALL_LABELS_DESIGN}: every labelled "
                          "note fitted its model, so none is left to calibrate it or certify tau",
                          hint="calibrate a run of design inner_train; all_labels runs report ranking metrics only")


def certification_split(corpus: DatasetDict, cal_name: str, eval_name: str) -> str:
    """The split whose labels certify τ: the training run's ``certify`` split where its
    ``certification`` design carved one, else ``cal_name`` (a run trained with design ``none`` or
    before issue 19: dev both tuned and certifies, and a warning says the guarantee is weaker)."""
    if CERTIFY_SPLIT in corpus and CERTIFY_SPLIT not in (cal_name, eval_name):
        return CERTIFY_SPLIT
    log.warning("certifying tau on %s, the split the calibrator and decision threshold are fitted on (the "
                "training run's certification.design is none): the precision guarantee is weaker than "
                "stated; train with certification.design=dev_halves", cal_name)
    return cal_name


def calibrate(cfg: DictConfig) -> CalibrationResult:
    """Fit calibrator + policy on ``cfg.calibration_split``, evaluate on ``cfg.evaluation_split``."""
    # Every model-free value first: a bad routing.target_precision must not cost a download and
    # two scored splits before it is reported (medcoder.workflows.config_checks).
    check_calibrate_config(cfg)
    experiment_id = setup_experiment(build_tracking(cfg))
    calibrator = build_calibrator(cfg.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        run = download_run(str(cfg.run_id), Path(tmp))
        train_cfg = run.config()
        refuse_all_labels(str(cfg.run_id), train_cfg.get("certification"))
        label_space = LabelSpace.from_json(run.labels_path)
        # All views and the stacker of a fused run (or the neural view alone); no remote code
        # (medcoder.modeling.loading), no pickle.
        hybrid = HybridScorer.load(run.root, label_space.frequency_array())
        tuning = tuning_model(run.root / TUNING_MODEL_DIR)
    data_cfg = cfg.data if cfg.data is not None else train_cfg.data
    plan = CalibrationPlan(calibrator, build_routing(cfg.routing, cfg.calibration, codeset_fy=label_space.codeset_fy,
                                                     code_type=str(data_cfg.get("code_type", "D"))))
    cal_name, eval_name = str(cfg.calibration_split), str(cfg.evaluation_split)  # checked distinct up front
    if cfg.use_state_cache:
        log.info("use_state_cache=true is ignored: calibration scores notes as the bundle will (float16 cached "
                 "states give other scores)")
    corpus = build_corpus(data_cfg, train_cfg.get("certification"))
    cert_name = certification_split(corpus, cal_name, eval_name)
    if tuning is not None:
        check_carries_over(plan, cal_name, cert_name)
    scoring = {"limit": train_cfg.get("max_samples_per_split"), "batch_size": int(cfg.batch_size),
               "evidence_top_k": plan.policy.evidence_top_k}
    scored = score_calibration_splits(hybrid, tuning, corpus, label_space, cal_name=cal_name, cert_name=cert_name,
                                      eval_name=eval_name, **scoring)
    fitted = fit_calibration(plan, scored, label_space, run_id=str(cfg.run_id), cal_name=cal_name,
                             eval_name=eval_name, cert_name=cert_name,
                             cal_space=tuning[1] if tuning is not None else None)
    metrics, calibration, result, curve = fitted.metrics, fitted.calibration, fitted.result, fitted.curve
    before, after = fitted.reports["before"], fitted.reports["after"]
    cand_before, cand_after = fitted.reports["cand_before"], fitted.reports["cand_after"]
    # Under `--multirun` (a sweep of e.g. routing.target_precision) every job logs to its own
    # child run of the sweep's parent and leaves the trained run's calibration alone; a single
    # calibration logs to the trained run itself (what export reads).
    if current_sweep_job() is None:
        run_ctx, sweep_parent = mlflow.start_run(run_id=str(cfg.run_id)), None
    else:
        run_ctx, sweep_parent = start_child_or_run(
            experiment_id, "calibrate", run_name=f"calibrate-{str(cfg.run_id)[:8]}",
            tags={"medcoder.calibrated_run": str(cfg.run_id), "medcoder.kind": "calibration"})
    with run_ctx as active:
        if sweep_parent is not None:
            mlflow.log_params({"run_id": str(cfg.run_id), **flatten(config_dict(cfg)["routing"], "routing."),
                               "calibration.method": str(cfg.calibration.method)})
        # Undefined values (e.g. precision when nothing is accepted) are logged as NaN, not dropped
        # and never replaced by a made-up number.
        mlflow.log_metrics(metrics)
        mlflow.log_dict(calibration, "calibration.json")
        mlflow.log_figure(plot_reliability(
            cand_before, cand_after, show_counts=True,
            title=f"Reliability of the top-{CANDIDATE_TOP_K} candidate codes per note\n(uniform bins, {eval_name} split)",
        ), "reliability_diagram.png")
        mlflow.log_figure(plot_reliability(before, after, title=f"Reliability, all note x code pairs ({eval_name})"),
                          "reliability_diagram_all_pairs.png")
        mlflow.log_figure(plot_precision_coverage(curve, result.tau, plan.policy.targets.target_precision), "precision_coverage.png")
        mlflow.set_tag("medcoder.calibration", calibrator.name)
        mlflow.set_tag("medcoder.routing_message", result.message[:500])
    logged_to = active.info.run_id
    if sweep_parent is not None:
        update_sweep_summary(sweep_parent)
    out = Path(cfg.paths.output_dir) / "runs" / logged_to
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "calibration.json", json.dumps(calibration, indent=2))
    return CalibrationResult(str(cfg.run_id), metrics, calibration, result.message)
