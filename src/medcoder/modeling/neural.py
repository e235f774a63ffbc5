"""The neural view as a :class:`~medcoder.modeling.scorer.Scorer`: chunking -> encoder + label-wise
attention -> logits, with attention evidence mapped back to character offsets.

Why a wrapper: the hybrid coder fuses views through one interface, and the inference path, the
calibration workflow and training evaluation must all score notes the same way (:func:`score_notes`).
The model is *trained* by :mod:`medcoder.training` (HF ``Trainer``; frozen-encoder state cache), so
:meth:`NeuralScorer.fit` is not the way to train it. For inference it may be quantised
(:meth:`NeuralScorer.quantize`, applied by ``Coder.load`` when the bundle's manifest says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from medcoder.data.chunking import chunk_texts
from medcoder.modeling.evidence import evidence_spans
from medcoder.modeling.loading import (
    load_medcoder_model,
    load_tokenizer,
    quantization_of,
    quantize_model,
)
from medcoder.modeling.model import MedCoderForICDCoding
from medcoder.modeling.scorer import Scorer, Scores, Span
from medcoder.modeling.scoring import score_notes

__all__ = ["NeuralScorer"]


class NeuralScorer(Scorer):
    """A trained :class:`MedCoderForICDCoding` and its tokenizer, scored through :func:`score_notes`."""

    name = "neural"
    evidence_rank = 20  # attended spans: after exact mention matches, before n-gram weights

    def __init__(self, model: MedCoderForICDCoding, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.codes = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @property
    def quantization(self) -> str | None:
        """The quantisation applied to the model for inference (None: the stored fp32 weights)."""
        return quantization_of(self.model)

    def quantize(self, method: str) -> NeuralScorer:
        """Quantise the encoder in place (:func:`~medcoder.modeling.loading.quantize_model`).

        Why a method and not a stored model: the bundle keeps the fp32 safetensors (hashed, no
        pickle) and records the option; every load quantises them the same way."""
        self.model = quantize_model(self.model, method)
        return self

    def fit(self, texts: Sequence[str], labels: np.ndarray, codes: Sequence[str], **kwargs: Any) -> NeuralScorer:
        raise NotImplementedError("the neural view is trained by medcoder.training (python scripts/train.py)")

    def features(self, texts: Sequence[str], *, return_offsets: bool = False) -> tuple[Dataset, list | None]:
        """Chunked token ids (the model's input) and, optionally, each token's character span."""
        cfg = self.model.config
        chunks = chunk_texts(list(texts), self.tokenizer, chunk_size=cfg.chunk_size, max_chunks=cfg.max_chunks,
                             return_offsets=return_offsets)
        offsets = chunks.pop("offsets", None)
        return Dataset.from_dict(chunks), offsets

    def score(self, texts: Sequence[str], *, evidence: bool = False, evidence_top_k: int = 3,
              batch_size: int = 8, progress: bool = False, cache_dir: str | Path | None = None) -> Scores:
        """Logits for every code; ``evidence`` adds the top attended spans (fast tokenizers only).

        ``truncated`` marks notes longer than ``max_chunks`` chunks (the model read a prefix)."""
        texts = list(texts)
        use_offsets = evidence and evidence_top_k > 0 and bool(getattr(self.tokenizer, "is_fast", False))
        features, offsets = self.features(texts, return_offsets=use_offsets)
        with torch.inference_mode():
            raw = score_notes(self.model, features, batch_size=batch_size, progress=progress, cache_dir=cache_dir,
                              evidence_top_k=evidence_top_k if use_offsets else 0)
        truncated = np.asarray(features["truncated"], dtype=bool) if len(texts) else np.zeros(0, bool)
        lookup = None
        if use_offsets and raw.top_positions is not None:
            cfg = self.model.config
            stride = max(1, cfg.token_pool_stride)

            def lookup(i: int, j: int) -> list[Span]:
                spans = evidence_spans(raw.top_positions[i, :, j], raw.top_weights[i, :, j], offsets[i],
                                       chunk_size=cfg.chunk_size, stride=stride, text=texts[i])
                return [{**span, "source": NeuralScorer.name} for span in spans]

        return Scores(raw.logits, evidence_lookup=lookup, truncated=truncated)

    def save(self, directory: str | Path) -> None:
        if self.quantization is not None:
            raise ValueError(f"a {self.quantization}-quantised model is not saved (its weights would have to be "
                             "pickled); save the fp32 model and record the quantisation in the bundle manifest")
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu", quantization: str | None = None) -> NeuralScorer:
        """By concrete class, ``trust_remote_code=False`` (:mod:`medcoder.modeling.loading`);
        ``quantization`` is applied to the loaded fp32 weights."""
        return cls(load_medcoder_model(directory, device=device, quantization=quantization), load_tokenizer(directory))
