"""The README, docs/ and the notebooks' text cells: relative links resolve, and the generated
tables' markers are in the files that `results table`, `results compare` and `bench` write with ``--doc``."""

import json
import re
from pathlib import Path

import pytest

from brainseg.tools.tables import COMPARE_END, COMPARE_START, TABLE_END, TABLE_START

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "samples" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "notebooks").glob("*.ipynb"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(page: Path) -> str:
    """The page without its fenced code blocks (a `#` comment there is no heading); of a notebook, its
    Markdown cells."""
    if page.suffix == ".ipynb":
        cells = json.loads(page.read_text())["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = page.read_text()
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


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
