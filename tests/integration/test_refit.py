"""``certification.refit``: after the tuning fifth has scored the four-fifths model, the views and
the stacker are fitted again on all of train; calibrate scores the tuning notes with the kept
four-fifths model (``tuning_model/``), never with the model that trained on them.

Two runs on a slice of CodiEsp-P Spanish, identical but for the switch: what the tuning notes see
(dev metrics, calibrator, decision threshold) must be the same in both; what the run ships (test
scores, labels, bundle) is the refitted model's."""

from __future__ import annotations

import json

import pytest

from medcoder.errors import ConfigError
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.export import export_run
from medcoder.workflows.train import train

from ..helpers.configs import LAX_ROUTING, compose_cfg, compose_named, tiny_overrides
from ..helpers.corpus import write_corpus
from ..helpers.paths import CODIESP_DIR

needs_codiesp = pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")

N_NOTES = 60
CALIBRATE = LAX_ROUTING


def _train_and_calibrate(root, refit: bool, design: str = "inner_train") -> dict:
    cfg = compose_cfg(["experiment=quickstart_p_es", f"data.root={CODIESP_DIR}", "data.download=false",
                       f"max_samples_per_split={N_NOTES}", f"paths.root_dir={root}",
                       f"certification.refit={str(refit).lower()}", f"certification.design={design}"])
    result = train(cfg)
    out = root / "outputs" / "runs" / result.run_id
    if design == "all_labels":  # nothing is left to calibrate it with
        return {"root": root, "result": result, "metrics": json.loads((out / "metrics.json").read_text())}
    calibrate(compose_named("calibrate", [f"run_id={result.run_id}", f"paths.root_dir={root}", *CALIBRATE]))
    return {"root": root, "result": result, "out": out,
            "metrics": json.loads((out / "metrics.json").read_text()),
            "calibration": json.loads((out / "calibration.json").read_text()),
            "labels": json.loads((out / "labels.json").read_text())["codes"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {refit: _train_and_calibrate(tmp_path_factory.mktemp(f"refit_{refit}"), refit) for refit in (False, True)}


@needs_codiesp
def test_the_tuning_notes_are_scored_by_the_model_that_never_saw_them(runs) -> None:
    plain, refit = runs[False], runs[True]
    # the same four-fifths model scored the tuning fifth in both runs: identical dev metrics ...
    for key in ("dev_map", "dev_micro_f1", "dev_p_at_8", "dev_map_tfidf", "dev_map_dictionary", "decision_threshold"):
        assert refit["metrics"][key] == pytest.approx(plain["metrics"][key], abs=1e-12), key
    # ... and, in calibrate, the same calibrator and decision threshold fitted on those scores
    assert refit["calibration"]["calibrator"] == plain["calibration"]["calibrator"]
    assert (refit["calibration"]["policy"]["decision_threshold"]["state"]["global_threshold"]
            == plain["calibration"]["policy"]["decision_threshold"]["state"]["global_threshold"])
    assert plain["calibration"]["calibration_model"] == "run"
    assert refit["calibration"]["calibration_model"] == "tuning_model"
    assert refit["calibration"]["certification_split"] == "certify"


@needs_codiesp
def test_the_refitted_model_is_the_runs_and_knows_the_tuning_notes_codes(runs) -> None:
    plain, refit = runs[False], runs[True]
    # max_samples_per_split keeps N_NOTES of train and of the tuning fifth each: the refit reads both
    assert refit["metrics"]["refit_train_notes"] == 2 * N_NOTES and "refit_train_notes" not in plain["metrics"]
    tuning_codes = json.loads((refit["out"] / "tuning_model" / "labels.json").read_text())["codes"]
    assert tuning_codes == plain["labels"]  # the four-fifths label space
    assert set(tuning_codes) < set(refit["labels"])  # the tuning fifth's own codes joined
    assert refit["metrics"]["train_label_coverage"] == 1.0
    # the test scores are another model's: the refitted one
    assert refit["metrics"]["test_map"] != plain["metrics"]["test_map"]
    # its threshold was moved to the run's codes, one per code
    assert len(refit["calibration"]["policy"]["decision_threshold"]["state"]["thresholds"]) == len(refit["labels"])


@needs_codiesp
def test_the_bundle_carries_the_refitted_model_only(runs) -> None:
    refit = runs[True]
    root = refit["root"]
    exported = export_run(compose_named("export", [f"run_id={refit['result'].run_id}", f"paths.root_dir={root}",
                                                   f"output_dir={root / 'bundle'}", "mlflow_model.log=false"]))
    bundle = exported.bundle_dir
    assert not (bundle / "tuning_model").exists()
    assert json.loads((bundle / "labels.json").read_text())["codes"] == refit["labels"]


@needs_codiesp
def test_all_labels_refits_on_dev_too_and_cannot_be_calibrated(runs, tmp_path) -> None:
    inner = runs[True]
    every = _train_and_calibrate(tmp_path, True, design="all_labels")
    # the same carve tunes: the four-fifths model and its dev metrics are inner_train's ...
    for key in ("dev_map", "dev_map_tfidf", "dev_map_dictionary", "decision_threshold"):
        assert every["metrics"][key] == pytest.approx(inner["metrics"][key], abs=1e-12), key
    # ... and the refit also reads the original dev (N_NOTES of it under max_samples_per_split)
    assert every["metrics"]["refit_train_notes"] == 3 * N_NOTES
    assert every["metrics"]["test_map"] != inner["metrics"]["test_map"]
    with pytest.raises(ConfigError, match=r"certification.design=all_labels: every labelled note fitted its model"):
        calibrate(compose_named("calibrate", [f"run_id={every['result'].run_id}", f"paths.root_dir={tmp_path}",
                                              *CALIBRATE]))


@needs_codiesp
def test_a_per_code_calibrator_is_refused_for_a_refitted_run(runs) -> None:
    refit = runs[True]
    with pytest.raises(ConfigError, match=r"calibration.method=platt fits each code apart"):
        calibrate(compose_named("calibrate", [f"run_id={refit['result'].run_id}", f"paths.root_dir={refit['root']}",
                                              "calibration=platt", *CALIBRATE]))


# -- with the neural view (a tiny random encoder, cached states) -----------------------------------

def _train_neural(root, corpus, encoder, refit: bool, design: str = "inner_train") -> dict:
    cfg = compose_cfg(tiny_overrides(root, corpus, encoder, "trainer=cached_head", "fusion=stacked",
                                     "trainer.num_train_epochs=4", "trainer.learning_rate=0.05",
                                     f"certification.refit={str(refit).lower()}", f"certification.design={design}"))
    result = train(cfg)
    if design == "all_labels":
        out = root / "outputs" / "runs" / result.run_id
        return {"root": root, "result": result, "out": out, "metrics": json.loads((out / "metrics.json").read_text())}
    calibrate(compose_named("calibrate", [f"run_id={result.run_id}", f"paths.root_dir={root}",
                                          "routing.check_validity=false", *CALIBRATE]))
    out = root / "outputs" / "runs" / result.run_id
    return {"root": root, "result": result, "out": out, "metrics": json.loads((out / "metrics.json").read_text()),
            "calibration": json.loads((out / "calibration.json").read_text())}


@pytest.fixture(scope="module")
def neural_runs(tmp_path_factory, tiny_encoder):
    corpus = write_corpus(tmp_path_factory.mktemp("refit_corpus"), n_train=60, n_dev=40, n_test=16, seed=5)
    runs = {refit: _train_neural(tmp_path_factory.mktemp(f"neural_refit_{refit}"), corpus, tiny_encoder, refit)
            for refit in (False, True)}
    runs["all_labels"] = _train_neural(tmp_path_factory.mktemp("neural_all_labels"), corpus, tiny_encoder, True,
                                       design="all_labels")
    return runs


def test_an_all_labels_neural_run_trains_its_head_on_the_original_dev_too(neural_runs) -> None:
    inner, every = neural_runs[True], neural_runs["all_labels"]
    for key in ("dev_map", "dev_map_neural", "dev_map_tfidf", "dev_map_dictionary"):
        assert every["metrics"][key] == pytest.approx(inner["metrics"][key], abs=1e-9), key
    assert every["metrics"]["refit_train_notes"] == inner["metrics"]["refit_train_notes"] + 40  # + the 40 dev notes
    config = json.loads((every["out"] / "model" / "config.json").read_text())
    assert len(config["id2label"]) == len(json.loads((every["out"] / "labels.json").read_text())["codes"])
    assert every["metrics"]["test_map_neural"] != inner["metrics"]["test_map_neural"]


def test_a_refitted_neural_run_keeps_the_tuning_head_and_ships_a_new_one(neural_runs) -> None:
    plain, refit = neural_runs[False], neural_runs[True]
    # the four-fifths head (and views) scored the tuning fifth in both runs
    for key in ("dev_map", "dev_map_neural", "dev_map_tfidf", "dev_map_dictionary"):
        assert refit["metrics"][key] == pytest.approx(plain["metrics"][key], abs=1e-9), key
    assert refit["calibration"]["calibrator"] == plain["calibration"]["calibrator"]
    assert refit["calibration"]["calibration_model"] == "tuning_model"
    codes = json.loads((refit["out"] / "labels.json").read_text())["codes"]
    tuning_codes = json.loads((refit["out"] / "tuning_model" / "labels.json").read_text())["codes"]
    assert set(tuning_codes) <= set(codes)
    # each neural model has one output per code of its own label space
    for folder, space in ((refit["out"] / "model", codes), (refit["out"] / "tuning_model" / "model", tuning_codes)):
        config = json.loads((folder / "config.json").read_text())
        assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == space, folder
    assert refit["metrics"]["test_map_neural"] != plain["metrics"]["test_map_neural"]


def test_an_int8_export_of_a_refitted_run_scores_its_tuning_notes_with_the_quantised_tuning_model(neural_runs):
    refit = neural_runs[True]
    exported = export_run(compose_named("export", [f"run_id={refit['result'].run_id}", f"paths.root_dir={refit['root']}",
                                                   f"output_dir={refit['root'] / 'bundle-int8'}", "quantize=int8",
                                                   "quantize_max_map_drop=null", "mlflow_model.log=false"]))
    calibration = json.loads((exported.bundle_dir / "calibration.json").read_text())
    assert calibration["quantization"] == "dynamic-int8"
    assert calibration["calibration_model"] == "tuning_model"
    assert not (exported.bundle_dir / "tuning_model").exists()
    metrics = json.loads((exported.bundle_dir / "metrics.json").read_text())
    # the tuning fifth's metrics are the (quantised) four-fifths model's, close to its fp32 ones
    assert metrics["dev_map"] == pytest.approx(refit["metrics"]["dev_map"], abs=0.05)
