"""Spanish WHO ICD-10 titles (the ``cie`` package's data) as dictionary wording."""

from __future__ import annotations

from medcoder.codesets.who_spanish import (
    spanish_title_descriptions,
    spanish_variants,
    who_spanish_titles,
)
from medcoder.workflows.config_checks import offered_resources
from medcoder.workflows.fusion import TrainingCorpus, fit_resources


def test_titles_are_read_in_place_and_keyed_by_dotless_who_code() -> None:
    titles = who_spanish_titles()
    assert len(titles) > 10_000
    assert "diabetes" in titles["E11"].lower()
    assert all(len(c) in (3, 4) and "-" not in c for c in titles)  # chapter/block ranges dropped


def test_only_codes_that_are_who_codes_as_they_are_get_a_title() -> None:
    out = spanish_title_descriptions(["E11", "I10", "R69", "S72.001A", "E11.9", "ZZZ"])
    assert set(out) == {"E11", "I10", "R69", "E11.9"}  # S72.001A: no 4-char parent title, ZZZ: none
    assert out["I10"][0] == who_spanish_titles()["I10"]


def test_variants_drop_parentheses_and_qualifiers_after_a_comma() -> None:
    assert spanish_variants("Diabetes mellitus no insulinodependiente, sin mención de complicación") == [
        "Diabetes mellitus no insulinodependiente, sin mención de complicación",
        "Diabetes mellitus no insulinodependiente",
    ]
    assert spanish_variants("Hipertensión esencial (primaria)") == ["Hipertensión esencial (primaria)",
                                                                      "Hipertensión esencial"]


def test_spanish_titles_reach_the_dictionary_as_descriptions() -> None:
    assert offered_resources(("mentions", "descriptions", "spanish_titles")) == ("mentions", "descriptions",
                                                                                  "language")
    assert offered_resources(("spanish_titles",)) == ("descriptions", "language")
    corpus = TrainingCorpus(language="es", code_type="D")
    both = fit_resources(("descriptions", "spanish_titles"), corpus, [], ["I10", "E11.9"], {"descriptions"})
    english = fit_resources(("descriptions",), corpus, [], ["I10", "E11.9"], {"descriptions"})
    titles = spanish_title_descriptions(["I10"])["I10"]
    assert both.shared["descriptions"]["I10"] == [*english.shared["descriptions"]["I10"], *titles]
    spanish_only = fit_resources(("spanish_titles",), corpus, [], ["I10"], {"descriptions"})
    assert spanish_only.shared["descriptions"] == {"I10": titles}
