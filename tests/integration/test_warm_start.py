"""Warm-start retraining: carried rows are exactly the source's, added/dropped codes, errors, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from medcoder.data import LabelSpace
from medcoder.errors import BundleError, ConfigError
from medcoder.modeling import MedCoderForICDCoding
from medcoder.tracking import TrackingSettings, setup_experiment
from medcoder.training.warm_start import (
    PER_LABEL_PARAMS,
    apply_warm_start,
    nearest_ancestor,
    resolve_warm_start_source,
)
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, tiny_overrides

SOURCE_CODES = ["E11.9", "I10", "J18.9", "N39.0", "R51", "K35"]
NEW_CODES = ["I10", "K35.80", "E11.9", "Z99.9", "J18.9"]  # columns moved, 2 added, 3 dropped


def _model(encoder: str, codes: list[str], seed: int, **kwargs) -> MedCoderForICDCoding:
    """A model whose head (and, for a source, encoder) differ from a fresh one's."""
    model = MedCoderForICDCoding.from_encoder(encoder, codes, chunk_size=16, max_chunks=3, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture
def source_dir(tmp_path: Path, tiny_encoder: str) -> Path:
    """A bundle-like directory (``model/`` + ``labels.json``) of a model with a trained-looking
    encoder (perturbed away from the pretrained one) and random head rows."""
    model = _model(tiny_encoder, SOURCE_CODES, seed=1)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.01)
    return _save_source(model, SOURCE_CODES, tmp_path / "source")


def test_carried_rows_and_encoder_are_identical_to_the_source(tmp_path, source_dir, tiny_encoder) -> None:
    new = _model(tiny_encoder, NEW_CODES, seed=2)  # stands in for the cold (description/bias) init
    cold = {k: v.clone() for k, v in new.state_dict().items()}
    report = apply_warm_start(new, str(source_dir), NEW_CODES, tmp_path / "dl")

    assert report.carried == ["I10", "E11.9", "J18.9"]
    assert report.added == ["K35.80", "Z99.9"]
    assert report.dropped == ["N39.0", "R51", "K35"]  # the parent is replaced by its child
    assert report.added_from_ancestor == {"K35.80": "K35"}
    assert report.source_codeset_fy == 2025

    src = MedCoderForICDCoding.from_pretrained(source_dir / "model").state_dict()
    got = new.state_dict()
    s, n = SOURCE_CODES.index, NEW_CODES.index
    for name in PER_LABEL_PARAMS:
        for code in report.carried:
            assert torch.equal(got[name][n(code)], src[name][s(code)]), (name, code)
        assert torch.equal(got[name][n("Z99.9")], cold[name][n("Z99.9")])  # no ancestor: cold init kept
    # An added child starts from its parent's query and output row, its own prevalence bias.
    for name in ("head.label_queries.weight", "head.label_weights"):
        assert torch.equal(got[name][n("K35.80")], src[name][s("K35")])
    assert torch.equal(got["head.label_bias"][n("K35.80")], cold["head.label_bias"][n("K35.80")])
    shared = [k for k in got if k not in PER_LABEL_PARAMS]
    assert any(k.startswith("encoder.") for k in shared) and "head.projection.weight" in shared
    assert all(torch.equal(got[k], src[k]) for k in shared)
    assert json.loads(report.to_json())["dropped"] == ["N39.0", "R51", "K35"]


def test_nearest_ancestor_walks_up_to_the_category() -> None:
    assert nearest_ancestor("E11.65", {"E11"}) == "E11"
    assert nearest_ancestor("E11.65", {"E11", "E11.6"}) == "E11.6"
    assert nearest_ancestor("R51", {"R5", "R51"}) is None  # never above the 3-character category
    assert nearest_ancestor("I10", {"I10"}) is None


def test_incompatible_architecture_is_a_config_error(tmp_path, source_dir, tiny_encoder) -> None:
    smaller_head = _model(tiny_encoder, NEW_CODES, seed=2, attention_dim=16)
    with pytest.raises(ConfigError, match="attention_dim"):
        apply_warm_start(smaller_head, str(source_dir), NEW_CODES, tmp_path / "dl")

    from transformers import AutoConfig, BertModel

    config = AutoConfig.from_pretrained(tiny_encoder)
    config.num_hidden_layers = 1
    BertModel(config).save_pretrained(tmp_path / "one_layer")
    shallow = MedCoderForICDCoding.from_encoder(str(tmp_path / "one_layer"), NEW_CODES)
    with pytest.raises(ConfigError, match="num_hidden_layers differs"):
        apply_warm_start(shallow, str(source_dir), NEW_CODES, tmp_path / "dl")


def test_bad_sources_are_clear_errors(tmp_path, source_dir, tiny_corpus, tiny_encoder) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        resolve_warm_start_source(str(tmp_path / "nope"), tmp_path / "dl")
    # train() checks a directory before it reads any data.
    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, f"warm_start={tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match="warm_start=.*no such directory"):
        train(cfg)
    (source_dir / "labels.json").unlink()
    with pytest.raises(BundleError, match="lacks labels.json"):
        resolve_warm_start_source(str(source_dir), tmp_path / "dl")


def _save_source(model: MedCoderForICDCoding, codes: list[str], out: Path) -> Path:
    model.save_pretrained(out / "model")
    LabelSpace(codes, frequency=dict.fromkeys(codes, 3), codeset_fy=2025).to_json(out / "labels.json")
    return out


def test_frozen_encoder_keeps_its_state_cache_key(tmp_path, tiny_encoder) -> None:
    """With trainer.encoder_mode=cached the source's encoder is the pretrained one; after a save,
    a load and the copy its fingerprint (the state cache key) must equal a cold run's."""
    from medcoder.modeling.state_cache import encoder_fingerprint

    source = _save_source(_model(tiny_encoder, SOURCE_CODES, seed=1), SOURCE_CODES, tmp_path / "source")
    new = _model(tiny_encoder, NEW_CODES, seed=2)
    cold_key = encoder_fingerprint(new.encoder)
    apply_warm_start(new, str(source), NEW_CODES, tmp_path / "dl")
    assert encoder_fingerprint(new.encoder) == cold_key


def test_train_warm_started_from_a_run_id_logs_what_it_carried(tmp_path, tiny_corpus, tiny_encoder) -> None:
    # Last year's model, logged as an MLflow run: K35.80 did not exist yet (coded K35.8), R51 not at all.
    last_year = ["E11.9", "I10", "J18.9", "N39.0", "K35.8"]
    source = _save_source(_model(tiny_encoder, last_year, seed=1), last_year, tmp_path / "source")
    setup_experiment(TrackingSettings(tmp_path))
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(source / "model"), "model")
        mlflow.log_artifact(str(source / "labels.json"))
        mlflow.log_text("seed: 1\n", "config.yaml")
    source_run = run.info.run_id

    cfg = compose_cfg(tiny_overrides(tmp_path, tiny_corpus, tiny_encoder, "trainer=cached_head",
                                     "trainer.num_train_epochs=1", f"warm_start={source_run}"))
    warm = train(cfg)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(warm.run_id)
    assert run.data.params["warm_start.source"] == source_run
    assert run.data.params["warm_start"] == source_run  # the composed config, too
    m = run.data.metrics
    assert (m["warm_start_carried"], m["warm_start_added"], m["warm_start_dropped"]) == (4, 2, 1)
    assert m["warm_start_added_from_ancestor"] == 1
    report = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=warm.run_id, artifact_path="warm_start.json", dst_path=str(tmp_path / "dl"))).read_text())
    assert sorted(report["added"]) == ["K35.80", "R51"] and report["dropped"] == ["K35.8"]
    assert report["added_from_ancestor"] == {"K35.80": "K35.8"}
    assert sorted(report["carried"]) == ["E11.9", "I10", "J18.9", "N39.0"]


def test_warm_start_source_code_is_never_run(tmp_path, source_dir, tiny_encoder) -> None:
    """A warm-start source is someone else's folder: an ``auto_map`` in its config (top level and in
    the stored encoder config) pointing at a .py beside it is ignored, and a pickled checkpoint
    (``pytorch_model.bin``) instead of safetensors is refused."""
    marker = tmp_path / "marker.txt"
    model_dir = source_dir / "model"
    (model_dir / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModel": "evil.Model"}
    config["encoder"]["auto_map"] = {"AutoConfig": "evil.Config", "AutoModel": "evil.Model"}
    (model_dir / "config.json").write_text(json.dumps(config))
    new = _model(tiny_encoder, NEW_CODES, seed=2)
    report = apply_warm_start(new, str(source_dir), NEW_CODES, tmp_path / "dl")
    assert report.carried == ["I10", "E11.9", "J18.9"] and not marker.exists()

    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")
    with pytest.raises(BundleError, match="cannot load"):
        apply_warm_start(_model(tiny_encoder, NEW_CODES, seed=2), str(source_dir), NEW_CODES, tmp_path / "dl")
