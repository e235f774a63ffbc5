"""Export -> bundle -> Coder / MLflow pyfunc / registry on a tiny trained + calibrated run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from datasets import DatasetDict
from hydra import compose, initialize_config_dir

from medcoder.data.features import featurize
from medcoder.errors import BundleError, ConfigError
from medcoder.inference import bundle as bundle_mod
from medcoder.inference.coder import Coder
from medcoder.modeling.scoring import score_features
from medcoder.workflows.export import export_run
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, tiny_overrides
from ..helpers.paths import REPO_ROOT
from ..helpers.paths import TINY_MODEL_NAME as MODEL_NAME


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def tiny_corpus(export_corpus):
    return export_corpus


@pytest.fixture(scope="module")
def exported(tiny_bundle):
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    return tiny_bundle


def test_bundle_layout_and_manifest(exported) -> None:
    bundle = exported["result"].bundle_dir
    for rel in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "labels.json",
                "calibration.json", "metrics.json", "MODEL_CARD.md", "manifest.json"):
        assert (bundle / rel).is_file(), rel
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == bundle_mod.BUNDLE_SCHEMA_VERSION
    assert manifest["source_run_id"] == exported["run"].run_id
    assert set(manifest["files"]) == {p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                                      if p.is_file() and p.name != "manifest.json"}
    for rel, digest in manifest["files"].items():
        assert bundle_mod.sha256_file(bundle / rel) == digest
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert "test_map" in metrics and "test_auto_accept_coverage" in metrics
    assert not any(k.startswith("epoch_") for k in metrics)
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "Intended use" in card and exported["run"].run_id in card


def test_model_folder_loads_with_plain_transformers(exported) -> None:
    """The model/ folder with plain transformers after ``import medcoder.modeling`` (which registers
    the classes), without trust_remote_code: schema-2 bundles hold no code and no auto_map."""
    bundle = exported["result"].bundle_dir
    assert not [p for p in bundle.rglob("*.py")]
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((bundle / "model" / name).read_text()), name
    code = (
        "import torch\n"
        "import medcoder.modeling  # registers MedCoderConfig / MedCoderForICDCoding with AutoConfig / AutoModel\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        f"path = {str(bundle / 'model')!r}\n"
        "model = AutoModel.from_pretrained(path).eval()\n"
        "tok = AutoTokenizer.from_pretrained(path)\n"
        "ids = tok(['fever cough pneumonia'], return_tensors='pt', padding='max_length', max_length=16)\n"
        "with torch.no_grad():\n"
        "    out = model(input_ids=ids['input_ids'][:, None], attention_mask=ids['attention_mask'][:, None])\n"
        "print(type(model).__name__, out.logits.shape[-1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n_codes = len(json.loads((bundle / "labels.json").read_text())["codes"])
    assert proc.stdout.split() == ["MedCoderForICDCoding", str(n_codes)]


def _notes(tiny_corpus) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in Path(tiny_corpus["test"]).read_text().splitlines() if line.strip()]
    return [r["id"] for r in rows], [r["text"] for r in rows]


def test_bundle_predictions_equal_in_process_scoring(exported, tiny_corpus) -> None:
    """Export -> load -> predict gives what the run's own model, calibrator and policy give."""
    coder = Coder.load(exported["result"].bundle_dir)
    ids, texts = _notes(tiny_corpus)
    preds = coder.predict(texts, ids)
    assert [p.id for p in preds] == ids
    assert {p.bundle_id for p in preds} == {exported["result"].manifest.bundle_id}

    # In process: the training run's model folder + calibration, through featurize/score_features.
    run_dir = exported["root"] / "outputs" / "runs" / exported["run"].run_id
    from transformers import AutoTokenizer

    from medcoder.calibration.calibrators import calibrator_from_dict
    from medcoder.data import LabelSpace, load_corpus
    from medcoder.modeling import MedCoderForICDCoding
    from medcoder.routing.policy import RoutingInputs, RoutingPolicy

    model = MedCoderForICDCoding.from_pretrained(run_dir / "model")
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    labels = LabelSpace.from_json(run_dir / "labels.json")
    cal = json.loads((run_dir / "calibration.json").read_text())
    split = load_corpus(compose_cfg(tiny_overrides(exported["root"], tiny_corpus, "unused")).data)["test"]
    feats = featurize(DatasetDict(test=split), tok, labels, chunk_size=model.config.chunk_size,
                      max_chunks=model.config.max_chunks)["test"]
    probs = calibrator_from_dict(cal["calibrator"]).transform(score_features(model, feats))
    policy = RoutingPolicy.from_dict(cal["policy"])
    predicted, accept, _ = policy.route_arrays(RoutingInputs(probs, labels.codes, labels.frequency,
                                               np.asarray(feats["truncated"]), np.zeros(len(ids), bool)))
    for i, p in enumerate(preds):
        got = {c.code: c for c in p.codes}
        assert set(got) == {labels.codes[j] for j in np.flatnonzero(predicted[i])}
        for code, c in got.items():
            j = labels.index[code]
            assert c.probability == pytest.approx(float(probs[i, j]), abs=1e-6)
            assert (c.decision == "auto_accept") == bool(accept[i, j])
    assert any(c.decision == "auto_accept" for p in preds for c in p.codes), "lax target should accept some"


def test_evidence_points_into_the_note(exported, tiny_corpus) -> None:
    coder = Coder.load(exported["result"].bundle_dir)
    ids, texts = _notes(tiny_corpus)
    for text, pred in zip(texts, coder.predict(texts, ids), strict=True):
        for c in pred.codes:
            assert c.evidence, "every predicted code has at least one evidence span"
            for span in c.evidence:
                assert 0 <= span["start"] < span["end"] <= len(text)
                assert text[span["start"]:span["end"]].strip()


def test_pyfunc_model_from_registry_gives_the_same_output(exported, tiny_corpus) -> None:
    mlflow.set_tracking_uri(exported["tracking_uri"])
    import pandas as pd

    from medcoder.tracking.pyfunc import predictions_frame

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, "candidate")
    assert str(version.version) == exported["result"].registered_version
    assert version.tags["medcoder.bundle_id"] == exported["result"].manifest.bundle_id
    assert "medcoder.codeset_fy" in version.tags and "test_map" in version.tags
    ids, texts = _notes(tiny_corpus)
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@candidate")
    got = loaded.predict(pd.DataFrame({"id": ids, "text": texts}))
    want = predictions_frame(Coder.load(exported["result"].bundle_dir).predict(texts, ids))
    cols = [c for c in want.columns if c != "timestamp"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), want[cols].reset_index(drop=True))


def test_the_mlflow_model_is_logged_from_code_and_holds_no_pickle(exported, tmp_path, monkeypatch) -> None:
    """Issue 22: the model was a CloudPickle ``python_model.pkl`` that every registry load
    unpickled. Now it is MLflow "models from code": the model folder holds ``pyfunc_model.py`` and
    no pickle, and it loads with MLflow's pickle loading switched off."""
    import pandas as pd
    import yaml

    from medcoder.tracking.pyfunc import (
        INPUT_EXAMPLE,
        OUTPUT_SCHEMA_VERSION,
        SCHEMA_VERSION_KEY,
        model_signature,
    )

    mlflow.set_tracking_uri(exported["tracking_uri"])
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL_NAME}@candidate",
                                                     dst_path=str(tmp_path / "model")))
    pickles = [p.relative_to(local).as_posix() for p in local.rglob("*")
               if p.suffix in (".pkl", ".pickle", ".cloudpickle", ".joblib")]
    assert not pickles, pickles
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert "python_model" not in flavor and flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(flavor["model_code_path"]).name == "pyfunc_model.py" and (local / "pyfunc_model.py").is_file()
    assert mlmodel["metadata"][SCHEMA_VERSION_KEY] == OUTPUT_SCHEMA_VERSION
    assert mlflow.models.Model.load(str(local)).signature == model_signature()
    from medcoder.workflows.export import _requirements

    assert set(_requirements(None)) <= set((local / "requirements.txt").read_text().splitlines())

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@candidate")
    got = loaded.predict(INPUT_EXAMPLE)
    want = Coder.load(exported["result"].bundle_dir).predict(list(INPUT_EXAMPLE["text"]), ["example-1", "1"])
    assert list(got["id"]) == ["example-1", "1"]
    assert [[c["code"] for c in codes] for codes in got["codes"]] == [[c.code for c in p.codes] for p in want]
    assert isinstance(got, pd.DataFrame)


def test_promote_moves_champion(exported) -> None:
    from medcoder.tracking.registry import promote

    mlflow.set_tracking_uri(exported["tracking_uri"])
    version = promote(MODEL_NAME)
    assert str(mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version) == version
    with pytest.raises(ConfigError, match="no alias"):
        promote(MODEL_NAME, from_alias="nope")


def _copy(bundle: Path, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    return dst


def test_tampered_missing_or_unknown_bundles_are_refused(exported, tmp_path) -> None:
    bundle = exported["result"].bundle_dir
    t = _copy(bundle, tmp_path / "tampered")
    labels = json.loads((t / "labels.json").read_text())
    labels["frequency"][labels["codes"][0]] += 1000  # e.g. someone "fixes" a count to dodge rare_code
    (t / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(BundleError, match="labels.json.*sha256"):
        Coder.load(t)
    m = _copy(bundle, tmp_path / "missing")
    (m / "calibration.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        Coder.load(m)
    v = _copy(bundle, tmp_path / "version")
    manifest = json.loads((v / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (v / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version=99"):
        Coder.load(v)
    e = _copy(bundle, tmp_path / "extra")
    (e / "model" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="not in the manifest"):
        Coder.load(e)
    with pytest.raises(BundleError, match="no such directory"):
        Coder.load(tmp_path / "nowhere")


def test_interrupted_export_leaves_no_bundle(exported, tmp_path, monkeypatch) -> None:
    from medcoder.workflows import export as export_mod

    def boom(**_):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way through writing

    monkeypatch.setattr(export_mod, "render_model_card", boom)
    cfg = _compose("export", [f"run_id={exported['run'].run_id}", f"paths.root_dir={exported['root']}",
                              f"output_dir={tmp_path / 'b'}", "mlflow_model.log=false"])
    with pytest.raises(KeyboardInterrupt):
        export_run(cfg)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor a temp folder


def test_export_refuses_an_existing_bundle_and_an_uncalibrated_run(exported, tiny_corpus, tiny_encoder,
                                                                   tmp_path) -> None:
    cfg = _compose("export", [f"run_id={exported['run'].run_id}", f"paths.root_dir={exported['root']}",
                              f"output_dir={exported['result'].bundle_dir}", "mlflow_model.log=false"])
    with pytest.raises(BundleError, match="already exists"):
        export_run(cfg)
    run = train(compose_cfg(tiny_overrides(exported["root"], tiny_corpus, tiny_encoder, "trainer=cached_head",
                                           "trainer.num_train_epochs=1", "run_name=uncalibrated")))
    cfg = _compose("export", [f"run_id={run.run_id}", f"paths.root_dir={exported['root']}",
                              f"output_dir={tmp_path / 'b'}"])
    with pytest.raises(ConfigError, match="calibrate.py"):
        export_run(cfg)
    assert not (tmp_path / "b").exists()


def test_coder_loads_a_registered_model_uri(exported, tmp_path) -> None:
    mlflow.set_tracking_uri(exported["tracking_uri"])
    coder = Coder.load(f"models:/{MODEL_NAME}@candidate")
    assert coder.bundle_id == exported["result"].manifest.bundle_id
    with pytest.raises(BundleError, match="cannot download"):
        Coder.load(f"models:/{MODEL_NAME}@no-such-alias")
