"""Score a calibrated run's evidence spans against CodiEsp-X gold spans; ``scripts/evaluate_evidence.py``.

Steps: download the run (every view, the stacker, labels, ``calibration.json``) -> build the
:class:`~medcoder.inference.Coder` from those parts -> ``Coder.predict`` the split's Spanish
notes with evidence (the one inference path: the same scoring, calibration, routing and evidence
as a bundle, the MLflow model and batch prediction) -> score each view's evidence against the gold
mention spans of the same (note, code) (:mod:`medcoder.evaluation.evidence_scores`) -> write the
CodiEsp-X submission and its official F1 (:mod:`medcoder.evaluation.codiesp_x`) -> log metrics
and the two files to the same MLflow run, and write ``outputs/runs/<run_id>/evidence_<split>.json``.

Why from the run and not from a bundle: the evaluation belongs to the run (like calibration),
and exporting first would register a model version only to measure it. The Coder is built with
its constructor from exactly the files a bundle would hold (``Coder.load`` reads the same ones).

Only CodiEsp in Spanish has gold spans (CodiEsp-X annotates the Spanish notes; the English
machine translations have none), so any other corpus is a one-line ``ConfigError``.

Metric keys: ``evidence_<source>_<metric>`` (sources: every view of the coder and ``all``;
metrics: ``char_precision``, ``char_recall``, ``char_f1``, ``hit_rate``, ``iou``, ``coverage``),
``evidence_auto_accept_overlap`` (+ ``_first_overlap``, ``_overlap_scorable``), and
``codiesp_x_precision|recall|f1`` (the official metric, whole gold file: D *and* P rows, so a
coder of one code type cannot reach recall 1), ``codiesp_x_<d|p>_*`` (gold rows of the run's code
type only) and ``codiesp_x_<d|p>_f1_<source>`` (a submission from one view's spans). These keys
are for the test split; another split puts its name after the prefix (``evidence_dev_…``,
``codiesp_x_dev_…``), so a diagnostic run on dev never overwrites the held-out numbers. With
``max_notes`` (or a run trained with ``max_samples_per_split``) only the first notes are predicted,
and the gold spans and CodiEsp-X gold rows are those of these notes only.

The submission lists every evidence span of every predicted code (all views): the official
metric counts distinct (note, code) pairs, so extra lines for a code never lower its precision,
and a code is matched when any of its lines contains a gold mention. Codes without evidence
cannot be written (the format needs a position).

No clinical text leaves this module: metrics are numbers, the report holds counts and rates, and
the submission holds note ids, offsets and codes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from medcoder.atomic import atomic_write_text
from medcoder.calibration.calibrators import calibrator_from_dict
from medcoder.data import LabelSpace, resolve_codiesp_root
from medcoder.data.codes import canonical_code
from medcoder.data.mentions import load_codiesp_mentions
from medcoder.errors import ConfigError
from medcoder.evaluation.codiesp_x import (
    LABELS,
    OFFICIAL_TOLERANCE,
    codiesp_x_scores,
    read_x_gold,
    read_x_submission,
    submission_rows,
    write_codiesp_x,
)
from medcoder.evaluation.evidence_scores import gold_spans_from_mentions, score_evidence
from medcoder.inference import Coder
from medcoder.modeling import HybridScorer
from medcoder.routing.policy import RoutingPolicy
from medcoder.tracking import setup_experiment
from medcoder.tracking.artifacts import download_run
from medcoder.workflows.factories import build_corpus, build_tracking, plain
from medcoder.workflows.jsonsafe import finite

log = logging.getLogger(__name__)

__all__ = ["EvidenceResult", "check_evidence_config", "coder_from_run", "evaluate_evidence", "metric_prefixes"]

SCHEMA_VERSION = 1
#: The split whose numbers carry the unqualified metric keys (the held-out evaluation).
HELD_OUT_SPLIT = "test"


@dataclass
class EvidenceResult:
    run_id: str
    split: str
    metrics: dict[str, float]
    report_path: Path
    submission_path: Path
    seconds: float


def check_evidence_config(cfg: Any) -> None:
    """Every model-free value, before anything is downloaded (one line each, exit 2)."""
    def is_int(v: Any, low: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    problems = []
    if not isinstance(cfg.split, str) or not cfg.split:
        problems.append(f"split={cfg.split!r} is not valid (train, dev or test)")
    if not is_int(cfg.batch_size, 1):
        problems.append(f"batch_size={cfg.batch_size!r} is not valid (an integer >= 1)")
    if not is_int(cfg.evidence_top_k, 1):
        problems.append(f"evidence_top_k={cfg.evidence_top_k!r} is not valid (an integer >= 1: "
                        "without evidence there is nothing to evaluate)")
    if cfg.max_notes is not None and not is_int(cfg.max_notes, 1):
        problems.append(f"max_notes={cfg.max_notes!r} is not valid (an integer >= 1, or null)")
    if not isinstance(cfg.log_to_mlflow, bool):
        problems.append(f"log_to_mlflow={cfg.log_to_mlflow!r} is not valid (true or false)")
    if problems:
        raise ConfigError("; ".join(problems))


def metric_prefixes(split: str) -> tuple[str, str]:
    """``(evidence prefix, CodiEsp-X prefix)`` for ``split`` (module docstring)."""
    if split == HELD_OUT_SPLIT:
        return "evidence_", "codiesp_x_"
    return f"evidence_{split}_", f"codiesp_x_{split}_"


def _require_spanish_codiesp(data_cfg: Any) -> None:
    fmt, language = data_cfg.get("format"), data_cfg.get("language")
    if fmt != "codiesp" or language != "es":
        raise ConfigError(
            f"data={data_cfg.get('name')} (format={fmt}, language={language}): the evidence evaluation needs "
            "CodiEsp-X Spanish spans, which only CodiEsp in Spanish has",
            hint="evaluate a run trained on data=codiesp_d_es or data=codiesp_p_es",
        )


def coder_from_run(run_root: Path, calibration: dict[str, Any], *, bundle_id: str) -> Coder:
    """The run's views + stacker, labels, calibrator and policy as a :class:`Coder` (the files a
    bundle holds, read as ``Coder.load`` reads them; no code from the folder runs, no pickle)."""
    if calibration.get("quantization") is not None:
        # A calibration fitted on a quantised scorer's scores must not be applied to the run's fp32 views.
        raise ConfigError(f"{run_root}: calibration.json was fitted for quantization={calibration['quantization']!r}",
                          hint="re-run scripts/calibrate.py on the run (fp32), or evaluate the exported bundle")
    label_space = LabelSpace.from_json(run_root / "labels.json")
    frequency = label_space.frequency_array()
    scorer = HybridScorer.load(run_root, frequency)
    return Coder(scorer, label_space, calibrator_from_dict(calibration["calibrator"]),
                 RoutingPolicy.from_dict(calibration["policy"]), bundle_id=bundle_id)


def _calibration(run_id: str, dst: Path) -> dict[str, Any]:
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="calibration.json", dst_path=str(dst))
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"run {run_id} has no calibration.json, so it has no routing policy to evaluate",
                          hint=f"run `python scripts/calibrate.py run_id={run_id}` first") from exc
    return json.loads(Path(path).read_text())


def evaluate_evidence(cfg: DictConfig) -> EvidenceResult:
    """Predict ``cfg.split`` with the run's calibrated coder and score its evidence (module docstring)."""
    check_evidence_config(cfg)
    started = time.perf_counter()
    run_id, split = str(cfg.run_id), str(cfg.split)
    setup_experiment(build_tracking(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        run = download_run(run_id, Path(tmp))
        train_cfg = run.config()
        data_cfg = cfg.data if cfg.data is not None else train_cfg.data
        _require_spanish_codiesp(data_cfg)  # before the model is loaded or any note read
        calibration = _calibration(run_id, Path(tmp))
        coder = coder_from_run(run.root, calibration, bundle_id=f"run-{run_id}")
    code_type = str(data_cfg.get("code_type", "D"))
    # The run's own partition (its certification design) when scoring its own corpus: "train" is
    # then the notes the run trained on, and "certify" / "dev" are what calibrate read.
    splits = build_corpus(data_cfg, train_cfg.get("certification") if cfg.data is None else None)
    if split not in splits:
        raise ConfigError(f"split={split!r} is not in the corpus", hint=f"have {list(splits)}")
    if split == "train":
        log.warning("split=train: the dictionary view's lexicon is the train split's own gold spans, so its "
                    "evidence is scored against what it was built from (optimistic)")
    notes = splits[split]
    limit = cfg.max_notes if cfg.max_notes is not None else train_cfg.get("max_samples_per_split")
    if limit:
        notes = notes.select(range(min(len(notes), int(limit))))
    ids = [str(i) for i in notes["id"]]

    t0 = time.perf_counter()
    predictions = coder.predict(list(notes["text"]), ids, batch_size=int(cfg.batch_size),
                                evidence_top_k=int(cfg.evidence_top_k), progress=True)
    predict_seconds = time.perf_counter() - t0
    rows = {p.id: [asdict(c) for c in p.codes] for p in predictions}

    # -- evidence against the gold spans of the same (note, code) ---------------------------------
    data = plain(data_cfg, "data")
    release = resolve_codiesp_root(data.get("root"), cache_dir=data.get("cache_dir"), download=False)
    wanted = set(ids)
    mentions = {d: m for d, m in load_codiesp_mentions(release, split, code_type).items() if d in wanted}
    gold = gold_spans_from_mentions(mentions)
    gold_codes = {str(i): [canonical_code(c, code_type) for c in codes]
                  for i, codes in zip(notes["id"], notes["codes"], strict=True)}
    report = score_evidence(rows, gold, gold_codes=gold_codes, sources=list(coder.scorer.views))

    # -- CodiEsp-X: the submission file and the official F1 ---------------------------------------
    out_dir = Path(cfg.paths.output_dir) / "runs" / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    submission = write_codiesp_x(out_dir / f"codiesp_x_{split}.tsv", submission_rows(rows, code_type))
    written = read_x_submission(submission)  # score what is on disk, exactly as it would be submitted
    x_gold = [g for g in read_x_gold(release / split / f"{split}X.tsv") if g.doc in wanted]
    same_type = [g for g in x_gold if g.label == LABELS[code_type]]
    kind = code_type.lower()
    x_scores = {"official": codiesp_x_scores(x_gold, written), kind: codiesp_x_scores(same_type, written)}
    for source in coder.scorer.views:
        x_scores[f"{kind}_{source}"] = codiesp_x_scores(same_type, submission_rows(rows, code_type, sources=[source]))

    ev_prefix, x_prefix = metric_prefixes(split)
    metrics = report.metrics(ev_prefix)
    off, typed = x_scores["official"], x_scores[kind]
    metrics.update({f"{x_prefix}precision": off.precision, f"{x_prefix}recall": off.recall, f"{x_prefix}f1": off.f1,
                    f"{x_prefix}{kind}_precision": typed.precision, f"{x_prefix}{kind}_recall": typed.recall,
                    f"{x_prefix}{kind}_f1": typed.f1})
    metrics.update({f"{x_prefix}{kind}_f1_{source}": x_scores[f"{kind}_{source}"].f1 for source in coder.scorer.views})
    metrics = {k: float(v) for k, v in metrics.items()}
    seconds = time.perf_counter() - started

    result = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "split": split,
        "data": str(data_cfg.get("name")),
        "code_type": code_type,
        "n_notes": len(ids),
        "views": list(coder.scorer.views),
        "evidence_top_k": int(cfg.evidence_top_k),
        "policy": {"tau_accept": coder.policy.threshold,
                   "target_precision": calibration.get("targets", {}).get("target_precision")},
        "evidence": report.to_dict(),
        "codiesp_x": {
            "submission": submission.name,
            "n_lines": len(written),
            "tolerance": OFFICIAL_TOLERANCE,
            "definitions": {
                "official": "codiespX_evaluation.py: every gold row of the split (D and P)",
                kind: f"gold rows labelled {LABELS[code_type]} only (the run's code type)",
                **{f"{kind}_{s}": f"a submission of the {s} view's spans only, against the {kind} rows"
                   for s in coder.scorer.views},
            },
            "scores": {name: s.to_dict() for name, s in x_scores.items()},
        },
        "metrics": metrics,
        "seconds": {"predict": round(predict_seconds, 2), "total": round(seconds, 2)},
    }
    report_path = out_dir / f"evidence_{split}.json"
    atomic_write_text(report_path, json.dumps(finite(result), indent=2) + "\n")
    if cfg.log_to_mlflow:
        with mlflow.start_run(run_id=run_id):
            # Undefined values (e.g. the auto-accept overlap when nothing is accepted) are NaN, not dropped.
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(report_path))
            mlflow.log_artifact(str(submission))
    return EvidenceResult(run_id, split, metrics, report_path, submission, seconds)
