"""The README's Python examples run as written, in a fresh process, with only their budgets made tiny."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
#: budget literals of the examples -> tiny budgets (the only change the test makes to the code)
TINY = {
    "epochs=15": "epochs=4",
    "updates=12": "updates=1, rollouts=2, steps=5, finetune_epochs=1, finetune_min_steps=5",
}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    blocks = python_blocks()
    assert len(blocks) >= 2
    assert any('if __name__ == "__main__":' in b for b in blocks)  # the API example guards its worker processes


@pytest.mark.slow
def test_readme_python_examples_run_as_written(tmp_path):
    """Each example is a script of its own, run in order in one directory (the second loads what the first saved)."""
    blocks = python_blocks()
    joined = "\n".join(blocks)
    for literal in TINY:
        assert literal in joined, f"the README no longer says {literal}: update TINY"
    for i, block in enumerate(blocks):
        for literal, tiny in TINY.items():
            block = block.replace(literal, tiny)
        (tmp_path / f"example{i}.py").write_text(block)
        done = subprocess.run(
            [sys.executable, f"example{i}.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"README example {i + 1}:\n{block}\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "api" / "student" / "spec.json").is_file()
