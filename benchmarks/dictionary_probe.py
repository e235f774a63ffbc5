"""Probe the "dictionary" view alone on CodiEsp (issue 11): MAP, speed, negation precision.

    .venv/bin/python benchmarks/dictionary_probe.py [--folds 5] [--json out.json]

Fits on train only (spans of trainX.tsv; descriptions for English), scores dev and test, prints
one line per setting and a final JSON object. The negation table (dev) counts (note, mention,
code) matches and (note, code) pairs: affirmed vs negated, and the share that is gold — that is
what decides whether a ``negated_mention`` routing reason pays.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import set_offline_env  # noqa: E402

set_offline_env()

from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root  # noqa: E402
from medcoder.data.mentions import load_codiesp_mentions  # noqa: E402
from medcoder.evaluation.metrics import codiesp_map  # noqa: E402
from medcoder.modeling.dictionary import DictionaryScorer, icd10cm_descriptions  # noqa: E402


def negation_table(scorer: DictionaryScorer, texts, gold_sets) -> dict:
    """Dev-side counts: match level (note, mention, code) and code level (note, code)."""
    col = {c: j for j, c in enumerate(scorer.codes)}
    m_aff = [0, 0]
    m_neg = [0, 0]
    for text, gold in zip(texts, gold_sets, strict=True):
        seen: dict[tuple[str, str], bool] = {}
        for idx, _s, _e, negated, _loose in scorer.matcher.find(text):
            m = scorer.matcher.strings[idx]
            for code in scorer.lexicon_[m]:
                seen[(m, code)] = seen.get((m, code), True) and negated
        for (_m, code), negated in seen.items():
            counter = m_neg if negated else m_aff
            counter[0] += 1
            counter[1] += code in gold
    out = scorer.score(texts)
    hit, neg = out.flags["hit"], out.flags["negated"]
    g = np.zeros_like(hit)
    for i, gold in enumerate(gold_sets):
        for c in gold:
            if c in col:
                g[i, col[c]] = True
    aff = hit & ~neg

    def share(a):
        return round(float(g[a].mean()), 4) if a.any() else None

    return {
        "match_affirmed": m_aff[0], "match_affirmed_precision": round(m_aff[1] / max(1, m_aff[0]), 4),
        "match_negated": m_neg[0], "match_negated_precision": round(m_neg[1] / max(1, m_neg[0]), 4),
        "code_affirmed_hits": int(aff.sum()), "code_affirmed_precision": share(aff),
        "code_negated_only": int(neg.sum()), "code_negated_only_precision": share(neg),
        "gold_codes_with_affirmed_hit": round(float((g & aff).sum() / max(1, g.sum())), 4),
    }


def run(setting: str, root: Path, language: str, code_type: str, folds: int, use_mentions: bool,
        desc_mode: str | None) -> dict:
    splits = load_codiesp(root, language=language, code_type=code_type)
    train = splits["train"]
    space = LabelSpace.from_codes(train["codes"], min_count=1)
    labels = space.encode(train["codes"])
    mentions = None
    if use_mentions:
        by_doc = load_codiesp_mentions(root, "train", code_type)  # TRAIN spans only
        mentions = [by_doc.get(i, []) for i in train["id"]]
    descriptions = None
    if desc_mode:
        descriptions = icd10cm_descriptions(
            space.codes, inclusion_terms=desc_mode == "full", variants=desc_mode == "full"
        )
    t0 = time.perf_counter()
    scorer = DictionaryScorer(cross_fit=folds).fit(
        train["text"], labels, space.codes, mentions=mentions, descriptions=descriptions, language=language
    )
    fit_s = time.perf_counter() - t0
    result = {"setting": setting, "fit_s": round(fit_s, 2), **scorer.stats_,
              "p0": round(scorer.p0_, 4), "neg_factor": round(scorer.neg_factor_, 4)}
    for split in ("dev", "test"):
        ds = splits[split]
        t0 = time.perf_counter()
        out = scorer.score(ds["text"], evidence=True)
        dt = time.perf_counter() - t0
        result[f"{split}_map"] = round(codiesp_map(out.scores, space.codes, ds["codes"]), 4)
        # reference: the learned no-match base rates alone (a frequency prior, no matching)
        prior = np.tile(np.asarray(scorer.base_, dtype=np.float32), (len(ds), 1))
        result[f"{split}_map_base_rates_only"] = round(codiesp_map(prior, space.codes, ds["codes"]), 4)
        result[f"{split}_notes_per_s"] = round(len(ds) / dt, 1)
        result[f"{split}_coverage"] = round(space.coverage(ds["codes"]), 4)
    dev = splits["dev"]
    result["dev_negation"] = negation_table(scorer, dev["text"], [set(c) for c in dev["codes"]])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="settings to run (default all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = resolve_codiesp_root(download=False)
    settings = {
        "es-D": ("es", "D", True, None),
        "es-P": ("es", "P", True, None),
        "en-D-desc": ("en", "D", False, "plain"),
        "en-D-desc+incl": ("en", "D", False, "full"),
        "es-D-insample": ("es", "D", True, None),
    }
    results = []
    for name, (lang, ct, use_m, desc) in settings.items():
        if args.only and name not in args.only:
            continue
        folds = 1 if name.endswith("insample") else args.folds
        results.append(run(name, root, lang, ct, folds, use_m, desc))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
