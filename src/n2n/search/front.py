"""The accuracy-size front of a search: the students no other student beats at once on size and accuracy.

A search evaluates about a hundred students; the front keeps those that are more accurate than every smaller one.
A few of them, at sizes apart from each other and from the chosen student, are fine-tuned too, so that a user who
needs another size picks it from the same search. Pure functions of candidate results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from n2n.search.candidate import CandidateResult

#: Front students differ from each other and from the chosen student by at least this factor in parameters: closer
#: ones would cost a fine-tune each and tell the user little more.
MIN_SIZE_RATIO = 1.25

#: Front students whose search accuracy is more than this far below the chosen student's are not offered: a short
#: distillation ranks students, so a few points below is still a useful small point, far below is not.
ACCURACY_SPAN = 0.05


def accuracy_front(results: Iterable[CandidateResult], ok: Callable[[CandidateResult], bool]) -> list[CandidateResult]:
    """The students for which ``ok`` holds that are more accurate than every smaller one, smallest first.

    Ties in size keep the more accurate student; ties in both keep the first by key, so the front is reproducible.
    """
    candidates = sorted(
        (r for r in results if r.valid and ok(r)), key=lambda r: (r.params, -r.val_accuracy, r.edits.key())
    )
    front: list[CandidateResult] = []
    for r in candidates:  # of equal size the more accurate comes first, so a later one never beats it
        if not front or r.val_accuracy > front[-1].val_accuracy:
            front.append(r)
    return front


def pick_front(
    front: list[CandidateResult],
    chosen: CandidateResult,
    k: int,
    min_ratio: float = MIN_SIZE_RATIO,
    span: float = ACCURACY_SPAN,
) -> list[CandidateResult]:
    """Up to ``k - 1`` front students besides ``chosen``, spread over the front's sizes (each next pick is the one
    farthest in log-parameters from those picked so far), smallest first.

    Students within ``min_ratio`` of a picked size, or more than ``span`` below ``chosen``'s search accuracy, are
    left out.
    """
    picked = [chosen]
    pool = [r for r in front if r.edits.key() != chosen.edits.key() and r.val_accuracy >= chosen.val_accuracy - span]

    def gap(r: CandidateResult) -> float:
        return min(abs(math.log(r.params / p.params)) for p in picked)

    while len(picked) < k:
        pool = [r for r in pool if gap(r) >= math.log(min_ratio)]
        if not pool:
            break
        far = max(pool, key=lambda r: (gap(r), r.val_accuracy, r.edits.key()))
        picked.append(far)
        pool.remove(far)
    return sorted(picked[1:], key=lambda r: r.params)


def top_students(
    results: Iterable[CandidateResult],
    ok: Callable[[CandidateResult], bool],
    score: Callable[[CandidateResult], float],
    k: int,
) -> list[CandidateResult]:
    """The ``k`` valid students for which ``ok`` holds with the highest ``score``, best first (ties: the smaller,
    then the later key): the student a search with a target chooses, and the finalists it fine-tunes first."""
    ranked = sorted(
        (r for r in results if r.valid and ok(r)), key=lambda r: (score(r), -r.params, r.edits.key()), reverse=True
    )
    return ranked[:k]
