"""The README stays a newcomer's page (at most 20 KB) and every link into docs/ lands on a page and a heading."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 20 * 1024
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lowercase, punctuation dropped, spaces to hyphens, repeats -1, -2."""
    anchors: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def local_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z]+://|mailto:", target)]


def test_readme_is_at_most_20_kb():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move reference sections into docs/"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_local_link_resolves(page: Path):
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_one_click_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in local_links(ROOT / "README.md")}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def headings(page: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in FENCE.sub("", page.read_text()).splitlines()
            if re.match(r"#{2,6} ", line)}


def test_a_moved_section_leaves_no_copy_in_the_readme():
    in_readme = headings(ROOT / "README.md")
    copies = [f"{title!r}: README.md and docs/{page.name}" for page in sorted((ROOT / "docs").glob("*.md"))
              for title in sorted(in_readme & headings(page))]
    assert not copies, "sections in two places:\n" + "\n".join(copies)
