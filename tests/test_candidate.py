import pytest

from n2n.search.candidate import candidate_steps


@pytest.mark.parametrize(
    ("steps", "teacher_macs", "student_macs", "max_scale", "expected"),
    [
        (150, 1000, 1000, 4.0, 150),  # as costly as the teacher: the base budget
        (150, 1000, 500, 4.0, 300),  # half the FLOPs: twice the steps, same compute
        (150, 1000, 400, 4.0, 375),
        (150, 1000, 100, 4.0, 600),  # ten times fewer FLOPs: capped at 4x
        (150, 1000, 100, 1.0, 150),  # scaling off
        (150, 1000, 2000, 4.0, 150),  # a wider student never trains less than --steps
        (150, 0, 100, 4.0, 150),  # no reference: fixed budget
    ],
)
def test_candidate_steps_exact(steps, teacher_macs, student_macs, max_scale, expected):
    assert candidate_steps(steps, teacher_macs, student_macs, max_scale) == expected


def _result(seconds, eval_seconds):
    from n2n.search.candidate import CandidateResult
    from n2n.surgery import Edits

    return CandidateResult(Edits(), 1, 1, 0.5, 0.5, "", seconds, 0.0, eval_seconds)


def test_batch_wall_time_is_split_by_the_share_of_scoring():
    from n2n.search.loop import _account

    seconds = {"candidates": 1.0}
    # two workers: 10 s of wall time for 16 s of per-process work, 4 s of it scoring -> a quarter of the wall time
    _account(seconds, 10.0, [_result(8.0, 1.0), _result(8.0, 3.0)])
    assert seconds == {"candidates": pytest.approx(8.5), "evaluation": pytest.approx(2.5)}
    _account(seconds, 2.0, [])  # nothing new was evaluated (all cached): the time counts as training overhead
    assert seconds == {"candidates": pytest.approx(10.5), "evaluation": pytest.approx(2.5)}
