"""The README and docs/: relative links resolve, and the generated tables' markers are in the files
that `results table`, `results compare` and `bench` write with ``--doc``."""

import re
from pathlib import Path

import pytest

from brainseg.tools.tables import COMPARE_END, COMPARE_START, TABLE_END, TABLE_START

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "samples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(page: Path) -> str:
    """The page without its fenced code blocks (a `#` comment there is no heading)."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", _prose(page), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: no heading for #{anchor} in {linked.name}"


@pytest.mark.parametrize("doc, markers", [
    ("docs/results.md", (TABLE_START, TABLE_END)),
    ("docs/models.md", (COMPARE_START, COMPARE_END)),
    ("docs/speed.md", ("<!-- bench-speed:start -->", "<!-- bench-speed:end -->",
                       "<!-- bench-goals:start -->", "<!-- bench-goals:end -->")),
])
def test_generated_tables_have_their_markers(doc, markers):
    text = (ROOT / doc).read_text()
    assert all(text.count(m) == 1 for m in markers)
    assert f"--doc {doc}" in text  # the page names the command that rewrites it
