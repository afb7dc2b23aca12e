"""Parallel evaluation in worker processes: failure isolation and the same results as serial evaluation."""

import pytest
import torch

from n2n.errors import N2NError
from n2n.search.candidate import CandidateSettings, EvalContext
from n2n.search.parallel import ProcessPoolEvaluator
from n2n.surgery import Edits

pytestmark = pytest.mark.slow


def _context():
    return EvalContext(
        teacher=torch.nn.Linear(4, 2),
        input_shape=(4,),
        protected=(),
        x_train=torch.zeros(4, 4),
        z_train=torch.zeros(4, 2),
        x_val=torch.zeros(4, 4),
        y_val=torch.zeros(4, dtype=torch.long),
        teacher_params=10,
        teacher_val_accuracy=1.0,
        settings=CandidateSettings(steps=1, batch_size=2, lr=0.1, weight_decay=0.0),
    )


def test_a_dying_worker_costs_only_its_candidate():
    from _worker_tasks import die_on_removal

    evaluator = ProcessPoolEvaluator(_context(), workers=2, task=die_on_removal)
    try:
        batch = [Edits.make(keep={"a": 0.5}), Edits.make(removed=["a"]), Edits.make(keep={"b": 0.5})]
        results = evaluator.evaluate(batch)
        assert [r.edits for r in results] == batch  # in order
        assert results[0].valid and results[2].valid
        assert not results[1].valid and results[1].reward == -1.0
        assert "worker process died" in results[1].reason
        # the pool is usable afterwards
        assert evaluator.evaluate([Edits.make(keep={"c": 0.5})])[0].valid
    finally:
        evaluator.close()


def test_workers_that_cannot_start_stop_the_search_with_a_hint():
    from _worker_tasks import die_on_removal

    evaluator = ProcessPoolEvaluator(_context(), workers=2, task=die_on_removal)
    try:
        with pytest.raises(N2NError, match="__main__"):
            evaluator.evaluate([Edits.make(removed=["a"]), Edits.make(removed=["b"])])
    finally:
        evaluator.close()


def test_a_fatal_first_candidate_does_not_look_like_a_start_failure():
    from _worker_tasks import die_on_removal

    evaluator = ProcessPoolEvaluator(_context(), workers=2, task=die_on_removal)
    try:
        results = evaluator.evaluate([Edits.make(removed=["a"]), Edits.make(keep={"b": 0.5})])
        assert not results[0].valid and results[1].valid
    finally:
        evaluator.close()


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(parent: int) -> list[int]:
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="reads process states from /proc")
def test_workers_exit_when_the_search_process_is_killed(tmp_path):
    """A search killed without shutting its pool down (SIGKILL here) leaves no worker processes behind."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    script = tmp_path / "search.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _worker_tasks import worker_pid
        from n2n.search.parallel import ProcessPoolEvaluator
        from n2n.surgery import Edits

        if __name__ == "__main__":
            evaluator = ProcessPoolEvaluator(None, 2, task=worker_pid)
            results = evaluator.evaluate([Edits.make(keep={{"a": 0.5}}), Edits.make(keep={{"b": 0.5}})])
            print(*{{r.params for r in results}}, flush=True)
            time.sleep(600)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    pids = _children(proc.pid)  # every worker, busy or idle, and multiprocessing's helpers
    assert workers and set(workers) <= set(pids) and all(_running(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in pids)
