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
