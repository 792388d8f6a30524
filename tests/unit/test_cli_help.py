"""Every command's --help as a terminal shows it: the help is rendered as Rich markup, which
takes "[name]" for a style tag and drops it — "the [[log_sources]] with rotate_bytes" read "the []
with rotate_bytes" in `bvh-ops logs rotate --help`."""

from __future__ import annotations

import re

import typer
import typer.testing
from typer.testing import CliRunner

from bvh_ops.cli.app import load_commands
from bvh_ops.cli.core import app


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if hasattr(cmd, "commands"):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, (*path, name))


def test_no_help_text_loses_a_bracketed_word(monkeypatch):
    load_commands()
    runner = CliRunner()
    root = typer.main.get_command(app)
    # The command tree built once: typer's runner rebuilds it from the app for every invoke
    # (~0.1 s each, a hundred commands); the help it renders is the same.
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: root)
    seen = 0
    for path, cmd in _commands(root):
        raw = " ".join([cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]).replace("[\\[", "[[")
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
        assert result.exit_code == 0, (path, result.output)
        assert "[]" not in result.output or "[]" in raw, f"bvh-ops {' '.join(path)} --help: {result.output}"
        for word in re.findall(r"\[+[^\]\s]*\]+", raw):  # "[[log_sources]]", "[,key=glob]"
            assert word in result.output, f"bvh-ops {' '.join(path)} --help lost {word}"
        seen += 1
    assert seen > 50
