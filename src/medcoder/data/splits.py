"""Train/dev/test splits of a multi-label corpus: computed by iterative stratification, or read
from published split files.

Why a module of its own: how documents are divided is independent of where they come from. The
MIMIC loader (:mod:`medcoder.data.mimic`) was the first to need it, but nothing here knows about
MIMIC: a corpus gives groups (e.g. patients) and their labels, or a split file, and gets back a
split name per document.

**Stratified splits** (:func:`stratified_group_split`): a random split of a multi-label corpus can
leave rare codes entirely out of dev or test, which makes their metrics undefined and the
comparison between systems noisy; iterative stratification (Sechidis, Tsoumakas, Vlahavas 2011,
"On the stratification of multi-label data") keeps each label's share in every split close to the
split's share of documents. Splitting by *group* (all admissions of a patient in one split) keeps
a patient's notes from leaking between train and test.

The algorithm is iterative-stratification's ``MultilabelStratifiedShuffleSplit`` (version 0.1.9),
same tie-breaking and same random stream, re-implemented on sparse label sets: the package scans a
dense samples x labels matrix once per label (MIMIC-IV ICD-9: ~10^5 x ~10^4, once per each of
~10^4 codes), hours and GBs; this runs in seconds. A test checks the two give identical splits
(``tests/unit/test_data_splits.py``), so published splits made with the package are reproduced.

**Split files** (:func:`read_split_files`): a table with a document id column (``_id``,
``hadm_id``, ``HADM_ID`` or ``id``) and a ``split`` column (``train``, ``val``/``dev``, ``test``)
as feather, parquet or CSV (Edin et al.'s ``*_split(s).feather``), or a mapping ``{train, dev,
test}`` of headerless id lists (Mullenbach et al.'s files). Ids are integers (the databases that
publish such files number their documents).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcoder.data._common import build_dataset
from medcoder.errors import ConfigError, DataError

__all__ = [
    "ALL_LABELS_DESIGN",
    "CARVE_DESIGNS",
    "CERTIFICATION_DESIGNS",
    "CERTIFY_SPLIT",
    "REFIT_DESIGNS",
    "REFIT_ONLY_SPLIT",
    "REVIEWED_DESIGN",
    "SPLITS",
    "ReviewedSplit",
    "carve_certification",
    "certify_on_reviewed",
    "check_certify_disjoint",
    "ids_sha256",
    "multilabel_shuffle_split",
    "refit_splits",
    "read_split_files",
    "split_file_paths",
    "split_reviewed",
    "stratified_group_split",
    "text_sha256",
]

SPLITS = ("train", "dev", "test")
#: Other spellings of a split name found in published split files.
_ALIASES = {"val": "dev"}


# --------------------------------------------------------------------------------------------
# Iterative stratification (Sechidis et al. 2011) as iterative-stratification 0.1.9


def _argmax_ties(values: Sequence[float], candidates: Sequence[int]) -> list[int]:
    best = max(values[c] for c in candidates)
    return [c for c in candidates if values[c] == best]


def _iterative_stratification(label_sets: Sequence[Sequence[int]], n_labels: int,
                              r: Sequence[float], rng: np.random.RandomState) -> np.ndarray:
    """Fold (0 = train, 1 = test) per sample: iterstrat's ``IterativeStratification`` step by
    step (same float arithmetic, same order of random draws), on sparse label sets.

    Each round takes the label with the fewest unassigned samples (ties: a random one among the
    lowest label indices, as ``np.where`` lists them) and gives each of its samples to the fold
    that most wants that label, then the fold that most wants samples, then at random."""
    n = len(label_sets)
    folds = np.zeros(n, dtype=np.int64)
    n_folds = len(r)
    c_folds = [float(r_f) * n for r_f in r]
    counts = [0] * n_labels
    members: list[list[int]] = [[] for _ in range(n_labels)]
    for i, labels in enumerate(label_sets):
        for lab in labels:
            counts[lab] += 1
            members[lab].append(i)
    c_labels = [[float(r_f) * c for c in counts] for r_f in r]
    remaining = counts[:]
    buckets: dict[int, list[int]] = {}  # remaining count -> sorted labels with that count
    for lab, c in enumerate(remaining):
        if c:
            buckets.setdefault(c, []).append(lab)
    heap = list(buckets)
    heapq.heapify(heap)
    done = np.zeros(n, dtype=bool)
    all_folds = range(n_folds)

    def move(lab: int) -> None:
        c = remaining[lab]
        bucket = buckets[c]
        del bucket[bisect.bisect_left(bucket, lab)]
        remaining[lab] = c - 1
        if c > 1:
            if c - 1 not in buckets or not buckets[c - 1]:
                buckets[c - 1] = [lab]
                heapq.heappush(heap, c - 1)
            else:
                bisect.insort(buckets[c - 1], lab)

    while True:
        while heap and not buckets.get(heap[0]):
            buckets.pop(heapq.heappop(heap), None)
        if not heap:
            break
        ties = buckets[heap[0]]
        label = ties[rng.choice(len(ties))] if len(ties) > 1 else ties[0]
        for i in members[label]:
            if done[i]:
                continue
            col = [c_labels[f][label] for f in all_folds]
            cands = _argmax_ties(col, all_folds)
            if len(cands) > 1:
                sub = _argmax_ties(c_folds, cands)
                fold = sub[rng.choice(len(sub))] if len(sub) > 1 else sub[0]
            else:
                fold = cands[0]
            folds[i] = fold
            done[i] = True
            row = c_labels[fold]
            for lab in label_sets[i]:
                row[lab] -= 1
                move(lab)
            c_folds[fold] -= 1
    # samples without any label: to the fold that wants samples most (ties at random)
    for i in np.flatnonzero(~done):
        cands = _argmax_ties(c_folds, all_folds)
        fold = cands[rng.choice(len(cands))] if len(cands) > 1 else cands[0]
        folds[i] = fold
        c_folds[fold] -= 1
    return folds


def multilabel_shuffle_split(label_sets: Sequence[Sequence[int]], n_labels: int, *,
                             test_size: float, seed: int) -> np.ndarray:
    """Boolean test mask equal to ``MultilabelStratifiedShuffleSplit(n_splits=1,
    test_size=test_size, random_state=seed)`` of iterative-stratification 0.1.9 on the
    indicator matrix of ``label_sets`` (label indices in ``range(n_labels)``)."""
    n = len(label_sets)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0 or n_test <= 0:
        raise DataError(f"cannot split {n} samples with test_size={test_size}",
                        hint="the corpus is too small for a train/dev/test split; give data.split_files")
    rng = np.random.RandomState(seed)
    indices = np.arange(n)
    rng.shuffle(indices)
    r = [n_train / (n_train + n_test), n_test / (n_train + n_test)]
    folds = _iterative_stratification([label_sets[i] for i in indices], n_labels, r, rng)
    return folds[np.argsort(indices)] == 1


def stratified_group_split(groups: Sequence[Any], labels: Sequence[Sequence[str]], *,
                           test_size: float, val_size: float, seed: int) -> list[str]:
    """Split name (``train``/``dev``/``test``) per document, keeping every group in one split.

    ``groups[i]`` is document i's group (a patient), ``labels[i]`` its labels (codes). Groups,
    sorted by id (so the result does not depend on document order) and labelled with the union of
    their documents' labels, are split by :func:`multilabel_shuffle_split` into test
    (``test_size`` of the groups) and the rest, the rest into dev (``val_size`` of the whole, so
    ``val_size / (1 - test_size)`` of the rest) and train, both with ``seed``."""
    if not 0 < test_size < 1 or not 0 < val_size < 1 or test_size + val_size >= 1:
        raise ConfigError(f"test_size={test_size}, val_size={val_size} are not valid fractions",
                          hint="both in (0, 1) with a sum below 1 (Edin et al.: 0.15 and 0.10)")
    per_group: dict[Any, set[str]] = {}
    for group, ls in zip(groups, labels, strict=True):
        per_group.setdefault(group, set()).update(ls)
    ordered = sorted(per_group)
    vocab = {c: i for i, c in enumerate(sorted(set().union(*per_group.values())))}
    label_sets = [sorted(vocab[c] for c in per_group[g]) for g in ordered]
    is_test = multilabel_shuffle_split(label_sets, len(vocab), test_size=test_size, seed=seed)
    rest = np.flatnonzero(~is_test)
    is_dev = multilabel_shuffle_split([label_sets[i] for i in rest], len(vocab),
                                      test_size=val_size / (1 - test_size), seed=seed)
    split_of = dict.fromkeys(ordered, "test")
    for i, dev in zip(rest, is_dev, strict=True):
        split_of[ordered[i]] = "dev" if dev else "train"
    return [split_of[g] for g in groups]


# --------------------------------------------------------------------------------------------
# Split files


def read_split_files(split_files: str | Path | Mapping[str, Any]) -> dict[int, str]:
    """Document id -> split name from one split table, or from a ``{train, dev, test}`` mapping of
    headerless id lists (see the module docstring). ``val`` is read as ``dev``."""
    out: dict[int, str] = {}
    if isinstance(split_files, Mapping):
        for split, file in split_files.items():
            name = _ALIASES.get(str(split), str(split))
            if name not in SPLITS:
                raise ConfigError(f"data.split_files.{split}: unknown split", hint="use train, dev, test")
            path = _existing(file)
            try:
                ids = pd.read_csv(path, header=None, dtype=str)[0].str.strip()
            except (ValueError, OSError, EOFError) as exc:
                raise _read_error(path, exc) from exc
            for i in ids:
                out[_split_id(i, path)] = name
        return out
    path = _existing(split_files)
    try:
        if path.suffix == ".feather":
            table = pd.read_feather(path)
        elif path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, dtype=str)
    except (ValueError, OSError, EOFError, ImportError) as exc:
        raise _read_error(path, exc) from exc
    id_col = next((c for c in ("_id", "hadm_id", "HADM_ID", "id") if c in table.columns), None)
    if id_col is None or "split" not in table.columns:
        missing = "split" if id_col else "_id"
        raise DataError(f"{path}: column {missing!r} not found (columns: {', '.join(map(str, table.columns))})",
                        hint="a split file has a document id column (_id or hadm_id) and a split column")
    for i, split in zip(table[id_col].tolist(), table["split"].astype(str).tolist(), strict=True):
        name = _ALIASES.get(split.strip(), split.strip())
        if name not in SPLITS:
            raise DataError(f"{path}: column 'split': unknown value {split!r}",
                            hint="expected train, val/dev or test")
        out[_split_id(i, path)] = name
    return out


def split_file_paths(split_files: str | Path | Mapping[str, Any] | None) -> list[Path]:
    """The files ``split_files`` names (checked to exist), in a fixed order: what a cache must
    watch for changes."""
    if split_files is None:
        return []
    if isinstance(split_files, Mapping):
        return [_existing(v) for _, v in sorted(split_files.items())]
    return [_existing(split_files)]


def _read_error(path: Path, exc: Exception) -> DataError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return DataError(f"{path}: cannot be read as a split file ({type(exc).__name__}: {first})",
                     hint="a feather/parquet/CSV table with an id and a split column, or headerless id lists")


def _split_id(value: Any, path: Path) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise DataError(f"{path}: document id {value!r} is not an integer",
                        hint="split files list integer document ids (MIMIC: hadm_id)") from None


def _existing(file: Any) -> Path:
    path = Path(str(file)).expanduser()
    if not path.is_file():
        raise DataError(f"data.split_files={path}: file not found", hint="check the path, or set it to null")
    return path


# --------------------------------------------------------------------------------------------
# Certification split: labels that nothing was tuned on

#: How the labels that certify the auto-accept threshold are kept apart from every tuning job.
#: ``none``: dev tunes and certifies (runs trained before issue 19; the guarantee is weaker than
#: stated). ``dev_halves``: a seeded, stratified, note-grouped share of dev becomes ``certify``; the
#: rest stays ``dev`` and tunes (early stopping, out-of-fold epochs, calibrator, decision
#: threshold). ``inner_train``: a share of train becomes the tuning ``dev``; the original dev,
#: whole, becomes ``certify``. ``reviewed`` (``scripts/retrain.py``): a held-out slice of reviewed
#: notes from the workbench becomes ``certify``; the tuning dev is the one a carve design (the
#: group's ``tuning`` key) gives, and the rest of the reviewed notes joins train
#: (:func:`certify_on_reviewed`). ``all_labels``: the protocol of shared-task test runs, for
#: researchers comparing ranking metrics: the tuning fifth is carved from train as in
#: ``inner_train`` (it early-stops and tunes), the original dev waits apart as ``refit_only``, and
#: ``certification.refit`` then fits the run's model on every labelled note (train, the tuning
#: fifth and dev). No labels are left that the model did not see, so nothing certifies τ: such a
#: run reports ranking metrics, and calibrate refuses it.
CARVE_DESIGNS = ("none", "dev_halves", "inner_train")
REVIEWED_DESIGN = "reviewed"
ALL_LABELS_DESIGN = "all_labels"
CERTIFICATION_DESIGNS = (*CARVE_DESIGNS, ALL_LABELS_DESIGN, REVIEWED_DESIGN)
#: Designs whose run is fitted again on more notes once the tuning fifth has tuned it.
REFIT_DESIGNS = ("inner_train", ALL_LABELS_DESIGN)
#: The split that holds the certification labels when a design carved one.
CERTIFY_SPLIT = "certify"
#: Design ``all_labels``: labelled notes that only the refitted model trains on.
REFIT_ONLY_SPLIT = "refit_only"


def refit_splits(splits: Collection[str]) -> tuple[str, ...]:
    """The splits a refitted model (``certification.refit``) trains on, in this order: train, the
    tuning fifth, and design ``all_labels``'s ``refit_only`` notes where the carve made them."""
    return ("train", "dev", *((REFIT_ONLY_SPLIT,) if REFIT_ONLY_SPLIT in splits else ()))


def carve_certification(splits: Mapping[str, Any], design: str, *, fraction: float, seed: int) -> dict[str, Any]:
    """Re-partition ``splits`` (``train``/``dev``/``test`` datasets with ``codes``) so that a
    ``certify`` split holds labels that no tuning job reads (see :data:`CERTIFICATION_DESIGNS`).

    ``fraction`` is the share of the carved split that moves: of dev into ``certify``
    (``dev_halves``), of train into the tuning ``dev`` (``inner_train``, ``all_labels``). The carve is
    :func:`stratified_group_split`'s: iterative stratification over the notes' codes with
    ``seed``, grouped by the ``group`` column where a corpus has one (a patient's notes stay
    together), else by note ``id``. Test is never touched. Why here and not in each workflow:
    train, calibrate and export's re-fit must see the same partition, so it is a pure function of
    the corpus and three settings, recorded in the run's config.
    """
    if design == REVIEWED_DESIGN:
        raise ConfigError(f"certification.design={design!r} needs the reviewed notes",
                          hint="build the corpus with certify_on_reviewed (medcoder.workflows.factories.build_corpus)")
    if design not in CERTIFICATION_DESIGNS:
        raise ConfigError(f"certification.design={design!r} is not a design",
                          hint=f"one of {', '.join(CERTIFICATION_DESIGNS)}")
    if design == "none":
        return dict(splits)
    if not 0 < float(fraction) < 1:
        raise ConfigError(f"certification.fraction={fraction} is not in (0, 1)",
                          hint="the share of the carved split that moves, e.g. 0.5")
    if CERTIFY_SPLIT in splits:
        raise ConfigError(f"the corpus already has a {CERTIFY_SPLIT!r} split",
                          hint="set certification.design=none to use it as is")
    source = "dev" if design == "dev_halves" else "train"
    for name in ("train", "dev"):
        if name not in splits:
            raise ConfigError(f"certification.design={design}: the corpus has no {name!r} split",
                              hint="train and dev are needed")
    data = splits[source]
    columns = data.column_names
    groups = list(data["group"]) if "group" in columns else [str(i) for i in data["id"]]
    moves = np.array(_carve_mask(groups, list(data["codes"]), fraction=float(fraction), seed=int(seed)))
    stay, move = np.flatnonzero(~moves).tolist(), np.flatnonzero(moves).tolist()
    out = dict(splits)
    if design == "dev_halves":
        out["dev"], out[CERTIFY_SPLIT] = data.select(stay), data.select(move)
    else:
        held = CERTIFY_SPLIT if design == "inner_train" else REFIT_ONLY_SPLIT
        out["train"], out["dev"], out[held] = data.select(stay), data.select(move), splits["dev"]
    return out


def _carve_mask(groups: Sequence[Any], labels: Sequence[Sequence[str]], *, fraction: float, seed: int) -> list[bool]:
    """Per document: does it move (its group is in the stratified ``fraction`` share)?"""
    per_group: dict[Any, set[str]] = {}
    for group, ls in zip(groups, labels, strict=True):
        per_group.setdefault(group, set()).update(ls)
    ordered = sorted(per_group, key=str)
    vocab = {c: i for i, c in enumerate(sorted(set().union(*per_group.values())))}
    label_sets = [sorted(vocab[c] for c in per_group[g]) for g in ordered]
    moved = multilabel_shuffle_split(label_sets, max(len(vocab), 1), test_size=fraction, seed=seed)
    moving = {g for g, m in zip(ordered, moved, strict=True) if m}
    return [g in moving for g in groups]


# --------------------------------------------------------------------------------------------
# Reviewed notes: a held-out slice certifies, the rest trains (never both)


def text_sha256(text: str) -> str:
    """The sha256 of a note's text (UTF-8): how the same note is recognised under another id."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def ids_sha256(ids: Sequence[str]) -> str:
    """A digest of a set of note ids (order and repeats ignored): what MLflow records of a list of
    notes, so two runs can be checked to have used the same notes without logging the ids."""
    return hashlib.sha256("\n".join(sorted({str(i) for i in ids})).encode("utf-8")).hexdigest()


def _holdout_draw(note_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by the note id and the seed alone (sha256, not a random stream)."""
    digest = hashlib.sha256(f"medcoder.reviewed/{int(seed)}/{note_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class ReviewedSplit:
    """Which reviewed notes certify (``held_out``) and which may train (``train``), both sorted."""

    held_out: tuple[str, ...]
    train: tuple[str, ...]
    fraction: float
    min_notes: int
    seed: int

    @property
    def held_out_sha256(self) -> str:
        return ids_sha256(self.held_out)

    @property
    def train_sha256(self) -> str:
        return ids_sha256(self.train)

    def to_dict(self) -> dict[str, object]:
        """Sizes, digests and settings (no ids): what is logged as params."""
        return {"n_held_out": len(self.held_out), "n_train": len(self.train),
                "held_out_sha256": self.held_out_sha256, "train_sha256": self.train_sha256,
                "fraction": self.fraction, "min_notes": self.min_notes, "seed": self.seed}

    def verified_only(self, verified: Mapping[str, bool], *, source: str = "reviewed") -> ReviewedSplit:
        """This split with every held-out note that is not ``verified`` moved to ``train``: an
        unverified reviewed note may train a candidate, never certify one (see
        :func:`split_reviewed`). A note missing from ``verified`` counts as unverified. Refused
        (one-line ``DataError``) when fewer than ``min_notes`` verified notes are left held out."""
        held = tuple(i for i in self.held_out if verified.get(i, False))
        train = tuple(sorted({*self.train, *(i for i in self.held_out if not verified.get(i, False))}))
        if len(held) < self.min_notes:
            n_all = len(self.held_out) + len(self.train)
            raise DataError(f"{source}: {len(held)} of {n_all} reviewed notes fall in the held-out slice and are "
                            f"verified ({len(self.held_out) - len(held)} more fall in it unverified; "
                            f"holdout.fraction={self.fraction}, holdout.seed={self.seed}), fewer than "
                            f"holdout.min_notes={self.min_notes}",
                            hint="review more notes before retraining, or audit the auto-accepted codes of reviewed "
                                 "notes (a note is verified when each of them was decided by a reviewer or audited)")
        return ReviewedSplit(held, train, self.fraction, self.min_notes, self.seed)


def split_reviewed(ids: Sequence[str], *, fraction: float, min_notes: int, seed: int,
                   source: str = "reviewed", verified: Sequence[bool] | None = None) -> ReviewedSplit:
    """Split reviewed notes by note into a held-out slice (certifies and compares a retrained
    candidate) and a training part.

    A note is held out iff it is verified and ``sha256(seed, id)``, read as a number in [0, 1), is
    below ``fraction``. ``verified`` (aligned with ``ids``; the export's ``verified`` field, see
    :func:`medcoder.data.loaders.load_reviewed`): whether every auto-accepted code of the note was
    decided by a reviewer or audited. Why only verified notes certify: an auto-accepted code nobody
    looked at is in the export as the serving model decided it, so on an unverified note the
    serving model's auto-accepts are gold by definition; a candidate warm-started from that model
    agrees with them, and its certified precision would be biased upward. Unverified notes may only
    train. ``None``: every note counts as verified (a plain id split; :func:`certify_on_reviewed`
    applies the notes' own ``verified`` column again whatever split it is given).

    Why a per-note draw rather than a shuffle of this export: the slice a note falls in depends on
    its id and the seed only, never on which other notes the export holds, so a note trained on by
    one retrain (and so by every model warm-started from it) is never held out by the next one,
    which sees a larger export. The price: the slice's size varies around ``fraction`` of the notes,
    and a slice below ``min_notes`` is refused rather than topped up (topping up would move notes
    that earlier retrains trained on). One exception to "keeps its side": a note in the seeded slice
    that trained while unverified and is verified in a later export would move to the held-out
    slice; ``scripts/retrain.py`` refuses that (the serving model's cumulative list of trained ids).
    Not stratified by code on purpose: a simple random sample of the reviewed notes is what
    Learn-then-Test's exchangeability with future notes asks for.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < float(fraction) < 1:
        raise ConfigError(f"holdout.fraction={fraction!r} is not in (0, 1)",
                          hint="the share of reviewed notes held out to certify, e.g. 0.3")
    if isinstance(min_notes, bool) or not isinstance(min_notes, int) or min_notes < 1:
        raise ConfigError(f"holdout.min_notes={min_notes!r} is not an integer >= 1", hint="e.g. holdout.min_notes=20")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"holdout.seed={seed!r} is not an integer", hint="keep the same seed across retrains, e.g. 0")
    unique = sorted({str(i) for i in ids})
    if len(unique) != len(ids):
        raise DataError(f"{source}: {len(ids) - len(unique)} duplicate note ids",
                        hint="export one bundle's reviews (scripts/review.py action=export export_bundle=<id>)")
    n = len(unique)
    if n <= min_notes:
        raise DataError(f"{source}: {n} reviewed notes, all needed for the held-out minimum "
                        f"holdout.min_notes={min_notes}: none would be left to train on",
                        hint="review more notes before retraining (or lower holdout.min_notes knowingly)")
    if verified is not None and len(verified) != len(ids):
        raise ValueError(f"verified has {len(verified)} flags for {len(ids)} ids")
    held = [i for i in unique if _holdout_draw(i, seed) < float(fraction)]
    train = [i for i in unique if _holdout_draw(i, seed) >= float(fraction)]
    split = ReviewedSplit(tuple(held), tuple(train), float(fraction), int(min_notes), int(seed))
    if verified is not None:
        # the seeded slice first (a note's side depends on its id only), then its unverified notes train
        split = split.verified_only({str(i): bool(v) for i, v in zip(ids, verified, strict=True)}, source=source)
    elif len(held) < min_notes:
        raise DataError(f"{source}: {len(held)} of {n} reviewed notes fall in the held-out slice "
                        f"(holdout.fraction={fraction}, holdout.seed={seed}), fewer than holdout.min_notes={min_notes}",
                        hint="review more notes before retraining; the slice is fixed per note, so it is not topped up")
    if not split.train:
        raise DataError(f"{source}: all {n} reviewed notes fall in the held-out slice (holdout.fraction={fraction})",
                        hint="review more notes, or lower holdout.fraction")
    return split


def _select_rows(data: Any, keep: Sequence[bool]) -> Any:
    return data.select([i for i, k in enumerate(keep) if k])


def certify_on_reviewed(splits: Mapping[str, Any], reviewed: Any, split: ReviewedSplit, *, tuning: str,
                        fraction: float, seed: int, source: str = "reviewed") -> dict[str, Any]:
    """``splits`` re-partitioned for a candidate retrained on reviewed notes (design ``reviewed``).

    ``tuning`` (a carve design) first gives the tuning ``dev`` as the recipe would
    (:func:`carve_certification`); the certify split that carve made is dropped (its notes neither
    train nor certify the candidate). Then the reviewed notes of ``split.train`` join ``train``
    (a reviewed note already in train or the tuning dev, by id or by text, replaces that copy: the
    reviewed codes are the newer labels), ``split.held_out`` becomes ``certify``, and ``test`` is
    untouched. Where ``reviewed`` has a ``verified`` column (:func:`medcoder.data.loaders.load_reviewed`)
    an unverified note of ``split.held_out`` is moved to train first (:meth:`ReviewedSplit.verified_only`),
    whoever made the split: an unverified note never certifies.

    Refused (one-line ``DataError``): a held-out note that is also a train or tuning-dev note, and a
    reviewed training note that is also a test note (by id or text). The certify split is checked
    disjoint from everything that trains or tunes, by id and by text, before it is returned.
    """
    if tuning not in CARVE_DESIGNS:
        raise ConfigError(f"certification.tuning={tuning!r} is not a carve design",
                          hint=f"the recipe's own design for the tuning dev: one of {', '.join(CARVE_DESIGNS)}")
    base = carve_certification(splits, tuning, fraction=fraction, seed=seed)
    base.pop(CERTIFY_SPLIT, None)
    for name in SPLITS:
        if name not in base:
            raise ConfigError(f"certification.design={REVIEWED_DESIGN}: the corpus has no {name!r} split",
                              hint="train, dev and test are needed")
    rows = {str(i): (str(t), list(c)) for i, t, c in zip(reviewed["id"], reviewed["text"], reviewed["codes"],
                                                         strict=True)}
    if "verified" in getattr(reviewed, "column_names", ()):
        split = split.verified_only({str(i): bool(v) for i, v in zip(reviewed["id"], reviewed["verified"],
                                                                     strict=True)}, source=source)
    missing = [i for i in (*split.held_out, *split.train) if i not in rows]
    if missing or len(rows) != len(split.held_out) + len(split.train):
        raise DataError(f"{source}: the reviewed notes changed since they were split ({len(missing)} ids missing)",
                        hint="split the notes of this file again (scripts/retrain.py)")
    held_ids, held_texts = set(split.held_out), {text_sha256(rows[i][0]) for i in split.held_out}
    train_ids, train_texts = set(split.train), {text_sha256(rows[i][0]) for i in split.train}

    def hits(data: Any, ids: set[str], texts: set[str]) -> list[bool]:
        return [str(i) in ids or text_sha256(str(t)) in texts for i, t in zip(data["id"], data["text"], strict=True)]

    for name in ("train", "dev"):
        n = sum(hits(base[name], held_ids, held_texts))
        if n:
            raise DataError(f"{source}: {n} held-out reviewed notes are also {name} notes of the corpus (same id or "
                            "text); certifying on them would certify on notes the candidate trained or tuned on",
                            hint="leave those notes out of the export, or change holdout.seed for a fresh corpus")
    n = sum(hits(base["test"], train_ids, train_texts))
    if n:
        raise DataError(f"{source}: {n} reviewed training notes are also test notes of the corpus (same id or text)",
                        hint="leave those notes out of the export: test is never trained on")
    out = dict(base)
    for name in ("train", "dev"):
        out[name] = _select_rows(base[name], [not h for h in hits(base[name], train_ids, train_texts)])
    train = out["train"]
    out["train"] = build_dataset([*map(str, train["id"]), *split.train],
                                 [*train["text"], *(rows[i][0] for i in split.train)],
                                 [*map(list, train["codes"]), *(rows[i][1] for i in split.train)])
    out[CERTIFY_SPLIT] = build_dataset(list(split.held_out), [rows[i][0] for i in split.held_out],
                                       [rows[i][1] for i in split.held_out])
    check_certify_disjoint(out)
    return out


def check_certify_disjoint(splits: Mapping[str, Any]) -> None:
    """Raise ``RuntimeError`` if a ``certify`` note (by id or text) is also a ``train`` or ``dev``
    note: belt and braces behind :func:`certify_on_reviewed`'s refusals (a bug, not bad input)."""
    cert = splits[CERTIFY_SPLIT]
    ids = {str(i) for i in cert["id"]}
    texts = {text_sha256(str(t)) for t in cert["text"]}
    for name in ("train", "dev"):
        data = splits[name]
        if ids & {str(i) for i in data["id"]} or texts & {text_sha256(str(t)) for t in data["text"]}:
            raise RuntimeError(f"the certify split shares notes with {name}: it would certify on notes it fitted")
