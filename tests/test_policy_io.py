"""Saved policies record their features; --init-policy refuses an incompatible one in one line."""

import pytest

from n2n.errors import ConfigError
from n2n.search.policies import RemovalPolicy, ShrinkPolicy
from n2n.search.policy_io import POLICY_VERSION, check_policy_record, policy_record
from n2n.surgery.analysis import FEATURE_DIM, FEATURE_NAMES


def test_record_has_version_and_features_and_rebuilds_the_policy():
    record = policy_record(RemovalPolicy(hidden=7).config())
    assert record["version"] == POLICY_VERSION and record["features"] == list(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == FEATURE_DIM == record["feature_dim"]
    check_policy_record(record, "p.json", "remove")
    assert RemovalPolicy.from_config(record).args == RemovalPolicy(hidden=7).args
    shrink = policy_record(ShrinkPolicy(choices=(0.5, 1.0)).config())
    assert ShrinkPolicy.from_config(shrink).choices == (0.5, 1.0)


def test_a_policy_saved_before_features_were_recorded_still_loads():
    check_policy_record(RemovalPolicy().config(), "old.json", "remove")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"features": list(FEATURE_NAMES[:-1]) + ["other"]},
            "differ from the 12 this n2n computes (log10_params/8, other)",
        ),
        ({"features": list(reversed(FEATURE_NAMES))}, "(their order)"),
        ({"version": POLICY_VERSION + 1}, "newer than this n2n's"),
        ({"feature_dim": 5, "features": None}, "expects 5 features per layer"),
        ({"kind": "shrink"}, "holds a 'shrink' policy, not a 'remove' one"),
    ],
)
def test_incompatible_policies_are_refused(change, message):
    record = {k: v for k, v in {**policy_record(RemovalPolicy().config()), **change}.items() if v is not None}
    with pytest.raises(ConfigError, match="--init-policy") as err:
        check_policy_record(record, "p.json", "remove")
    assert message in str(err.value) and "\n" not in str(err.value)
