"""The table of commands, the parser built from it, and ``main``, which runs the command it names.

A command function's parameters are named after its options' dests, so :func:`call` passes the parsed options by
name; what no single option gives (the settings, the reader options, the command line itself) is built once, in
:data:`DERIVED` or by ``main``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from rich.markup import escape

from n2n.cli.commands import baseline_cmd, compress_cmd, demo_cmd, report_cmd, resume_cmd, train_teacher_cmd
from n2n.cli.display import console
from n2n.cli.model_commands import evaluate_cmd, export_cmd, inspect_cmd
from n2n.cli.options import (
    CONFIG,
    DATA,
    DATA_OPTIONS,
    MODEL,
    NORMALIZE,
    OVERWRITE,
    TEACHER,
    TRUST_CODE,
    Option,
    config_from,
    data_options,
    option,
)
from n2n.errors import ConfigError, Interrupted, N2NError
from n2n.recipes import list_recipes
from n2n.settings import CompressConfig
from n2n.train.compute import DEVICES, enable_huge_pages


@dataclass(frozen=True)
class Command:
    """One subcommand: its line in ``n2n --help``, its options in the order its ``--help`` lists them, and the
    function that runs it (through :func:`call`)."""

    help: str
    options: tuple[Option, ...]
    run: Callable[..., Any]


#: parameters of the command functions that no one option gives, built from the parsed options when one is asked for
DERIVED: dict[str, Callable[[argparse.Namespace], Any]] = {
    "config": config_from,
    "data_options": data_options,
    "normalize": lambda args: args.normalize or "auto",  # left out (or empty): what the model records
}


def call(run: Callable[..., Any], args: argparse.Namespace, **given: Any) -> Any:
    """``run`` with ``given``, and for each other parameter what :data:`DERIVED` builds or the option whose dest is
    its name; a parameter named ``args`` gets the whole namespace (for a command that picks among functions)."""
    values: dict[str, Any] = {}
    for name in inspect.signature(run).parameters:
        if name in given:
            values[name] = given[name]
        elif name == "args":
            values[name] = args
        elif name in DERIVED:
            values[name] = DERIVED[name](args)
        elif hasattr(args, name):
            values[name] = getattr(args, name)
    return run(**values)


#: what `n2n compress --resume` refuses, in the order its message names them (the run directory records them all)
_RESUME_REFUSES = (
    "teacher",
    "weights",
    "teacher_kwargs",
    "out",
    "data",
    "data_dir",
    "max_train",
    "config",
    "normalize",
)


def _compress(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """A new search, or with ``--resume`` the interrupted one, which takes everything but ``--trust-code`` and
    ``--tensorboard`` from its run directory."""
    if args.resume:
        given = [a for a in (*_RESUME_REFUSES, *DATA_OPTIONS) if getattr(args, a) is not None]
        given += [
            f.name
            for f in fields(CompressConfig)
            if getattr(args, f.name, None) is not None and f.name != "tensorboard"
        ]
        given += ["overwrite"] if args.overwrite else []
        if given:
            raise ConfigError(
                "--resume takes the teacher, data and settings from the run directory; drop "
                + ", ".join("--" + g.replace("_", "-") for g in given)
            )
        return call(resume_cmd, args, run_dir=args.resume)
    if args.teacher is None or args.out is None:
        raise ConfigError("n2n compress needs --teacher and --out (or --resume RUN_DIR)")
    return call(compress_cmd, args, command=command)


def _baseline(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """``uniform`` reads the settings options; ``scratch`` takes its run's and leaves them unread."""
    if args.out is None:
        raise ConfigError("n2n baseline needs --out")
    config = config_from(args) if args.kind == "uniform" else None
    return call(baseline_cmd, args, config=config, command=command)


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "train a teacher on scikit-learn's digits and compress it (no download)",
        (option("--out", default="runs/demo", help="run directory (default: runs/demo)"), OVERWRITE, *CONFIG),
        demo_cmd,
    ),
    "train-teacher": Command(
        "train a zoo architecture with cross-entropy and save it",
        (
            option(
                "--arch", required=True, help="architecture: lenet5, vgg11, vgg13, vgg16, vgg19, resnet18, resnet34"
            ),
            option("--width", type=float, default=1.0, help="width multiplier of every layer (default: 1.0)"),
            option(
                "--recipe",
                default="default",
                choices=list_recipes(),
                help="training schedule: default (3 epochs of Adam, lr 0.001 cosine-decayed, batch 128: for CPUs) or "
                "paper (the paper's schedule for --data, e.g. 150 epochs for CIFAR; see docs/REPRODUCE.md)",
            ),
            option("--epochs", type=int, default=None, help="training epochs (default: the recipe's)"),
            option("--lr", type=float, default=None, help="initial learning rate (default: the recipe's)"),
            option("--batch-size", type=int, default=None, help="mini-batch size (default: the recipe's)"),
            option("--seed", type=int, default=0, help="random seed (default: 0)"),
            option("--out", required=True, help="directory to save the teacher to"),
            option("--overwrite", action="store_true", help="replace a model --out already holds"),
            option(
                "--device",
                default="auto",
                choices=DEVICES,
                help="where to train: auto (cuda if available, else mps, else cpu), cpu, cuda, mps (default: auto)",
            ),
            *DATA,
        ),
        train_teacher_cmd,
    ),
    "compress": Command(
        "search for a smaller student of a trained teacher",
        (
            *TEACHER,
            option("--out", help="run directory to write"),
            OVERWRITE,
            option(
                "--resume",
                metavar="RUN_DIR",
                help="continue the interrupted search in RUN_DIR with its own teacher "
                "copy, data and settings (give no other option)",
            ),
            *DATA,
            *CONFIG,
        ),
        _compress,
    ),
    "baseline": Command(
        "baselines with the same data and fine-tune: uniform shrink, or scratch",
        (
            option(
                "kind",
                choices=("uniform", "scratch"),
                help="uniform: one keep-fraction for every layer, sized "
                "to --target-params; scratch: the student of --run re-initialised and trained from scratch",
            ),
            option("--run", help="scratch: a finished `n2n compress` run directory"),
            *TEACHER,
            option("--out", help="directory to write the baseline's student and report to"),
            OVERWRITE,
            *DATA,
            *CONFIG,
        ),
        _baseline,
    ),
    "report": Command(
        "write report.json, report.md and report.html of a run directory again (also mid-run), or compare runs",
        (
            option(
                "runs",
                metavar="run",
                nargs="+",
                help="run directory of `n2n compress` or `n2n baseline`; several: one comparison page",
            ),
            option("--out", help="several runs: directory for comparison.html (default: the first run directory)"),
            TRUST_CODE,
        ),
        report_cmd,
    ),
    "inspect": Command(
        "list the teacher's layers with what the search may change and why not",
        (
            *TEACHER,
            option(
                "--input-shape",
                metavar="C,H,W",
                help="one input's shape, e.g. 3,32,32 (not needed for a saved n2n model)",
            ),
            option("--fix", action="append", metavar="PATTERN", help="glob of layer names to hold fixed; repeatable"),
            option("--json", action="store_true", dest="as_json", help="print the analysis as JSON"),
        ),
        inspect_cmd,
    ),
    "evaluate": Command(
        "accuracy, parameters, FLOPs, file size and latency of a saved model",
        (
            MODEL,
            option("--teacher", metavar="MODEL_DIR", help="a saved model to compare with, side by side (speed-ups)"),
            option(
                "--latency", action=argparse.BooleanOptionalAction, default=True, help="measure latency (default: on)"
            ),
            TRUST_CODE,
            *DATA,
        ),
        evaluate_cmd,
    ),
    "export": Command(
        "export a saved model to ONNX or TorchScript, checked against PyTorch",
        (
            MODEL,
            option("--format", required=True, choices=("onnx", "torchscript"), dest="fmt", help="onnx or torchscript"),
            option("--out", help="file to write (default: MODEL_DIR/model.onnx or MODEL_DIR/model.pt)"),
            option("--atol", type=float, default=1e-4, help="largest allowed absolute logit difference (1e-4)"),
            option("--data", default=None, help="data set whose test images the check runs on (default: random)"),
            option("--data-dir", default=None, help="directory holding the data set's files"),
            NORMALIZE,
            option(
                "--bake-normalization",
                action="store_true",
                dest="bake",
                help="put the model's normalization into the exported file, which then takes pixels in [0, 1]",
            ),
            TRUST_CODE,
        ),
        export_cmd,
    ),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every other user error
        console.print(
            f"[red]error:[/] {message} (see `{self.prog} --help`)", soft_wrap=True, markup=True, highlight=False
        )
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="n2n",
        description="Compress a trained PyTorch classifier into a smaller student by "
        "reinforcement learning (N2N learning, ICLR 2018).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, entry in COMMANDS.items():
        p = sub.add_parser(name, help=entry.help)
        sections: dict[str, argparse._ArgumentGroup] = {}
        for opt in entry.options:
            if opt.group is not None and opt.group not in sections:
                sections[opt.group] = p.add_argument_group(opt.group)
            (p if opt.group is None else sections[opt.group]).add_argument(*opt.flags, **opt.kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    enable_huge_pages()  # before the first large tensor (see its docs)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        command = shlex.join(["n2n", *(sys.argv[1:] if argv is None else argv)])
        call(COMMANDS[args.command].run, args, command=command)
    except Interrupted as err:
        console.print(f"[yellow]{escape(str(err))}[/]", soft_wrap=True, highlight=False)
        return 130
    except N2NError as err:
        if args.debug:
            raise
        console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)
        return 2
    except OSError as err:  # the disk filled up, a file vanished, permissions changed while n2n ran
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        console.print(f"[red]error:[/] {escape(where + (err.strerror or str(err)))}", soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    return 0
