"""Every `deepspeech-flow` command line and flag the docs show exists as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

import deepspeech_flow.cli as cli

pytestmark = pytest.mark.unit  # `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "DEPLOYMENT.md"]


def _commands() -> dict[str, set[str]]:
    """Each subcommand's accepted option spellings (both halves of --x/--no-x)."""
    group = typer.main.get_command(cli.app)
    return {
        name: {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for name, command in group.commands.items()
    }


def _joined_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def documented_command_lines() -> list[tuple[str, str]]:
    """(doc file, command line) for every `deepspeech-flow SUBCOMMAND ...` in the docs."""
    found = []
    for doc in DOCS:
        for line in _joined_lines(doc.read_text()):
            for match in re.finditer(r"deepspeech-flow ([a-z][a-z-]+)((?:[^`#&|;\n])*)", line):
                found.append((doc.name, f"{match.group(1)}{match.group(2)}".strip()))
    return found


def test_the_docs_show_commands():
    names = {line.split()[0] for _, line in documented_command_lines()}
    assert {"run", "transcribe", "promote", "status", "evaluate", "build-lm"} <= names


@pytest.mark.parametrize("doc, line", documented_command_lines())
def test_every_documented_flag_exists(doc, line):
    commands = _commands()
    name, *args = shlex.split(line.replace("...", ""))
    if name not in commands:  # prose such as "deepspeech-flow runs ..." is not a command
        assert name not in {"run", "train"}, line
        pytest.skip(f"not a command: {name}")
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    unknown = [f for f in flags if f not in commands[name]]
    assert not unknown, f"{doc}: `deepspeech-flow {line}`: no such option(s) {unknown}"


def _table_flags() -> list[str]:
    """Flags in the README's flag tables (our column of the DeepSpeech.py table)."""
    flags = []
    for row in (ROOT / "README.md").read_text().splitlines():
        if not row.startswith("|"):
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        ours = row  # a table of needs and flags: all of it
        if cells[0].startswith("`--") and "same" in cells[1]:
            ours = cells[0]  # "same": DeepSpeech's spelling is ours too
        elif cells[0].startswith("`--") or cells[0] == "(none)":
            ours = cells[1]
        flags += re.findall(r"`(--[a-z][a-z0-9_-]*)", ours)
    return sorted(set(flags))


@pytest.mark.parametrize("flag", _table_flags())
def test_every_flag_in_the_readme_tables_is_accepted(flag):
    assert any(flag in opts for opts in _commands().values()), f"README table: {flag}"
