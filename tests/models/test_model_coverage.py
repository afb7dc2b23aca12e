"""The 43 torchvision and timm classifiers of issue 21: inspect, random edits, reload (see model_coverage.py).

Skipped unless torchvision and timm import (they do not beside the CPU torch of ``.venv``); ``scripts/test-models``
makes ``.venv-models`` and runs them. ``N2N_COVERAGE_OUT=FILE`` appends one JSON line per model to FILE.
"""

import json
import os
from dataclasses import asdict

import pytest
import torch

try:
    import timm  # noqa: F401
    import torchvision  # noqa: F401
except Exception as err:  # noqa: BLE001 - torchvision beside another torch build fails with RuntimeError, not ImportError
    pytest.skip(
        f"needs torchvision and timm ({type(err).__name__}: {err}); run scripts/test-models", allow_module_level=True
    )

from model_coverage import EDIT_SETS, MODELS, cover

pytestmark = pytest.mark.models


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _record(out, row):
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("model", list(MODELS))
def test_model_inspects_takes_random_edits_and_reloads(model):
    out = os.environ.get("N2N_COVERAGE_OUT")
    try:
        result = cover(model)  # an untyped exception, a failing backward or a reload that differs fails here
    except BaseException as err:
        _record(out, {"model": model, "untyped": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"})
        raise
    _record(out, asdict(result))
    if not result.inspected:  # refused whole: one typed line that names the construct
        assert result.refused and "\n" not in result.refused
        return
    assert result.removable + result.shrinkable > 0, "inspect offers no decision at all"
    assert result.working + len(result.rejected) <= EDIT_SETS
    assert result.reloaded == result.working
    assert all(reason and "\n" not in reason for reason in result.rejected)
