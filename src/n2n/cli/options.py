"""The options several commands share, each declared once as a record, and the settings they add up to.

:data:`DATA`, :data:`TEACHER`, :data:`CONFIG` ... are tuples of :class:`Option`; the command table
(:mod:`n2n.cli.table`) lists them per command. :func:`config_from` turns the ``CompressConfig`` options (and
``--config FILE``) back into one checked config.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import Any

from n2n.data.augment import list_policies
from n2n.errors import ConfigError
from n2n.settings import SCHEDULES, CompressConfig, setting_choices, settings_by_group
from n2n.settings_file import config_from_mapping


@dataclass(frozen=True)
class Option:
    """One ``add_argument`` call: the flag's spellings (or a positional's name) and its keyword arguments."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any]
    group: str | None = None  # the --help section it is listed in (None: the command's own options)

    @property
    def dest(self) -> str:
        """The namespace attribute argparse gives it, and so the command function's parameter that receives it."""
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


def option(*flags: str, group: str | None = None, **kwargs: Any) -> Option:
    return Option(flags, kwargs, group)


NORMALIZE = option(
    "--normalize",
    default=None,
    metavar="auto|data|none|imagenet|MEAN,STD",
    help="what the model gets of pixels scaled to [0, 1]: data (standardised with the training split's "
    "mean and std), none (as they are), imagenet (ImageNet's mean and std, RGB), or MEAN,STD (e.g. 0.5,0.25; "
    "per channel M1/M2/M3,S1/S2/S3). Default auto: what the model's spec.json records; a teacher that "
    "records none gets the best of data, none and imagenet on the validation split; train-teacher: data",
)
#: the reader options of `n2n.load_data`, one flag each; a command function gets them as one dict, ``data_options``
READER = (
    option(
        "--image-size",
        type=int,
        default=None,
        metavar="PIXELS",
        help="imagefolder, caltech256: shorter side resized, then center-cropped to this (default: 64)",
    ),
    option(
        "--test-per-class",
        type=int,
        default=None,
        help="imagefolder (without train/ and test/), caltech256: test images per class (default: 25)",
    ),
    option(
        "--augment",
        default=None,
        choices=list_policies(),
        help="training augmentation of a teacher, and of compress's and baseline's final fine-tune (default: the "
        "data set's own: crop_flip for CIFAR, caltech256 and imagefolder, crop for svhn, none otherwise)",
    ),
)
DATA_OPTIONS = tuple(o.dest for o in READER)
DATA = (
    option(
        "--data",
        default=None,
        help="data set name: digits (embedded), mnist, fashion-mnist, kmnist, cifar10, cifar100, "
        "cifar100-coarse, svhn, caltech256, imagefolder, npz (default: digits)",
    ),
    option(
        "--data-dir", default=None, help="directory holding the data set's files, or the .npz file (not for digits)"
    ),
    option("--max-train", type=int, default=None, help="use at most this many training examples (quick runs)"),
    *READER,
    NORMALIZE,
)
TRUST_CODE = option(
    "--trust-code",
    action="store_true",
    help="let a saved model or run whose spec.json names the author's own builder (module:function) import "
    "and run it; zoo architectures never need it (only for files you trust)",
)
TEACHER = (
    option(
        "--teacher",
        help="the teacher: a saved n2n model directory, a zoo name (vgg13, ...) with "
        "--weights, or an import path 'package.module:build_function' (torchvision:NAME and "
        "timm:NAME when those are installed)",
    ),
    option("--weights", help="the teacher's trained weights: .safetensors or a PyTorch state dict file"),
    option(
        "--teacher-kwargs",
        metavar="JSON",
        help="keyword arguments for the teacher's builder, e.g. '{\"num_classes\": 10}'",
    ),
    option(
        "--trust-pickle",
        action="store_true",
        help="allow --weights files that need full unpickling (runs code from the file: only for files you trust)",
    ),
    TRUST_CODE,
)
OVERWRITE = option("--overwrite", action="store_true", help="replace what --out already holds")
#: a saved model directory, the first argument of `n2n evaluate` and `n2n export`
MODEL = option("model_dir", metavar="model", help="saved model directory (a teacher, or RUN_DIR/student)")


# ---------------------------------------------------------------- CompressConfig
def _config_options() -> tuple[Option, ...]:
    """One option per CompressConfig field, group by group."""
    defaults, by_name = CompressConfig(), {f.name: f for f in fields(CompressConfig)}
    return tuple(
        _config_option(by_name[name], getattr(defaults, name))
        for names in settings_by_group().values()
        for name in names
    )


def _config_option(f: Field, default: Any) -> Option:
    """The option of one CompressConfig field, with its help text and default."""
    flag = "--" + f.name.replace("_", "-")
    if f.name in SCHEDULES["untargeted"]:  # its default depends on whether a target is set
        untargeted, targeted = (SCHEDULES[kind][f.name] for kind in ("untargeted", "targeted"))
        default_text = f"{untargeted}; {targeted} with a --target-*"
    else:
        default_text = str(default)
    help_text = f"{f.metadata['help']} (default: {default_text})"
    group = f"{f.metadata['group']} settings"
    if f.name == "fix":
        return option(
            flag, action="append", default=None, metavar="PATTERN", help=help_text + "; repeatable", group=group
        )
    if f.name == "fractions":
        return option(flag, type=_fraction_list, default=None, metavar="F,F,...", help=help_text, group=group)
    if isinstance(default, bool):
        return option(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text, group=group)
    kind = _scalar_type(f.type, default)
    choices = setting_choices(f.name)
    return option(flag, type=kind, default=None, choices=choices, help=help_text, group=group)


def _scalar_type(annotation: Any, default: Any) -> type:
    if default is not None:
        return type(default)
    text = str(annotation)
    return float if "float" in text else int if "int" in text else str


def _fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.25,0.5,1.0; got {text!r}"
        ) from None


#: ``--config FILE`` and one option per CompressConfig field (all default None: "not given", so a file or the
#: protocol's preset fills them)
CONFIG = (
    option(
        "--config",
        metavar="FILE",
        help="YAML file of settings (names as below, dashes or "
        "underscores); options given on the command line override it",
    ),
    *_config_options(),
)


def config_from(args: argparse.Namespace) -> CompressConfig:
    """The settings of ``--config FILE`` and the CompressConfig options (which override the file), checked."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = read_config_file(args.config)
    given = {f.name: getattr(args, f.name) for f in fields(CompressConfig) if getattr(args, f.name, None) is not None}
    if "fix" in given:
        given["fix"] = tuple(given["fix"])
    values.update(given)  # options on the command line override the file
    checked = config_from_mapping(values, where="settings")  # types checked, names normalised
    explicit = {k: getattr(checked, k) for k in (str(key).replace("-", "_") for key in values) if k != "protocol"}
    return CompressConfig.preset(checked.protocol, **explicit).validate()


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML (or JSON) file of settings, keys as in `n2n compress --help` (dashes or underscores)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not UTF-8 text (a YAML or JSON file of settings is)") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must map setting names to values (e.g. 'updates: 20')")
    checked = config_from_mapping(values, where=f"--config {path}").to_dict()
    return {name: checked[name] for name in (str(key).replace("-", "_") for key in values)}


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reader options given on the command line (``--image-size`` ...), for ``load_data(options=...)``."""
    return {k: getattr(args, k) for k in DATA_OPTIONS if getattr(args, k, None) is not None}
