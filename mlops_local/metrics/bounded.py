"""A dict capped in size that evicts the entry whose last activity is the oldest."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """At most ``maxsize`` entries; ``put`` evicts the least recently active ones (by activity time).

    Activity is a timestamp given by the caller (a run's end time), not the call order, so the same
    entries survive whatever order the runs arrive in. A lazy heap keeps eviction O(log n).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: dict[K, tuple[int, V]] = {}
        self._heap: list[tuple[int, int, K]] = []
        self._seq = 0  # tie-break in the heap, so keys never need to be comparable

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        """The value of ``key``, or None."""
        entry = self._data.get(key)
        return None if entry is None else entry[1]

    def activity(self, key: K) -> int | None:
        """The last activity time of ``key``, or None."""
        entry = self._data.get(key)
        return None if entry is None else entry[0]

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, value) pairs, in no particular order."""
        return ((key, entry[1]) for key, entry in self._data.items())

    def put(self, key: K, value: V, activity: int) -> list[K]:
        """Store ``value``; activity only moves forward. Returns the keys evicted to stay under the cap."""
        old = self._data.get(key)
        if old is not None and old[0] >= activity:
            self._data[key] = (old[0], value)
            return []
        self._data[key] = (activity, value)
        self._seq += 1
        heapq.heappush(self._heap, (activity, self._seq, key))
        evicted: list[K] = []
        while len(self._data) > self.maxsize:
            when, _, candidate = heapq.heappop(self._heap)
            entry = self._data.get(candidate)
            if entry is not None and entry[0] == when:
                del self._data[candidate]
                evicted.append(candidate)
        if len(self._heap) > 4 * len(self._data) + 64:
            self._compact()
        return evicted

    def _compact(self) -> None:
        self._heap = [(when, i, key) for i, (key, (when, _)) in enumerate(self._data.items())]
        heapq.heapify(self._heap)
        self._seq = len(self._heap)
