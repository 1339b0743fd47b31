"""Every ``andon ...`` command shown in a shell block of the README or a guide parses as shown
(the command exists, its options exist and take the values given, nothing required is missing).
Nothing is run: each command line is parsed by the real ``andon`` command tree."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
SHELL = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^```(\w*)\s*$")


def _shell_lines(text: str) -> list[str]:
    """The command lines of the shell blocks (continuations joined, a leading ``$ `` dropped)."""
    lines: list[str] = []
    lang: str | None = None
    pending = ""
    for raw in text.splitlines():
        m = FENCE.match(raw.strip())
        if m:
            lang = None if lang is not None else m.group(1)
            continue
        if lang not in SHELL:
            continue
        line = pending + raw.strip().removeprefix("$ ")
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines


def _andon_commands(line: str) -> list[list[str]]:
    """The ``andon`` invocations on one shell line (around pipes, ``&&``, ``;``), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    out: list[list[str]] = []
    current: list[str] = []
    for token in [*lexer, ";"]:
        if token in ("|", "||", "&&", ";", "&"):
            if current and Path(current[0]).name == "andon":
                out.append(current[1:])
            current = []
        else:
            current.append(token)
    return out


def _examples() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for line in _shell_lines(doc.read_text()):
            for args in _andon_commands(line):
                found.append((f"{doc.relative_to(REPO)}: andon {' '.join(args)}", args))
    return found


def _kind(exc: BaseException) -> set[str]:
    """The class names of an exception (Typer ships its own copy of Click: match by name)."""
    return {c.__name__ for c in type(exc).__mro__}


def _parse(args: list[str]) -> None:
    """Resolve the command path and parse the leaf's options and arguments, as `andon` would."""
    from andon.cli.main import app

    cmd: Any = typer.main.get_command(app)
    ctx = cmd.make_context("andon", list(args), resilient_parsing=False)
    while hasattr(cmd, "resolve_command"):  # a group: hand the rest to its subcommand
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        cmd = sub


EXAMPLES = _examples()


def test_the_docs_show_commands() -> None:
    docs_with_commands = {label.split(":")[0] for label, _ in EXAMPLES}
    assert "README.md" in docs_with_commands and len(EXAMPLES) >= 20, sorted(docs_with_commands)


@pytest.mark.parametrize("args", [a for _, a in EXAMPLES], ids=[label for label, _ in EXAMPLES])
def test_every_documented_command_parses(args: list[str]) -> None:
    try:
        _parse(args)
    except Exception as exc:
        if "Exit" in _kind(exc):  # --help and the like: parsed
            return
        assert "UsageError" in _kind(exc), exc
        pytest.fail(f"andon {' '.join(args)}: {exc}")


@pytest.mark.parametrize(
    "args",
    [
        ["promote", "--plnt", "plant-a"],  # no such option
        ["promote"],  # a required option missing
        ["no-such-command"],
        ["models", "diff", "plant-a.surface-defects", "3"],  # an argument missing
        ["serve", "--plant", "plant-a", "--port", "eighty"],  # a wrong type
    ],
)
def test_a_wrong_command_is_caught(args: list[str]) -> None:
    with pytest.raises(Exception) as caught:
        _parse(args)
    assert "UsageError" in _kind(caught.value), caught.value
