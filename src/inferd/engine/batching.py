"""Cutting batches: plain functions over plain lists, unit-tested on their own."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def cut_batch(
    pending: Sequence[T],
    length: Callable[[T], int],
    max_batch_size: int,
    max_batch_tokens: int,
    window: int,
    cost: Callable[[int], float] | None = None,
    lanes: int = 1,
) -> tuple[list[T], list[T]]:
    """Choose the next batch from ``pending`` (oldest first) -> (batch, rest).

    The oldest ``window`` items are sorted by length; the batch grows from the oldest item
    (so nothing waits forever behind a stream of shorter inputs) by taking, one at a time,
    the neighbour closest to it in length, while the padded size (count x longest) stays
    within ``max_batch_tokens`` and the count within ``max_batch_size``.

    Padding costs compute, every forward pass has a fixed cost, and past some size a pass
    gets slower per token. With ``cost`` (seconds of a forward pass of N padded tokens, as
    measured by ``calibrate``) the growth step is chosen by cost instead of taking all:

    * when everything pending fits in one pass, the step that makes this pass plus one
      more pass for the rest cheapest (often: all of it; an outlier waits when it would
      make every other input pay for its length); with ``lanes`` > 1 (another worker is idle
      and takes the rest at once, on cores of its own) the step that makes the slower of the
      two passes fastest instead: one pass of 16 on one worker's core while the other core
      idles costs twice two passes of 8 side by side;
    * otherwise the step with the most inputs per second, ``count / cost(count x longest)``.

    Without ``cost`` the batch is as large as allowed. The rest keeps arrival order.
    """
    if not pending:
        return [], []
    head = list(pending[:window])
    tail = list(pending[window:])
    sizes = [length(item) for item in head]
    order = sorted(range(len(head)), key=sizes.__getitem__)
    anchor = order.index(0)  # the oldest item
    lo = hi = anchor  # the batch is order[lo : hi + 1]
    longest = sizes[order[anchor]]
    plan_two = cost is not None and len(head) == len(pending) and len(head) <= max_batch_size

    def score(lo: int, hi: int, longest: int) -> float:
        count = hi - lo + 1
        if cost is None:
            return count
        if not plan_two:
            return count / cost(count * longest)
        rest = len(order) - count
        rest_longest = sizes[order[-1]] if hi + 1 < len(order) else (sizes[order[lo - 1]] if lo else 0)
        after = cost(rest * rest_longest) if rest else 0.0
        if lanes > 1:
            return -max(cost(count * longest), after)
        return -(cost(count * longest) + after)

    best = (lo, hi)
    best_score = score(lo, hi, longest)
    while hi - lo + 1 < max_batch_size:
        options = []  # (distance in length from the anchor, new lo, new hi, new longest)
        if lo > 0:
            below = sizes[order[lo - 1]]
            options.append((sizes[order[anchor]] - below, lo - 1, hi, longest))
        if hi + 1 < len(order):
            above = sizes[order[hi + 1]]
            options.append((above - sizes[order[anchor]], lo, hi + 1, max(longest, above)))
        fitting = [o for o in sorted(options) if o[3] * (o[2] - o[1] + 1) <= max_batch_tokens]
        if not fitting:
            break
        _, lo, hi, longest = fitting[0]
        current = score(lo, hi, longest)
        if current >= best_score:
            best, best_score = (lo, hi), current
    chosen = order[best[0] : best[1] + 1]
    taken = set(chosen)
    batch = [head[i] for i in chosen]
    rest = [head[i] for i in range(len(head)) if i not in taken] + tail
    return batch, rest


class CostCurve:
    """Seconds of one forward pass as a function of its padded tokens: piecewise linear
    through measured points, extended along the last segment."""

    def __init__(self, points: Sequence[tuple[int, float]]):
        self.points = sorted(points)
        self._tokens = [p[0] for p in self.points]
        self._seconds = [p[1] for p in self.points]

    def __call__(self, tokens: int) -> float:
        xs, ys = self._tokens, self._seconds
        if tokens <= xs[0]:
            return ys[0]
        i = bisect.bisect_left(xs, tokens)
        if i == len(xs):
            i -= 1
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return max(y0 + (y1 - y0) * (tokens - x0) / (x1 - x0), 1e-9)


def calibrate(
    run: Callable[[int, int], float], max_tokens: int, probe_length: int = 16, repeats: int = 2
) -> CostCurve:
    """Time ``run(count, length)`` (a forward pass of ``count`` inputs of ``length`` tokens,
    in seconds) at padded sizes from one input up to ``max_tokens``; the fastest of
    ``repeats`` runs counts."""
    points = []
    tokens = probe_length
    while True:
        count = max(1, tokens // probe_length)
        points.append((count * probe_length, min(run(count, probe_length) for _ in range(repeats))))
        if tokens >= max_tokens:
            break
        tokens = min(tokens * 4 if tokens < 256 else tokens * 2, max_tokens)
    return CostCurve(points)
