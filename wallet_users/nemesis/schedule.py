"""When each fault of a --nemesis spec happens, as seconds into the load: pure and reproducible
from the nemesis seed, generated as the load goes (a web UI test has no known end)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .spec import FaultSpec


@dataclass(frozen=True, order=True)
class PlannedFault:
    at: float  # seconds after the load began
    index: int  # the spec's position, to break ties in the spec's order
    spec: FaultSpec


def schedule(specs: list[FaultSpec], seed: int) -> Iterator[PlannedFault]:
    """Every fault of every spec in time order, without end unless each spec has a count. Each
    spec draws its jitter from a generator of its own, so adding a fault to a spec does not move
    the others."""
    heap: list[tuple[float, int, int]] = []  # (at, spec index, occurrence)
    draws = [random.Random(f"{seed}:{i}:{spec.fault}") for i, spec in enumerate(specs)]
    times = [spec.first for spec in specs]
    for i, spec in enumerate(specs):
        heapq.heappush(heap, (_jittered(spec.first, spec.first, spec, draws[i]), i, 1))
    while heap:
        at, i, occurrence = heapq.heappop(heap)
        spec = specs[i]
        yield PlannedFault(round(at, 3), i, spec)
        if spec.count is not None and occurrence >= spec.count:
            continue
        times[i] += spec.every
        heapq.heappush(heap, (_jittered(times[i], spec.every, spec, draws[i]), i, occurrence + 1))


def _jittered(at: float, gap: float, spec: FaultSpec, draw: random.Random) -> float:
    """`at` moved by up to half the jitter of the gap before it (the first fault's gap is
    from the load's start), so faults never drift from their nominal times."""
    return max(0.0, at + draw.uniform(-1, 1) * spec.jitter * gap / 2)


def planned(specs: list[FaultSpec], seed: int, horizon: float) -> list[PlannedFault]:
    """The faults that fall within the first `horizon` seconds of the load."""
    out = []
    for fault in schedule(specs, seed):
        if fault.at > horizon:
            break
        out.append(fault)
    return out
