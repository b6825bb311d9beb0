"""Cutting batches: plain functions over plain lists, unit-tested on their own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def cut_batch(
    pending: Sequence[T],
    length: Callable[[T], int],
    max_batch_size: int,
    max_batch_tokens: int,
    window: int,
) -> tuple[list[T], list[T]]:
    """Choose the next batch from ``pending`` (oldest first) -> (batch, rest).

    The oldest ``window`` items are sorted by length so that a batch holds inputs of
    similar length (little padding); the batch is the run of that order that contains
    the oldest item, so nothing waits forever behind a stream of shorter inputs. The
    batch is grown while its padded size (count x longest) stays within
    ``max_batch_tokens``; one input always fits. The rest keeps arrival order.
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
    chosen = order[lo : hi + 1]
    taken = set(chosen)
    batch = [head[i] for i in chosen]
    rest = [head[i] for i in range(len(head)) if i not in taken] + tail
    return batch, rest
