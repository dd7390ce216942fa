"""The documentation a newcomer reads: a short README, and links (with their #anchors) that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220  # issue 21: the rest lives in docs/ pages, each linked
DVC_YAML_MAX_LINES = 120  # issue 34: the whole DAG, read at a glance
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)


def prose(page: Path) -> str:
    """The page without its code blocks, where brackets are code, not links."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces to hyphens."""
    return {slug(heading) for heading in HEADING.findall(prose(page))}


def relative_links(page: Path) -> list[str]:
    return [link for link in LINK.findall(prose(page)) if not re.match(r"[a-z]+:", link)]


def test_dvc_yaml_is_short():
    lines = len((ROOT / "dvc.yaml").read_text(encoding="utf-8").splitlines())
    assert lines <= DVC_YAML_MAX_LINES, f"dvc.yaml has {lines} lines; share what repeats with YAML anchors"


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to a docs/ page and link it"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in relative_links(ROOT / "README.md")}
    unlinked = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {', '.join(unlinked)}"


# --- references from the code: comments and messages that send a reader to a page's section ------

CODE = sorted(
    path
    for folder in ("src", "stages", "tests", "benchmarks", "studies")
    for path in (ROOT / folder).rglob("*.py")
    if path != Path(__file__).resolve()  # this file's examples below point at missing sections on purpose
)
# README, "Data and credit" / README 'Speed' / docs/cluster.md, "Limits" / docs/reproducibility.md#what-holds-where;
# quotes may be escaped inside a string. A README inside a path (data/raw/README) is not the project's.
REFERENCE = re.compile(
    r"""(?<![\w/.-])(?P<page>(?:docs|benchmarks|studies)/[\w-]+\.md|README(?:\.md)?)"""
    r"""(?:\#(?P<anchor>[\w-]+)|,?[ \t]+\\?(?P<quote>["'])(?P<heading>[^"'\n\\]+)\\?(?P=quote))?"""
)


def broken_references(source: str) -> list[str]:
    """Each page or section `source` names that does not exist, as `reference: why`."""
    broken = []
    for match in REFERENCE.finditer(source):
        page = ROOT / ("README.md" if match["page"].startswith("README") else match["page"])
        anchor = match["anchor"] or (slug(match["heading"]) if match["heading"] else None)
        if not page.is_file():
            broken.append(f"{match[0]}: no such file")
        elif anchor and anchor not in anchors(page):
            broken.append(f"{match[0]}: no heading #{anchor} in {page.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("path", CODE, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_page_and_section_the_code_points_at_exists(path):
    broken = broken_references(path.read_text(encoding="utf-8"))
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize(
    "source, broken",
    [
        ('"""README, "Data and credit": the rule."""', []),
        ("# see docs/reproducibility.md#what-holds-where", []),
        ("reason='needs a GPU (docs/reproducibility.md, \\'What holds where\\')'", []),
        ("# data/raw/README is the dataset's own", []),
        ('"""(measured, see README "Speed")"""', ['README "Speed": no heading #speed in README.md']),
        ("# docs/reproducibility.md#what-holds", ["docs/reproducibility.md#what-holds: no heading #what-holds in"]),
        ("# docs/missing.md, 'Limits'", ["docs/missing.md, 'Limits': no such file"]),
    ],
)
def test_a_reference_to_a_missing_section_is_found(source, broken):
    found = broken_references(source)
    assert len(found) == len(broken) and all(f.startswith(b) for f, b in zip(found, broken, strict=True))
