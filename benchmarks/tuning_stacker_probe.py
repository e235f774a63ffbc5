"""Does the stacker learn better from held-out scores of the fitted views than from their out-of-fold
scores over the fitting notes? Tuning split only (test is never loaded).

    python benchmarks/tuning_stacker_probe.py --run-dir <paths.root_dir>/outputs/runs/<run_id> --corpus en-D --seed 42

Why a probe of its own: :mod:`stacker_probe` cannot fit the neural view, and the neural view is where
the question bites. Its out-of-fold scores over train come from heads trained on part of the
fitting notes (``fusion.neural_folds``), and they rank far worse than the full head ranks the tuning
notes (EN-D seed 42: out-of-fold MAP 0.27 with 2 folds, 0.30 with 5, against 0.42 on the tuning
notes), so the shipped stacker, fitted on them, under-trusts the view.

The run is a ``certification.design=inner_train`` training run with ``certification.refit=false``
(its bundle's views are the four-fifths views that never saw the tuning notes). The probe re-carves
the run seed's tuning fifth, scores it with each of the run's views, and reads tuning MAP of:

* ``shipped``: the run's own stacker (fitted on out-of-fold train scores);
* ``tuning_cv``: the same stacker settings fitted by K folds over the tuning notes' view scores,
  each note fused by a stacker that never saw it (:func:`medcoder.workflows.fusion.cross_fitted_logits`);

and the precision of the top of the split's global ranking (:func:`stacker_probe.top_precision`:
the best-scored pairs, 10 % to 50 % of the gold pair count), what auto-accept takes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, git_commit, machine_info, set_offline_env  # noqa: E402

set_offline_env()

from datasets import DatasetDict  # noqa: E402
from stacker_probe import top_precision  # noqa: E402

from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root  # noqa: E402
from medcoder.data.splits import carve_certification  # noqa: E402
from medcoder.evaluation.metrics import codiesp_map  # noqa: E402
from medcoder.modeling.hybrid import HybridScorer  # noqa: E402
from medcoder.modeling.stacker import Stacker  # noqa: E402
from medcoder.workflows.fusion import cross_fitted_logits  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a run's outputs/runs/<run_id> folder")
    ap.add_argument("--corpus", default="en-D", choices=["es-D", "es-P", "en-D", "en-P"])
    ap.add_argument("--seed", type=int, required=True, help="the run's seed (it carved the tuning fifth)")
    ap.add_argument("--folds", type=int, nargs="+", default=[5, 10], help="K of the cross-fit over the tuning notes")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    started = time.time()
    language, code_type = args.corpus.split("-")
    corpus = load_codiesp(resolve_codiesp_root(download=False), language=language, code_type=code_type,
                          splits=("train", "dev"))
    tune = carve_certification(DatasetDict({"train": corpus["train"], "dev": corpus["dev"]}), "inner_train",
                               fraction=0.2, seed=args.seed)["dev"]
    space = LabelSpace.from_json(args.run_dir / "labels.json")
    scorer = HybridScorer.load(args.run_dir, space.frequency_array())
    if scorer.stacker is None:
        raise SystemExit(f"{args.run_dir}: a single-view run has no stacker to compare")
    texts, gold = list(tune["text"]), [list(c) for c in tune["codes"]]
    views = scorer.score_views(texts)
    labels = space.encode(tune["codes"])
    params = scorer.stacker.to_dict()["params"]
    shipped = scorer.fuse(views)
    out = {"shipped": round(codiesp_map(shipped, scorer.codes, gold), 4)}
    top = {"shipped": top_precision(shipped, labels.astype(bool))}
    for k in args.folds:
        z = cross_fitted_logits(lambda: Stacker(**params), views, scorer.frequency, labels, folds=k, seed=args.seed)
        out[f"tuning_cv_{k}"] = round(codiesp_map(z, scorer.codes, gold), 4)
        top[f"tuning_cv_{k}"] = top_precision(z, labels.astype(bool))
    print(args.corpus, args.seed, json.dumps(out), json.dumps(top), flush=True)
    emit_result({"system": "tuning_stacker_probe", "commit": git_commit(), "command": " ".join(sys.argv),
                 "corpus": args.corpus, "seed": args.seed, "tuning_notes": len(texts), "stacker": params,
                 "tuning_map": out, "tuning_top_precision": top, "wall_s": round(time.time() - started, 1),
                 "machine": machine_info(with_torch=True)}, args.json)


if __name__ == "__main__":
    main()
