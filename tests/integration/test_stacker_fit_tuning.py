"""``fusion.stacker_fit=tuning`` (no refit) and ``blend`` (with the refit) end to end on a slice of
CodiEsp-P Spanish (views only): the stacker is fitted on the tuning notes' (note, code) pairs
(``blend``: beside the out-of-fold one, in the run's model and in its kept tuning model alike), the
run's ``dev_map`` is the cross-fitted one (the in-sample one is logged beside it), and the exported
bundle serves the run's own fused test scores."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from medcoder import Coder
from medcoder.data import LabelSpace, load_codiesp
from medcoder.evaluation.metrics import codiesp_map
from medcoder.evaluation.note_predictions import note_predictions_filename, read_note_predictions
from medcoder.modeling.hybrid import HybridScorer
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.export import export_run
from medcoder.workflows.factories import build_corpus
from medcoder.workflows.train import train

from ..helpers.configs import LAX_ROUTING, compose_cfg, compose_named
from ..helpers.paths import CODIESP_DIR

pytestmark = pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")

N_NOTES = 50


@pytest.fixture(scope="module", params=["tuning", "blend"])
def run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"stacker_{request.param}")
    cfg = compose_cfg([
        "experiment=quickstart_p_es", f"data.root={CODIESP_DIR}", "data.download=false",
        f"max_samples_per_split={N_NOTES}", f"paths.root_dir={root}", f"fusion.stacker_fit={request.param}",
        f"certification.refit={str(request.param == 'blend').lower()}",
    ])
    result = train(cfg)
    calibrate(compose_named("calibrate", [f"run_id={result.run_id}", f"paths.root_dir={root}", *LAX_ROUTING]))
    exported = export_run(compose_named("export", [f"run_id={result.run_id}", f"paths.root_dir={root}",
                                                   f"output_dir={root / 'bundle'}", "mlflow_model.log=false"]))
    return {"fit": request.param, "root": root, "cfg": cfg, "result": result, "export": exported,
            "out": root / "outputs" / "runs" / result.run_id,
            "client": mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")}


def test_the_stacker_is_fitted_on_the_tuning_notes_and_dev_map_is_cross_fitted(run) -> None:
    out, metrics = run["out"], run["client"].get_run(run["result"].run_id).data.metrics
    tuning = build_corpus(run["cfg"].data, run["cfg"].certification)["dev"]
    tuning = tuning.select(range(min(N_NOTES, len(tuning))))
    if run["fit"] == "tuning":
        model_dir = out  # no refit: the run's model scored the tuning notes
        assert not (out / "tuning_model").exists()
    else:
        model_dir = out / "tuning_model"  # the refit's model never scored them: the four-fifths one did
        blend = json.loads((out / "stacker.json").read_text())["blend"]
        assert set(blend) == {"out_of_fold", "tuning"}
        weight = run["cfg"].fusion.stacker_blend_weight  # the recipe's (quickstart_p_es: 0.25)
        assert json.loads((out / "stacker.json").read_text())["weights"] == {"out_of_fold": 1 - weight, "tuning": weight}
        refit_codes = len(LabelSpace.from_json(out / "labels.json").codes)
        # the refit's own out-of-fold stacker, over every note the refit fitted on
        assert blend["out_of_fold"]["state"]["n_rows"] == metrics["refit_train_notes"] * refit_codes
        kept = json.loads((model_dir / "stacker.json").read_text())["blend"]
        assert kept["tuning"] == blend["tuning"]  # one tuning stacker, in both models
        assert kept["out_of_fold"] != blend["out_of_fold"]
    space = LabelSpace.from_json(model_dir / "labels.json")
    stacker = json.loads((model_dir / "stacker.json").read_text())
    tuning_member = stacker["blend"]["tuning"] if run["fit"] == "blend" else stacker
    assert tuning_member["state"]["n_rows"] == len(tuning) * len(space.codes)
    # the model that scored the tuning notes, with the stacker that saw them: the in-sample MAP
    scorer = HybridScorer.load(model_dir, space.frequency_array())
    gold = [list(c) for c in tuning["codes"]]
    in_sample = codiesp_map(scorer.score(list(tuning["text"])).logits, scorer.codes, gold)
    assert metrics["dev_map_stacker_in_sample"] == pytest.approx(in_sample, abs=1e-6)
    assert metrics["dev_map"] != pytest.approx(in_sample, abs=1e-6)  # the logged one is cross-fitted


def test_the_bundle_serves_the_runs_fused_test_scores(run) -> None:
    coder = Coder.load(run["export"].bundle_dir)
    test = load_codiesp(CODIESP_DIR, language="es", code_type="P", splits=("test",))["test"]
    test = test.select(range(min(len(test), N_NOTES)))
    stored = read_note_predictions(run["out"] / note_predictions_filename("test")).by_id()
    raw = coder.probabilities(list(test["text"]), calibrated=False)
    index = coder.label_space.index
    for i, note_id in enumerate(test["id"]):
        note = stored[note_id]
        np.testing.assert_allclose([raw[i, index[c]] for c in note.codes], note.probs, rtol=1e-5, atol=1e-7)
