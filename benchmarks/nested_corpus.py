"""A CodiEsp copy one level down, so that a whole recipe (refit included) can be read on the tuning split.

    python benchmarks/nested_corpus.py --corpus en-D --seed 42 --out /tmp/nest/en-D-42
    python scripts/train.py experiment=hybrid data.root=/tmp/nest/en-D-42 seed=42 ...
    python benchmarks/nested_corpus.py --read-run <run dir> --corpus en-D --out /tmp/nest/en-D-42

Why: a recipe change that acts through the refit (``certification.refit``) cannot be read on the
tuning split of the shipped carve, because the refit fits on those notes. Here the run seed's shipped
carve (``inner_train``, fraction 0.2) is taken as the world: its four fifths of train become the
copy's ``train``, and its tuning fifth becomes the copy's ``test``; CodiEsp dev is linked unchanged
(the copy's runs are never calibrated, so it is not read for labels). A recipe trained on the copy
carves its own tuning fifth out of the four fifths, refits on all of them, and is scored on the real
tuning fifth, which it never saw: the refit's effect, measured without CodiEsp dev or test. The
``benchmarks/stacker_probe.py --holdout-stacker`` arm measures the same pairing for the views it can
fit; this one also fits the neural view.

Nothing is copied but the label rows: note files are symbolic links into the release.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import set_offline_env  # noqa: E402

set_offline_env()

from datasets import DatasetDict  # noqa: E402
from stacker_probe import per_note_ap, predicted_top, read_top, top_precision  # noqa: E402

from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root  # noqa: E402
from medcoder.data.codiesp import require_release_dir  # noqa: E402
from medcoder.data.splits import carve_certification  # noqa: E402
from medcoder.evaluation.metrics import codiesp_map  # noqa: E402

RELEASE = "final_dataset_v4_to_publish"


def _link_split(src: Path, dst: Path, src_name: str, dst_name: str, ids: set[str]) -> None:
    """``dst`` holds the notes ``ids`` of ``src`` (links) and their D, P and X label rows, renamed."""
    for text_dir in ("text_files", "text_files_en"):
        (dst / text_dir).mkdir(parents=True)
        for doc_id in sorted(ids):
            (dst / text_dir / f"{doc_id}.txt").symlink_to(src / text_dir / f"{doc_id}.txt")
    for kind in ("D", "P", "X"):
        rows = (src / f"{src_name}{kind}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (dst / f"{dst_name}{kind}.tsv").write_text("".join(r for r in rows if r.split("\t", 1)[0] in ids),
                                                   encoding="utf-8")


def build(corpus: str, seed: int, out: Path, fifth: int | None = None) -> dict[str, int]:
    """The copy of ``seed``'s shipped carve, or with ``fifth`` the copy whose test is that fifth of
    ``benchmarks/stacker_probe.py --fifths``'s random cut of train (same permutation, same notes)."""
    if out.exists():
        raise SystemExit(f"{out}: exists; give a new folder (this script never writes into an existing one)")
    language, code_type = corpus.split("-")
    root = resolve_codiesp_root(download=False)
    release = require_release_dir(root)
    splits = load_codiesp(root, language=language, code_type=code_type, splits=("train", "dev"))
    if fifth is not None:
        ids = list(splits["train"]["id"])
        held = np.random.default_rng(seed).permutation(len(ids))[fifth::5]
        tune_ids = {ids[i] for i in held}
        fit_ids = set(ids) - tune_ids
    else:
        carved = carve_certification(DatasetDict({"train": splits["train"], "dev": splits["dev"]}), "inner_train",
                                     fraction=0.2, seed=seed)
        fit_ids, tune_ids = set(carved["train"]["id"]), set(carved["dev"]["id"])
    new = out / RELEASE
    _link_split(release / "train", new / "train", "train", "train", fit_ids)
    _link_split(release / "train", new / "test", "train", "test", tune_ids)
    (new / "dev").symlink_to(release / "dev")
    return {"train_notes": len(fit_ids), "test_notes": len(tune_ids)}


def _run_scores(run_dir: Path, test) -> tuple[LabelSpace, np.ndarray, dict[str, int]]:
    """A run's fused test scores (its CodiEsp run file) as a notes x codes array, codes a note's
    run lines lack scored last."""
    space = LabelSpace.from_json(run_dir / "labels.json")  # the run file's codes, in the model's order
    z = np.full((len(test), len(space)), -1e9, dtype=np.float64)
    row = {doc: i for i, doc in enumerate(test["id"])}
    for line in (run_dir / "codiesp_run_test.trec").read_text().splitlines():
        doc, _, code, _, score, _ = line.split()
        z[row[doc], space.index[code]] = float(score)
    return space, z, row


def read_run(run_dir: Path, corpus: str, out: Path) -> dict[str, object]:
    """Tuning-split MAP and top-of-ranking precision of a run trained on the copy (its test split)."""
    language, code_type = corpus.split("-")
    test = load_codiesp(out, language=language, code_type=code_type, splits=("test",))["test"]
    space, z, _ = _run_scores(run_dir, test)
    gold = [list(g) for g in test["codes"]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"run": run_dir.name, "tuning_map": round(codiesp_map(z, list(space.codes), gold), 4),
            "test_map_logged": round(metrics["test_map"], 4),
            "tuning_top_precision": top_precision(z, space.encode(test["codes"]).astype(bool))}


def read_fifths(runs: list[Path], copies: list[Path], corpus: str, *, top_k: int = 15) -> dict[str, object]:
    """The five runs of one seed's ``--fifth`` copies pooled into the judge's 500 held-out train notes
    (``stacker_probe.py --fifths``), read the same way: MAP, the errors among the best eligible pairs
    and Learn-then-Test (``min_coverage`` 0.10, the ``rare_code`` bar 2 on the copy's train counts,
    the predicted pairs the pooled top n_gold). Also with the ``neural_only`` rule: a predicted code
    that no view but the neural one ranks in its top ``top_k`` (the views' note predictions) is
    left out of the eligible ones."""
    language, code_type = corpus.split("-")
    pooled: dict[str, list] = {"z": [], "y": [], "kept": [], "support": [], "ap": []}
    for run_dir, copy in zip(runs, copies, strict=True):
        d = load_codiesp(copy, language=language, code_type=code_type, splits=("train", "test"))
        space, z, row = _run_scores(run_dir, d["test"])
        support = np.zeros(z.shape, dtype=bool)
        for view in ("tfidf", "dictionary"):
            with gzip.open(run_dir / f"note_predictions_test_{view}.json.gz", "rt", encoding="utf-8") as fh:
                for note in json.load(fh)["notes"]:
                    for code in note["codes"][:top_k]:
                        if code in space.index:
                            support[row[note["id"]], space.index[code]] = True
        frequency = space.encode(d["train"]["codes"]).sum(axis=0)
        pooled["z"].append(z.reshape(-1))
        pooled["y"].append(space.encode(d["test"]["codes"]).astype(bool).reshape(-1))
        pooled["kept"].append(np.broadcast_to(frequency[None, :] >= 2, z.shape).reshape(-1))
        pooled["support"].append(support.reshape(-1))
        pooled["ap"].append(per_note_ap(z, list(space.codes), [list(g) for g in d["test"]["codes"]]))
    z, y, kept, support = (np.concatenate(pooled[k]) for k in ("z", "y", "kept", "support"))
    n_pred = int(y.sum())
    out: dict[str, object] = {"runs": [r.name for r in runs], "map": round(float(np.nanmean(np.concatenate(pooled["ap"]))), 4),
                              "top_precision": top_precision(z, y), "n_pred": n_pred,
                              "neural_only_share_of_predicted": round(float((predicted_top(z, y) & ~support).sum() / n_pred), 4)}
    for name, keep in (("shipped", kept), ("neural_only", kept & support)):
        out[name] = read_top(z, y, keep)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, choices=["es-D", "es-P", "en-D", "en-P"])
    ap.add_argument("--seed", type=int, help="the run seed whose shipped carve is the world (with --out, to build)")
    ap.add_argument("--out", type=Path, required=True, help="the copy's folder (data.root of its runs)")
    ap.add_argument("--fifth", type=int, choices=range(5),
                    help="build the copy whose test is this fifth of the --fifths judge's cut (with --seed)")
    ap.add_argument("--read-run", type=Path, help="a run's outputs/runs/<id> folder trained on the copy: read it")
    ap.add_argument("--read-fifths", type=Path, nargs=5, metavar="RUN",
                    help="the five runs (outputs/runs/<id>) trained on --fifth 0..4 copies of one seed, in order; "
                         "--out is then the copies' common prefix: <out>-0 ... <out>-4")
    args = ap.parse_args()
    if args.read_fifths:
        copies = [args.out.with_name(f"{args.out.name}-{k}") for k in range(5)]
        print(json.dumps(read_fifths(list(args.read_fifths), copies, args.corpus)))
    elif args.read_run:
        print(json.dumps(read_run(args.read_run, args.corpus, args.out)))
    else:
        if args.seed is None:
            raise SystemExit("--seed is needed to build a copy")
        print(json.dumps(build(args.corpus, args.seed, args.out, args.fifth)))


if __name__ == "__main__":
    main()
