"""The "tfidf" view: TF-IDF n-grams + a multi-output ridge regression solved in dual form.

Why this model (numbers: ``benchmarks/tfidf_probe.py``): the scorer is fitted K+1 times inside the
quickstart (out-of-fold predictions over train feed the stacker, then a final fit), so one fit on
500 notes x ~1,800 codes must take seconds. One-vs-rest logistic regression fits one model per
code (tens of seconds to minutes) and its dense ``n_codes x n_features`` coefficients are hundreds
of MB. Ridge regression on 0/1 targets shares one ``n_notes x n_notes`` Gram matrix across all
codes: fit = one sparse Gram product + one Cholesky solve; it also ranked codes at least as well
as logistic regression on CodiEsp dev (MAP).

Dual form: with training TF-IDF matrix ``X`` (``n_train x n_features``, CSR) and multi-hot
``Y``, ``A = (X X^T + alpha I)^-1 Y`` and ``score(x) = x X^T A``, i.e. the primal weights are
``W = X^T A`` but never materialised. The fitted state is ``X`` (sparse) + ``A`` (``n_train x
n_codes``) + the vectorizer's vocabulary and idf: a few MB for CodiEsp instead of a dense
``n_codes x n_features`` matrix. A small ``alpha`` (near min-norm interpolation) ranks best.

Features: character n-grams inside word boundaries (``char_wb`` 3-5-grams) by default: robust to
Spanish morphology and clinical spelling variants, and each n-gram lies inside one word, so a
note's score decomposes exactly over its words, which gives cheap evidence (below).

Evidence (``score(..., evidence=True)``): for a code ``j``, feature ``f`` contributes
``x_f * W[f, j]`` to the score. With ``char_wb`` every feature occurrence lies in one whitespace-
separated word, so each word occurrence gets its share of the contributions and the top words
(positive contributions) are the spans, ``weight`` = share of the code's positive contribution.
With the ``word`` analyzer the same is done per n-gram occurrence (token spans). Cost: one
``n_note_features x n_train`` slice times ``A[:, codes]`` per note plus re-analysing its words.

Files (no pickle; ``load`` runs no code from the folder):

* ``tfidf.json``: schema version, scorer and vectorizer parameters, codes (written last: its
  presence marks a complete save);
* ``tfidf_vocabulary.json``: the n-grams in feature-index order;
* ``tfidf_arrays.npz``: ``idf`` float32, the training matrix as CSR (``train_data`` float32,
  ``train_indices``/``train_indptr`` int32, ``train_shape``) and ``dual_coef`` float32.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from medcoder.atomic import AtomicFileSet
from medcoder.errors import BundleError
from medcoder.modeling.scorer import Scorer, Scores, Span

__all__ = ["TfidfScorer"]

SCHEMA_VERSION = 1
CONFIG_FILE = "tfidf.json"
VOCAB_FILE = "tfidf_vocabulary.json"
ARRAYS_FILE = "tfidf_arrays.npz"

_ANALYZERS = ("char_wb", "word")
_STRIP_ACCENTS = (None, "unicode", "ascii")
_WORD_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


#: Scorer parameters that are not TfidfVectorizer arguments.
_NOT_VECTORIZER = ("alpha", "evidence_top_k", "evidence_max_spans")


class TfidfScorer(Scorer):
    """TF-IDF n-grams -> multi-output ridge (dual form) over the codes given to :meth:`fit`.

    Parameters (scikit-learn style: hyper-parameters here, fitted state in ``*_`` attributes):

    * ``analyzer``, ``ngram_range``, ``min_df``, ``max_df``, ``max_features``, ``sublinear_tf``,
      ``strip_accents``, ``lowercase``: passed to :class:`~sklearn.feature_extraction.text.TfidfVectorizer`
      (``analyzer`` is ``"char_wb"`` or ``"word"``; other settings stay at scikit-learn's defaults:
      l2 norm, smoothed idf, float32).
    * ``alpha``: ridge penalty on the Gram matrix of l2-normalised rows (``K + alpha I``).
    * ``evidence_top_k``: with ``evidence=True`` and no ``evidence_codes``, evidence for each
      note's ``evidence_top_k`` highest-scoring codes.
    * ``evidence_max_spans``: at most this many spans per (note, code).
    """

    name: ClassVar[str] = "tfidf"
    evidence_rank: ClassVar[int] = 30  # words weighted by the ridge: the least direct evidence

    def __init__(
        self,
        *,
        analyzer: str = "char_wb",
        ngram_range: tuple[int, int] = (3, 5),
        min_df: int | float = 2,
        max_df: int | float = 0.95,
        max_features: int | None = None,
        sublinear_tf: bool = True,
        strip_accents: str | None = "unicode",
        lowercase: bool = True,
        alpha: float = 0.01,
        evidence_top_k: int = 10,
        evidence_max_spans: int = 5,
    ) -> None:
        self.analyzer = analyzer
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.strip_accents = strip_accents
        self.lowercase = lowercase
        self.alpha = alpha
        self.evidence_top_k = evidence_top_k
        self.evidence_max_spans = evidence_max_spans
        self._check_params()
        self.codes: list[str] = []

    # -- parameters -------------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable)."""
        return {
            "analyzer": self.analyzer,
            "ngram_range": list(self.ngram_range),
            "min_df": self.min_df,
            "max_df": self.max_df,
            "max_features": self.max_features,
            "sublinear_tf": self.sublinear_tf,
            "strip_accents": self.strip_accents,
            "lowercase": self.lowercase,
            "alpha": self.alpha,
            "evidence_top_k": self.evidence_top_k,
            "evidence_max_spans": self.evidence_max_spans,
        }

    def _check_params(self) -> None:
        if self.analyzer not in _ANALYZERS:
            raise ValueError(f"analyzer must be one of {_ANALYZERS}, got {self.analyzer!r}")
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must satisfy 1 <= min <= max, got {self.ngram_range}")
        if self.strip_accents not in _STRIP_ACCENTS:
            raise ValueError(f"strip_accents must be one of {_STRIP_ACCENTS}, got {self.strip_accents!r}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if self.max_features is not None and int(self.max_features) < 1:
            raise ValueError(f"max_features must be >= 1 or None, got {self.max_features!r}")
        if int(self.evidence_top_k) < 0 or int(self.evidence_max_spans) < 1:
            raise ValueError("evidence_top_k must be >= 0 and evidence_max_spans >= 1")

    def _vectorizer_params(self) -> dict[str, Any]:
        """TfidfVectorizer's arguments: the scorer's own text parameters plus fixed settings."""
        own = {k: v for k, v in self.get_params().items() if k not in _NOT_VECTORIZER}
        return {**own, "ngram_range": self.ngram_range, "token_pattern": _WORD_TOKEN_PATTERN, "norm": "l2",
                "use_idf": True, "smooth_idf": True, "dtype": np.float32}

    # -- fit / score ------------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], labels: np.ndarray, codes: Sequence[str], **kwargs: Any) -> TfidfScorer:
        """Fit on ``texts`` with ``labels`` ``(n_notes, len(codes))`` 0/1. Extra keyword arguments
        (ones other scorers take) are ignored."""
        texts = _as_texts(texts)
        y = np.asarray(labels, dtype=np.float64)
        codes = [str(c) for c in codes]
        if y.ndim != 2 or y.shape != (len(texts), len(codes)):
            raise ValueError(f"labels shape {y.shape} != (n_texts={len(texts)}, n_codes={len(codes)})")
        if len(set(codes)) != len(codes):
            raise ValueError("codes must be distinct")
        if not texts:
            raise ValueError("cannot fit on zero notes")
        vectorizer = TfidfVectorizer(**self._vectorizer_params())
        try:
            x = vectorizer.fit_transform(texts)
        except ValueError as exc:  # empty vocabulary (all notes empty, or min_df/max_df prune all)
            raise ValueError(f"TF-IDF fit found no features: {exc}") from exc
        vocabulary = [""] * len(vectorizer.vocabulary_)
        for term, i in vectorizer.vocabulary_.items():
            vocabulary[i] = term
        x = sp.csr_matrix(x, dtype=np.float32)
        x.sort_indices()
        gram = (x @ x.T).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += float(self.alpha)
        dual = scipy.linalg.solve(gram, y, assume_a="pos", check_finite=False)
        # The in-memory state is exactly what save() writes and load() reads (float32 arrays),
        # so a loaded scorer reproduces these scores bit for bit.
        self._set_state(
            codes=codes,
            vocabulary=vocabulary,
            idf=np.asarray(vectorizer.idf_, dtype=np.float32),
            train=x,
            dual_coef=dual.astype(np.float32),
        )
        return self

    def _set_state(
        self, *, codes: list[str], vocabulary: list[str], idf: np.ndarray, train: sp.csr_matrix, dual_coef: np.ndarray
    ) -> None:
        params = self._vectorizer_params()
        params.update(min_df=1, max_df=1.0, max_features=None)  # pruning is done: the vocabulary is fixed
        vectorizer = TfidfVectorizer(**params, vocabulary={t: i for i, t in enumerate(vocabulary)})
        vectorizer.idf_ = idf
        self.codes = list(codes)
        self.vocabulary_ = vocabulary
        self.vectorizer_ = vectorizer
        self.train_matrix_ = train
        self.train_matrix_t_ = train.T.tocsr()  # features x notes: rows gathered for evidence
        self.dual_coef_ = dual_coef

    def _check_fitted(self) -> None:
        if not hasattr(self, "dual_coef_"):
            raise RuntimeError("TfidfScorer is not fitted: call fit() or TfidfScorer.load()")

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The notes' TF-IDF rows (float32 CSR) over the fitted vocabulary."""
        self._check_fitted()
        x = sp.csr_matrix(self.vectorizer_.transform(_as_texts(texts)), dtype=np.float32)
        x.sort_indices()
        return x

    def score(
        self,
        texts: Sequence[str],
        *,
        evidence: bool = False,
        evidence_codes: Sequence[str] | None = None,
    ) -> Scores:
        """Ridge outputs (higher = more likely; roughly 0..1, not probabilities) for every code.

        ``evidence=True``: spans for ``evidence_codes`` (codes of this scorer; unknown ones are
        ignored) or, if None, for each note's ``evidence_top_k`` highest-scoring codes.
        """
        self._check_fitted()
        texts = _as_texts(texts)
        x = self.transform(texts)
        kernel = (x @ self.train_matrix_.T).toarray().astype(np.float64)
        scores = (kernel @ self.dual_coef_.astype(np.float64)).astype(np.float32)
        if not evidence:
            return Scores(scores=scores)
        index = {c: i for i, c in enumerate(self.codes)}
        fixed = None if evidence_codes is None else [index[c] for c in evidence_codes if c in index]
        rows = []
        for n, text in enumerate(texts):
            if fixed is not None:
                cols = fixed
            else:
                k = min(int(self.evidence_top_k), scores.shape[1])
                cols = [int(c) for c in np.argsort(-scores[n], kind="stable")[:k]] if k else []
            rows.append(self._evidence(text, x.getrow(n), cols))
        return Scores(scores=scores, evidence=rows)

    # -- evidence ---------------------------------------------------------------------------------

    def _evidence(self, text: str, row: sp.csr_matrix, cols: Sequence[int]) -> dict[int, list[Span]]:
        if not cols or row.nnz == 0:
            return {}
        feats = row.indices
        values = row.data.astype(np.float64)
        # primal weights of this note's features for the asked codes: (n_feats, n_cols)
        weights = self.train_matrix_t_[feats] @ self.dual_coef_[:, cols].astype(np.float64)
        contrib = values[:, None] * weights  # per feature, summed over its occurrences
        position = {int(f): i for i, f in enumerate(feats)}
        occurrences = self._occurrences(text, position)
        if not occurrences:
            return {}
        counts = np.zeros(len(feats))
        for _, _, fids in occurrences:
            for i in fids:
                counts[i] += 1
        per_occurrence = contrib / np.maximum(counts, 1.0)[:, None]
        spans_w = np.zeros((len(occurrences), len(cols)))
        for o, (_, _, fids) in enumerate(occurrences):
            if fids:
                spans_w[o] = per_occurrence[fids].sum(axis=0)
        out: dict[int, list[Span]] = {}
        for j, col in enumerate(cols):
            w = spans_w[:, j]
            total = float(w[w > 0].sum())
            if total <= 0:
                continue
            top = [o for o in np.argsort(-w, kind="stable")[: int(self.evidence_max_spans)] if w[o] > 0]
            out[int(col)] = [
                {"start": occurrences[o][0], "end": occurrences[o][1], "weight": round(float(w[o]) / total, 4),
                 "source": self.name}
                for o in top
            ]
        return out

    def _occurrences(self, text: str, position: dict[int, int]) -> list[tuple[int, int, list[int]]]:
        """``(start, end, [row positions of the features it holds])`` per word (``char_wb``) or
        per word n-gram (``word``) of ``text``, offsets into the original text."""
        vocab = self.vectorizer_.vocabulary_
        analyze = self.vectorizer_.build_analyzer()
        out: list[tuple[int, int, list[int]]] = []
        if self.analyzer == "char_wb":
            cache: dict[str, list[int]] = {}
            for m in re.finditer(r"\S+", text):
                word = m.group()
                if word not in cache:
                    found = (vocab.get(g) for g in analyze(word))
                    cache[word] = [position[f] for f in found if f is not None and f in position]
                if cache[word]:
                    out.append((m.start(), m.end(), cache[word]))
            return out
        preprocess = self.vectorizer_.build_preprocessor()
        pattern = re.compile(_WORD_TOKEN_PATTERN)
        tokens = [(m.start(), m.end(), preprocess(m.group())) for m in pattern.finditer(text)]
        lo, hi = self.ngram_range
        for n in range(lo, hi + 1):
            for i in range(len(tokens) - n + 1):
                f = vocab.get(" ".join(t[2] for t in tokens[i : i + n]))
                if f is not None and f in position:
                    out.append((tokens[i][0], tokens[i + n - 1][1], [position[f]]))
        return out

    # -- save / load ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``tfidf.json`` (last), ``tfidf_vocabulary.json`` and ``tfidf_arrays.npz``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        x = self.train_matrix_
        config = {
            "schema_version": SCHEMA_VERSION,
            "scorer": self.name,
            "params": self.get_params(),
            "codes": self.codes,
            "n_features": len(self.vocabulary_),
            "n_train": int(x.shape[0]),
        }
        with AtomicFileSet([directory / ARRAYS_FILE, directory / VOCAB_FILE, directory / CONFIG_FILE]) as files:
            fh = files.open(directory / ARRAYS_FILE, "wb")
            np.savez_compressed(
                fh,
                idf=np.asarray(self.vectorizer_.idf_, dtype=np.float32),
                train_data=x.data.astype(np.float32),
                train_indices=x.indices.astype(np.int32),
                train_indptr=x.indptr.astype(np.int64),
                train_shape=np.asarray(x.shape, dtype=np.int64),
                dual_coef=self.dual_coef_.astype(np.float32),
            )
            # ensure_ascii: a lone surrogate in a training note must not break the write
            files.write_text(directory / VOCAB_FILE, json.dumps(self.vocabulary_, ensure_ascii=True))
            files.write_text(directory / CONFIG_FILE, json.dumps(config, ensure_ascii=True, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> TfidfScorer:
        """Read what :meth:`save` wrote; any problem is a :class:`~medcoder.errors.BundleError`."""
        directory = Path(directory)
        config = _read_json(directory / CONFIG_FILE)
        if not isinstance(config, dict) or config.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(
                f"{directory / CONFIG_FILE}: schema_version="
                f"{config.get('schema_version') if isinstance(config, dict) else None!r}, "
                f"this medcoder reads {SCHEMA_VERSION}",
                hint="re-export the bundle with a matching medcoder version",
            )
        if config.get("scorer") != cls.name:
            raise BundleError(f"{directory / CONFIG_FILE}: scorer={config.get('scorer')!r}, expected {cls.name!r}")
        codes, params = config.get("codes"), config.get("params")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise BundleError(f"{directory / CONFIG_FILE}: field 'codes' must be a list of strings")
        if not isinstance(params, dict):
            raise BundleError(f"{directory / CONFIG_FILE}: field 'params' must be an object")
        try:
            scorer = cls(**params)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{directory / CONFIG_FILE}: bad field 'params' ({exc})") from exc
        vocabulary = _read_json(directory / VOCAB_FILE)
        if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
            raise BundleError(f"{directory / VOCAB_FILE}: expected a list of strings")
        if len(set(vocabulary)) != len(vocabulary):
            raise BundleError(f"{directory / VOCAB_FILE}: duplicate n-grams")
        path = directory / ARRAYS_FILE
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError as exc:
            raise BundleError(f"{path}: not found", hint="is this a tfidf scorer folder?") from exc
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: not a readable npz ({exc})") from exc
        needed = ("idf", "train_data", "train_indices", "train_indptr", "train_shape", "dual_coef")
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise BundleError(f"{path}: missing arrays {missing}")
        n_features = len(vocabulary)
        try:
            shape = tuple(int(v) for v in arrays["train_shape"])
            train = sp.csr_matrix(
                (arrays["train_data"].astype(np.float32), arrays["train_indices"], arrays["train_indptr"]), shape=shape
            )
            train.check_format(full_check=True)
        except (ValueError, TypeError) as exc:
            raise BundleError(f"{path}: the training matrix is malformed ({exc})") from exc
        idf = arrays["idf"].astype(np.float32)
        dual = arrays["dual_coef"].astype(np.float32)
        if idf.shape != (n_features,) or shape[1] != n_features or dual.shape != (shape[0], len(codes)):
            raise BundleError(
                f"{path}: shapes disagree (idf {idf.shape}, train {shape}, dual_coef {dual.shape}; "
                f"{n_features} n-grams, {len(codes)} codes)"
            )
        scorer._set_state(codes=codes, vocabulary=vocabulary, idf=idf, train=train, dual_coef=dual)
        return scorer


def _as_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of notes, not one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"note {i} is {type(t).__name__}, expected str")
    return out


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(f"{path}: not found", hint="is this a tfidf scorer folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
