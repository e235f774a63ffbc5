"""The real CodiEsp corpus, found by the resolver, matches the counts documented in SOURCE.md."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medcoder.data import LabelSpace, load_codiesp, load_codiesp_with_report, resolve_codiesp_root
from medcoder.data.resolve import ENV_VAR

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codiesp"
RELEASE = SHARED / "final_dataset_v4_to_publish"
if not RELEASE.is_dir():
    pytest.skip(f"CodiEsp corpus not present at {SHARED}", allow_module_level=True)

SPLITS = ("train", "dev", "test")
# From SOURCE.md: docs, label rows, docs without codes, distinct codes per split.
EXPECTED = {
    "D": {"train": (500, 5639, 0, 1767), "dev": (250, 2677, 0, 1158), "test": (250, 2842, 0, 1143)},
    "P": {"train": (500, 1550, 65, 563), "dev": (250, 817, 28, 375), "test": (250, 879, 26, 371)},
}
# Measured once (train-built label space, English); the data are frozen, so these are tight.
COVERAGE = {"D": {"dev": 0.8218, "test": 0.8251}, "P": {"dev": 0.7736, "test": 0.7770}}
# SOURCE.md: test codes never seen in train+dev.
UNSEEN_TEST = {"D": 363, "P": 143}


@pytest.fixture(scope="module")
def root() -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_VAR, raising=False)  # exercise the ../shared search, not a local override
        found = resolve_codiesp_root(download=False)
    assert found == RELEASE.resolve()
    return found


@pytest.mark.parametrize("code_type", ["D", "P"])
def test_counts_match_source_md(root: Path, code_type: str) -> None:
    start = time.perf_counter()
    dd, report = load_codiesp_with_report(root, language="en", code_type=code_type)
    elapsed = time.perf_counter() - start
    print(f"\nCodiEsp en/{code_type} load: {elapsed:.2f}s")
    assert report.n_skipped == 0
    for split in SPLITS:
        ds = dd[split]
        codes = list(ds["codes"])
        got = (ds.num_rows, sum(map(len, codes)), sum(1 for c in codes if not c),
               len({c for cs in codes for c in cs}))
        assert got == EXPECTED[code_type][split], split
        assert list(ds["id"]) == sorted(ds["id"])
        assert all(t.strip() for t in ds["text"])
        assert all(c == c.upper() for cs in codes for c in cs)
        if code_type == "D":
            assert all("." in c for cs in codes for c in cs if len(c) > 3)
        else:
            assert all(len(c) in (4, 7) and "." not in c for cs in codes for c in cs)


def test_spanish_has_same_ids_and_labels(root: Path) -> None:
    en = load_codiesp(root, language="en", splits=["dev"])["dev"]
    es = load_codiesp(root, language="es", splits=["dev"])["dev"]
    assert list(en["id"]) == list(es["id"])
    assert list(en["codes"]) == list(es["codes"])
    assert list(en["text"]) != list(es["text"])


@pytest.mark.parametrize("code_type", ["D", "P"])
def test_label_coverage_of_train_built_space(root: Path, code_type: str) -> None:
    dd = load_codiesp(root, language="en", code_type=code_type)
    space = LabelSpace.from_codes(dd["train"]["codes"])
    assert len(space) == EXPECTED[code_type]["train"][3]
    assert space.coverage(dd["train"]["codes"]) == 1.0
    for split in ("dev", "test"):
        cov = space.coverage(dd[split]["codes"])
        print(f"\nlabel_coverage {code_type} {split}: {cov:.4f}")
        assert cov == pytest.approx(COVERAGE[code_type][split], abs=0.002)
    train_dev = LabelSpace.from_codes(list(dd["train"]["codes"]) + list(dd["dev"]["codes"]))
    test_codes = {c for cs in dd["test"]["codes"] for c in cs}
    assert len(test_codes - set(train_dev.codes)) == UNSEEN_TEST[code_type]
