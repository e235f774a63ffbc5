"""Load a saved medcoder model folder (a bundle's ``model/`` or a run's artifact) without running code.

Why this module: a bundle is data that ops teams copy between machines and registries, so anyone
who can write one must not be able to run code where it is loaded. transformers' ``Auto*`` classes
resolve ``auto_map`` entries of ``config.json`` / ``tokenizer_config.json`` to ``.py`` files
beside them, and with ``trust_remote_code`` unset they *ask on stdin* whether to run them (a
service whose stdin answers "y", or a person who presses y, runs the file). So every load here

* names a concrete class: :class:`MedCoderForICDCoding` for the model, and for the tokenizer the
  class named by ``tokenizer_config.json`` *if* it is one of transformers' own tokenizer classes
  (an allow-list: a subclass of ``PreTrainedTokenizerBase`` defined in a ``transformers.`` module),
  else refused; ``auto_map`` is never read;
* passes ``trust_remote_code=False`` (belt and braces: no code path may prompt);
* reads weights from ``model.safetensors`` only (``use_safetensors=True``), never a pickle.

The tokenizer class is the one ``AutoTokenizer`` would pick for the same folder (transformers 5:
the named class, its ``...Fast`` spelling being an alias of it), so the token ids are identical
(tested on the tiny fixture and on the shipped MiniLM tokenizer).

**Quantisation** is an inference option applied *at load time* to the stored fp32 weights
(:func:`quantize_model`), never a stored quantised module: the bundle keeps its safetensors under
the manifest's sha256, and a quantised module would have to be pickled (``torch.save``) to be stored.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from medcoder.errors import BundleError
from medcoder.modeling.model import MedCoderForICDCoding
from medcoder.modeling.onnx_encoder import OnnxEncoder

TOKENIZER_CONFIG = "tokenizer_config.json"


#: Quantisation methods an inference path may apply to a loaded model (bundle manifest field
#: ``quantization``). ``dynamic-int8``: :func:`torch.ao.quantization.quantize_dynamic` on every
#: ``nn.Linear`` of the encoder: qint8 weights with one scale per output channel, activations
#: quantised per call to the full 8 bits (:class:`FullRangeDynamicLinear`). ``onnx-int8``: the
#: encoder exported to ONNX and dynamically quantised by ONNX Runtime, run by an
#: :class:`~medcoder.modeling.onnx_encoder.OnnxEncoder` (the ``onnx`` extra; notes encoded in parallel).
QUANTIZATION_METHODS = ("dynamic-int8", "onnx-int8")
#: Attribute set on a quantised model (never on its config: ``save_pretrained`` must not record it).
QUANTIZED_ATTR = "medcoder_quantization"


class FullRangeDynamicLinear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamically quantised ``Linear`` with activations quantised to 8 bits, not 7.

    Why: torch's module always passes ``reduce_range=True`` (7-bit activations: it keeps the
    AVX2 ``vpmaddubsw`` int16 sums of fbgemm from saturating). On the quickstart MiniLM coder that
    halved resolution was most of the quantisation error: the label attention over 1,767 codes
    moved the logits of each note's top 50 codes by 0.34 on average with 7 bits and by 0.15 with 8
    bits (48 training notes, label-free), at the same speed. Exported with ``quantize=int8``
    (2026-11-27, AVX2 CPU), the quickstart bundle's test MAP was 0.3996 against fp32's 0.3997 with
    8 bits, 0.388 with 7 (the export refuses a drop over 0.005). A rare saturated sum on an
    AVX2-only CPU is part of what that check measures on every export; CPUs with VNNI do not
    saturate.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
        return y.to(x.dtype)

    def _get_name(self) -> str:
        return "FullRangeDynamicQuantizedLinear"


def quantization_of(model: torch.nn.Module) -> str | None:
    """The quantisation applied to ``model`` by :func:`quantize_model`, or None (fp32/fp16)."""
    return getattr(model, QUANTIZED_ATTR, None)


def quantize_model(model: MedCoderForICDCoding, method: str) -> MedCoderForICDCoding:
    """Quantise ``model`` in place for CPU inference and return it.

    ``onnx-int8`` leaves the torch encoder as it is and attaches an int8 ONNX Runtime twin of it
    (:mod:`medcoder.modeling.onnx_encoder`) that :meth:`MedCoderForICDCoding.encode_chunks` then
    calls; the rest of this docstring is about ``dynamic-int8``, and the same choices hold for both.

    ``dynamic-int8`` replaces each ``nn.Linear`` of the **encoder** (attention Q/K/V/output, the
    feed-forward pair: ~all of its FLOPs) by a dynamically quantised one; on a 2-core CPU that is
    where the time goes (``benchmarks/predict_speed.py``). Weights get one scale per output
    channel and activations 8 bits (:class:`FullRangeDynamicLinear`), not torch's defaults (one
    scale per tensor, 7 bits): with the defaults the quickstart MiniLM coder lost 0.015 test MAP
    (0.012 with per-channel weights alone), more than the 0.005 the export allows; with both, 0.0001.
    The **label-attention head stays fp32**:
    it is a few percent of the time, it was trained on fp32 encoder states, and its per-code
    queries and weights decide both the ranking and the evidence spans, so quantising it would
    buy little speed for the largest shift in scores. Embeddings and LayerNorms stay fp32 too
    (``quantize_dynamic`` handles ``nn.Linear`` only).

    Scores shift slightly, so a quantised model needs its own calibration (``scripts/export.py
    quantize=int8`` refits it on dev). A quantised model cannot be saved (its weights would have
    to be pickled); :class:`~medcoder.modeling.neural.NeuralScorer` refuses to.
    """
    if method not in QUANTIZATION_METHODS:
        raise ValueError(f"quantization={method!r} is not supported (known: {list(QUANTIZATION_METHODS)})")
    current = quantization_of(model)
    if current == method:
        return model
    if current is not None:
        raise ValueError(f"the model is already quantised ({current}); load the fp32 weights again")
    if model.device.type != "cpu":
        raise ValueError(f"quantization={method!r} runs on CPU only (the model is on {model.device})")
    if model.dtype != torch.float32:  # fp16/bf16 stored weights: quantise from fp32 (qint8 needs float32 input)
        model.float()
    model.eval()
    if method == "onnx-int8":
        model.runtime_encoder = OnnxEncoder.int8_from(model.encoder)
        setattr(model, QUANTIZED_ATTR, method)
        return model
    with warnings.catch_warnings():
        # torch >= 2.10 points users of torch.ao eager quantisation at torchao (not installed here);
        # quantize_dynamic still works and is what this option is measured with.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        torch.ao.quantization.quantize_dynamic(
            model.encoder, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8, mapping={torch.nn.Linear: FullRangeDynamicLinear}, inplace=True)
    setattr(model, QUANTIZED_ATTR, method)
    return model


def load_medcoder_model(model_dir: str | Path, *, device: str | torch.device | None = None,
                        quantization: str | None = None) -> MedCoderForICDCoding:
    """``MedCoderForICDCoding.from_pretrained`` with no remote code and safetensors weights only.

    Loading by the concrete class never looks at ``auto_map``; the encoder inside is rebuilt from
    the stored encoder config by :meth:`MedCoderForICDCoding.__init__`, which also passes
    ``trust_remote_code=False``. ``quantization`` (one of :data:`QUANTIZATION_METHODS`) is applied
    to the loaded fp32 weights by :func:`quantize_model`.
    """
    model = MedCoderForICDCoding.from_pretrained(Path(model_dir), trust_remote_code=False, use_safetensors=True)
    model = model.to(device) if device is not None else model
    return quantize_model(model, quantization) if quantization else model


def _transformers_tokenizer_class(name: str) -> type[PreTrainedTokenizerBase] | None:
    """transformers' own tokenizer class called ``name`` (``...Fast`` spellings included), else None.

    Looked up as transformers' ``AutoTokenizer`` does (``tokenizer_class_from_name``), then
    checked: only a class defined inside the ``transformers`` package qualifies. Classes loaded
    from a repository's code live in ``transformers_modules.*`` and classes a program registered
    itself elsewhere, so neither passes.
    """
    if not name.isidentifier():
        return None
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    base = name.removesuffix("Fast")  # AutoTokenizer (v5) strips it too: "XFast" is an alias of "X"
    for candidate in (base, base + "Fast"):
        try:
            cls = tokenizer_class_from_name(candidate)
        except (ImportError, AttributeError, ValueError):
            cls = None
        if (isinstance(cls, type) and issubclass(cls, PreTrainedTokenizerBase)
                and cls.__module__.startswith("transformers.")):
            if cls.__name__ == "PythonBackend":  # as AutoTokenizer: the Rust-backed class instead
                from transformers import TokenizersBackend

                return TokenizersBackend
            return cls
    return None


def tokenizer_class_for(model_dir: str | Path) -> type[PreTrainedTokenizerBase]:
    """The concrete tokenizer class for ``model_dir`` (see the module docstring); BundleError if none.

    ``tokenizer_class`` in ``tokenizer_config.json`` names it; without one, a folder with a
    ``tokenizer.json`` (the complete Rust tokenizer: normaliser, pre-tokeniser, vocabulary,
    post-processor) loads as ``PreTrainedTokenizerFast``.
    """
    root = Path(model_dir)
    config_path = root / TOKENIZER_CONFIG
    config: dict = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{config_path}: unreadable ({exc})", hint="re-export the bundle") from exc
        if not isinstance(config, dict):
            raise BundleError(f"{config_path}: not a JSON object", hint="re-export the bundle")
    name = config.get("tokenizer_class")
    if name is None:
        if (root / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast
        raise BundleError(f"{config_path}: no tokenizer_class and no tokenizer.json, so no tokenizer can be loaded",
                          hint="re-export the bundle (save_pretrained writes both)")
    cls = _transformers_tokenizer_class(name) if isinstance(name, str) else None
    if cls is None:
        raise BundleError(
            f"{config_path}: tokenizer_class={name!r} is not one of transformers' own tokenizer classes",
            hint="medcoder loads tokenizers only by a class built into transformers; re-export the bundle",
        )
    return cls


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, by its concrete class, ``trust_remote_code=False``; never ``auto_map``."""
    cls = tokenizer_class_for(model_dir)
    return cls.from_pretrained(Path(model_dir), trust_remote_code=False, local_files_only=True)


__all__ = ["QUANTIZATION_METHODS", "FullRangeDynamicLinear", "load_medcoder_model", "load_tokenizer",
           "quantization_of", "quantize_model", "tokenizer_class_for"]
