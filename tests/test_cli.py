"""The `cadlab` command dispatches to each tool's main(argv) and explains itself."""

import types

import pytest

from cadlab import cli

TOOLS = ["doctor", "reconstruct", "iterative-generate", "bench", "babygpt", "train-babygpt", "train-cadrecode",
         "train-autocomplete", "train-cadrille", "eval-grammar"]


def test_help_lists_every_command(capsys):
    assert list(cli.COMMANDS) == TOOLS
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in TOOLS)


@pytest.mark.parametrize("command", TOOLS)
def test_every_command_answers_help_with_dashed_flags(command, capsys):
    try:
        status = cli.main([command, "--help"])
    except SystemExit as exit_:   # argparse's --help exits; some mains catch it and return the status
        status = exit_.code
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cadlab {command} ") and "--help" in out     # the command as a learner types it
    flags = [word for word in out.replace(",", " ").replace("[", " ").replace("]", " ").split() if word.startswith("--")]
    dashed = [flag for flag in flags if "_" not in flag]
    assert dashed, out
    for flag in flags:   # an underscore spelling is only ever an alias of a dashed one
        assert "_" not in flag or flag.replace("_", "-").split("=")[0] in out, flag


def test_a_main_that_returns_none_exits_zero(monkeypatch):
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: types.SimpleNamespace(main=lambda argv: None))
    assert cli.main(["train-cadrecode", "--minutes", "1"]) == 0


def test_version(capsys):
    import cadlab

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cadlab {cadlab.__version__}"


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
