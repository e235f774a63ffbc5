"""Export a trained + calibrated MLflow run as a bundle and as a registered MLflow model.

What ``scripts/export.py`` calls: download the run's model (a fused run without the neural view has
no ``model/``: its views and stacker only), labels, calibration and metrics ->
write the bundle (staging folder beside the target + rename, manifest with sha256) -> log it as an
``mlflow.pyfunc`` model in the same run -> register a version, tag it, point the ``candidate``
alias at it.

The run's artifacts are downloaded into the same staging folder as the bundle (beside
``output_dir``, not the system temp folder), so an export killed half-way leaves one marked
folder that the next export removes (:func:`medcoder.inference.bundle.remove_stale_staging`).
The bundle holds no code (schema 2): plain transformers loads ``model/`` after
``import medcoder.modeling``, never with ``trust_remote_code``.

``quantize=int8`` writes a bundle whose manifest records ``quantization: dynamic-int8``: the same
fp32 safetensors, quantised by ``Coder.load`` (encoder ``nn.Linear`` layers, qint8). Its scores
differ from the run's, so its calibration is **refitted** here on the calibration split (dev) with
the quantised scorer through the calibrate workflow's own functions and settings
(:func:`~medcoder.workflows.calibrate.fit_calibration`), its ``metrics.json`` holds the quantised
model's dev/test metrics beside the fp32 run's (``fp32_*``), and the export fails if its test MAP is
more than ``quantize_max_map_drop`` below fp32's (a go/no-go check: nothing is fitted on test).
``quantize=onnx-int8`` does the same with ``quantization: onnx-int8`` (the encoder as an int8 ONNX
Runtime graph built at load time, :mod:`medcoder.modeling.onnx_encoder`); its MLflow model also
pins onnx and onnxruntime.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from medcoder.constraints import check_path_part
from medcoder.data import LabelSpace
from medcoder.errors import ConfigError
from medcoder.evaluation.metrics import compute_all, tune_global_threshold
from medcoder.inference.bundle import BUNDLE_ID_TAG, BundleWriter, Manifest
from medcoder.inference.coder import Coder
from medcoder.inference.model_card import render_model_card
from medcoder.modeling import HybridScorer
from medcoder.modeling.hybrid import TUNING_MODEL_DIR
from medcoder.modeling.scoring import sigmoid
from medcoder.tracking import TrackingSettings, setup_experiment, tracking_uri
from medcoder.tracking.artifacts import OPTIONAL_ARTIFACTS, download_run
from medcoder.tracking.registry import (
    CANDIDATE,
    CHAMPION,
    check_alias,
    check_registered_model_name,
    set_alias,
    tag_version,
)
from medcoder.workflows.calibrate import (
    CalibrationPlan,
    fit_calibration,
    score_calibration_splits,
    tuning_model,
)
from medcoder.workflows.factories import build_corpus, build_tracking

log = logging.getLogger(__name__)

MLFLOW_MODEL_NAME = "medcoder_model"  # artifact path of the pyfunc model inside the run

# Test metrics copied onto the registered version, so `mlflow ui`'s model page compares versions.
VERSION_METRIC_TAGS = ("test_map", "test_micro_f1", "test_p_at_8", "test_ece_calibrated",
                       "test_auto_accept_precision", "test_auto_accept_coverage", "test_docs_fully_auto")


#: ``quantize=`` values -> the quantisation the bundle manifest records (``Coder.load`` applies it).
#: ``int8``: torch dynamic int8 (no extra package); ``onnx-int8``: the encoder as an int8 ONNX Runtime
#: graph, notes encoded in parallel (the ``onnx`` extra; the faster one on the measured CPU).
QUANTIZE_OPTIONS = {"int8": "dynamic-int8", "onnx-int8": "onnx-int8"}
#: Packages a bundle quantised this way needs beyond medcoder's own (the MLflow model's requirements).
QUANTIZATION_REQUIREMENTS = {"onnx-int8": ("onnx", "onnxruntime")}
#: Run metrics that do not depend on the model's weights: a quantised bundle keeps them.
_WEIGHT_FREE_SUFFIXES = ("_label_coverage", "_truncated_share")


@dataclass
class ExportResult:
    bundle_dir: Path
    manifest: Manifest
    model_uri: str | None
    registered_name: str | None
    registered_version: str | None


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: undefined values (e.g. precision with nothing accepted) become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(metrics.items())}


def _requirements(quantization: str | None = None) -> list[str]:
    """medcoder's runtime dependencies pinned to the versions installed here (no pip inference),
    plus what the bundle's ``quantization`` needs (:data:`QUANTIZATION_REQUIREMENTS`)."""
    pins = []
    reqs = [r for r in importlib.metadata.requires("medcoder") or [] if "extra ==" not in r]
    for req in [*reqs, *QUANTIZATION_REQUIREMENTS.get(quantization or "", ())]:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(req.split(";")[0].strip())
    return pins


def _run_inputs(run_id: str, tmp: Path) -> dict[str, Any]:
    run = download_run(run_id, tmp)
    try:
        cal_path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="calibration.json",
                                                            dst_path=str(tmp)))
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"run {run_id} has no calibration.json, so it has no routing policy to export",
            hint=f"run `python scripts/calibrate.py run_id={run_id}` first",
        ) from exc
    metrics = {k: float(v) for k, v in mlflow.get_run(run_id).data.metrics.items() if not k.startswith("epoch_")}
    run_config = run.config()
    return {
        "run_dir": run.root,
        "model_dir": run.model_dir if run.has_model else None,  # None: a fused run without the neural view
        "labels_path": run.labels_path,
        "calibration_path": cal_path,
        "run_config": run_config,
        "train_config": OmegaConf.to_container(run_config, resolve=False),
        "metrics": metrics,
    }


def _quantization(cfg: DictConfig) -> str | None:
    """``cfg.quantize`` checked (before anything is downloaded) -> the manifest's quantisation."""
    value = cfg.get("quantize")
    if value is None:
        return None
    if str(value) not in QUANTIZE_OPTIONS:
        raise ConfigError(f"quantize={value!r} is not supported", hint=f"use one of {sorted(QUANTIZE_OPTIONS)} or null")
    drop = cfg.get("quantize_max_map_drop")
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop < 1):
        raise ConfigError(f"quantize_max_map_drop={drop!r} is not valid", hint="a number in [0, 1), or null (no check)")
    batch = cfg.get("batch_size", 8)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch_size={batch!r} is not valid", hint="an integer >= 1")
    return QUANTIZE_OPTIONS[str(value)]


def recalibrate_quantized(bundle_dir: Path, src: dict[str, Any], calibration: dict[str, Any], quantization: str, *,
                          batch_size: int = 8, max_map_drop: float | None = None) -> tuple[dict, dict[str, float]]:
    """``(calibration.json, metrics.json)`` of the staged bundle ``bundle_dir`` quantised with ``quantization``.

    The run's fp32 calibration is refitted, with its own settings
    (:meth:`~medcoder.workflows.calibrate.CalibrationPlan.from_calibration_json`),
    on the same calibration split, scored by the quantised scorer (no state cache: those are the fp32
    encoder's states); the evaluation split is scored too, for the routing report and the metrics.
    Why refit: a calibrator, decision threshold and τ fitted to fp32 scores are not certified for
    other scores, however close. The metrics are those of this bundle: dev/test contract metrics of
    the quantised model (computed as training computes them), the refit's calibration and routing
    metrics, the weight-free run metrics, and the fp32 run's MAP/micro-F1 as ``fp32_*``.
    """
    run_cfg, fp32 = src["run_config"], src["metrics"]
    label_space = LabelSpace.from_json(bundle_dir / "labels.json")
    frequency = label_space.frequency_array()
    hybrid = HybridScorer.load(bundle_dir, frequency)
    if hybrid.neural is None:
        raise ConfigError(f"quantize: run {src['run_id']} has no neural view to quantise", hint="export without quantize")
    hybrid.neural.quantize(quantization)  # type: ignore[attr-defined]
    tuning = None
    if calibration.get("calibration_model") == "tuning_model":
        # a refitted run: its calibration split is scored by its tuning model, quantised alike
        tuning = tuning_model(src["run_dir"] / TUNING_MODEL_DIR)
        if tuning is None or tuning[0].neural is None:
            raise ConfigError(f"quantize: run {src['run_id']} was refitted but has no tuning_model/ with a neural "
                              "view to score its calibration split", hint="export without quantize")
        tuning[0].neural.quantize(quantization)  # type: ignore[attr-defined]
    cal_name = str(calibration.get("calibration_split", "dev"))
    eval_name = str(calibration.get("evaluation", {}).get("split", "test"))
    data_cfg = run_cfg.data
    log.info("quantize: scoring %s and %s with the %s model to refit the calibration", cal_name, eval_name,
             quantization)
    plan = CalibrationPlan.from_calibration_json(calibration)
    cert_name = str(calibration.get("certification_split", cal_name))
    scored = score_calibration_splits(hybrid, tuning, build_corpus(data_cfg, run_cfg.get("certification")),
                                      label_space, cal_name=cal_name, cert_name=cert_name, eval_name=eval_name,
                                      limit=run_cfg.get("max_samples_per_split"), batch_size=batch_size,
                                      evidence_top_k=plan.policy.evidence_top_k)
    cal_space = tuning[1] if tuning is not None else None
    fitted = fit_calibration(plan, scored, label_space, run_id=src["run_id"], cal_name=cal_name,
                             eval_name=eval_name, cert_name=cert_name, cal_space=cal_space)
    fp32_policy = calibration.get("policy", {})
    refit = {**fitted.calibration, "quantization": quantization,
             # what the refit replaced, for the record (never applied: Coder.load reads the top level)
             "fp32": {"calibrator": calibration.get("calibrator"), "tau_accept": fp32_policy.get("tau_accept"),
                      "decision_threshold": fp32_policy.get("decision_threshold", {}).get("state", {})
                      .get("global_threshold")}}
    # Contract metrics of the quantised scores, as training computes them (threshold tuned on dev).
    metrics: dict[str, float] = {k: v for k, v in fp32.items() if k == "n_labels" or k.endswith(_WEIGHT_FREE_SUFFIXES)}
    y = {n: scored.arrays[n]["y"] for n in (cal_name, eval_name)}
    probs = {n: sigmoid(scored.logits[n]) for n in (cal_name, eval_name)}
    threshold = tune_global_threshold(probs[cal_name], y[cal_name])
    metrics["decision_threshold"] = float(threshold)
    for n in (cal_name, eval_name):
        codes = (cal_space if cal_space is not None and n == cal_name else label_space).codes
        values = compute_all(probs[n], y[n], threshold=threshold, gold_codes=list(scored.splits[n]["codes"]),
                             label_codes=codes)
        metrics.update({f"{n}_{k}": float(v) for k, v in values.items()})
    for n in (cal_name, eval_name):
        if f"{n}_label_coverage" in fp32:
            metrics[f"{n}_label_coverage"] = fp32[f"{n}_label_coverage"]
    metrics.update(fitted.metrics)
    for key in (f"{cal_name}_map", f"{eval_name}_map", f"{eval_name}_micro_f1"):
        if key in fp32:
            metrics[f"fp32_{key}"] = fp32[key]
    for n in (cal_name, eval_name):
        if f"{n}_map" in fp32:
            log.info("quantize: %s_map %.4f (%s) vs %.4f (fp32)", n, metrics[f"{n}_map"], quantization,
                     fp32[f"{n}_map"])
    map_key = f"{eval_name}_map"
    if map_key in fp32:
        drop = fp32[map_key] - metrics[map_key]
        metrics[f"quantization_{map_key}_drop"] = float(drop)
        if max_map_drop is not None and drop > max_map_drop:
            raise ConfigError(
                f"quantize={quantization}: {map_key} {metrics[map_key]:.4f} is {drop:.4f} below the fp32 model's "
                f"{fp32[map_key]:.4f} (quantize_max_map_drop={max_map_drop})",
                hint="export without quantize, or raise quantize_max_map_drop knowingly")
    return refit, metrics


def _quantization_card(quantization: str, metrics: dict[str, float], eval_name: str = "test") -> str:
    """The model card's section on a quantised bundle (appended to the generated card)."""
    q, f = metrics.get(f"{eval_name}_map"), metrics.get(f"fp32_{eval_name}_map")
    compare = f"{eval_name} MAP {q:.4f} vs {f:.4f} with the fp32 weights" if q is not None and f is not None else ""
    return "\n".join([
        "## Quantisation",
        f"- `{quantization}`: `Coder.load` quantises the encoder's linear layers of the stored fp32 weights",
        "  (qint8, CPU" + (", run by ONNX Runtime" if quantization == "onnx-int8" else "")
        + "); the label-attention head stays fp32.",
        f"- Calibration, decision threshold and τ were refitted on the calibration split with the quantised model; {compare}.",
        "",
    ])


def _local_path(uri: str | None) -> Path | None:
    """The local folder/file behind a ``file:`` or ``sqlite:`` URI (None for remote stores)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "sqlite" and uri.startswith("sqlite:///"):
        # sqlite:////abs/mlflow.db (absolute) or sqlite:///rel/mlflow.db (relative to the cwd)
        return Path(unquote(uri[len("sqlite:///"):].split("?")[0]))
    if not parsed.scheme and uri:
        return Path(uri)
    return None


def _protected_inputs(tracking: TrackingSettings, root: Path, run_id: str) -> tuple[list[Path], list[Path]]:
    """What ``output_dir`` must not be or contain (project root, tracking database) and the MLflow
    stores it must not overlap (``mlruns``/``mlartifacts``, the run's and experiment's artifact
    locations): an export must never replace, or write into, what it reads."""
    protected = [root]
    trees = [root / "mlruns", root / "mlartifacts"]
    store = _local_path(tracking_uri(tracking))
    if store is not None:  # a sqlite file must not be replaced; a file store (folder) not entered either
        (trees if store.is_dir() else protected).append(store)
    if tracking.artifact_dir is not None:
        trees.append(tracking.artifact_dir)
    try:
        run = mlflow.get_run(run_id)
        trees.append(_local_path(run.info.artifact_uri))
        experiment = mlflow.get_experiment(run.info.experiment_id)
        trees.append(_local_path(experiment.artifact_location))
    except MlflowException:
        pass  # an unknown run id is reported by the download, with its own message
    return protected, [t for t in trees if t is not None]


def check_export_names(cfg: DictConfig) -> None:
    """The names an export uses, checked before anything is opened, downloaded or written (one line).

    ``run_id`` is a folder name in the default ``output_dir`` (``outputs/bundles/<run_id>``); the
    registered model name and the alias were checked by MLflow only after the bundle was written
    and a version registered (``mlflow_model.alias=../../x`` was a traceback after half the work).
    """
    check_path_part("run_id", cfg.run_id)
    if not cfg.mlflow_model.log:
        return
    name = cfg.mlflow_model.registered_model_name
    if name:
        check_registered_model_name("mlflow_model.registered_model_name", name)
        check_alias("mlflow_model.alias", cfg.mlflow_model.alias)


def export_run(cfg: DictConfig) -> ExportResult:
    """Write the bundle of ``cfg.run_id`` to ``cfg.output_dir`` and (optionally) register it.

    ``overwrite=true`` replaces ``output_dir`` only if it is a medcoder bundle, and ``output_dir``
    may not overlap the project root or the MLflow store (:class:`BundleWriter`); both are checked
    before anything is downloaded.
    """
    check_export_names(cfg)
    quantization = _quantization(cfg)
    tracking = build_tracking(cfg)
    root = tracking.root_dir
    setup_experiment(tracking)
    run_id = str(cfg.run_id)
    protected, trees = _protected_inputs(tracking, root, run_id)
    # The bundle must load through the one inference path before it is renamed into place; the
    # Coder loaded for that check then computes the MLflow signature (no second load).
    loaded: list[Coder] = []
    with BundleWriter(cfg.output_dir, overwrite=bool(cfg.overwrite), protected=protected,
                      protected_trees=trees) as writer:
        src = {**_run_inputs(run_id, writer.scratch), "run_id": run_id}
        labels = json.loads(src["labels_path"].read_text())
        calibration = json.loads(src["calibration_path"].read_text())
        metrics = src["metrics"]
        dst = writer.bundle_dir
        if src["model_dir"] is not None:
            shutil.copytree(src["model_dir"], dst / "model")
        stacker_path = src["run_dir"] / "stacker.json"
        for optional in OPTIONAL_ARTIFACTS:  # a fused run's other views and stacker
            found = src["run_dir"] / optional
            if found.is_dir():
                shutil.copytree(found, dst / optional)
            elif found.is_file():
                shutil.copyfile(found, dst / optional)
        shutil.copyfile(src["labels_path"], dst / "labels.json")
        if quantization is None:
            shutil.copyfile(src["calibration_path"], dst / "calibration.json")
        else:
            calibration, metrics = recalibrate_quantized(
                dst, src, calibration, quantization, batch_size=int(cfg.get("batch_size", 8)),
                max_map_drop=cfg.get("quantize_max_map_drop"))
            (dst / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
        (dst / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2) + "\n")
        card = render_model_card(
            run_id=run_id, train_config=src["train_config"], labels=labels,
            calibration=calibration, metrics=metrics,
            stacker=json.loads(stacker_path.read_text()) if stacker_path.is_file() else None,
        )
        if quantization is not None:
            card += "\n" + _quantization_card(quantization, metrics, calibration.get("evaluation", {}).get("split", "test"))
        (dst / "MODEL_CARD.md").write_text(card)
        manifest = writer.commit(source_run_id=run_id, validate=lambda tmp: loaded.append(Coder.load(tmp)),
                                 quantization=quantization)
    bundle_dir = writer.out
    log.info("bundle %s written to %s", manifest.bundle_id, bundle_dir)
    if not cfg.mlflow_model.log:
        return ExportResult(bundle_dir, manifest, None, None, None)
    loaded[0].bundle_dir = bundle_dir
    return _log_and_register(cfg, run_id, bundle_dir, manifest, labels, calibration, metrics, loaded[0])


def _log_and_register(cfg: DictConfig, run_id: str, bundle_dir: Path, manifest: Manifest,
                      labels: dict, calibration: dict, metrics: dict[str, float], coder: Coder) -> ExportResult:
    from medcoder.tracking.pyfunc import (
        INPUT_EXAMPLE,
        MODEL_CODE_PATH,
        model_metadata,
        model_signature,
        predictions_frame,
    )

    # The signature is written out (structured output schema, version in the metadata), not inferred
    # from the example; the example is still predicted, so a bundle that cannot answer it fails here.
    predictions_frame(coder.predict(list(INPUT_EXAMPLE["text"]), list(INPUT_EXAMPLE["id"])))
    signature = model_signature()
    name = cfg.mlflow_model.registered_model_name or None
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MLFLOW_MODEL_NAME,
            python_model=str(MODEL_CODE_PATH),  # models from code: the model holds no pickle
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            metadata=model_metadata(),
            input_example=INPUT_EXAMPLE,
            pip_requirements=_requirements(manifest.quantization),
            registered_model_name=name,
        )
        mlflow.set_tags({BUNDLE_ID_TAG: manifest.bundle_id, "medcoder.bundle_dir": str(bundle_dir)})
    version = None
    if name:
        version = str(info.registered_model_version)
        tag_version(name, version, {
            BUNDLE_ID_TAG: manifest.bundle_id,  # Coder.load("models:/...") checks it
            "medcoder.codeset_fy": labels.get("codeset_fy"),
            "medcoder.target_precision": calibration.get("targets", {}).get("target_precision"),
            "medcoder.tau_accept": calibration.get("policy", {}).get("tau_accept"),
            "medcoder.source_run_id": run_id,
            **({"medcoder.quantization": manifest.quantization} if manifest.quantization else {}),
            **{k: f"{metrics[k]:.4f}" for k in VERSION_METRIC_TAGS if k in metrics},
        })
        set_alias(name, cfg.mlflow_model.alias, version)
        if cfg.mlflow_model.promote and cfg.mlflow_model.alias != CHAMPION:
            set_alias(name, CHAMPION, version)
    return ExportResult(bundle_dir, manifest, info.model_uri, name, version)


__all__ = ["CANDIDATE", "CHAMPION", "QUANTIZATION_REQUIREMENTS", "QUANTIZE_OPTIONS", "ExportResult", "check_export_names",
           "export_run", "recalibrate_quantized"]
