"""`bvh-ops COMMAND` imports only the modules that register COMMAND (start-up time): the table
it goes by must name, for every top-level command, every module that adds to it."""

from __future__ import annotations

from bvh_ops.cli.app import ALL_MODULES, COMMAND_MODULES, load_commands
from bvh_ops.cli.core import app


def _modules(typer_app) -> set[str]:
    found = {c.callback.__module__ for c in typer_app.registered_commands}
    for group in typer_app.registered_groups:
        found |= _modules(group.typer_instance)
    return found


def _registered() -> dict[str, tuple[str, ...]]:
    load_commands()
    table: dict[str, set[str]] = {}
    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        table.setdefault(name, set()).add(command.callback.__module__)
    for group in app.registered_groups:
        table.setdefault(group.name, set()).update(_modules(group.typer_instance))
    return {name: tuple(sorted(m.removeprefix("bvh_ops.cli.") for m in mods)) for name, mods in table.items()}


def test_the_table_names_every_command_and_every_module_that_adds_to_it():
    assert COMMAND_MODULES == _registered()


def test_no_command_or_an_unknown_one_loads_every_group():
    assert set(ALL_MODULES) == {m for mods in _registered().values() for m in mods}
