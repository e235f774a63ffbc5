"""``scripts/export.py quantize=int8`` and ``quantize=onnx-int8`` on the tiny trained + calibrated run:
the manifest records the quantisation, ``Coder.load`` applies it to the stored fp32 weights, the
calibration is refitted on dev with the quantised scorer (and differs from the fp32 one), and the
record cannot be edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from medcoder.errors import BundleError, ConfigError
from medcoder.inference import bundle as bundle_mod
from medcoder.inference.coder import Coder
from medcoder.modeling.onnx_encoder import OnnxEncoder
from medcoder.workflows.export import _requirements, export_run

from ..helpers.configs import compose_named

#: ``quantize=`` value -> what the manifest records
METHODS = {"int8": "dynamic-int8", "onnx-int8": "onnx-int8"}


@pytest.fixture(scope="module", params=sorted(METHODS))
def quantized(request, tiny_bundle, tmp_path_factory) -> dict:
    mlflow.set_tracking_uri(tiny_bundle["tracking_uri"])
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    # The tiny random encoder is no guide to MAP drift on MiniLM: the MAP check is off here.
    cfg = compose_named("export", [f"run_id={tiny_bundle['run'].run_id}", f"paths.root_dir={tiny_bundle['root']}",
                                   f"output_dir={out}", f"quantize={request.param}", "quantize_max_map_drop=null",
                                   "mlflow_model.log=false"])
    return {"result": export_run(cfg), "fp32": tiny_bundle["result"], "method": METHODS[request.param]}


def test_manifest_records_the_quantization_and_weights_stay_fp32_safetensors(quantized) -> None:
    bundle, fp32 = quantized["result"].bundle_dir, quantized["fp32"].bundle_dir
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["quantization"] == quantized["method"]
    assert manifest["schema_version"] == bundle_mod.QUANTIZED_SCHEMA_VERSION
    assert "quantization" not in json.loads((fp32 / "manifest.json").read_text())  # fp32 bundles unchanged
    # The same fp32 weights, byte for byte, under the manifest's sha256; no pickled module anywhere.
    fp32_files = json.loads((fp32 / "manifest.json").read_text())["files"]
    assert manifest["files"]["model/model.safetensors"] == fp32_files["model/model.safetensors"]
    assert not [p for p in bundle.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle")]
    assert not [p for p in bundle.rglob("*") if p.suffix == ".onnx"]  # the graph is built at load, not stored
    assert bundle_mod.verify_bundle(bundle).quantization == quantized["method"]
    assert manifest["bundle_id"] != quantized["fp32"].manifest.bundle_id


def test_quantized_bundle_loads_quantised_and_predicts(quantized, tiny_bundle) -> None:
    coder = Coder.load(quantized["result"].bundle_dir)
    method = quantized["method"]
    assert coder.quantization == method and method in repr(coder)
    encoder_linear = [m for m in coder.model.encoder.modules() if isinstance(m, torch.nn.Linear | DynamicQuantizedLinear)]
    if method == "dynamic-int8":
        assert encoder_linear and all(isinstance(m, DynamicQuantizedLinear) for m in encoder_linear)
    else:  # the torch encoder stays fp32; an int8 ONNX Runtime session encodes instead
        assert encoder_linear and not any(isinstance(m, DynamicQuantizedLinear) for m in encoder_linear)
        assert isinstance(coder.model.runtime_encoder, OnnxEncoder)
    assert type(coder.model.head.label_queries) is torch.nn.Linear  # the head stays fp32
    assert Coder.load(quantized["fp32"].bundle_dir).quantization is None  # the plain path is unchanged

    rows = [json.loads(line) for line in Path(tiny_bundle["corpus"]["test"]).read_text().splitlines() if line.strip()]
    preds = coder.predict([r["text"] for r in rows], [r["id"] for r in rows])
    assert [p.id for p in preds] == [r["id"] for r in rows]
    assert {p.bundle_id for p in preds} == {quantized["result"].manifest.bundle_id}
    for p, r in zip(preds, rows, strict=True):
        for c in p.codes:
            assert 0.0 <= c.probability <= 1.0
            assert all(0 <= s["start"] < s["end"] <= len(r["text"]) for s in c.evidence)


def test_calibration_was_refitted_on_dev_with_the_quantised_scorer(quantized) -> None:
    bundle, fp32 = quantized["result"].bundle_dir, quantized["fp32"].bundle_dir
    cal = json.loads((bundle / "calibration.json").read_text())
    cal32 = json.loads((fp32 / "calibration.json").read_text())
    assert cal["quantization"] == quantized["method"] and "quantization" not in cal32
    assert cal["calibration_split"] == cal32["calibration_split"] == "dev"
    # The same procedure and settings (method, targets, rules), other fitted state.
    assert cal["calibrator"]["method"] == cal32["calibrator"]["method"]
    assert cal["targets"]["target_precision"] == cal32["targets"]["target_precision"]
    assert cal["policy"]["min_train_count"] == cal32["policy"]["min_train_count"]
    assert cal["calibrator"]["state"] != cal32["calibrator"]["state"]
    assert cal["fp32"]["calibrator"] == cal32["calibrator"]  # what it replaced, on record
    assert cal["guarantee"]["n_calibration_eligible"] > 0
    # The calibration the coder applies is the refitted one.
    coder = Coder.load(bundle)
    assert coder.calibrator.to_dict() == cal["calibrator"]
    metrics = json.loads((bundle / "metrics.json").read_text())
    for key in ("test_map", "dev_map", "fp32_test_map", "quantization_test_map_drop", "test_ece_calibrated",
                "test_auto_accept_coverage"):
        assert key in metrics, key
    assert metrics["quantization_test_map_drop"] == pytest.approx(metrics["fp32_test_map"] - metrics["test_map"])
    assert "Quantisation" in (bundle / "MODEL_CARD.md").read_text()


def test_quantization_record_cannot_be_dropped_or_changed(quantized, tmp_path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(quantized["result"].bundle_dir, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    for value in (None, "dynamic-int4"):
        edited = {**manifest, "quantization": value} if value else {k: v for k, v in manifest.items()
                                                                    if k != "quantization"}
        path.write_text(json.dumps(edited))
        with pytest.raises(BundleError, match="bundle_id"):
            Coder.load(copy)
    # Unverified loads still refuse an int8 calibration on fp32 weights.
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "quantization"}))
    with pytest.raises(BundleError, match="fitted for quantization"):
        Coder.load(copy, verify=False)


def test_unknown_quantize_value_is_refused_before_any_download(tiny_bundle, tmp_path) -> None:
    cfg = compose_named("export", [f"run_id={tiny_bundle['run'].run_id}", f"paths.root_dir={tiny_bundle['root']}",
                                   f"output_dir={tmp_path / 'x'}", "quantize=int4", "mlflow_model.log=false"])
    with pytest.raises(ConfigError, match="quantize"):
        export_run(cfg)
    assert not (tmp_path / "x").exists()


def test_the_mlflow_model_of_an_onnx_bundle_pins_onnxruntime() -> None:
    """A served or Spark-scored onnx-int8 model must find onnxruntime in the environment MLflow builds."""
    import importlib.metadata as md

    plain, onnx_int8 = _requirements(None), _requirements("onnx-int8")
    assert not any(r.startswith(("onnx==", "onnxruntime==")) for r in plain)
    assert f"onnxruntime=={md.version('onnxruntime')}" in onnx_int8 and f"onnx=={md.version('onnx')}" in onnx_int8
    assert set(plain) < set(onnx_int8)
