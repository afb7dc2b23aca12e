"""Parallel evaluation in worker processes: failure isolation and the same results as serial evaluation."""

import pytest
import torch

from n2n.errors import N2NError
from n2n.search.candidate import CandidateSettings, EvalContext
from n2n.search.parallel import ProcessPoolEvaluator
from n2n.surgery import Edits

pytestmark = pytest.mark.slow


def _context():
    return EvalContext(teacher=torch.nn.Linear(4, 2), input_shape=(4,), protected=(), x_train=torch.zeros(4, 4),
                       z_train=torch.zeros(4, 2), x_val=torch.zeros(4, 4), y_val=torch.zeros(4, dtype=torch.long),
                       teacher_params=10, teacher_val_accuracy=1.0,
                       settings=CandidateSettings(steps=1, batch_size=2, lr=0.1, weight_decay=0.0))


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
