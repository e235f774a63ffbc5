"""Train one model end to end: data -> label space -> features -> fit -> evaluate -> MLflow.

This is what ``scripts/train.py`` calls; it reads top to bottom like an HF example script.

The config is read at the door only: :func:`train` checks it (one line, before anything loads)
and turns every group into plain values and domain objects once (:class:`TrainSettings`: the
tracking settings, the :class:`~medcoder.workflows.fusion.FusionPlan`, the corpus facts, ...); every
function below takes those, and nothing under ``workflows/`` ever sees the ``DictConfig``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from datasets import DatasetDict, concatenate_datasets
from omegaconf import DictConfig
from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed

from medcoder.atomic import atomic_write_text
from medcoder.codesets import code_descriptions
from medcoder.data import LabelSpace
from medcoder.data.features import featurize
from medcoder.data.splits import refit_splits
from medcoder.errors import ConfigError
from medcoder.evaluation.codiesp_run import write_codiesp_run
from medcoder.evaluation.metrics import codiesp_map, compute_all, tune_global_threshold
from medcoder.evaluation.note_predictions import (
    build_note_predictions,
    note_predictions_filename,
    write_note_predictions,
)
from medcoder.modeling import NEURAL, Scores
from medcoder.modeling.batching import ChunksDataset, StatesDataset, collate_chunks, collate_states
from medcoder.modeling.hybrid import NEURAL_DIR, SCORERS_DIR, STACKER_FILE, TUNING_MODEL_DIR
from medcoder.modeling.label_init import init_bias_from_frequency, init_from_descriptions
from medcoder.modeling.scoring import score_features, sigmoid
from medcoder.modeling.stacker import BlendedStacker, blend_logits
from medcoder.modeling.state_cache import EncodedStates, get_states
from medcoder.tracking import (
    EpochMetricsCallback,
    TrackingSettings,
    git_sha,
    log_config,
    log_environment,
    setup_experiment,
)
from medcoder.tracking.artifacts import download_run
from medcoder.tracking.plots import per_code_f1, plot_f1_vs_frequency
from medcoder.tracking.sweeps import start_child_or_run, update_sweep_summary
from medcoder.training.distributed import (
    distributed_state,
    is_main_process,
    main_first,
    release,
    world_size,
)
from medcoder.training.encoders import resolve_encoder
from medcoder.training.trainer import MedCoderTrainer
from medcoder.training.warm_start import (
    WarmStartReport,
    apply_warm_start,
    check_warm_start_ref,
)
from medcoder.workflows.calibrate import truncated_by_length
from medcoder.workflows.checkpoints import (
    checkpoint_folder,
    checkpoint_to_resume,
    last_complete_checkpoint,
    mlflow_run_to_continue,
    remove_checkpoints,
)
from medcoder.workflows.config_checks import check_train_config
from medcoder.workflows.factories import (
    CODESET_KEYS,
    LABELS_KEYS,
    build_corpus,
    build_fusion_plan,
    build_model,
    build_tracking,
    certification_settings,
    check_keys,
    config_dict,
    training_arguments,
)
from medcoder.workflows.fusion import (
    FusionPlan,
    FusionResult,
    NeuralInputs,
    TrainingCorpus,
    fit_fusion,
    fit_stacker_on_tuning,
    fixed_epochs,
)

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


@dataclass
class TrainResult:
    run_id: str
    metrics: dict[str, float]
    model_dir: Path
    wall_seconds: float


@dataclass(frozen=True)
class TrainSettings:
    """Every config group of ``scripts/train.py`` as plain values and domain objects, built once by
    :func:`train` (:func:`train_settings`).

    ``config``: the composed config, plain (``config.yaml``, the flattened params, the resume
    hash); ``data``: the ``data`` group (the corpus loader's keys); ``model`` / ``trainer``: those
    groups, plain (passed by name to ``build_model`` / ``training_arguments``, read only with the
    neural view); ``corpus``: where the views' fit resources live; ``fusion``: the views and how
    they are fused; ``model_name``: tag ``medcoder.model`` (the encoder config's name, or the views
    where there is no encoder); paths as configured (``root_dir`` resolved).
    """

    config: Mapping[str, Any]
    seed: int
    run_name: str
    max_samples: int | None
    warm_start: str | None
    data: Mapping[str, Any]
    label_min_count: int
    label_top_k: int | None
    codeset_fy: int
    corpus: TrainingCorpus
    model: Mapping[str, Any]
    trainer: Mapping[str, Any]
    #: ``certification`` group (design, fraction, seed): which labels are kept for certifying tau
    certification: Mapping[str, Any]
    tracking: TrackingSettings
    fusion: FusionPlan
    model_name: str
    root_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    cache_dir: Path

    @property
    def data_name(self) -> str:
        return str(self.data["name"])


def train_settings(cfg: DictConfig) -> TrainSettings:
    """The door: ``scripts/train.py``'s composed config -> :class:`TrainSettings` (a group that does
    not fit is a one-line ``ConfigError`` here, e.g. an unknown key of ``fusion`` or ``tracking``)."""
    config = config_dict(cfg)
    data, labels, codeset, paths = (dict(config.get(k) or {}) for k in ("data", "labels", "codeset", "paths"))
    check_keys("labels", labels, LABELS_KEYS)
    check_keys("codeset", codeset, CODESET_KEYS)
    max_samples = config.get("max_samples_per_split")
    model = dict(config.get("model") or {})
    tracking = build_tracking(cfg)
    plan = build_fusion_plan(cfg)
    return TrainSettings(
        config=config,
        seed=int(config["seed"]),
        run_name=str(config["run_name"]),
        max_samples=int(max_samples) if max_samples else None,
        warm_start=str(config["warm_start"]) if config.get("warm_start") else None,
        data=data,
        label_min_count=labels["min_count"],
        label_top_k=labels["top_k"],
        codeset_fy=codeset["fiscal_year"],
        corpus=TrainingCorpus(language=str(data.get("language", "en")), code_type=str(data.get("code_type", "D")),
                              root=data.get("root"), cache_dir=data.get("cache_dir"),
                              codeset_fy=int(codeset["fiscal_year"]), codeset_order_file=codeset.get("order_file")),
        model=model,
        trainer=dict(config.get("trainer") or {}),
        certification=certification_settings(config.get("certification")),
        tracking=tracking,
        fusion=plan,
        model_name=plan.model_name(str(model.get("name"))),
        root_dir=Path(paths["root_dir"]).resolve(),
        output_dir=Path(paths["output_dir"]),
        checkpoint_dir=Path(paths["checkpoint_dir"]),
        cache_dir=Path(paths["cache_dir"]),
    )


def _validate(cfg: DictConfig) -> None:
    """Fail on bad settings before any data is read or model loaded (one line, exit 2).

    The ranges live in :mod:`medcoder.workflows.config_checks`, shared with calibration; this adds what only
    training has (the warm-start reference).
    """
    check_train_config(cfg)
    checkpoint_folder(Path(cfg.paths.checkpoint_dir), cfg.get("run_name"))  # a folder name, never a path
    if cfg.get("warm_start"):
        check_warm_start_ref(str(cfg.warm_start))


def train(cfg: DictConfig) -> TrainResult:
    """Train, evaluate on dev/test and log one MLflow run; returns its id and metrics.

    The door: the config is checked (:func:`_validate`), then turned into :class:`TrainSettings`
    once (:func:`train_settings`); nothing below takes it."""
    _validate(cfg)
    started = time.time()
    settings = train_settings(cfg)
    set_seed(settings.seed)
    plan = settings.fusion
    if not plan.neural_only and world_size() > 1:
        raise ConfigError(f"fusion.views={list(plan.views)} under torchrun (WORLD_SIZE={world_size()})",
                          hint="the out-of-fold heads of the stacked fusion train in one process: run it "
                               "without torchrun, or fusion=none")
    data = _load_data(settings)
    if not plan.has_neural:
        return _train_views_only(settings, data, started)
    return _train_with_neural(settings, data, started)


@dataclass
class _Data:
    """The train/dev/test notes and the label space built from train."""

    splits: DatasetDict
    label_space: LabelSpace
    coverage: dict[str, float]  # per split: share of gold codes inside the label space

    def labels(self, name: str) -> np.ndarray:
        """Multi-hot ``(n_notes, n_codes)`` float32 gold labels of split ``name``."""
        return self.label_space.encode(self.splits[name]["codes"])

    def with_tuning_in_train(self, settings: TrainSettings) -> _Data:
        """Train and the tuning fifth together (``certification.refit``), with design
        ``all_labels``'s ``refit_only`` notes too, and the label space rebuilt from them: the
        refitted model knows the tuning notes' codes too."""
        train = concatenate_datasets([self.splits[name] for name in refit_splits(self.splits)])
        splits = DatasetDict({**self.splits, "train": train})
        label_space = _label_space(settings, train)
        return _Data(splits, label_space, {name: label_space.coverage(splits[name]["codes"]) for name in SPLITS})


@dataclass
class _Refit:
    """The views and stacker fitted again on train plus the tuning fifth (``certification.refit``),
    after the four-fifths model has scored the tuning notes: the run's model is this one, and the
    four-fifths model is kept as ``tuning_model/``, the one calibrate scores the tuning notes with
    (their scores must come from a model that never saw them)."""

    fusion: FusionResult
    data: _Data


def _label_space(settings: TrainSettings, train: Any) -> LabelSpace:
    label_space = LabelSpace.from_codes(
        train["codes"],
        min_count=settings.label_min_count,
        top_k=settings.label_top_k,
        codeset_fy=settings.codeset_fy,
    )
    if len(label_space) == 0:
        raise ConfigError("the label space is empty", hint="lower labels.min_count or check data.code_type")
    label_space.descriptions = code_descriptions(label_space.codes, code_type=settings.corpus.code_type,
                                                 fiscal_year=settings.codeset_fy)
    return label_space


def _load_data(settings: TrainSettings) -> _Data:
    # The certify split (if the design carves one) is never read here: its labels certify tau.
    splits = build_corpus(settings.data, settings.certification)
    for name in SPLITS:
        if name not in splits:
            raise ConfigError(f"data.{name}: the corpus has no {name!r} split", hint="train, dev and test are needed")
    if settings.max_samples:
        # Like HF examples' max_train_samples: quick smoke runs and tests on a real corpus.
        limit = settings.max_samples
        splits = DatasetDict({n: splits[n].select(range(min(len(splits[n]), limit))) for n in splits})
    label_space = _label_space(settings, splits["train"])
    coverage = {name: label_space.coverage(splits[name]["codes"]) for name in SPLITS}
    log.info("label space: %d codes; coverage %s", len(label_space), coverage)
    return _Data(splits, label_space, coverage)


@contextlib.contextmanager
def _training_run(settings: TrainSettings, experiment_id: str, data: _Data, truncated: dict[str, Any], *,
                  tags: dict[str, str], continue_run_id: str | None = None) -> Iterator[Any]:
    """The training's MLflow run (under ``--multirun`` a child of the sweep's parent run,
    medcoder.tracking.sweeps) with what every training logs first: config and environment (not
    again for a continued run), tags, the label count and each split's share of truncated notes."""
    run_ctx, sweep_parent = start_child_or_run(experiment_id, "train", run_id=continue_run_id,
                                               run_name=None if continue_run_id else settings.run_name)
    with run_ctx as run:
        if not continue_run_id:
            log_config(settings.config)
            log_environment()
        mlflow.set_tags({
            "medcoder.data": settings.data_name,
            "medcoder.model": settings.model_name,
            "medcoder.codeset_fy": str(settings.codeset_fy),
            "medcoder.git_sha": git_sha(settings.root_dir),
            "medcoder.world_size": str(world_size()),
            **tags,
        })
        mlflow.log_metrics({"n_labels": len(data.label_space),
                            **{f"{n}_truncated_share": float(np.mean(truncated[n])) for n in SPLITS}})
        yield run
    if sweep_parent is not None:
        update_sweep_summary(sweep_parent)


def _train_views_only(settings: TrainSettings, data: _Data, started: float) -> TrainResult:
    """``fusion.views`` without the neural view (e.g. ``[tfidf,dictionary]``): no encoder, tokenizer,
    Trainer or encoder-state cache, nothing downloaded.

    Every view is fitted on train and its K-fold out-of-fold scores over train fit the stacker
    (:func:`~medcoder.workflows.fusion.fit_fusion`; with ``fusion.stacker_fit=tuning`` the tuning
    notes' scores refit it, :func:`_stacker_from_tuning`); dev only tunes the decision threshold and test
    is only scored (:func:`_evaluate_and_save`, shared with the neural path). Checkpoints and
    ``trainer.resume`` do not apply here: nothing trains in epochs (a few closed-form fits), so an
    interrupted run is simply started again, as a new MLflow run.
    """
    experiment_id = setup_experiment(settings.tracking)
    # These views read every note whole: a note counts as truncated only where the inference path
    # cuts it (longer than Coder.max_note_chars), as calibration counts it (truncated_by_length).
    truncated = {n: truncated_by_length(data.splits[n]["text"]) for n in SPLITS}
    with _training_run(settings, experiment_id, data, truncated, tags={"medcoder.encoder_mode": "none"}) as run:
        fusion = fit_fusion(settings.fusion, settings.corpus, data.splits, data.label_space, data.labels("train"))
        refit = None
        if settings.certification.get("refit"):
            full = data.with_tuning_in_train(settings)
            log.info("certification.refit: fitting the views and the stacker again on %d notes (%s), %d codes",
                     len(full.splits["train"]), " + ".join(refit_splits(data.splits)), len(full.label_space))
            refit = _Refit(fit_fusion(settings.fusion, settings.corpus, full.splits, full.label_space,
                                      full.labels("train")), full)
        result = _evaluate_and_save(settings, run.info.run_id, data, started, fusion=fusion, refit=refit)
    return result


def _initial_model(settings: TrainSettings, encoder_path: str, tokenizer: Any, label_space: LabelSpace,
                   n_train: int) -> Any:
    """The neural model before training: label queries from the codes' descriptions (when
    configured) and output biases from their training prevalence."""
    model = build_model(settings.model, encoder_path, label_space.codes, codeset_fy=settings.codeset_fy)
    if settings.model["label_init"] == "description":
        n_init = init_from_descriptions(model, tokenizer, [label_space.descriptions.get(c, "") for c in label_space.codes])
        log.info("label queries initialised from descriptions for %d/%d codes", n_init, len(label_space))
    init_bias_from_frequency(model, [label_space.frequency[c] for c in label_space.codes], n_train)
    return model


def _refit_with_neural(settings: TrainSettings, data: _Data, encoder_path: str, tokenizer: Any,
                       states: Mapping[str, EncodedStates], best_epochs: int) -> tuple[_Refit, Any]:
    """``certification.refit`` with the neural view: a head started afresh over the label space of
    train + the tuning fifth, trained on their cached encoder states for the epoch count the tuning
    fifth early-stopped the four-fifths head at (nothing evaluated on notes it trains on), then the
    other views and the stacker refitted around it (out-of-fold heads included). Returns the refit
    and its trained model."""
    full = data.with_tuning_in_train(settings)
    n_train = len(full.splits["train"])
    log.info("certification.refit: the neural head and the views again on %d notes (%s), %d codes, %d epochs",
             n_train, " + ".join(refit_splits(data.splits)), len(full.label_space), best_epochs)
    model = _initial_model(settings, encoder_path, tokenizer, full.label_space, n_train)
    initial = copy.deepcopy(model)
    model.freeze_encoder(0)
    # the same frozen encoder's states, in with_tuning_in_train's note order
    train_states = EncodedStates.concat(*(states[name] for name in refit_splits(data.splits)))
    labels = full.labels("train")
    with tempfile.TemporaryDirectory(prefix="medcoder-refit-") as tmp:
        args = training_arguments(settings.trainer, output_dir=Path(tmp), seed=settings.seed,
                                  overrides=fixed_epochs(best_epochs))
        trainer = MedCoderTrainer(model=model, args=args, train_dataset=StatesDataset(train_states, labels),
                                  data_collator=collate_states, head_learning_rate=settings.trainer.get("head_learning_rate"))
        trainer.train()
    fusion = fit_fusion(settings.fusion, settings.corpus, full.splits, full.label_space, labels,
                        NeuralInputs(trainer.model, initial, tokenizer, train_states, best_epochs, settings.trainer))
    return _Refit(fusion, full), trainer.model


def _train_with_neural(settings: TrainSettings, data: _Data, started: float) -> TrainResult:
    """The neural label-attention model (HF Trainer, checkpoints, resume, torchrun), alone or as
    one of the fused views."""
    splits, label_space = data.splits, data.label_space
    model_group, trainer_group = settings.model, settings.trainer  # the two groups, plain

    # -- model and features ----------------------------------------------------------------
    encoder_path = resolve_encoder(model_group["encoder"])
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    feats = featurize(
        splits, tokenizer, label_space, chunk_size=model_group["chunk_size"], max_chunks=model_group["max_chunks"]
    )
    model = _initial_model(settings, encoder_path, tokenizer, label_space, len(splits["train"]))
    warm: WarmStartReport | None = None
    if settings.warm_start:
        # After the cold init: carried rows are overwritten with the source's, added codes keep
        # theirs unless they inherit an ancestor's (medcoder.training.warm_start).
        warm_started = time.time()
        setup_experiment(settings.tracking)  # a run id is looked up in the tracking store
        with tempfile.TemporaryDirectory(prefix="medcoder-warm-start-") as tmp:
            warm = apply_warm_start(model, settings.warm_start, label_space.codes, Path(tmp),
                                    fetch_run=_fetch_run)
        warm_seconds = time.time() - warm_started

    mode = trainer_group["encoder_mode"]
    cache_dir = settings.cache_dir if trainer_group["cache_states_on_disk"] else None
    fused = not settings.fusion.neural_only
    # torchrun: one process per rank; rank 0 alone logs, evaluates and saves (training.distributed).
    dist = distributed_state(cpu=bool(trainer_group.get("use_cpu", False)))
    # The out-of-fold heads start where the final model starts (same description/prevalence init).
    initial_model = copy.deepcopy(model) if fused else None
    if mode == "cached":
        model.freeze_encoder(0)
        datasets = {}
        for name in dict.fromkeys((*SPLITS, *refit_splits(splits))):  # + design all_labels's refit_only
            with main_first(dist):  # rank 0 encodes and writes the cache; the other ranks then read it
                states = get_states(
                    model.encoder, feats[name],
                    chunk_size=model_group["chunk_size"], max_chunks=model_group["max_chunks"],
                    cache_dir=cache_dir, batch_chunks=trainer_group["encode_batch_chunks"], desc=f"encoding {name}",
                )
            # dev is evaluated every epoch in item order: sorted by length it pads far less.
            order = np.argsort(states.lengths(), kind="stable") if name == "dev" else None
            datasets[name] = StatesDataset(states, np.asarray(feats[name]["labels"], dtype=np.float32), order)
        collator = collate_states
    else:
        if trainer_group["train_top_layers"] >= 0:
            model.freeze_encoder(trainer_group["train_top_layers"])
        datasets = {name: ChunksDataset(feats[name]) for name in SPLITS}
        collator = collate_chunks

    dev_gold = list(splits["dev"]["codes"])
    dev_order = getattr(datasets["dev"], "order", None)
    if dev_order is not None:
        dev_gold = [dev_gold[i] for i in dev_order]

    def dev_metrics(pred) -> dict[str, float]:
        return {"map": codiesp_map(sigmoid(pred.predictions), label_space.codes, dev_gold)}

    # -- fit -------------------------------------------------------------------------------
    ckpt_dir = checkpoint_folder(settings.checkpoint_dir, settings.run_name)
    with main_first(dist):  # rank 0 checks/creates the checkpoint folder; the others only read it
        if is_main_process(dist):
            resume_from = checkpoint_to_resume(ckpt_dir, settings.config, mode=trainer_group["resume"],
                                               run_name=settings.run_name)
        else:
            resume_from = last_complete_checkpoint(ckpt_dir) if trainer_group["resume"] == "auto" else None

    def fit() -> MedCoderTrainer:
        trainer = MedCoderTrainer(
            model=model,
            args=training_arguments(trainer_group, output_dir=ckpt_dir, seed=settings.seed),
            train_dataset=datasets["train"],
            eval_dataset=datasets["dev"],
            data_collator=collator,
            compute_metrics=dev_metrics,
            callbacks=[EarlyStoppingCallback(trainer_group["early_stopping_patience"]), EpochMetricsCallback()],
            head_learning_rate=trainer_group.get("head_learning_rate"),
        )
        if resume_from:
            log.info("resuming from %s", resume_from)
        trainer.train(resume_from_checkpoint=resume_from)
        return trainer

    if not is_main_process(dist):
        fit()  # this rank trains its shard of every batch; rank 0 holds the MLflow run
        release(dist)
        return TrainResult("", {}, settings.output_dir, time.time() - started)
    experiment_id = setup_experiment(settings.tracking)
    continued = mlflow_run_to_continue(ckpt_dir, resume_from)
    truncated = {n: feats[n]["truncated"] for n in SPLITS}
    tags = {"medcoder.encoder_mode": mode, "medcoder.resumed_from": Path(resume_from).name if resume_from else ""}
    with _training_run(settings, experiment_id, data, truncated, tags=tags, continue_run_id=continued) as run:
        (ckpt_dir / "mlflow_run_id.txt").write_text(run.info.run_id)
        if warm is not None:
            _log_warm_start(warm)
            mlflow.log_metric("warm_start_seconds", warm_seconds)
        trainer = fit()
        if trainer.state.global_step == 0:
            # Belt and braces behind check_train_config: metrics of an untrained model must never
            # end up in a FINISHED run that can be calibrated and exported (the run is marked FAILED).
            raise ConfigError(
                f"training ran 0 optimizer steps (trainer.num_train_epochs={trainer_group['num_train_epochs']}, "
                f"{len(datasets['train'])} training notes)",
                hint="set trainer.num_train_epochs >= 1 and check the training split",
            )

        # -- evaluate the best checkpoint ------------------------------------------------------
        # Through the shared inference path (identical to the Trainer's own logits; tested).
        score_cache = cache_dir if mode == "cached" else None
        neural_logits = {
            n: score_features(trainer.model, feats[n], batch_size=trainer_group["per_device_eval_batch_size"],
                              cache_dir=score_cache)
            for n in ("dev", "test")
        }
        fusion = None
        refit, final_model = None, trainer.model
        if fused:
            # Extra views + stacker (medcoder.workflows.fusion): out-of-fold over train only.
            fusion = fit_fusion(settings.fusion, settings.corpus, splits, label_space, data.labels("train"),
                                NeuralInputs(trainer.model, initial_model, tokenizer,
                                             getattr(datasets["train"], "states", None), _best_epoch(trainer),
                                             trainer_group))
            if settings.certification.get("refit"):
                refit, final_model = _refit_with_neural(
                    settings, data, encoder_path, tokenizer,
                    {n: datasets[n].states for n in refit_splits(splits)}, _best_epoch(trainer))
                # dev stays the four-fifths model's (it never trained on it); test is the refit's
                neural_logits["test"] = score_features(final_model, feats["test"],
                                                       batch_size=trainer_group["per_device_eval_batch_size"],
                                                       cache_dir=score_cache)

        def save_model(out: Path) -> None:
            models = {NEURAL_DIR: final_model}
            if refit is not None:  # the four-fifths model that scores the tuning notes in calibrate
                models[f"{TUNING_MODEL_DIR}/{NEURAL_DIR}"] = trainer.model
            for folder, neural_model in models.items():
                neural_model.save_pretrained(out / folder)
                tokenizer.save_pretrained(out / folder)
            if settings.tracking.log_model:  # tuning_model/ is logged whole with its other views
                mlflow.log_artifacts(str(out / NEURAL_DIR), NEURAL_DIR)

        result = _evaluate_and_save(settings, run.info.run_id, data, started, fusion=fusion, neural_logits=neural_logits,
                                    save_model=save_model, refit=refit)
        remove_checkpoints(ckpt_dir)  # finished: the model now lives in MLflow (only a folder medcoder made)
    return result


def _score_dev_test(fusions: Mapping[str, FusionResult], splits: DatasetDict,
                    neural_logits: dict[str, np.ndarray] | None
                    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Scores]]]:
    """Fused logits of dev and test, each by its own fitted fusion (``fusions[split]``), and each
    view's own scores (the neural view's already scored)."""
    logits, view_scores = {}, {}
    for n in ("dev", "test"):
        fusion = fusions[n]
        views = fusion.scorer.score_views(list(splits[n]["text"]), exclude=(NEURAL,))
        if neural_logits is not None:
            views[NEURAL] = Scores(neural_logits[n])
        logits[n] = fusion.scorer.fuse(views)
        view_scores[n] = views
    return logits, view_scores


def _stacker_from_tuning(plan: FusionPlan, fusions: Mapping[str, FusionResult],
                         view_scores: Mapping[str, Mapping[str, Scores]], labels_dev: np.ndarray, *,
                         oof_logits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``fusion.stacker_fit=tuning`` / ``blend``: the stacker fitted on the fitted views' scores of
    the tuning notes (:func:`~medcoder.workflows.fusion.fit_stacker_on_tuning`) replaces the
    out-of-fold one (``tuning``; the config checks refuse it with a refit, whose views the stacker
    never saw) or joins it, their logits averaged (``blend``: every model of the run, the refit's
    too, gets a :class:`~medcoder.modeling.stacker.BlendedStacker` of its own out-of-fold stacker and
    this one). Returns the fused logits: dev's with the tuning stacker's part cross-fitted (no note
    scored by a tuning stacker that saw it; ``oof_logits["dev"]``: the out-of-fold stacker's), test's
    by the run's model."""
    stacker, dev_logits = fit_stacker_on_tuning(plan, view_scores["dev"], fusions["dev"].scorer.frequency, labels_dev)
    blend = plan.stacker_fit == "blend"
    weights = {"out_of_fold": 1.0 - plan.stacker_blend_weight, "tuning": plan.stacker_blend_weight}
    for result in {id(r): r for r in fusions.values()}.values():
        result.scorer.stacker = (BlendedStacker({"out_of_fold": result.scorer.stacker, "tuning": stacker}, weights)
                                 if blend else stacker)
    if blend:  # BlendedStacker's formula, with the tuning part cross-fitted
        dev_logits = blend_logits({"out_of_fold": oof_logits["dev"], "tuning": dev_logits}, weights)
    log.info("fusion.stacker_fit=%s: stacker fitted on %d tuning notes (%d folds for their own scores)",
             plan.stacker_fit, labels_dev.shape[0], plan.stacker_folds)
    return {"dev": dev_logits, "test": fusions["test"].scorer.fuse(view_scores["test"])}


def _evaluate_and_save(settings: TrainSettings, run_id: str, data: _Data, started: float, *,
                       fusion: FusionResult | None = None, neural_logits: dict[str, np.ndarray] | None = None,
                       save_model: Callable[[Path], None] | None = None, refit: _Refit | None = None) -> TrainResult:
    """Everything after fitting, the same with or without the neural view: score dev and test, tune
    the decision threshold on dev, log the metrics, write and log the run's files.

    ``fusion``: the fitted views + stacker (None: the neural view alone, ``neural_logits``);
    ``neural_logits``: dev/test logits of the trained neural model (None: no neural view);
    ``save_model(out)``: writes (and logs) the neural view's ``model/`` folder; ``refit``: the
    views refitted on train + the tuning fifth (``certification.refit``): dev (the tuning fifth) is
    still scored by ``fusion``, which never saw it; test, and the run's model, are the refit's.
    """
    splits = data.splits
    final = refit.data if refit is not None else data  # the run's model's data and label space
    label_space = final.label_space
    spaces = {"dev": data.label_space, "test": label_space}
    y = {"dev": data.labels("dev"), "test": final.labels("test")}
    view_metrics: dict[str, float] = {}
    view_thresholds: dict[str, float] = {}
    if fusion is not None:
        fusions = {"dev": fusion, "test": refit.fusion if refit is not None else fusion}
        logits, view_scores = _score_dev_test(fusions, splits, neural_logits)
        if settings.fusion.stacker_fit in ("tuning", "blend"):
            logits = _stacker_from_tuning(settings.fusion, fusions, view_scores, y["dev"], oof_logits=logits)
            view_metrics["dev_map_stacker_in_sample"] = codiesp_map(
                fusion.scorer.fuse(view_scores["dev"]), data.label_space.codes, list(splits["dev"]["codes"]))
        for name in view_scores["dev"]:
            # Each view alone, with its own dev-tuned threshold (the benchmark table's rows).
            t = view_thresholds[name] = tune_global_threshold(view_scores["dev"][name].scores, y["dev"])
            for n in ("dev", "test"):
                v = compute_all(view_scores[n][name].scores, y[n], threshold=t, gold_codes=list(splits[n]["codes"]),
                                label_codes=spaces[n].codes)
                view_metrics.update({f"{n}_{k}_{name}": float(v[k]) for k in ("map", "micro_f1", "p_at_8")})
        view_metrics.update({f"fusion_{k}_seconds": v for k, v in fusion.seconds.items()})
        if refit is not None:
            view_metrics.update({f"fusion_refit_{k}_seconds": v for k, v in refit.fusion.seconds.items()})
            view_metrics["refit_train_notes"] = float(len(final.splits["train"]))
    else:
        assert neural_logits is not None, "a run without fused views is the neural view alone"
        logits = neural_logits
    probs = {n: sigmoid(logits[n]) for n in ("dev", "test")}
    threshold = tune_global_threshold(probs["dev"], y["dev"])
    metrics: dict[str, float] = {"decision_threshold": float(threshold)}
    for n in ("dev", "test"):
        values = compute_all(
            probs[n], y[n], threshold=threshold, gold_codes=list(splits[n]["codes"]), label_codes=spaces[n].codes
        )
        values["label_coverage"] = (data if n == "dev" else final).coverage[n]
        metrics.update({f"{n}_{k}": float(v) for k, v in values.items()})
    metrics["train_label_coverage"] = final.coverage["train"]
    metrics.update(view_metrics)
    metrics["train_wall_seconds"] = time.time() - started
    mlflow.log_metrics(metrics)

    # -- artifacts ---------------------------------------------------------------------------
    out = settings.output_dir / "runs" / run_id
    out.mkdir(parents=True, exist_ok=True)
    if save_model is not None:
        save_model(out)
    label_space.to_json(out / "labels.json")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    mlflow.log_artifact(str(out / "labels.json"))
    mlflow.log_artifact(str(out / "metrics.json"))
    # The test ranking in CodiEsp's submission format (+ a TREC twin with real, strictly
    # decreasing scores): the official evaluation gives the logged test_map (tested).
    for path in write_codiesp_run(out / "codiesp_run_test.tsv", list(splits["test"]["id"]), label_space.codes,
                                  logits["test"]):
        mlflow.log_artifact(str(path))
    # Per-note top codes, gold codes and gold ranks (no text): what scripts/compare.py needs for
    # bootstrap CIs and paired tests (medcoder.evaluation.note_predictions); with fused views, each
    # view alone too, at its own dev-tuned threshold (scripts/compare.py views=true).
    per_view = {None: (probs["test"], threshold)}
    if fusion is not None:
        per_view.update({name: (s.scores, view_thresholds[name]) for name, s in view_scores["test"].items()})
    for name, (scores, t) in per_view.items():
        mlflow.log_artifact(str(write_note_predictions(
            out / note_predictions_filename("test", name), build_note_predictions(
                list(splits["test"]["id"]), scores, label_space.codes, list(splits["test"]["codes"]),
                threshold=t, split="test"))))
    if fusion is not None:
        model = refit.fusion if refit is not None else fusion
        # Out-of-fold train scores (numbers only, no text), kept beside the run for analysis of
        # the stacker and acceptance rules; not logged to MLflow.
        np.savez_compressed(out / "oof_train.npz", labels=final.labels("train").astype(np.int8),
                            **{f"{v}_{k}": a for v, sc in model.oof.items()
                               for k, a in {"scores": sc.scores, **sc.flags}.items()})
        model.scorer.save_extra(out)  # scorers/<view>/ and stacker.json (model/: save_model)
        mlflow.log_artifacts(str(out / SCORERS_DIR), SCORERS_DIR)
        mlflow.log_artifact(str(out / STACKER_FILE))
        if refit is not None:
            tuning_dir = out / TUNING_MODEL_DIR
            fusion.scorer.save_extra(tuning_dir)
            data.label_space.to_json(tuning_dir / "labels.json")
            mlflow.log_artifacts(str(tuning_dir), TUNING_MODEL_DIR)
    freq = np.array([label_space.frequency[c] for c in label_space.codes], dtype=float)
    fig = plot_f1_vs_frequency(
        per_code_f1(y["test"], (probs["test"] >= threshold).astype(float)), freq,
        title=f"{settings.data_name} / {settings.model_name}: per-code test F1",
    )
    mlflow.log_figure(fig, "per_code_f1_vs_frequency.png")
    return TrainResult(run_id, metrics, out, time.time() - started)


def _fetch_run(run_id: str, download_dir: Path) -> tuple[Path, Path]:
    """A run id as warm-start source: its ``model/`` and ``labels.json`` from the tracking store."""
    artifacts = download_run(run_id, download_dir)
    return artifacts.model_dir, artifacts.labels_path


def _log_warm_start(report: WarmStartReport) -> None:
    """MLflow: param ``warm_start.source``, ``warm_start_*`` counts, ``warm_start.json`` (codes only)."""
    mlflow.log_param("warm_start.source", report.source)
    mlflow.log_metrics(report.metrics())
    mlflow.log_text(report.to_json(), "warm_start.json")


def _best_epoch(trainer: MedCoderTrainer) -> int:
    """The epoch whose dev MAP the Trainer kept (early stopping): the out-of-fold heads train as long."""
    evals = [h for h in trainer.state.log_history if "eval_map" in h]
    if not evals:
        return max(1, int(round(trainer.state.epoch or 1)))
    return max(1, int(round(max(evals, key=lambda h: h["eval_map"])["epoch"])))
