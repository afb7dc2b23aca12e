"""The command line is its table: every entry is a subcommand, main runs the entry's function with the parsed values
by name, and every parameter of a command function is one of its options (a renamed one would silently keep its
default)."""

import inspect
import re
from dataclasses import replace

import pytest

from n2n.cli import COMMANDS, baseline_cmd, build_parser, compress_cmd, main, resume_cmd
from n2n.cli.table import DERIVED


def test_every_command_in_the_table_is_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert re.search(r"\{([a-z,-]+)\}", out).group(1).split(",") == list(COMMANDS)
    for name, entry in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(entry.help[:30])}", out, re.MULTILINE), name


def test_main_runs_the_tables_function_with_the_parsed_values(monkeypatch):
    seen = {}

    def export(model_dir, fmt, bake, normalize, out=None):
        seen.update(model_dir=model_dir, fmt=fmt, bake=bake, normalize=normalize, out=out)

    monkeypatch.setitem(COMMANDS, "export", replace(COMMANDS["export"], run=export))
    assert main(["export", "m", "--format", "onnx", "--bake-normalization"]) == 0
    assert seen == {"model_dir": "m", "fmt": "onnx", "bake": True, "normalize": "auto", "out": None}


def test_main_passes_the_command_line_to_the_functions_that_record_it(monkeypatch):
    seen = {}

    def demo(out, config, command):
        seen.update(out=out, updates=config.updates, command=command)

    monkeypatch.setitem(COMMANDS, "demo", replace(COMMANDS["demo"], run=demo))
    assert main(["demo", "--out", "d d", "--updates", "2"]) == 0
    assert seen == {"out": "d d", "updates": 2, "command": "n2n demo --out 'd d' --updates 2"}


def _dests(name):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {action.dest for action in sub.choices[name]._actions}


#: command -> the functions its options reach by name, with the parameters given another way than by an option
REACHED = {
    "compress": ((compress_cmd, set()), (resume_cmd, {"run_dir"})),
    "baseline": ((baseline_cmd, set()),),
    "evaluate": ((COMMANDS["evaluate"].run, {"seed"}),),  # no --seed: the data split of seed 0
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_parameter_of_a_command_function_is_an_option(name):
    for run, elsewhere in REACHED.get(name, ((COMMANDS[name].run, set()),)):
        given = _dests(name) | set(DERIVED) | elsewhere | {"command", "args"}  # main gives the command line
        missing = set(inspect.signature(run).parameters) - given
        assert not missing, f"{name}: {run.__name__} takes {sorted(missing)}, which no option of `n2n {name}` sets"
