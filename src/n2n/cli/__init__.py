"""The ``n2n`` command line: ``demo``, ``train-teacher``, ``compress``, ``baseline``, ``report``, ``inspect``,
``evaluate``, ``export``.

Every subcommand is a plain function taking typed arguments (tests call them directly: :mod:`n2n.cli.commands`,
:mod:`n2n.cli.model_commands`); :mod:`n2n.cli.table` lists them with their options (shared ones are declared once
in :mod:`n2n.cli.options`), and its ``main`` parses, runs the command the table names and turns
:class:`~n2n.errors.N2NError` into a one-line message and exit code 2. Progress bars and tables:
:mod:`n2n.cli.display`.
"""

from n2n.cli.commands import baseline_cmd, compress_cmd, demo_cmd, report_cmd, resume_cmd, train_teacher_cmd
from n2n.cli.model_commands import analysis_report, evaluate_cmd, export_cmd, inspect_cmd
from n2n.cli.table import COMMANDS, Command, build_parser, main

__all__ = [
    "COMMANDS",
    "Command",
    "analysis_report",
    "baseline_cmd",
    "build_parser",
    "compress_cmd",
    "demo_cmd",
    "evaluate_cmd",
    "export_cmd",
    "inspect_cmd",
    "main",
    "report_cmd",
    "resume_cmd",
    "train_teacher_cmd",
]
