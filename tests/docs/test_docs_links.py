"""Every relative link in README.md and docs/*.md points at a file that exists (and a heading
that exists, for ``page.md#anchor``); every page of docs/ is reachable from the README."""

from __future__ import annotations

import re

import pytest
from docpages import PAGES, ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page) -> set[str]:
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def _links() -> list[tuple[str, str, object]]:
    out = []
    for page in PAGES:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for target in LINK.findall(line):
                if not target.startswith(("http://", "https://", "mailto:")):
                    out.append((f"{page.name}:{n}", target, page))
    return out


LINKS = _links()


@pytest.mark.parametrize(("where", "target", "page"), LINKS, ids=[f"{w} {t}" for w, t, _ in LINKS])
def test_a_relative_link_resolves(where, target, page):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{where}: {target} -> {dest} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{where}: {dest.name} has no heading #{anchor}"


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for w, t, p in LINKS if p.name == "README.md"}
    # one hop further: the README links the map and the part pages, which link the rest
    linked |= {(p.parent / t.partition("#")[0]).resolve() for w, t, p in LINKS if p.resolve() in linked}
    missing = sorted(p.name for p in PAGES if p.name != "README.md" and p.resolve() not in linked)
    assert not missing, f"docs pages no page links to from the README (or a page it links): {missing}"
