"""The `cadlab` command dispatches to each tool's main(argv) and explains itself."""

import types

from cadlab import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


def test_no_command_prints_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: cadlab COMMAND" in capsys.readouterr().out


def test_unknown_command_is_named(capsys):
    assert cli.main(["reconstrut", "x.stl"]) == 2
    assert "unknown command 'reconstrut'" in capsys.readouterr().err


def test_dispatch_passes_the_remaining_arguments(monkeypatch):
    seen = []
    fake = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 7)
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: fake)
    assert cli.main(["reconstruct", "part.stl", "--samples", "3"]) == 7
    assert seen == [["part.stl", "--samples", "3"]]


def test_every_command_module_has_a_main():
    import importlib

    for module_name, _ in cli.COMMANDS.values():
        assert callable(importlib.import_module(module_name).main), module_name
