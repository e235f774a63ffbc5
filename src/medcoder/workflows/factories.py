"""The one wiring point between configs and the package: config node -> object.

Why one module: before it, ``data.format``, ``calibration.method``, ``trainer.encoder_mode`` and
``model.label_init`` were dispatched by string in four packages, and constructors were copied
field by field from the config. Here every part is built in one place, configs pass through by
parameter name (:func:`kwargs_for`: a new constructor argument needs a config key, not a code
edit), and a config that does not fit is one ``ConfigError`` line. The domain packages below take
plain Python values and never see a ``DictConfig`` (import-linter: ``no-config-in-domain``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from transformers import TrainingArguments

from medcoder.calibration.calibrators import CALIBRATORS, BaseCalibrator
from medcoder.calibration.risk_control import RiskTargets
from medcoder.calibration.thresholds import DecisionThreshold
from medcoder.constraints import check_keys
from medcoder.data import load_corpus
from medcoder.data.loaders import load_reviewed
from medcoder.data.splits import (
    ALL_LABELS_DESIGN,
    REFIT_DESIGNS,
    REVIEWED_DESIGN,
    ReviewedSplit,
    carve_certification,
    certify_on_reviewed,
    split_reviewed,
)
from medcoder.errors import ConfigError
from medcoder.modeling import MedCoderForICDCoding
from medcoder.modeling import views as view_table
from medcoder.modeling.stacker import Stacker
from medcoder.routing.policy import RoutingPolicy
from medcoder.tracking import TrackingSettings
from medcoder.workflows.config_checks import dictionary_sources, fusion_views

if TYPE_CHECKING:  # FusionPlan's module imports this one (training_arguments): imported where used
    from medcoder.workflows.fusion import FusionPlan

__all__ = ["CERTIFICATION_KEYS", "REVIEWED_CERTIFICATION_KEYS", "LABELS_KEYS", "CODESET_KEYS", "build_calibrator", "build_corpus", "build_decision_threshold",
           "build_fusion_plan", "build_model", "build_risk_targets", "build_routing", "build_tracking", "certification_settings",
           "reviewed_split_of",
           "check_keys", "config_dict", "kwargs_for", "plain", "training_arguments"]

log = logging.getLogger(__name__)

#: Keys of the ``routing`` group that are the certification targets, not policy parameters.
_TARGET_KEYS = ("target_precision", "delta", "min_coverage")
#: ``RoutingPolicy`` parameters that come from fitting or the label space, never from the config.
_ROUTING_SET_BY_CODE = ("tau_accept", "decision_threshold", "codeset_fy", "codeset", "targets")


def plain(node: Any, group: str = "") -> Any:
    """A config node as plain Python, resolved. An unset ``???`` value is a one-line
    ``ConfigError`` naming ``<group>.<key>`` (a silently dropped split would be worse)."""
    if isinstance(node, DictConfig):
        try:
            return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            key = f"{group}.{exc.full_key}" if group else str(exc.full_key)
            raise ConfigError(f"{key} is required but not set (???)",
                              hint=f"pass {key}=... on the command line, or {key}=null if not needed") from exc
    return dict(node) if isinstance(node, Mapping) else node


def config_dict(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain, resolved Python without Hydra's own node: what is logged as
    ``config.yaml`` and flattened params (``medcoder.tracking.log_config``)."""
    data = plain(cfg)
    data.pop("hydra", None)
    return data


def accepted_keys(fn: Callable[..., Any], *, exclude: Iterable[str] = (), also: Iterable[str] = ()) -> list[str]:
    """The config keys ``fn`` (a function or a class) takes by name, minus ``exclude`` (what the
    caller passes itself), plus ``also`` (keys of the group that are read elsewhere)."""
    skip = set(exclude)
    params = [name for name, p in inspect.signature(fn).parameters.items()
              if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in ("self", "cls")]
    return [*(p for p in params if p not in skip), *also]


def kwargs_for(fn: Callable[..., Any], node: Any, *, group: str, exclude: Iterable[str] = (),
               also: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of ``node`` as keyword arguments of ``fn`` (a function or a class), passed through
    by name. A key that is neither a parameter of ``fn`` nor listed in ``also`` (keys of the group
    read elsewhere) is a ``ConfigError`` (:func:`check_keys`); ``exclude``: parameters the caller
    passes itself."""
    allowed = accepted_keys(fn, exclude=exclude, also=also)
    values = plain(node, group) or {}
    check_keys(group, values, allowed)
    passed = set(allowed) - set(also)
    return {k: v for k, v in values.items() if k in passed}


def calibration_key_problems(calibration: Mapping[str, Any], routing: Mapping[str, Any],
                             tracking: Mapping[str, Any]) -> list[str]:
    """Unknown keys of the ``calibration``, ``routing`` and ``tracking`` groups (plain mappings), as
    sentences, for the checks that run before anything is loaded; the builders below refuse the
    same keys (one list of valid keys: the constructors' signatures)."""
    groups: list[tuple[str, Any, list[str]]] = [
        ("calibration", calibration, ["method", "params", "decision_threshold"]),
        ("calibration.decision_threshold", calibration.get("decision_threshold") or {},
         accepted_keys(DecisionThreshold)),
        ("routing", routing, accepted_keys(RoutingPolicy, exclude=_ROUTING_SET_BY_CODE, also=_TARGET_KEYS)),
        ("tracking", tracking, list(_TRACKING_KEYS)),
    ]
    method = calibration.get("method")
    if isinstance(method, str) and method in CALIBRATORS:
        groups.append(("calibration.params", calibration.get("params") or {}, accepted_keys(CALIBRATORS[method])))
    out = []
    for group, values, allowed in groups:
        try:
            check_keys(group, values if isinstance(values, Mapping) else {}, allowed)
        except ConfigError as exc:
            out.append(f"{exc.message} (valid: {', '.join(sorted(allowed))})")
    return out


_TRACKING_KEYS = ("uri", "artifact_dir", "experiment_name", "log_model")
#: The ``labels`` group: ``LabelSpace.from_codes``'s settings.
LABELS_KEYS = ("min_count", "top_k")
#: The ``codeset`` group: which ICD-10-CM year, and CMS's order file for a year not shipped.
CODESET_KEYS = ("fiscal_year", "order_file")


def build_tracking(cfg: DictConfig) -> TrackingSettings:
    """The ``tracking`` group (+ ``paths.root_dir``) -> where MLflow runs go."""
    values = plain(cfg.tracking, "tracking") or {}
    check_keys("tracking", values, _TRACKING_KEYS)
    return TrackingSettings.from_mapping(values, Path(str(cfg.paths.root_dir)))


#: Keys of the ``certification`` group (``configs/train.yaml``).
CERTIFICATION_KEYS = ("design", "fraction", "seed", "refit")
#: Further keys of design ``reviewed`` (set by ``scripts/retrain.py``, recorded in the run's config so
#: calibrate and export rebuild the same partition): ``tuning``, the carve design that gives the
#: tuning dev; ``reviewed``, the export's labels file, and ``reviewed_sha256``, its digest; the
#: held-out slice's ``holdout_fraction``, ``holdout_min_notes`` and ``holdout_seed``.
REVIEWED_CERTIFICATION_KEYS = ("tuning", "reviewed", "reviewed_sha256", "holdout_fraction", "holdout_min_notes",
                               "holdout_seed")


def certification_settings(certification_cfg: Any) -> dict[str, Any]:
    """The ``certification`` group as plain values; a run trained before it existed (``None``)
    used design ``none`` (dev tuned and certified)."""
    values = plain(certification_cfg, "certification") or {"design": "none"}
    check_keys("certification", values, (*CERTIFICATION_KEYS, *REVIEWED_CERTIFICATION_KEYS))
    out = {"design": str(values.get("design", "none")), "fraction": float(values.get("fraction", 0.5)),
           "seed": int(values.get("seed", 0)), "refit": values.get("refit") is True}
    if out["refit"] and out["design"] not in REFIT_DESIGNS:
        raise ConfigError(f"certification.refit=true with certification.design={out['design']}",
                          hint="refit re-fits on train plus the tuning fifth that designs inner_train and "
                               "all_labels carve; set certification.design=inner_train or certification.refit=false")
    if out["design"] == ALL_LABELS_DESIGN and not out["refit"]:
        raise ConfigError(f"certification.design={ALL_LABELS_DESIGN} with certification.refit=false",
                          hint="all_labels fits the run's model on every labelled note through the refit: "
                               "set certification.refit=true")
    if out["design"] == REVIEWED_DESIGN:
        absent = [k for k in REVIEWED_CERTIFICATION_KEYS if values.get(k) is None]
        if absent:
            raise ConfigError(f"certification.design={REVIEWED_DESIGN} without certification.{absent[0]}",
                              hint="design reviewed is set up by scripts/retrain.py reviewed=<labels.jsonl>")
        out.update({k: values[k] for k in REVIEWED_CERTIFICATION_KEYS})
    else:
        extra = [k for k in REVIEWED_CERTIFICATION_KEYS if values.get(k) is not None]
        if extra:
            raise ConfigError(f"certification.{extra[0]} is set but certification.design={out['design']}",
                              hint=f"it belongs to design {REVIEWED_DESIGN} (scripts/retrain.py)")
    return out


def reviewed_split_of(settings: Mapping[str, Any]) -> tuple[datasets.Dataset, ReviewedSplit]:
    """Design ``reviewed``'s notes and their held-out/training split, from the group's settings
    (:func:`certification_settings`); the file must still have the digest the run recorded."""
    notes, path, _ = load_reviewed(settings["reviewed"], sha256=settings["reviewed_sha256"])
    split = split_reviewed(list(notes["id"]), fraction=settings["holdout_fraction"],
                           min_notes=settings["holdout_min_notes"], seed=settings["holdout_seed"],
                           source=f"reviewed={path}", verified=list(notes["verified"]))
    return notes, split


def build_corpus(data_cfg: Any, certification_cfg: Any = None) -> datasets.DatasetDict:
    """The ``data`` group -> ``DatasetDict`` (``data.format`` picks the loader in
    :func:`medcoder.data.load_corpus`, the one format table), re-partitioned by the
    ``certification`` group when given (:func:`medcoder.data.splits.carve_certification`: a
    ``certify`` split that no tuning job reads). Train, calibrate and export's re-fit pass the
    training run's group, so all three see the same partition."""
    corpus = load_corpus(plain(data_cfg, "data"))
    if certification_cfg is None:
        return corpus
    settings = certification_settings(certification_cfg)
    if settings["design"] == REVIEWED_DESIGN:
        # A held-out slice of reviewed notes certifies; the rest joins train (scripts/retrain.py).
        notes, split = reviewed_split_of(settings)
        return datasets.DatasetDict(certify_on_reviewed(corpus, notes, split, tuning=str(settings["tuning"]),
                                                        fraction=settings["fraction"], seed=settings["seed"],
                                                        source=f"reviewed={settings['reviewed']}"))
    return datasets.DatasetDict(carve_certification(corpus, settings["design"], fraction=settings["fraction"],
                                                    seed=settings["seed"]))


def build_calibrator(calibration_cfg: Any) -> BaseCalibrator:
    """The ``calibration`` group -> an unfitted calibrator (``method`` + ``params``)."""
    values = plain(calibration_cfg, "calibration") or {}
    check_keys("calibration", values, ("method", "params", "decision_threshold"))
    cls = CALIBRATORS.lookup(values.get("method"))
    return cls(**kwargs_for(cls, values.get("params") or {}, group="calibration.params"))


def build_decision_threshold(calibration_cfg: Any) -> DecisionThreshold:
    """``calibration.decision_threshold`` -> an unfitted :class:`DecisionThreshold`."""
    return DecisionThreshold(**kwargs_for(DecisionThreshold, calibration_cfg.decision_threshold,
                                          group="calibration.decision_threshold"))




def build_risk_targets(routing_cfg: Any) -> RiskTargets:
    """``routing.target_precision``, ``.delta``, ``.min_coverage`` -> validated :class:`RiskTargets`."""
    values = plain(routing_cfg, "routing") or {}
    return RiskTargets(**{k: values[k] for k in _TARGET_KEYS if k in values})


def build_routing(routing_cfg: Any, calibration_cfg: Any, *, codeset_fy: int | None, code_type: str
                  ) -> RoutingPolicy:
    """The ``routing`` group + ``calibration.decision_threshold`` -> an unfitted
    :class:`RoutingPolicy` holding its :class:`RiskTargets` (``policy.fit`` fits the decision
    threshold and certifies τ).

    Validity and Excludes1 come from the ICD-10-CM tables; procedure (PCS) codes are not in them,
    so for ``code_type`` other than ``D`` every code would be flagged invalid: the two rules are
    switched off, and the log says so.
    """
    kwargs = kwargs_for(RoutingPolicy, routing_cfg, group="routing", exclude=_ROUTING_SET_BY_CODE,
                        also=_TARGET_KEYS)
    if code_type != "D" and (kwargs.get("check_excludes1", True) or kwargs.get("check_validity", True)):
        log.warning("data.code_type=%s: the ICD-10-CM rules (invalid_code, excludes1_conflict) do not "
                    "apply and are off", code_type)
        kwargs["check_excludes1"] = kwargs["check_validity"] = False
    if "policy_version" in kwargs:
        kwargs["policy_version"] = str(kwargs["policy_version"])
    return RoutingPolicy(tau_accept=None, decision_threshold=build_decision_threshold(calibration_cfg),
                         codeset_fy=codeset_fy, targets=build_risk_targets(routing_cfg), **kwargs)


#: ``model`` keys that are not ``from_encoder`` parameters: the config's name (MLflow tag), the
#: encoder (resolved to a path by the workflow) and how label queries start (a training step).
_MODEL_KEYS_READ_ELSEWHERE = ("name", "encoder", "label_init")


def build_model(model_cfg: Any, encoder_path: str, codes: list[str], *, codeset_fy: int | None
                ) -> MedCoderForICDCoding:
    """The ``model`` group -> a fresh classifier (keys passed by name to ``from_encoder``)."""
    kwargs = kwargs_for(MedCoderForICDCoding.from_encoder, model_cfg, group="model",
                        exclude=("encoder_name_or_path", "codes", "codeset_fy"), also=_MODEL_KEYS_READ_ELSEWHERE)
    kwargs["encoder_overrides"] = kwargs.get("encoder_overrides") or None
    return MedCoderForICDCoding.from_encoder(encoder_path, codes, codeset_fy=codeset_fy, **kwargs)


#: ``trainer`` keys that medcoder reads itself (not ``TrainingArguments`` fields).
TRAINER_KEYS_READ_ELSEWHERE = ("encoder_mode", "train_top_layers", "head_learning_rate", "early_stopping_patience",
                               "resume", "encode_batch_chunks", "cache_states_on_disk")

#: Trainer settings that are not ``TrainingArguments`` fields under the same name.
_RENAMED = {"warmup_ratio": "warmup_steps"}  # transformers 5: a float < 1 in warmup_steps is a ratio


def training_arguments(trainer_cfg: Any, *, output_dir: Path, seed: int,
                       overrides: Mapping[str, Any] | None = None) -> TrainingArguments:
    """The ``trainer`` group -> ``TrainingArguments``: every key that is a field passes through by
    name; the evaluation/checkpoint policy that medcoder relies on (per-epoch eval and save, best
    checkpoint by dev MAP, no built-in reporters: MLflow is a callback) is fixed here."""
    values = plain(trainer_cfg, "trainer")
    fields = set(inspect.signature(TrainingArguments).parameters)
    check_keys("trainer", values, [*fields, *_RENAMED, *TRAINER_KEYS_READ_ELSEWHERE])
    kwargs = {k: v for k, v in values.items() if k in fields}
    for ours, theirs in _RENAMED.items():
        kwargs.pop(ours, None)
        if ours in values:
            kwargs[theirs] = float(values[ours])
    kwargs["max_steps"] = int(values.get("max_steps") or -1)  # optional +trainer.max_steps; -1: epochs
    fixed = {
        "output_dir": str(output_dir),
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "logging_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": "map",
        "greater_is_better": True,
        "seed": seed,
        "data_seed": seed,
        "remove_unused_columns": False,
        "label_names": ["labels"],
        "report_to": "none",
    }
    # ``overrides`` (e.g. the out-of-fold heads: fixed epochs, no evaluation) win over both.
    return TrainingArguments(**{**kwargs, **fixed, **dict(overrides or {})})


#: Keys of the ``fusion`` group besides the views' own parameter blocks (``fusion.<view>``).
_FUSION_KEYS = ("views", "folds", "neural_folds", "use_mentions", "use_descriptions", "use_spanish_titles",
                "use_projected_mentions", "stacker", "stacker_fit", "stacker_folds", "stacker_blend_weight")


def build_fusion_plan(cfg: DictConfig) -> FusionPlan:
    """The ``fusion`` group (+ ``seed``, + the lexicon sources the ``data`` group offers) -> a
    validated :class:`~medcoder.workflows.fusion.FusionPlan`, built once by the training workflow; no
    ``fusion`` group: the neural view alone.

    Strict like every factory here: a key of the group that is neither a setting nor a registered
    view (``fusion.foldz``), a key of a view's parameter block that is not a parameter of its class
    (``fusion.tfidf.max_featurez``) or of the stacker's (``fusion.stacker.CC``) is a one-line
    ``ConfigError`` naming it. Every registered view's block is checked, used or not; the neural
    view has none (its settings are the ``model`` and ``trainer`` groups).
    """
    from medcoder.workflows.fusion import FusionPlan

    values = plain(cfg.get("fusion"), "fusion") or {}
    blocks = [v for v in view_table.registered_views() if v != view_table.NEURAL]
    check_keys("fusion", values, [*_FUSION_KEYS, *blocks])
    view_params = {name: kwargs_for(view_table.scorer_class(name), values.get(name) or {}, group=f"fusion.{name}")
                   for name in blocks if name in values}
    stacker_params = kwargs_for(Stacker, values.get("stacker") or {}, group="fusion.stacker", exclude=("views",))
    folds = values.get("folds")
    return FusionPlan(
        views=fusion_views(cfg),  # validated by the plan (FusionPlan.__post_init__), as the config checks do
        folds=3 if folds is None else folds,
        neural_folds=values.get("neural_folds"),
        seed=int(cfg.seed),
        view_params=view_params,
        stacker_params=stacker_params,
        use_mentions=bool(values.get("use_mentions", True)),
        use_descriptions=bool(values.get("use_descriptions", True)),
        lexicon_sources=tuple(dictionary_sources(cfg)),
        stacker_fit=values.get("stacker_fit", "out_of_fold"),
        stacker_folds=values.get("stacker_folds", 5),
        stacker_blend_weight=values.get("stacker_blend_weight", 0.5),
    )
