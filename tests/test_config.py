"""The compress settings: grouped, typed choices, invalid values cannot be constructed, the outside world is checked
only at the edge."""

from dataclasses import fields, replace

import pytest

from n2n.cli import build_parser
from n2n.errors import ConfigError
from n2n.search.reinforce import ADVANTAGES
from n2n.settings import GROUPS, CompressConfig, setting_choices, settings_by_group
from n2n.settings_file import config_from_mapping
from n2n.train.compute import DEVICES, PRECISIONS


def test_every_setting_is_in_exactly_one_group():
    grouped = settings_by_group()
    assert list(grouped) == list(GROUPS) and all(grouped.values())
    names = [name for group in grouped.values() for name in group]
    assert sorted(names) == sorted(f.name for f in fields(CompressConfig)) and len(set(names)) == len(names)


def test_choices_come_from_the_types_and_agree_with_what_the_code_accepts():
    assert setting_choices("device") == DEVICES
    assert setting_choices("precision") == ("auto", *PRECISIONS)
    assert set(setting_choices("advantage")) == set(ADVANTAGES)
    assert setting_choices("updates") is None
    for f in fields(CompressConfig):  # every default is one of its own choices
        choices = setting_choices(f.name)
        assert choices is None or getattr(CompressConfig(), f.name) in choices


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"updates": 0}, "--updates must be a positive integer"),
        ({"device": "tpu"}, "--device must be one of auto, cpu, cuda, mps"),
        ({"removal_scoring": "deep"}, "--removal-scoring must be one of partway, narrowed"),
        ({"lr": float("nan")}, "--lr must be a finite number"),
        ({"finalists": 0}, "--finalists must be an integer from 1 to 16"),
        ({"target_params": 1000, "objective": "flops"}, "--objective flops and a --target-*"),
        ({"fractions": (0.5, 0.7)}, "--fractions must be values in (0, 1] that include 1.0"),
    ],
)
def test_invalid_settings_cannot_be_made(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        CompressConfig(**values)
    with pytest.raises(ConfigError):  # nor by changing valid ones
        replace(CompressConfig(), **values)
    with pytest.raises(ConfigError):  # nor from a settings file
        config_from_mapping({k.replace("_", "-"): v for k, v in values.items()}, where="settings.yaml")


def test_the_outside_world_is_checked_at_the_edge_not_when_settings_are_made(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    cfg = CompressConfig(tensorboard=str(blocked / "tb"), init_policy=str(tmp_path))  # values alone are fine
    with pytest.raises(ConfigError):
        cfg.validate()
    no_policy = CompressConfig(init_policy=str(tmp_path))
    with pytest.raises(ConfigError, match="holds no trained policy"):
        no_policy.validate()
    assert CompressConfig().validate() == CompressConfig()


def test_an_onnxruntime_latency_needs_onnxruntime_installed(monkeypatch):
    import importlib.util

    cfg = CompressConfig(target_latency_ms=1.0, latency_runtime="onnxruntime")  # the values alone are fine
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'n2n\[export\]'"):
        cfg.validate()
    assert CompressConfig(target_latency_ms=1.0).validate().latency_runtime == "torch"  # PyTorch needs nothing


def test_compress_help_lists_the_settings_group_by_group():
    parser = build_parser()
    compress = parser._subparsers._group_actions[0].choices["compress"]
    titles = [group.title for group in compress._action_groups]
    assert [t for t in titles if t.endswith(" settings")] == [f"{g} settings" for g in GROUPS]
    for group in compress._action_groups:
        if group.title.endswith(" settings"):
            listed = [a.dest for a in group._group_actions]
            assert listed == settings_by_group()[group.title.removesuffix(" settings")]


def test_settings_cannot_be_changed_after_they_are_checked():
    """Settings are frozen: an invalid value cannot be assigned past __post_init__'s checks (use replace)."""
    import dataclasses

    cfg = CompressConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.updates = -1
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, updates=-1)


def test_an_unset_schedule_follows_the_target_and_explicit_values_win(tmp_path):
    """Without a --target-* the search runs 12 updates of 60-step candidates; with one, 24 updates of 20-step
    candidates with up to 4 draws; whatever the user sets (option, file or protocol preset) is kept."""
    from n2n.cli.options import config_from

    untargeted = CompressConfig()
    assert (untargeted.updates, untargeted.steps, untargeted.max_draws) == (12, 60, 1)
    for target in ({"target_params": 5000}, {"target_flops": 10**6}, {"target_latency_ms": 2.0}):
        cfg = CompressConfig(**target)
        assert (cfg.updates, cfg.steps, cfg.max_draws) == (24, 20, 4)
    mixed = CompressConfig(target_params=5000, steps=60, max_draws=2)
    assert (mixed.updates, mixed.steps, mixed.max_draws) == (24, 60, 2)
    paper = CompressConfig.preset("paper", target_params=5000)
    assert (paper.updates, paper.max_draws) == (100, 1)  # the protocol's own schedule
    parser = build_parser()
    command = ["compress", "--teacher", "t", "--out", str(tmp_path), "--target-params", "900"]
    cfg = config_from(parser.parse_args(command))
    assert (cfg.updates, cfg.steps) == (24, 20)
    cfg = config_from(parser.parse_args([*command, "--updates", "3"]))
    assert (cfg.updates, cfg.max_draws) == (3, 4)
    # what a run records is the resolved schedule, so reading it back (resume, reports) gives the same settings
    cfg = CompressConfig(target_params=5000)
    assert config_from_mapping(cfg.to_dict()) == cfg
    assert config_from_mapping({**CompressConfig().to_dict(), "target_params": 5000}).updates == 12  # recorded: kept
    help_text = parser._subparsers._group_actions[0].choices["compress"].format_help()
    assert "(default: 12; 24 with a --target-*)" in " ".join(help_text.split())
