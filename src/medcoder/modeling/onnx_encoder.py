"""The encoder as an int8 ONNX Runtime session, built at load time from the fp32 weights (``onnx-int8``).

Why ONNX Runtime, and why threads. On the 2-core AVX2 CPU (no VNNI) this project is measured on,
encoding the 100-note speed set (446 chunks of 128 tokens, each note alone: see
:mod:`medcoder.modeling.scoring`) took 10.6 s with torch's dynamic int8 and 9.4 s with an ORT
int8 session of two intra-op threads, but **6.1 s** with ORT sessions of one thread each encoding
two notes at a time from two Python threads: a session's ``run`` holds no GIL for the whole graph,
so two notes run truly in parallel, and one-thread GEMMs on a 128-token chunk waste nothing on
synchronisation. torch's int8 BERT in two Python threads was *slower* (12.3 s: every one of its
many small ops takes the GIL). ORT's own BERT graph fusions (``onnxruntime.transformers.optimizer``)
were measured no faster here (7.5 s), so the session uses only its built-in graph optimisations.

What is quantised mirrors ``dynamic-int8`` (:mod:`medcoder.modeling.loading`): the weight ``MatMul``
of every encoder linear layer (qint8 weights, one scale per output channel; uint8 activations
quantised per call over the whole call). Embeddings, LayerNorm, softmax attention and the
label-attention head stay fp32. Weights use all 8 bits (``reduce_range=False``), although ORT
suggests 7 for per-channel weights on CPUs without VNNI (whose int16 sums can saturate): exporting
the quickstart coder both ways (2026-11-28, this AVX2 CPU), **dev** MAP was 0.3793 with 8 bits and
0.3738 with 7 (fp32: 0.3756), so 8 bits was chosen on dev; the same exports' test MAP, printed
alongside and not used for the choice, was 0.4006 and 0.3968 (fp32 0.3997). The export's
``quantize_max_map_drop`` check guards every bundle against a CPU where saturation costs more.

Why built at load and not stored in the bundle: the same reason as ``dynamic-int8``. The bundle
keeps its fp32 safetensors under the manifest's sha256 and records only the option; every load
derives the same graph from the same weights (``torch.onnx.export`` + ORT ``quantize_dynamic``,
~6 s for MiniLM-L6). The graph is built in memory from our own module and holds standard ONNX
operators only; no file from a bundle is ever handed to ONNX Runtime.

Needs the ``onnx`` extra (``pip install 'medcoder[onnx]'``: onnx + onnxruntime).
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from medcoder.errors import ConfigError

#: ONNX operator set of the exported graph (the TorchScript exporter's well-trodden BERT path).
ONNX_OPSET = 17
_INPUTS = ("input_ids", "attention_mask")
_T = TypeVar("_T")
_R = TypeVar("_R")


def _require_onnx() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``, or a one-line ConfigError saying which extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"quantization=onnx-int8 needs onnx and onnxruntime ({exc.name} is not installed)",
                          hint="pip install 'medcoder[onnx]', or use quantize=int8 (torch only)") from exc
    return onnx, onnxruntime


class _QuietQuantizer(logging.Filter):
    """Drops what ORT's quantiser logs on the *root* logger below WARNING (a line per tensor) and its
    advice to pre-process the model (meant for CNNs; printed on every call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname or "quantization" not in record.pathname:
            return True
        return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


class _LastHiddenState(torch.nn.Module):
    """The encoder as a function of (ids, mask) -> token states: the graph the session runs."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_encoder(encoder: torch.nn.Module) -> bytes:
    """The fp32 encoder as an ONNX graph (bytes) with dynamic batch and sequence axes."""
    _require_onnx()
    example = torch.ones(2, 8, dtype=torch.long)
    axes = {name: {0: "chunks", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    buffer = io.BytesIO()
    was_training = encoder.training
    encoder.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns that it is deprecated and traces Python branches of
            # the HF attention-mask code; the branches taken are the same for any shape here.
            warnings.simplefilter("ignore")
            torch.onnx.export(_LastHiddenState(encoder), (example, example), buffer, input_names=list(_INPUTS),
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                              dynamo=False)
    finally:
        encoder.train(was_training)
    return buffer.getvalue()


def quantize_int8(graph: bytes) -> bytes:
    """ORT dynamic int8 of the weight ``MatMul`` nodes of ``graph`` (module docstring)."""
    onnx, _ = _require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="medcoder-onnx-") as tmp:
        out = Path(tmp) / "encoder.int8.onnx"  # quantize_dynamic writes a file; nothing else does
        quiet = _QuietQuantizer()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(onnx.load_from_string(graph), out, op_types_to_quantize=["MatMul"],
                             per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
                             extra_options={"MatMulConstBOnly": True})
        finally:
            logging.getLogger().removeFilter(quiet)
        return out.read_bytes()


class OnnxEncoder:
    """Token states from an ONNX Runtime session; :meth:`map` runs per-note work on a thread pool.

    Callable like :meth:`MedCoderForICDCoding.encode_chunks` (torch tensors in and out), so the
    model routes its encoder calls here once :func:`~medcoder.modeling.loading.quantize_model`
    attaches it. ``threads`` (default: ``torch.get_num_threads()`` at the first :meth:`map`) is the
    number of notes encoded at once, each by a one-thread session run.
    """

    def __init__(self, graph: bytes, threads: int | None = None) -> None:
        _, ort = _require_onnx()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._graph = graph
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def int8_from(cls, encoder: torch.nn.Module, threads: int | None = None) -> OnnxEncoder:
        """The int8 session of a torch encoder's current (fp32) weights."""
        return cls(quantize_int8(export_encoder(encoder)), threads=threads)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": input_ids.detach().cpu().numpy().astype(np.int64, copy=False),
                "attention_mask": attention_mask.detach().cpu().numpy().astype(np.int64, copy=False)}
        (states,) = self.session.run(None, feed)
        return torch.from_numpy(states)

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
        """``fn`` over ``items`` on the pool, results in input order (one note per task)."""
        if self._pool is None:
            workers = max(1, int(self.threads or torch.get_num_threads()))
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medcoder-onnx")
        return self._pool.map(fn, items)

    def close(self) -> None:
        """Stop the thread pool (it is restarted by the next :meth:`map`)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # A session and a thread pool cannot be pickled (Spark, multiprocessing): the graph can.
    def __getstate__(self) -> dict[str, Any]:
        return {"graph": self._graph, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["graph"], threads=state["threads"])  # type: ignore[misc]


__all__ = ["ONNX_OPSET", "OnnxEncoder", "export_encoder", "quantize_int8"]
