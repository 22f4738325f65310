"""Every ``assay`` command the docs write — in a fenced block or an inline code span, run or
usage line — names subcommands and options that exist, and every option named alone in the prose
(``--require-signed``) exists on some command. Static and in-process: the whole tree is checked
in well under a second, so this catches a renamed flag on every page at once."""

from __future__ import annotations

import pytest
from cli_click import click, is_group
from cli_tree import all_options, option_names, resolve, words_as_options
from docpages import PAGES, SHELL_LANGS, all_blocks, inline_code, shell_lines, split_command


def _documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every ``assay ...`` the docs write."""
    out = []
    for b in all_blocks():
        if b.lang in SHELL_LANGS and b.marker != "skip":
            for n, cmd in shell_lines(b):
                if cmd.startswith("assay "):
                    out.append((f"{b.page.name}:{n}", cmd))
    for page in PAGES:
        for n, code in inline_code(page):
            code = code.replace("\\|", "|")
            if code.startswith("assay ") and not code.startswith("assay.") :
                out.append((f"{page.name}:{n}", code))
    return out


def _problems(cmd: click.Command, path: list[str], rest: list[str]) -> list[str]:
    """Branches on ``a|b`` alternatives where a subcommand is expected."""
    if is_group(cmd) and rest and "|" in rest[0] and not rest[0].startswith(("-", "[")):
        found = []
        for alt in rest[0].split("|"):
            found += _problems(cmd, path, [alt, *rest[1:]])
        return found
    sub, subpath, left = resolve(cmd, rest)
    subpath = path + subpath[1:]
    if is_group(sub) and left and "|" in left[0] and sub is not cmd:
        return _problems(sub, subpath, left)
    if is_group(sub) and left and not left[0].startswith("-") and not sub.invoke_without_command:
        names = ", ".join(sorted(sub.list_commands(click.Context(sub))))
        return [f"'{' '.join(subpath)}' has no subcommand {left[0]!r} (it has: {names})"]
    known = option_names(sub)
    return [f"'{' '.join(subpath)}' has no option {opt} (it has: {', '.join(sorted(known))})"
            for opt in words_as_options(left) if opt not in known]


COMMANDS = _documented_commands()


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_exists(cli, where, command):
    words = split_command(command)[1:]
    assert not _problems(cli, ["assay"], words), f"{where}: {command}\n" + "\n".join(_problems(cli, ["assay"], words))


def test_the_docs_name_at_least_the_commands_of_the_readme_table():
    # the extraction itself can fail silently (a changed table format): keep it honest
    assert len(COMMANDS) >= 100, len(COMMANDS)


def test_every_option_the_prose_names_exists(cli):
    known = all_options(cli)
    missing = []
    for page in PAGES:
        for n, code in inline_code(page):
            word = code.split()[0] if code.split() else ""
            for piece in word.split("/"):  # `--judge-url/--judge-model`
                if piece.startswith("--") and len(piece) > 2 and piece[2].isalpha():
                    name = piece.split("=", 1)[0]
                    if name not in known:
                        missing.append(f"{page.name}:{n}: {name}")
    assert not missing, "options the docs name that no assay command has:\n" + "\n".join(missing)


def _all_paths(cmd, path=()):
    out = [path]
    if is_group(cmd):
        for name in cmd.list_commands(click.Context(cmd)):
            out += _all_paths(cmd.get_command(click.Context(cmd), name), (*path, name))
    return out


def test_every_command_has_help(cli):
    # README: "every command has `--help`"
    import contextlib
    import io

    from assay.cli.main import main

    paths = _all_paths(cli)
    assert len(paths) >= 60, len(paths)
    failed = []
    for path in paths:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = main([*path, "--help"])
            except SystemExit as e:
                code = e.code or 0
        if code != 0 or "Usage" not in out.getvalue():
            failed.append(f"assay {' '.join(path)} --help: exit {code}: {out.getvalue()[-300:]}")
    assert not failed, "\n".join(failed)
