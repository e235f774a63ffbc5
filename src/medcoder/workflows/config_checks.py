"""Range checks of every config value that needs no model, run before anything is loaded.

Why: a bad value used to surface late or not at all — ``trainer.num_train_epochs=-1`` trained zero
steps and still produced a FINISHED run that could be calibrated and exported;
``routing.target_precision=1.5`` failed only after scoring two splits. Every check here reads the
composed config (and, for ``model.chunk_size``, the encoder's ``config.json``: a file read, never
a model load), so ``scripts/train.py`` and ``scripts/calibrate.py`` refuse a bad value in about a
second, in one line that names the key, the value and the valid range (``ConfigError`` -> exit 2).

Why a table of hand-written rules rather than Hydra structured configs or pydantic: structured
configs check types but not ranges, and would need a dataclass mirror of every YAML group (which
experiments override freely); pydantic is only present as a transitive dependency of MLflow and
its errors are multi-line. One rule per key, below, keeps the valid range next to the key it
guards and the message in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medcoder.constraints import (
    Constraint,
    in_open_unit,
    int_at_least,
    is_bool,
    is_int,
    is_num,
    num_at_least,
    one_of,
    positive,
    problem,
)
from medcoder.errors import ConfigError

_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """``key`` (dotted) must satisfy ``ok``; ``expected`` says the valid range in words."""

    key: str
    ok: Callable[[Any], bool]
    expected: str
    optional: bool = False  # the key may be absent or null


# The predicates live with the classes' own constraints (one implementation): medcoder.constraints.
_is_int, _is_num = is_int, is_num
open_unit = in_open_unit


def rules_from(group: str, constraints: Mapping[str, Constraint], *, optional: bool = True) -> list[Rule]:
    """The config-check rules of a class's ``parameter_constraints`` (the one source of its ranges):
    ``<group>.<name>`` must satisfy the class's own check. ``optional``: an absent key keeps the
    constructor's default."""
    return [Rule(f"{group}.{name}", c.ok, c.expected, optional=optional or c.optional)
            for name, c in constraints.items()]


def _scheduler_names() -> tuple[str, ...]:
    from transformers.trainer_utils import SchedulerType

    return tuple(s.value for s in SchedulerType)


def trainer_rules() -> list[Rule]:
    schedulers = _scheduler_names()
    return [
        Rule("trainer.encoder_mode", one_of("cached", "finetune"), "cached or finetune"),
        Rule("trainer.train_top_layers", int_at_least(-1), "an integer >= -1 (-1 = all layers)"),
        # Fewer than one epoch trains (next to) nothing, yet used to finish a run that looked real.
        Rule("trainer.num_train_epochs", num_at_least(1), "a number >= 1"),
        Rule("trainer.max_steps", lambda v: v == -1 or (_is_int(v) and v >= 1),
             "an integer >= 1, or -1/null for 'use num_train_epochs'", optional=True),
        Rule("trainer.per_device_train_batch_size", int_at_least(1), "an integer >= 1"),
        Rule("trainer.per_device_eval_batch_size", int_at_least(1), "an integer >= 1"),
        Rule("trainer.gradient_accumulation_steps", int_at_least(1), "an integer >= 1"),
        Rule("trainer.learning_rate", positive, "a number > 0"),
        Rule("trainer.head_learning_rate", positive, "a number > 0 (or null: learning_rate)", optional=True),
        Rule("trainer.weight_decay", num_at_least(0), "a number >= 0"),
        Rule("trainer.warmup_ratio", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
        Rule("trainer.lr_scheduler_type", one_of(*schedulers), f"one of {', '.join(schedulers)}"),
        Rule("trainer.max_grad_norm", num_at_least(0), "a number >= 0 (0 = no clipping)", optional=True),
        Rule("trainer.early_stopping_patience", int_at_least(1), "an integer >= 1 (epochs)"),
        Rule("trainer.save_total_limit", int_at_least(1), "an integer >= 1, or null", optional=True),
        Rule("trainer.resume", one_of("auto", "never"), "auto or never"),
        Rule("trainer.use_cpu", is_bool, "true or false"),
        Rule("trainer.dataloader_num_workers", int_at_least(0), "an integer >= 0"),
        Rule("trainer.encode_batch_chunks", int_at_least(1), "an integer >= 1"),
        Rule("trainer.cache_states_on_disk", is_bool, "true or false"),
        Rule("trainer.disable_tqdm", is_bool, "true or false"),
    ]


def model_rules() -> list[Rule]:
    # chunk_size's upper bound depends on the encoder: see check_chunk_size. Each chunk is framed
    # by two special tokens ([CLS] ... [SEP]), so 3 is the smallest chunk holding any text.
    return [
        Rule("model.chunk_size", int_at_least(3), "an integer >= 3 (2 special tokens + text)"),
        Rule("model.max_chunks", int_at_least(1), "an integer >= 1"),
        Rule("model.attention_dim", int_at_least(1), "an integer >= 1, or null (hidden size)", optional=True),
        Rule("model.head_dropout", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
        Rule("model.token_pool_stride", int_at_least(1), "an integer >= 1"),
        Rule("model.label_init", one_of("description", "random"), "description or random"),
    ]


def labels_rules() -> list[Rule]:
    return [
        Rule("labels.min_count", int_at_least(1), "an integer >= 1"),
        Rule("labels.top_k", int_at_least(1), "an integer >= 1, or null (all codes)", optional=True),
    ]


def certification_rules() -> list[Rule]:
    """The ``certification`` group (configs/train.yaml): which labels certify tau."""
    from medcoder.data.splits import CERTIFICATION_DESIGNS

    return [
        Rule("certification.design", one_of(*CERTIFICATION_DESIGNS), f"one of {', '.join(CERTIFICATION_DESIGNS)}",
             optional=True),
        Rule("certification.fraction", in_open_unit, "a number in (0, 1)", optional=True),
        Rule("certification.seed", _is_int, "an integer", optional=True),
        Rule("certification.refit", is_bool, "true or false", optional=True),
    ]


def routing_rules() -> list[Rule]:
    """``routing.*``: the ranges declared by :class:`RiskTargets` and :class:`RoutingPolicy`."""
    from medcoder.calibration.risk_control import RiskTargets
    from medcoder.routing.policy import RoutingPolicy

    return [*rules_from("routing", {k: v for k, v in RiskTargets.parameter_constraints.items()
                                    if k != "min_coverage"}, optional=False),
            *rules_from("routing", {"min_coverage": RiskTargets.parameter_constraints["min_coverage"]}),
            *rules_from("routing", RoutingPolicy.parameter_constraints)]


def calibration_rules() -> list[Rule]:
    """``calibration.*``: the method (the calibrators' registry), Platt's parameters and the decision
    threshold's, as the classes declare them."""
    from medcoder.calibration.calibrators import CALIBRATOR_NAMES, PlattCalibrator
    from medcoder.calibration.thresholds import DecisionThreshold

    return [
        Rule("calibration.method", one_of(*CALIBRATOR_NAMES), f"one of {', '.join(CALIBRATOR_NAMES)}"),
        *rules_from("calibration.params", PlattCalibrator.parameter_constraints),
        *rules_from("calibration.decision_threshold", DecisionThreshold.parameter_constraints, optional=False),
    ]


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _problems(cfg: Mapping[str, Any], rules: Iterable[Rule]) -> list[str]:
    out = []
    for rule in rules:
        value = _lookup(cfg, rule.key)
        found = problem(rule.key, None if value is _MISSING else value, rule.ok, rule.expected, rule.optional)
        if found is not None:
            out.append(found)
    return out


def _raise(problems: list[str]) -> None:
    if problems:
        # All problems at once, still one line: a user fixes them in one go.
        raise ConfigError("; ".join(problems), hint="fix it on the command line, e.g. key=value")


def _as_plain(cfg: Any) -> Mapping[str, Any]:
    """A DictConfig as plain, resolved Python (interpolations such as ``${.learning_rate}``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        data = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(data, dict)
        return data
    return cfg


def encoder_max_positions(encoder: str, overrides: Mapping[str, Any] | None = None) -> int | None:
    """The longest token sequence the encoder accepts, from its ``config.json`` alone.

    ``PretrainedConfig.get_config_dict`` reads (or fetches) the JSON file and builds no config
    class and no model, so it runs no remote code. RoBERTa-style models number positions from
    ``pad_token_id + 1``, so they fit two fewer tokens than ``max_position_embeddings``. None when
    the file names no limit.
    """
    from transformers import PretrainedConfig

    from medcoder.training.encoders import resolve_encoder

    path = resolve_encoder(encoder)
    try:
        data, _ = PretrainedConfig.get_config_dict(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model.encoder={encoder!r}: cannot read its config.json ({type(exc).__name__})",
            hint="give a local model folder, or a hub id with network access (HF_HUB_OFFLINE unset)",
        ) from exc
    data = {**data, **dict(overrides or {})}
    limit = data.get("max_position_embeddings", data.get("n_positions"))
    if not _is_int(limit):
        return None
    if data.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet"):
        limit -= int(data.get("pad_token_id") or 0) + 1
    return int(limit)


def check_chunk_size(model_cfg: Mapping[str, Any]) -> None:
    """``model.chunk_size`` must fit the encoder's position embeddings (read from config.json)."""
    chunk_size = model_cfg.get("chunk_size")
    limit = encoder_max_positions(str(model_cfg.get("encoder")), model_cfg.get("encoder_overrides"))
    if limit is not None and _is_int(chunk_size) and chunk_size > limit:
        raise ConfigError(
            f"model.chunk_size={chunk_size!r} is not valid (expected an integer in 3..{limit}: "
            f"the longest input of model.encoder={model_cfg.get('encoder')!r})"
        )


def fusion_views(cfg: Mapping[str, Any]) -> Any:
    """``fusion.views`` as a list of names (no ``fusion`` group: the neural view alone; a value that
    is not a list is returned as is, for :func:`fusion_problems` to report)."""
    from medcoder.modeling.views import NEURAL

    fusion = cfg.get("fusion")
    if fusion is None:
        return [NEURAL]
    views = fusion.get("views")
    return [str(v) for v in views] if isinstance(views, Sequence) and not isinstance(views, str) else views


def view_list_problems(views: Any) -> list[str]:
    """What is wrong with the ``fusion.views`` list itself: it must be a non-empty list of
    registered, distinct views (:data:`medcoder.modeling.views.SCORERS`), in any order (the
    stacker's feature order follows it); one line, empty when fine. Each name is looked up on its
    own: nothing below the workflows is handed the list to judge it."""
    from medcoder.modeling import views as view_table

    known = sorted(view_table.registered_views())
    if not isinstance(views, list | tuple) or not views:
        return [f"fusion.views={views!r} is not valid (expected a non-empty list of views from {known}, "
                "e.g. [tfidf,dictionary])"]
    views = list(views)
    unknown = [v for v in views if not view_table.is_view(v)]
    if unknown:
        return [f"fusion.views={views} is not valid (unknown view(s) {unknown}; expected views from {known})"]
    if len(set(views)) != len(views):
        return [f"fusion.views={views} is not valid (expected each view once)"]
    return []


def view_fit_problems(views: Sequence[str], *, available: Sequence[str], corpus: str | None = None) -> list[str]:
    """What each of the (valid) ``views`` says it lacks among the ``available`` fit resources (its
    class's ``fit_problems``, e.g. a dictionary without a lexicon), one line each; ``corpus`` names
    the data in the complaint. With :func:`view_list_problems`, the rules of the config checks (all
    problems at once, before anything loads) and of ``medcoder.workflows.fusion.FusionPlan`` (its
    invariant)."""
    from medcoder.modeling import views as view_table

    where = f"fusion.views={list(views)}" + (f", data={corpus}" if corpus else "")
    return [f"{where}: {problem}; drop {name!r} from fusion.views"
            for name in views for problem in view_table.scorer_class(name).fit_problems(available)]


def fusion_problems(cfg: Mapping[str, Any]) -> list[str]:
    """``fusion.views``: a non-empty list of registered, distinct views, in any order, each of which
    has the fit resources it needs (:func:`view_list_problems`, :func:`view_fit_problems`); with
    more than the neural view alone, ``fusion.folds`` >= 2. All problems at once (one line),
    before anything loads."""
    from medcoder.modeling.views import NEURAL

    views = fusion_views(cfg)
    problems = view_list_problems(views)
    if problems:
        return problems
    if views != [NEURAL]:
        problems = _problems(cfg, [
            Rule("fusion.folds", int_at_least(2), "an integer >= 2 (K of the out-of-fold fits)"),
            Rule("fusion.stacker_fit", lambda v: v in STACKER_FITS, f"one of {', '.join(STACKER_FITS)}", optional=True),
            Rule("fusion.stacker_folds", int_at_least(2), "an integer >= 2 (K of the stacker's cross-fit over the "
                 "tuning notes)", optional=True),
            Rule("fusion.stacker_blend_weight", lambda v: not isinstance(v, bool) and isinstance(v, int | float)
                 and 0 < v < 1, "a number in (0, 1): the tuning-notes stacker's weight in the blend", optional=True),
        ])
        design = (cfg.get("certification") or {}).get("design")
        fit = (cfg.get("fusion") or {}).get("stacker_fit")
        if not problems and fit in TUNING_STACKER_FITS and design == "none":
            problems.append(f"fusion.stacker_fit={fit} with certification.design=none would fit the stacker on the "
                            "labels that certify tau; use certification.design=inner_train (or dev_halves), or "
                            "fusion.stacker_fit=out_of_fold")
    data = cfg.get("data") or {}
    return [*problems, *_lexicon_problems(cfg),
            *view_fit_problems(views, available=offered_resources(dictionary_sources(cfg)), corpus=data.get("name"))]


#: What the fused coder's stacker may be fitted on (``fusion.stacker_fit``): the views' out-of-fold
#: scores over train, the fitted views' scores of the run's tuning notes
#: (:func:`medcoder.workflows.fusion.fit_stacker_on_tuning`), or both, their logits averaged
#: (``blend``: :class:`medcoder.modeling.stacker.BlendedStacker`).
STACKER_FITS = ("out_of_fold", "tuning", "blend")
#: The fits that read the tuning notes' labels.
TUNING_STACKER_FITS = ("tuning", "blend")


#: The lexicon switches of the ``fusion`` group, and the corpora each applies to (None: every corpus).
_SWITCHES = {
    "use_mentions": None,
    "use_descriptions": None,
    "use_spanish_titles": ("Spanish diagnosis notes (data.language=es, data.code_type=D)",
                           lambda d: d.get("language") == "es" and d.get("code_type", "D") == "D"),
    "use_projected_mentions": ("the English CodiEsp notes (data.format=codiesp, data.language=en)",
                               lambda d: d.get("format") == "codiesp" and d.get("language") == "en"),
}


def _lexicon_problems(cfg: Mapping[str, Any]) -> list[str]:
    """The lexicon switches are true or false, and a switch that is on applies to the corpus (a
    switch that silently did nothing would read as a recipe that was tried); each view's own ranges
    (``fusion.<view>.*``, from its class's ``parameter_constraints``) and the stacker's."""
    from medcoder.modeling import views as view_table
    from medcoder.modeling.stacker import Stacker

    fusion, data = cfg.get("fusion") or {}, cfg.get("data") or {}
    problems = _problems(cfg, [Rule(f"fusion.{k}", is_bool, "true or false", optional=True) for k in _SWITCHES])
    for key, scope in _SWITCHES.items():
        if scope is not None and fusion.get(key) is True and not scope[1](data):
            problems.append(f"fusion.{key}=true applies to {scope[0]} only, not data={data.get('name')}; "
                            f"set fusion.{key}=false")
    for name in view_table.registered_views():
        constraints = getattr(view_table.scorer_class(name), "parameter_constraints", None)
        if constraints:
            problems += _problems(cfg, rules_from(f"fusion.{name}", constraints))
    return [*problems, *_problems(cfg, rules_from("fusion.stacker", Stacker.parameter_constraints))]


#: Lexicon sources a corpus can offer the views (see :func:`dictionary_sources`). ``spanish_titles``
#: (WHO ICD-10 titles in Spanish, :mod:`medcoder.codesets.who_spanish`) reaches a view as part of
#: its ``descriptions`` fit resource; ``projected_mentions`` (English n-grams mined where the Spanish
#: spans' translations sit, :mod:`medcoder.modeling.projected_mentions`) as its ``mentions``.
LEXICON_SOURCES = ("mentions", "descriptions", "spanish_titles", "projected_mentions")
_OFFERED_AS = {"spanish_titles": "descriptions", "projected_mentions": "mentions"}


def offered_resources(lexicon_sources: Sequence[str]) -> tuple[str, ...]:
    """The fit resources (``medcoder.modeling.scorer.FIT_RESOURCES``) a run offers its views: its
    lexicon sources (``spanish_titles`` as ``descriptions``, ``projected_mentions`` as ``mentions``)
    and the notes' language."""
    offered = (_OFFERED_AS.get(s, s) for s in lexicon_sources)
    return (*dict.fromkeys(offered), "language")


def dictionary_sources(cfg: Mapping[str, Any]) -> list[str]:
    """The lexicon sources this config offers the views (fit resources, see
    :data:`medcoder.modeling.scorer.FIT_RESOURCES`): ``mentions`` (CodiEsp-X train spans: Spanish
    CodiEsp corpora) and/or ``descriptions`` (ICD-10-CM wording: diagnosis codes), each unless
    switched off (``fusion.use_mentions`` / ``use_descriptions``). The one rule, applied by the
    config checks before anything trains and by ``factories.build_fusion_plan`` (the plan's
    ``lexicon_sources``): without it an English procedure corpus failed only after the neural view
    had trained."""
    data, fusion = cfg.get("data") or {}, cfg.get("fusion") or {}
    sources = []
    if data.get("format") == "codiesp" and data.get("language") == "es" and fusion.get("use_mentions", True):
        sources.append("mentions")
    if fusion.get("use_descriptions", True) and data.get("code_type", "D") == "D":
        sources.append("descriptions")
    if fusion.get("use_spanish_titles", False) and data.get("language") == "es" and data.get("code_type", "D") == "D":
        sources.append("spanish_titles")
    if fusion.get("use_projected_mentions", False) and data.get("format") == "codiesp" and data.get("language") == "en":
        sources.append("projected_mentions")
    return sources


def check_train_config(cfg: Any) -> None:
    """Every model-free check of ``scripts/train.py``'s config; raises one-line ``ConfigError``.

    Without the neural view (``fusion.views`` omits it) no encoder is loaded or trained, so
    the ``trainer``/``model`` groups are not used and not checked (nor is the encoder's config.json
    read); a warm start, which copies an encoder and its label rows, is refused.
    """
    from medcoder.modeling.views import NEURAL

    plain = _as_plain(cfg)
    problems = fusion_problems(plain)
    neural = not problems and NEURAL in fusion_views(plain)
    problems += _problems(plain, [*(trainer_rules() + model_rules() if neural else []), *labels_rules()])
    problems += _problems(plain, [
        Rule("max_samples_per_split", int_at_least(1), "an integer >= 1, or null (all)", optional=True),
        Rule("seed", _is_int, "an integer"),
        *certification_rules(),
    ])
    if not problems and (plain.get("certification") or {}).get("refit") is True:
        if neural and fusion_views(plain) == [NEURAL]:
            problems.append("certification.refit=true needs the fused views (fusion=stacked): the neural view "
                            "alone is not refitted; set certification.refit=false")
        elif neural and plain.get("warm_start"):
            problems.append(f"certification.refit=true with warm_start={plain['warm_start']!r}: the refitted head "
                            "starts afresh; set certification.refit=false")
        elif (plain.get("fusion") or {}).get("stacker_fit") == "tuning":
            # the stacker learns the four-fifths views' scores; the refit replaces those views
            # measured: the pairing certified nothing at 0.90 on EN-P and ES-P (choices.md sections 8-9);
            # blended with the out-of-fold stacker (fusion.stacker_fit=blend) it kept the top (section 10)
            problems.append("certification.refit=true with fusion.stacker_fit=tuning: the stacker learns the scores of "
                            "the views fitted on four fifths of train, and the refit replaces those views; set "
                            "certification.refit=false, fusion.stacker_fit=blend or fusion.stacker_fit=out_of_fold")
        elif neural and (mode := (plain.get("trainer") or {}).get("encoder_mode")) != "cached":
            # the refitted head trains on the frozen encoder's cached states (workflows.train)
            problems.append(f"certification.refit=true with trainer.encoder_mode={mode}: the refit trains the head on "
                            "cached encoder states; set trainer=cached_head or certification.refit=false")
    if not problems and not neural and plain.get("warm_start"):
        problems.append(f"warm_start={plain['warm_start']!r} needs the neural view (fusion.views="
                        f"{fusion_views(plain)} trains no encoder to warm-start)")
    trainer = plain.get("trainer", {})
    if not problems and neural and trainer.get("encoder_mode") == "cached" and trainer.get("train_top_layers", -1) > 0:
        problems.append(
            f"trainer.train_top_layers={trainer['train_top_layers']} has no effect with "
            "trainer.encoder_mode=cached (use trainer=default to train top encoder layers)"
        )
    _raise(problems)
    if neural:
        check_chunk_size(plain["model"])


def check_calibrate_config(cfg: Any) -> None:
    """Every model-free check of ``scripts/calibrate.py``'s config, before any download or load."""
    plain = _as_plain(cfg)
    problems = _problems(plain, [
        *routing_rules(),
        *calibration_rules(),
        Rule("batch_size", int_at_least(1), "an integer >= 1"),
        Rule("use_state_cache", is_bool, "true or false"),
    ])
    from medcoder.workflows.factories import calibration_key_problems

    problems += calibration_key_problems(plain.get("calibration") or {}, plain.get("routing") or {},
                                         plain.get("tracking") or {})
    cal, ev = plain.get("calibration_split"), plain.get("evaluation_split")
    if cal == ev or "train" in (cal, ev):
        problems.append(
            f"calibration_split={cal!r}, evaluation_split={ev!r}: the policy must be fitted and "
            "evaluated on two different held-out splits (use calibration_split=dev evaluation_split=test)"
        )
    _raise(problems)


__all__ = ["Rule", "check_calibrate_config", "check_chunk_size", "check_train_config", "encoder_max_positions",
           "fusion_problems", "fusion_views"]
