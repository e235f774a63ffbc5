"""The "dictionary" view: exact mention matching with learned, cross-fitted precisions.

What it does
------------
* **Lexicon**: normalised mention strings -> codes, from the CodiEsp-X spans of the *train* split
  (``mentions``) and, optionally, code descriptions / inclusion terms (``descriptions``; the only
  source for English notes, which have no spans). Mentions shorter than ``min_chars`` (3) after
  normalisation, and mentions made only of stopwords and numbers, are dropped.
* **Normalisation** (:func:`normalize_with_offsets`): lower-case, strip accents (NFKD, combining
  marks dropped), every non-alphanumeric character is a separator, separators collapse to one
  space. An offset map keeps, for each normalised character, the index of the original character
  it came from, so a match gives EXACT ``[start, end)`` offsets into the original note.
* **Matching**: one pyahocorasick ``Automaton`` over all lexicon strings; overlapping matches are
  kept; a match counts only on word boundaries at both ends ("renal" never fires inside
  "suprarrenal" unless "suprarrenal" is a mention itself).
* **Loose matches** (``loose_window`` > 0; :mod:`medcoder.modeling.loose_match`): a lexicon string
  whose Snowball-stemmed content words all occur within ``loose_window`` tokens of each other in
  one sentence, in any order, matches "loosely" where it did not match exactly (discontinuous gold
  mentions, "carcinoma urotelial infiltrante de vejiga" for "carcinoma ... vejiga"; inflections).
  A loose match is counted under its own key (``"~" + string``), so its precision is learned out of
  fold apart from the exact string's, smoothed towards the pooled precision of loose matches
  (``p0_loose``), never the exact matches' ``p0``. Evidence spans of loose matches carry
  ``"loose": True`` and run from the first to the last matched word.
* **Learned scores**: per (mention, code), ``precision = P(code is gold | mention matched,
  not negated)``, smoothed towards the pooled precision ``p0``:
  ``(hits + alpha * p0) / (matches + alpha)``, counted once per note. A code's score in a note is
  the max precision over its matched, non-negated mentions; a code matched only under negation gets
  ``neg_factor * max precision``, where ``neg_factor`` = observed gold rate of negated matches /
  the rate their precisions predict (learned the same way, shrunk towards 0.5); a code with no
  match gets its learned no-match base rate ``P(code gold | no affirmed match)`` (so unmatched codes
  are still ranked by how often they are gold without a mention, never by column order).
* **Cross-fitting (why)**: on the training notes, the mentions *come from those same notes*, so a
  mention always matches its own note and in-sample precision is optimistic (a mention seen once
  would get precision ~1). ``fit`` therefore splits the notes into ``cross_fit`` folds (K=5), builds
  the lexicon from the other K-1 folds' mentions (+ descriptions) and counts matches/hits on the
  held-out fold only; the counts of all K folds give the precisions, the negation factor and the
  base rates. The lexicon that is *shipped* is then built from all training mentions.
  ``cross_fit=1`` gives the in-sample estimate (for comparison only).
* **Negation** (NegEx/ConText-style, :data:`DEFAULT_TRIGGERS`): pre-triggers ("no", "sin",
  "niega", "se descarta", "negativo para", "ausencia de", "no se observa", "sin evidencia de",
  EN "no", "denies", "without", "negative for", "ruled out", "no evidence of" ...) negate a mention
  starting within ``window`` (6) tokens after them; post-triggers ("descartado/a", "negativo/a",
  "was ruled out", "negative" ...) negate a mention ending within ``window`` tokens before them.
  The scope never crosses a sentence terminator (``. ; ! ?`` or a line break; not ":",
  "Serología VIH: negativa") nor a termination
  word ("pero", "aunque", "but", "however" ...). Pseudo-triggers ("sin embargo", "no obstante",
  "no se descarta", "gram negativo", "not ruled out" ...) are matched first and neutralise the
  triggers they contain. A trigger inside the mention itself never negates it ("diabetes sin
  complicaciones").
  negspacy / medspacy were considered: both run as components of a spaCy pipeline (negspacy needs
  entity spans from a spaCy NER / EntityRuler; medspacy's ConText its own spaCy-based pipeline),
  spaCy and those packages are not installed here and there is no Spanish medspaCy pipeline to load
  offline, so a small explicit trigger list (saved with the model, editable) is used instead.
* **Flags**: ``"hit"`` (some mention of the code matched), ``"negated"`` (matched, and every match
  was negated). **Evidence**: every matched span, ``source="dictionary"``, ``weight`` = what the
  span contributes to the score (its precision; for a negated span precision * ``neg_factor``),
  ``"negated": True`` on negated spans.
* **Lexicon strings** (normalisation, stopwords, ICD-10-CM description variants) live in
  :mod:`medcoder.modeling.lexicon`, re-exported here.
* **save/load**: one JSON file (lexicon, precisions, counts, base rates, negation factor,
  triggers, settings); the automaton is rebuilt on load. No pickle.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import ahocorasick
import numpy as np

from medcoder.constraints import Constraint, int_at_least, is_num, validate
from medcoder.errors import BundleError
from medcoder.modeling.lexicon import (
    description_variants,
    icd10cm_descriptions,
    is_informative,
    normalize,
    normalize_with_offsets,
)
from medcoder.modeling.loose_match import LOOSE_PREFIX, LooseIndex
from medcoder.modeling.projected_mentions import PROJECTED, note_ngrams, select_projections
from medcoder.modeling.scorer import Scorer, Scores, Span

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRIGGERS",
    "DictionaryScorer",
    "description_variants",
    "icd10cm_descriptions",
    "normalize_with_offsets",
]

FILE_NAME = "dictionary.json"
SCHEMA_VERSION = 1


#: Trigger lists (normalised like notes: lower-case, no accents). ``pre`` negate what follows,
#: ``post`` what precedes, ``pseudo`` look like triggers but do not negate, ``terminators`` end a
#: scope. Both languages are always active (a Spanish note rarely contains "denies", and v.v.).
DEFAULT_TRIGGERS: dict[str, list[str]] = {
    "pre": [
        # Spanish
        "no", "sin", "niega", "niegan", "nego", "negaba", "se descarta", "se descartan",
        "se descarto", "se descartaron", "descartandose", "descartar", "negativo para",
        "negativa para", "negativos para", "negativas para", "ausencia de", "no se observa",
        "no se observan", "no se objetiva", "no se objetivan", "no se evidencia",
        "no se evidencian", "sin evidencia de", "sin signos de", "no presenta", "no presentaba",
        "no hay", "ni",
        # English
        "denies", "denied", "without", "negative for", "ruled out", "rule out", "absence of",
        "no evidence of", "no signs of", "free of", "not", "nor",
    ],
    "post": [
        "descartado", "descartada", "descartados", "descartadas", "negativo", "negativa",
        "negativos", "negativas", "ausente", "ausentes",
        "was ruled out", "were ruled out", "was excluded", "negative", "absent",
    ],
    "pseudo": [
        "sin embargo", "no obstante", "no se descarta", "no se descartan", "no se pudo descartar",
        "no solo", "sin cambios", "gram negativo", "gram negativos", "gram negativa",
        "gram negativas", "no mejoria",
        "not ruled out", "cannot be ruled out", "could not be ruled out", "not only",
        "no change", "no changes", "gram negative", "no improvement", "without improvement",
    ],
    "terminators": [
        "pero", "aunque", "salvo", "excepto", "sino", "mientras",
        "but", "however", "although", "though", "except", "yet", "whereas",
    ],
}
SENTENCE_END = re.compile(r"[.;!?\n\r]")


# --------------------------------------------------------------------------- the scorer


class _Matcher:
    """Automaton over normalised strings + trigger-based negation; pure function of its inputs."""

    def __init__(self, strings: Sequence[str], triggers: Mapping[str, Sequence[str]], window: int,
                 *, loose_window: int = 0, language: str = "es") -> None:
        self.strings = list(strings)
        self.window = window
        self.loose = LooseIndex(self.strings, language=language, window=loose_window) if loose_window > 0 else None
        self.automaton = ahocorasick.Automaton()
        for idx, s in enumerate(self.strings):
            self.automaton.add_word(s, (idx, len(s)))
        if self.strings:
            self.automaton.make_automaton()
        self.pre = self._phrases(triggers.get("pre", ()))
        self.post = self._phrases(triggers.get("post", ()))
        self.pseudo = self._phrases(triggers.get("pseudo", ()))
        self.terminators = {normalize(t) for t in triggers.get("terminators", ())}

    @staticmethod
    def _phrases(phrases: Sequence[str]) -> dict[str, list[tuple[str, ...]]]:
        """First token -> token tuples (longest first)."""
        table: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        for phrase in phrases:
            toks = tuple(normalize(phrase).split())
            if toks:
                table[toks[0]].append(toks)
        for lst in table.values():
            lst.sort(key=len, reverse=True)
        return table

    @staticmethod
    def _match_at(table: Mapping[str, list[tuple[str, ...]]], toks: list[str], i: int) -> int:
        for phrase in table.get(toks[i], ()):
            if tuple(toks[i : i + len(phrase)]) == phrase:
                return len(phrase)
        return 0

    def _negation(self, text: str, norm: str, offsets: list[int]) -> tuple[
            list[int], list[bool], list[bool], list[tuple[int, int]], list[int]]:
        """Token index of each normalised char (-1 on spaces); per token: in a pre scope, in a post
        scope; each token's ``[start, end)`` in ``norm``; each token's sentence number."""
        tok_of = [-1] * len(norm)
        spans: list[tuple[int, int]] = []
        start = 0
        for piece in norm.split(" "):
            end = start + len(piece)
            for c in range(start, end):
                tok_of[c] = len(spans)
            spans.append((start, end))
            start = end + 1
        if not norm:
            return tok_of, [], [], [], []
        toks = [norm[s:e] for s, e in spans]
        n = len(toks)
        # sentence id per token: a terminator char in the original gap between two tokens
        sent = [0] * n
        for t in range(1, n):
            gap = text[offsets[spans[t - 1][1] - 1] + 1 : offsets[spans[t][0]]]
            sent[t] = sent[t - 1] + (1 if SENTENCE_END.search(gap) else 0)
        pre_scope = [False] * n
        post_scope = [False] * n
        t = 0
        while t < n:
            k = self._match_at(self.pseudo, toks, t)
            if k:
                t += k
                continue
            k = self._match_at(self.pre, toks, t)
            if k:
                for j in range(t + k, min(n, t + k + self.window)):
                    if sent[j] != sent[t] or toks[j] in self.terminators:
                        break
                    pre_scope[j] = True
                t += k
                continue
            k = self._match_at(self.post, toks, t)
            if k:
                for j in range(t - 1, max(-1, t - 1 - self.window), -1):
                    if sent[j] != sent[t] or toks[j] in self.terminators:
                        break
                    post_scope[j] = True
                t += k
                continue
            t += 1
        return tok_of, pre_scope, post_scope, spans, sent

    def find(self, text: str) -> list[tuple[int, int, int, bool, bool]]:
        """Matches in ``text``: ``(string index, start, end, negated, loose)``, exact original
        offsets. Loose matches (:mod:`medcoder.modeling.loose_match`) are reported only for strings
        that did not also match exactly in the note; ``start``/``end`` cover their first to last
        word."""
        if not self.strings:
            return []
        norm, offsets = normalize_with_offsets(text)
        if not norm:
            return []
        tok_of, pre_scope, post_scope, spans, sent = self._negation(text, norm, offsets)
        n = len(norm)
        out = []
        for last, (idx, length) in self.automaton.iter(norm):
            first = last - length + 1
            if (first > 0 and norm[first - 1] != " ") or (last + 1 < n and norm[last + 1] != " "):
                continue  # not on word boundaries
            negated = pre_scope[tok_of[first]] or post_scope[tok_of[last]]
            out.append((idx, offsets[first], offsets[last] + 1, negated, False))
        if self.loose is not None:
            exact = {m[0] for m in out}
            toks = [norm[a:b] for a, b in spans]
            for idx, lo, hi in self.loose.find(toks, sent):
                if idx in exact:
                    continue
                negated = pre_scope[lo] or post_scope[hi]
                out.append((idx, offsets[spans[lo][0]], offsets[spans[hi][1] - 1] + 1, negated, True))
        return out


class DictionaryScorer(Scorer):
    """Mention dictionary with cross-fitted precisions (see the module docstring).

    Hyper-parameters: ``cross_fit`` folds (K; 1 = in-sample), ``alpha`` (smoothing strength
    towards the pooled precision), ``min_chars``, ``window`` (negation scope in tokens),
    ``triggers`` (None = :data:`DEFAULT_TRIGGERS`), ``seed`` (fold assignment).
    """

    name = "dictionary"
    #: Valid ranges of the parameters a config sets (``fusion.dictionary.*``): read by the config
    #: checks too, so a bad value is refused before anything is fitted.
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "loose_window": Constraint(int_at_least(0), "an integer >= 0 (0 = exact matches only)"),
        "projection_min_notes": Constraint(int_at_least(1), "an integer >= 1"),
        "projection_min_ratio": Constraint(lambda v: is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    }
    evidence_rank = 10  # exact mention matches first: what an auditor checks fastest
    fit_resources = ("mentions", "descriptions", "language")  # the keyword arguments of fit

    @classmethod
    def fit_problems(cls, available: Collection[str]) -> list[str]:
        """No lexicon without a source: CodiEsp-X train spans (``mentions``) or code wording
        (``descriptions``); refused before anything trains, not after the neural view."""
        if {"mentions", "descriptions"} & set(available):
            return []
        return ["the dictionary view has no lexicon (CodiEsp-X mentions exist for Spanish CodiEsp only, "
                "ICD-10-CM descriptions for diagnosis codes only; fusion.use_mentions/use_descriptions "
                "switch them on)"]

    @classmethod
    def routing_flags(cls, scores: Scores) -> dict[str, np.ndarray]:
        """``negated_mention``: the code matched, and every match was negated or hypothetical
        (its ``negated`` flag), so a human reads it before it is accepted."""
        if "negated" not in scores.flags:
            return {}
        return {"negated_mention": np.asarray(scores.flags["negated"], dtype=bool)}

    def __init__(
        self,
        *,
        cross_fit: int = 5,
        alpha: float = 2.0,
        min_chars: int = 3,
        window: int = 6,
        loose_window: int = 0,
        projection_min_notes: int = 2,
        projection_min_ratio: float = 0.3,
        triggers: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
    ) -> None:
        validate("fusion.dictionary", {"loose_window": loose_window, "projection_min_notes": projection_min_notes,
                                       "projection_min_ratio": projection_min_ratio}, self.parameter_constraints)
        self.cross_fit = int(cross_fit)
        self.alpha = float(alpha)
        self.min_chars = int(min_chars)
        self.window = int(window)
        self.loose_window = int(loose_window)
        self.projection_min_notes = int(projection_min_notes)
        self.projection_min_ratio = float(projection_min_ratio)
        self._ngram_sets: dict[int, frozenset[str]] = {}
        self.triggers = {k: list(v) for k, v in (triggers or DEFAULT_TRIGGERS).items()}
        self.seed = int(seed)
        self.codes: list[str] = []
        self.language_: str = ""
        self.lexicon_: dict[str, list[str]] = {}
        self.sources_: dict[str, str] = {}
        self.precision_: dict[str, dict[str, float]] = {}
        self.counts_: dict[str, dict[str, list[int]]] = {}
        self.base_: list[float] = []
        self.p0_: float = 0.5
        self.p0_loose_: float = 0.5
        self.neg_factor_: float = 0.5
        self.stats_: dict[str, Any] = {}
        self._matcher: _Matcher | None = None

    # ------------------------------------------------------------------ lexicon

    def _build_lexicon(
        self,
        texts: Sequence[str],
        mentions: Sequence[Sequence[Any]] | None,
        descriptions: Mapping[str, str | Sequence[str]] | None,
        note_ids: Sequence[int],
        code_set: set[str],
    ) -> tuple[dict[str, set[str]], dict[str, str]]:
        lexicon: dict[str, set[str]] = defaultdict(set)
        sources: dict[str, str] = {}
        if mentions is not None:
            projected = self._selected_projections(texts, mentions, note_ids)
            for i in note_ids:
                for m in mentions[i]:
                    if m.code not in code_set:
                        continue
                    if m.kind == PROJECTED:  # a candidate: an entry only if these notes select it
                        if (m.text, m.code) in projected:
                            lexicon[m.text].add(m.code)
                            sources.setdefault(m.text, "projected")
                        continue
                    surface = " ".join(texts[i][s:e] for s, e in m.fragments) or m.text
                    norm = normalize(surface)
                    if is_informative(norm, self.min_chars):
                        lexicon[norm].add(m.code)
                        sources.setdefault(norm, "train")
        for code, value in (descriptions or {}).items():
            if code not in code_set:
                continue
            for s in [value] if isinstance(value, str) else value:
                norm = normalize(s)
                if is_informative(norm, self.min_chars):
                    lexicon[norm].add(code)
                    sources.setdefault(norm, "description")
        return lexicon, sources

    def _selected_projections(self, texts: Sequence[str], mentions: Sequence[Sequence[Any]],
                              note_ids: Sequence[int]) -> set[tuple[str, str]]:
        """Projected candidates (``medcoder.modeling.projected_mentions``) selected over the build
        notes ``note_ids`` only; empty when the mentions are real spans."""
        if not any(m.kind == PROJECTED for i in note_ids for m in mentions[i]):
            return set()
        for i in note_ids:
            if i not in self._ngram_sets:
                self._ngram_sets[i] = note_ngrams(texts[i])
        return select_projections([mentions[i] for i in note_ids], [self._ngram_sets[i] for i in note_ids],
                                  min_notes=self.projection_min_notes, min_ratio=self.projection_min_ratio)

    @staticmethod
    def _note_matches(
        matcher: _Matcher, strings: Sequence[str], lexicon: Mapping[str, set[str]], text: str
    ) -> dict[tuple[str, str], bool]:
        """(mention, code) -> negated (True only if every occurrence in the note is negated)."""
        out: dict[tuple[str, str], bool] = {}
        for idx, _s, _e, negated, loose in matcher.find(text):
            m = strings[idx]
            key = LOOSE_PREFIX + m if loose else m
            for code in lexicon[m]:
                out[(key, code)] = out.get((key, code), True) and negated
        return out

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        texts: Sequence[str],
        labels: np.ndarray,
        codes: Sequence[str],
        *,
        mentions: Sequence[Sequence[Any]] | None = None,
        descriptions: Mapping[str, str | Sequence[str]] | None = None,
        language: str = "es",
        **kwargs: Any,
    ) -> DictionaryScorer:
        """Build the lexicon and learn its precisions.

        ``mentions``: per training note (aligned with ``texts``), objects with ``code`` and
        ``fragments`` (``medcoder.data.mentions.Mention``), from the TRAIN split only; the surface
        string is read from the note at those offsets. ``descriptions``: code -> string(s).
        ``labels``: ``(n_notes, len(codes))`` 0/1 gold.
        """
        texts = list(texts)
        labels = np.asarray(labels)
        if labels.shape != (len(texts), len(codes)):
            raise ValueError(f"labels shape {labels.shape} != ({len(texts)}, {len(codes)})")
        if mentions is not None and len(mentions) != len(texts):
            raise ValueError(f"{len(mentions)} mention lists for {len(texts)} notes")
        if mentions is None and not descriptions:
            raise ValueError("DictionaryScorer.fit needs mentions and/or descriptions")
        self.codes = list(codes)
        self.language_ = language
        self._ngram_sets = {}
        col = {c: j for j, c in enumerate(self.codes)}
        code_set = set(self.codes)
        gold = [set(np.flatnonzero(row).tolist()) for row in labels]
        n = len(texts)

        k = max(1, min(self.cross_fit, n))
        rng = np.random.default_rng(self.seed)
        fold_of = np.empty(n, dtype=int)
        fold_of[rng.permutation(n)] = np.arange(n) % k
        aff: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # [matches, hits]
        neg: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        neg_events: list[tuple[str, str, int]] = []  # (mention, code, gold)
        hit_codes: list[set[int]] = [set() for _ in range(n)]  # codes with an affirmed match
        for f in range(k):
            held = np.flatnonzero(fold_of == f).tolist()
            build = np.flatnonzero(fold_of != f).tolist() if k > 1 else held
            lexicon, _ = self._build_lexicon(texts, mentions, descriptions, build, code_set)
            strings = sorted(lexicon)
            matcher = _Matcher(strings, self.triggers, self.window, loose_window=self.loose_window,
                               language=language)
            for i in held:
                for (m, code), negated in self._note_matches(matcher, strings, lexicon, texts[i]).items():
                    j = col[code]
                    y = int(j in gold[i])
                    counter = neg if negated else aff
                    counter[(m, code)][0] += 1
                    counter[(m, code)][1] += y
                    if negated:
                        neg_events.append((m, code, y))
                    else:
                        hit_codes[i].add(j)

        # the shipped lexicon: all training mentions (+ descriptions)
        lexicon, self.sources_ = self._build_lexicon(
            texts, mentions, descriptions, list(range(n)), code_set
        )
        self.lexicon_ = {m: sorted(cs) for m, cs in sorted(lexicon.items())}

        exact_counts = [v for (m, _), v in aff.items() if not m.startswith(LOOSE_PREFIX)]
        loose_counts = [v for (m, _), v in aff.items() if m.startswith(LOOSE_PREFIX)]
        self.p0_ = (sum(v[1] for v in exact_counts) + 1.0) / (sum(v[0] for v in exact_counts) + 2.0)
        # loose matches get their own pooled precision: an unseen loose pair is not an exact one
        self.p0_loose_ = (sum(v[1] for v in loose_counts) + 1.0) / (sum(v[0] for v in loose_counts) + 2.0)
        total_m = sum(v[0] for v in aff.values())
        total_h = sum(v[1] for v in aff.values())
        self.precision_, self.counts_ = {}, {}
        keys = [(m, code) for m, cs in self.lexicon_.items() for code in cs]
        keys += sorted({k for k in [*aff, *neg] if k[0].startswith(LOOSE_PREFIX) and k[0][1:] in self.lexicon_
                        and k[1] in self.lexicon_[k[0][1:]]})
        for m, code in keys:
            prior = self.p0_loose_ if m.startswith(LOOSE_PREFIX) else self.p0_
            mt, ht = aff.get((m, code), (0, 0))
            nm, nh = neg.get((m, code), (0, 0))
            self.precision_.setdefault(m, {})[code] = (ht + self.alpha * prior) / (mt + self.alpha)
            self.counts_.setdefault(m, {})[code] = [mt, ht, nm, nh]

        # negation factor: observed gold among negated matches vs what their precisions predict
        expected = sum(self._precision(m, c) for m, c, _ in neg_events)
        observed = sum(y for _, _, y in neg_events)
        self.neg_factor_ = float(min(1.0, (observed + 0.5) / (expected + 1.0)))

        # base rate per code: P(gold | no affirmed match of the code in the note), cross-fitted
        freq = labels.sum(axis=0).astype(float)
        hit_gold = np.zeros(len(self.codes))
        hit_notes = np.zeros(len(self.codes))
        for i in range(n):
            for j in hit_codes[i]:
                hit_notes[j] += 1
                hit_gold[j] += j in gold[i]
        self.base_ = ((freq - hit_gold + 0.5 * freq.sum() / max(1.0, n * len(self.codes)))
                      / (n - hit_notes + 1.0)).tolist()
        self.stats_ = {
            "n_notes": n,
            "folds": k,
            "lexicon_size": len(self.lexicon_),
            "pairs": sum(len(v) for v in self.lexicon_.values()),
            "cv_affirmed_matches": total_m,
            "cv_affirmed_hits": total_h,
            "cv_loose_affirmed_matches": sum(v[0] for v in loose_counts),
            "cv_loose_affirmed_hits": sum(v[1] for v in loose_counts),
            "cv_negated_matches": len(neg_events),
            "cv_negated_hits": observed,
        }
        self._matcher = None
        self._ngram_sets = {}  # only needed while fitting
        logger.info("dictionary: %s", self.stats_)
        return self

    def _precision(self, mention: str, code: str) -> float:
        prior = self.p0_loose_ if mention.startswith(LOOSE_PREFIX) else self.p0_
        return self.precision_.get(mention, {}).get(code, prior)

    # ------------------------------------------------------------------ score

    @property
    def matcher(self) -> _Matcher:
        if self._matcher is None:
            self._matcher = _Matcher(list(self.lexicon_), self.triggers, self.window,
                                     loose_window=self.loose_window, language=self.language_ or "es")
        return self._matcher

    def score(self, texts: Sequence[str], *, evidence: bool = False) -> Scores:
        if not self.codes:
            raise RuntimeError("DictionaryScorer is not fitted")
        col = {c: j for j, c in enumerate(self.codes)}
        n, c = len(texts), len(self.codes)
        base = np.asarray(self.base_, dtype=np.float32)
        scores = np.tile(base, (n, 1)) if n else np.zeros((0, c), dtype=np.float32)
        hit = np.zeros((n, c), dtype=bool)
        affirmed = np.zeros((n, c), dtype=bool)
        best_neg = np.zeros((n, c), dtype=np.float32)
        best_aff = np.zeros((n, c), dtype=np.float32)
        ev: list[dict[int, list[Span]]] | None = [] if evidence else None
        strings = self.matcher.strings
        for i, text in enumerate(texts):
            spans: dict[int, list[Span]] = defaultdict(list)
            for idx, start, end, negated, loose in self.matcher.find(text):
                m = strings[idx]
                key = LOOSE_PREFIX + m if loose else m
                for code in self.lexicon_[m]:
                    j = col[code]
                    p = self._precision(key, code)
                    hit[i, j] = True
                    if negated:
                        weight = p * self.neg_factor_
                        best_neg[i, j] = max(best_neg[i, j], p)
                    else:
                        weight = p
                        affirmed[i, j] = True
                        best_aff[i, j] = max(best_aff[i, j], p)
                    if ev is not None:
                        span: Span = {"start": start, "end": end, "weight": float(weight), "source": self.name}
                        if negated:
                            span["negated"] = True
                        if loose:
                            span["loose"] = True
                        spans[j].append(span)
            if ev is not None:
                ev.append({j: sorted(s, key=lambda d: (d["start"], d["end"])) for j, s in spans.items()})
        negated_only = hit & ~affirmed
        scores = np.where(affirmed, best_aff, scores)
        scores = np.where(negated_only, best_neg * np.float32(self.neg_factor_), scores)
        return Scores(scores=scores, evidence=ev, flags={"hit": hit, "negated": negated_only})

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "schema_version": SCHEMA_VERSION,
            "scorer": self.name,
            "params": {
                "cross_fit": self.cross_fit,
                "alpha": self.alpha,
                "min_chars": self.min_chars,
                "window": self.window,
                "loose_window": self.loose_window,
                "projection_min_notes": self.projection_min_notes,
                "projection_min_ratio": self.projection_min_ratio,
                "seed": self.seed,
            },
            "triggers": self.triggers,
            "language": self.language_,
            "codes": self.codes,
            "base": [float(b) for b in self.base_],
            "p0": self.p0_,
            "p0_loose": self.p0_loose_,
            "neg_factor": self.neg_factor_,
            "stats": self.stats_,
            "lexicon": {
                m: {
                    "source": self.sources_.get(m, ""),
                    "codes": {
                        code: {"precision": self.precision_[m][code], "counts": self.counts_[m][code]}
                        for code in cs
                    },
                }
                for m, cs in self.lexicon_.items()
            },
            # learned precisions of loose matches (key: the lexicon string, without the prefix)
            "loose": {
                m[len(LOOSE_PREFIX):]: {
                    code: {"precision": p, "counts": self.counts_[m][code]} for code, p in cs.items()
                }
                for m, cs in self.precision_.items() if m.startswith(LOOSE_PREFIX)
            },
        }
        (directory / FILE_NAME).write_text(json.dumps(state, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> DictionaryScorer:
        path = Path(directory) / FILE_NAME
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: cannot read the dictionary scorer ({exc})",
                              hint="re-export the bundle") from exc
        if state.get("schema_version") != SCHEMA_VERSION or state.get("scorer") != cls.name:
            raise BundleError(
                f"{path}: schema {state.get('schema_version')!r} / scorer {state.get('scorer')!r} "
                f"is not dictionary schema {SCHEMA_VERSION}",
                hint="re-export the bundle with this medcoder version",
            )
        obj = cls(triggers=state["triggers"], **state["params"])
        obj.codes = list(state["codes"])
        obj.language_ = state.get("language", "")
        obj.base_ = [float(b) for b in state["base"]]
        obj.p0_ = float(state["p0"])
        obj.p0_loose_ = float(state.get("p0_loose", obj.p0_))
        obj.neg_factor_ = float(state["neg_factor"])
        obj.stats_ = dict(state.get("stats", {}))
        obj.lexicon_, obj.sources_, obj.precision_, obj.counts_ = {}, {}, {}, {}
        known = set(obj.codes)
        for m, entry in state["lexicon"].items():
            if not set(entry["codes"]) <= known:
                raise BundleError(f"{path}: lexicon entry {m!r} names codes outside 'codes'",
                                  hint="the file is corrupt; re-export the bundle")
            obj.lexicon_[m] = sorted(entry["codes"])
            obj.sources_[m] = entry.get("source", "")
            obj.precision_[m] = {c: float(v["precision"]) for c, v in entry["codes"].items()}
            obj.counts_[m] = {c: list(v["counts"]) for c, v in entry["codes"].items()}
        for m, entry in state.get("loose", {}).items():
            if m not in obj.lexicon_ or not set(entry) <= set(obj.lexicon_[m]):
                raise BundleError(f"{path}: loose entry {m!r} names a string or codes outside the lexicon",
                                  hint="the file is corrupt; re-export the bundle")
            obj.precision_[LOOSE_PREFIX + m] = {c: float(v["precision"]) for c, v in entry.items()}
            obj.counts_[LOOSE_PREFIX + m] = {c: list(v["counts"]) for c, v in entry.items()}
        return obj
