"""Resolve a documented ``assay ...`` command against the real command tree: every subcommand
word must exist and every ``--option`` must be an option of the command it is given to."""

from __future__ import annotations

from cli_click import click, is_group


def resolve(cli: click.Command, words: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """(the command, the path of names to it, the words after it). ``words`` starts after ``assay``."""
    cmd, path, rest = cli, ["assay"], list(words)
    while is_group(cmd) and rest and not rest[0].startswith("-"):
        try:  # the group's own resolution (a group may route a non-subcommand word, as `classify` does)
            name, sub, left = cmd.resolve_command(click.Context(cmd), list(rest))
        except click.ClickException:  # UsageError is one
            break
        if sub is None:
            break
        cmd, path, rest = sub, [*path, name], left
    return cmd, path, rest


def option_names(cmd: click.Command) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        if type(p).__name__.endswith('Option'):
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def words_as_options(words: list[str]) -> list[str]:
    """The option names a usage line or command mentions (``[--a X|--b]`` -> --a, --b)."""
    out = []
    for w in words:
        for piece in w.strip("[]").split("|"):
            piece = piece.strip("[]")
            if piece.startswith("-") and len(piece) > 1 and not piece[1:2].isdigit():
                out.append(piece.split("=", 1)[0])
    return out


def all_options(cli: click.Command) -> set[str]:
    """Every option name of every command."""
    names: set[str] = set()

    def walk(cmd: click.Command) -> None:
        names.update(option_names(cmd))
        if is_group(cmd):
            for name in cmd.list_commands(click.Context(cmd)):
                walk(cmd.get_command(click.Context(cmd), name))

    walk(cli)
    return names
