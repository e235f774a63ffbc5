"""Probe the "tfidf" view (medcoder.modeling.tfidf.TfidfScorer) on CodiEsp.

    python benchmarks/tfidf_probe.py                                # ES/EN x D/P, chosen settings
    python benchmarks/tfidf_probe.py --compare es-D en-D            # + candidate table on dev
    python benchmarks/tfidf_probe.py --tasks en-D --limit-docs 40   # smoke check

For each task (language-codetype): fit on train (label space: train codes, ``min_count`` 1), dev
and test MAP (official CodiEsp MAP, ``medcoder.evaluation.metrics.codiesp_map``), fit seconds,
scoring notes/s (test split, without and with evidence), saved size; checks that a saved + loaded
scorer reproduces the test scores exactly.

``--compare TASK...``: dev MAP and fit seconds of candidate models/features on those tasks (dev
only: settings are chosen on dev, test is never looked at for the choice). Candidates: dual ridge
(TfidfScorer) with word 1-2-grams / word 1-grams / char_wb 3-5-grams over a few ``alpha``, and
one-vs-rest logistic regression (liblinear, C=1e5 as tfidf_baseline.py chose, and C=100) on word
1-2-grams and char_wb 3-5-grams (minutes per fit: ``--logreg-tasks`` / ``--logreg-max`` limit
them). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import emit_result, limit_splits, machine_info, peak_rss_mib, set_offline_env

log = logging.getLogger("benchmarks.tfidf_probe")

CHOSEN: dict = {}  # TfidfScorer defaults are the chosen settings

RIDGE_CANDIDATES = [
    ("ridge char_wb3-5 a=0.001", dict(analyzer="char_wb", ngram_range=(3, 5), alpha=0.001)),
    ("ridge char_wb3-5 a=0.01", dict(analyzer="char_wb", ngram_range=(3, 5), alpha=0.01)),
    ("ridge char_wb3-5 a=0.1", dict(analyzer="char_wb", ngram_range=(3, 5), alpha=0.1)),
    ("ridge char_wb3-5 a=1", dict(analyzer="char_wb", ngram_range=(3, 5), alpha=1.0)),
    ("ridge char_wb3-5 a=0.01 raw-tf", dict(analyzer="char_wb", ngram_range=(3, 5), alpha=0.01, sublinear_tf=False)),
    ("ridge char_wb3-5 a=0.01 max_features=20k", dict(analyzer="char_wb", ngram_range=(3, 5), alpha=0.01,
                                                     max_features=20_000)),
    ("ridge char_wb2-4 a=0.01", dict(analyzer="char_wb", ngram_range=(2, 4), alpha=0.01)),
    ("ridge word1-2 a=0.01", dict(analyzer="word", ngram_range=(1, 2), alpha=0.01)),
    ("ridge word1 a=0.01 min_df=1", dict(analyzer="word", ngram_range=(1, 1), alpha=0.01, min_df=1)),
]
LOGREG_CANDIDATES = [
    ("ovr-logreg liblinear word1-2 C=1e5", dict(analyzer="word", ngram_range=(1, 2)), 1e5),
    ("ovr-logreg liblinear word1-2 C=100", dict(analyzer="word", ngram_range=(1, 2)), 100.0),
    ("ovr-logreg liblinear char_wb3-5 C=1e5", dict(analyzer="char_wb", ngram_range=(3, 5)), 1e5),
]


def _load(task: str, limit_docs: int | None):
    from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root

    language, code_type = task.split("-")
    splits = limit_splits(load_codiesp(resolve_codiesp_root(download=False), language=language, code_type=code_type),
                          limit_docs)
    texts = {n: list(splits[n]["text"]) for n in splits}
    gold = {n: [list(c) for c in splits[n]["codes"]] for n in splits}
    space = LabelSpace.from_codes(gold["train"], min_count=1)
    return texts, gold, space


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def probe(task: str, limit_docs: int | None) -> dict:
    from medcoder.evaluation.metrics import codiesp_map
    from medcoder.modeling.tfidf import TfidfScorer

    texts, gold, space = _load(task, limit_docs)
    started = time.perf_counter()
    scorer = TfidfScorer(**CHOSEN).fit(texts["train"], space.encode(gold["train"]), space.codes)
    fit_seconds = time.perf_counter() - started
    dev = scorer.score(texts["dev"]).scores
    started = time.perf_counter()
    test = scorer.score(texts["test"]).scores
    score_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with_evidence = scorer.score(texts["test"], evidence=True)
    evidence_seconds = time.perf_counter() - started
    n_spans = sum(len(s) for row in with_evidence.evidence for s in row.values())
    with tempfile.TemporaryDirectory() as tmp:
        scorer.save(tmp)
        size = _dir_bytes(Path(tmp))
        started = time.perf_counter()
        loaded = TfidfScorer.load(tmp)
        load_seconds = time.perf_counter() - started
        identical = bool(np.array_equal(loaded.score(texts["test"]).scores, test))
    out = {
        "task": task,
        "n_labels": len(space),
        "n_features": len(scorer.vocabulary_),
        "train_nnz": int(scorer.train_matrix_.nnz),
        "dev_map": codiesp_map(dev, space.codes, gold["dev"]),
        "test_map": codiesp_map(test, space.codes, gold["test"]),
        "dev_label_coverage": space.coverage(gold["dev"]),
        "fit_seconds": fit_seconds,
        "score_notes_per_second": len(texts["test"]) / score_seconds,
        "score_with_evidence_notes_per_second": len(texts["test"]) / evidence_seconds,
        "evidence_spans_per_note": n_spans / max(len(texts["test"]), 1),
        "saved_mb": size / 1e6,
        "load_seconds": load_seconds,
        "save_load_identical": identical,
    }
    log.info("%s: %s", task, {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()})
    return out


def compare(task: str, limit_docs: int | None, n_logreg: int) -> list[dict]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from medcoder.evaluation.metrics import codiesp_map
    from medcoder.modeling.tfidf import TfidfScorer

    texts, gold, space = _load(task, limit_docs)
    y = space.encode(gold["train"])
    rows = []
    for name, params in RIDGE_CANDIDATES:
        started = time.perf_counter()
        scorer = TfidfScorer(**params).fit(texts["train"], y, space.codes)
        seconds = time.perf_counter() - started
        dev_map = codiesp_map(scorer.score(texts["dev"]).scores, space.codes, gold["dev"])
        rows.append({"task": task, "candidate": name, "dev_map": dev_map, "fit_seconds": seconds,
                     "n_features": len(scorer.vocabulary_)})
        log.info("%s %-42s dev MAP %.4f fit %.1fs", task, name, dev_map, seconds)
    for name, vec, c in LOGREG_CANDIDATES[:n_logreg]:
        started = time.perf_counter()
        vectorizer = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode", min_df=2, max_df=0.95,
                                     dtype=np.float32, **vec)
        x = vectorizer.fit_transform(texts["train"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            clf = OneVsRestClassifier(LogisticRegression(solver="liblinear", C=c, max_iter=1000), n_jobs=2)
            clf.fit(x, y)
        seconds = time.perf_counter() - started
        probs = clf.predict_proba(vectorizer.transform(texts["dev"]))
        dev_map = codiesp_map(probs, space.codes, gold["dev"])
        dense_mb = len(space) * x.shape[1] * 4 / 1e6
        rows.append({"task": task, "candidate": name, "dev_map": dev_map, "fit_seconds": seconds,
                     "n_features": x.shape[1], "coef_float32_mb": dense_mb})
        log.info("%s %-42s dev MAP %.4f fit %.1fs (coef %.0f MB)", task, name, dev_map, seconds, dense_mb)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=["es-D", "es-P", "en-D", "en-P"])
    parser.add_argument("--compare", nargs="*", default=[], help="tasks for the candidate table (dev MAP)")
    parser.add_argument("--logreg-tasks", nargs="*", default=None,
                        help="compare tasks that also fit the logistic-regression candidates (default: all; slow)")
    parser.add_argument("--logreg-max", type=int, default=len(LOGREG_CANDIDATES),
                        help="only the first N logistic-regression candidates")
    parser.add_argument("--limit-docs", type=int, default=None, help="first N notes of each split (smoke checks)")
    parser.add_argument("--output", default=None, help="also write the result JSON to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_offline_env()
    started = time.perf_counter()
    logreg_tasks = args.compare if args.logreg_tasks is None else args.logreg_tasks
    comparison = [
        row for task in args.compare
        for row in compare(task, args.limit_docs, args.logreg_max if task in logreg_tasks else 0)
    ]
    results = [probe(task, args.limit_docs) for task in args.tasks]
    if comparison:
        print("\n| task | candidate | dev MAP | fit s | features |\n|---|---|---|---|---|")
        for r in comparison:
            print(f"| {r['task']} | {r['candidate']} | {r['dev_map']:.4f} | {r['fit_seconds']:.1f} | {r['n_features']} |")
    print("\n| task | dev MAP | test MAP | fit s | score notes/s | +evidence notes/s | saved MB | features |"
          "\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['task']} | {r['dev_map']:.4f} | {r['test_map']:.4f} | {r['fit_seconds']:.1f} | "
              f"{r['score_notes_per_second']:.0f} | {r['score_with_evidence_notes_per_second']:.0f} | "
              f"{r['saved_mb']:.1f} | {r['n_features']} |")
    print(flush=True)
    emit_result({
        "system": "tfidf-probe (dual ridge)",
        "limit_docs": args.limit_docs,
        "comparison": comparison,
        "results": results,
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
        "machine": machine_info(with_torch=False),
    }, args.output)


if __name__ == "__main__":
    main()
