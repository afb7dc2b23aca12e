"""Imports go one way: the surgery and the training code know nothing of the search, reports read run data only,
and no module reaches into another's private names."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "n2n"

#: package -> the n2n packages and modules it must not import
FORBIDDEN = {
    "n2n.surgery": ("n2n.search", "n2n.train", "n2n.compress", "n2n.baselines", "n2n.cli", "n2n.report"),
    "n2n.train": ("n2n.search", "n2n.settings", "n2n.compress", "n2n.baselines", "n2n.cli", "n2n.report"),
    "n2n.search": ("n2n.compress", "n2n.baselines", "n2n.cli", "n2n.report", "n2n.reporting"),
    "n2n.models": ("n2n.search", "n2n.train", "n2n.compress", "n2n.cli", "n2n.report"),
    "n2n.data": ("n2n.search", "n2n.train", "n2n.surgery", "n2n.models", "n2n.compress", "n2n.cli", "n2n.report"),
}
#: what the reporting package may import besides itself: run data and files, never the search or a model
REPORTING_MAY = ("n2n.errors", "n2n.files", "n2n.runlog", "n2n.reporting")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import of an n2n module in ``path``, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("n2n")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("n2n"):
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


MODULES = sorted(SRC.rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_layout_is_what_this_test_reads():
    names = {module_name(p) for p in MODULES}
    assert {"n2n.surgery", "n2n.train", "n2n.search", "n2n.reporting", "n2n.train.finetune"} <= names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(package):
    bad = [
        f"{module_name(p)}:{line} imports {target}"
        for p in MODULES
        if within(module_name(p), package)
        for target, _, line in imports(p)
        if any(within(target, f) for f in FORBIDDEN[package])
    ]
    assert not bad, "\n".join(bad)


def test_reporting_reads_run_data_only():
    bad = [
        f"{module_name(p)}:{line} imports {target}"
        for p in MODULES
        if within(module_name(p), "n2n.reporting")
        for target, _, line in imports(p)
        if not any(within(target, allowed) for allowed in REPORTING_MAY)
    ]
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = [
        f"{module_name(p)}:{line} imports {name} from {target}"
        for p in MODULES
        for target, names, line in imports(p)
        for name in names
        if name.startswith("_") and target != module_name(p)
    ]
    assert not bad, "\n".join(bad)


def test_reporting_knows_the_stages_in_the_order_the_search_runs_them():
    from n2n.reporting.tensorboard import STAGE_ORDER
    from n2n.search.stages import STAGES as TABLE
    from n2n.settings import STAGES

    assert STAGE_ORDER == STAGES == tuple(TABLE)


def test_networks_are_trained_by_one_loop():
    """Every network n2n trains (teacher, candidates, fine-tune) goes through ``n2n.train.fit``; the only other
    backward pass is the policy-gradient update of the search's own policies."""
    allowed = {"n2n.train.fit", "n2n.search.loop"}
    callers = {
        module_name(p)
        for p in MODULES
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p)))
        if isinstance(node, ast.Attribute) and node.attr == "backward"
    }
    assert callers <= allowed, f"backward() outside the training loop: {sorted(callers - allowed)}"
    assert "n2n.train.fit" in callers
