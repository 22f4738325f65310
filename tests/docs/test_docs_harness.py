"""The docs tests' own reader and checks, on small pages written here: each can fail."""

from __future__ import annotations

import pytest
from cli_tree import all_options
from docpages import Block, blocks, inline_code, is_synopsis, shell_lines, split_command
from test_docs_commands import _problems


def test_blocks_markers_and_lines(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text `assay x --y`\n\n<!-- docs-test: skip (writes into the package) -->\n\n```\nassay a \\\n  --b c   # note\n# comment\n```\n\n```python\nx = 1\n```\n")
    found = blocks(page)
    assert [(b.lang, b.marker, b.reason, b.line) for b in found] == [("", "skip", "writes into the package", 5), ("python", None, None, 11)]
    assert shell_lines(found[0]) == [(6, "assay a    --b c   # note")]
    assert split_command("assay a --b 'c d'  # note") == ["assay", "a", "--b", "c d"]
    assert inline_code(page) == [(1, "assay x --y")]


def test_a_marker_needs_a_reason_and_a_known_kind(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- docs-test: skip -->\n```\nassay x\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        blocks(page)
    page.write_text("<!-- docs-test: ignore (why) -->\n```\nassay x\n```\n")
    with pytest.raises(ValueError, match="unknown docs-test marker"):
        blocks(page)


def test_a_marker_applies_only_to_the_next_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- docs-test: help (a server) -->\n\nprose between\n\n```\nassay x\n```\n")
    assert blocks(page)[0].marker is None


def test_usage_lines_are_told_from_commands():
    assert is_synopsis(split_command("assay policy check BUNDLE"))
    assert is_synopsis(split_command("assay db current [--url URL]"))
    assert is_synopsis(split_command("assay recsys download ml-100k|ml-1m"))
    assert not is_synopsis(split_command("assay classify text refusal \"I'm sorry, I can't help with that.\""))
    assert not is_synopsis(split_command("assay label --stream items --redis-url redis://127.0.0.1:6379/0"))


def test_a_wrong_subcommand_or_option_is_named(cli):
    assert _problems(cli, ["assay"], ["policy", "check", "feed.yaml"]) == []
    assert any("--require-signed" in p for p in _problems(cli, ["assay"], ["policy", "check", "feed.yaml", "--require-signed"]))
    assert any("no subcommand 'chek'" in p for p in _problems(cli, ["assay"], ["policy", "chek"]))
    assert any("no option --nope" in p for p in _problems(cli, ["assay"], ["db", "upgrade|current", "--nope"]))
    assert "--require-signed" not in all_options(cli) and "--pubkey" in all_options(cli)


def test_block_ids_name_the_page_and_line(tmp_path):
    b = Block(tmp_path / "x.md", 7, "python", "")
    assert b.id == "x.md:7"
