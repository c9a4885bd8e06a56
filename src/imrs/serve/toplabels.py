"""The most queried top-level labels (TLDs), in bounded memory whatever the names: Space-Saving.

Space-Saving (Metwally, Agrawal and El Abbadi, 2005) keeps ``capacity`` entries.  A label
already kept is counted in its entry; any other label takes over the entry with the least
count c, starting at c + 1 with an error of c.  Every label counted more than N / capacity
times (N: all adds) is kept, and an entry's count is at most its error above the truth, so a
random-TLD flood costs a fixed table and cannot push out the real TLDs that most queries ask
for.  The entries are a min-heap on the count.

:class:`TopLabels` is the pure-Python implementation, for when the C extension is not built;
csrc/fastpath/toplabels.c is the same algorithm (the same heap moves, so the same `top` for
the same adds: tests/test_toplabels.py), which the C UDP loop counts into.  `make_top_labels`
gives the C one when it is there.  Labels are counted lower-cased (ASCII), at most 63 octets;
the root name counts as the empty label.
"""

from __future__ import annotations

import os

import dns.name

from imrs.answer import fastc

#: Entries a worker keeps: a label with more than 1/CAPACITY of the queries is always among them.
CAPACITY = 512
_LOWER = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))


class TopLabels:
    """Space-Saving over top-level labels (the interface of ``imrs._fastpath.TopLabels``)."""

    def __init__(self, capacity: int, key: bytes) -> None:
        if not 1 <= capacity <= 65536 or len(key) != 16:
            raise ValueError("TopLabels(capacity: 1..65536, key: 16 octets)")
        self.capacity = capacity
        self._where: dict[bytes, int] = {}  # label -> entry index
        self._labels: list[bytes] = []
        self._counts: list[int] = []
        self._errors: list[int] = []
        self._heap: list[int] = []  # entry indices, the least count first
        self._pos: list[int] = []  # entry index -> heap position

    def add(self, label: bytes) -> None:
        """Count one query whose question name ends in ``label``."""
        if len(label) > 63:
            return
        label = label.translate(_LOWER)
        e = self._where.get(label)
        if e is not None:
            self._counts[e] += 1
            self._sift_down(self._pos[e])
            return
        if len(self._heap) < self.capacity:
            e = len(self._labels)
            self._labels.append(label)
            self._counts.append(1)
            self._errors.append(0)
            self._heap.append(e)
            self._pos.append(e)
            self._where[label] = e
            self._sift_up(e)
            return
        e = self._heap[0]  # the least counted entry is taken over
        least = self._counts[e]
        del self._where[self._labels[e]]
        self._labels[e] = label
        self._where[label] = e
        self._counts[e] = least + 1
        self._errors[e] = least
        self._sift_down(0)

    def top(self, n: int) -> list[tuple[bytes, int, int]]:
        """The ``n`` most counted (n < 0: all) as (label, count, error), most first, then by label."""
        entries = sorted(range(len(self._labels)), key=lambda e: (-self._counts[e], self._labels[e]))
        if n >= 0:
            entries = entries[:n]
        return [(self._labels[e], self._counts[e], self._errors[e]) for e in entries]

    def reset(self) -> None:
        """Forget every label."""
        self.__init__(self.capacity, bytes(16))

    def _swap(self, a: int, b: int) -> None:
        heap, pos = self._heap, self._pos
        heap[a], heap[b] = heap[b], heap[a]
        pos[heap[a]] = a
        pos[heap[b]] = b

    def _sift_down(self, at: int) -> None:
        heap, counts, used = self._heap, self._counts, len(self._heap)
        while True:
            least, left = at, 2 * at + 1
            if left < used and counts[heap[left]] < counts[heap[least]]:
                least = left
            if left + 1 < used and counts[heap[left + 1]] < counts[heap[least]]:
                least = left + 1
            if least == at:
                return
            self._swap(at, least)
            at = least

    def _sift_up(self, at: int) -> None:
        heap, counts = self._heap, self._counts
        while at > 0:
            parent = (at - 1) // 2
            if not counts[heap[at]] < counts[heap[parent]]:
                return
            self._swap(at, parent)
            at = parent


def make_top_labels(capacity: int = CAPACITY) -> TopLabels:
    """The C TopLabels when the extension is built (the C UDP loop counts into it), else the
    Python one; its hash key is random, so that crafted labels cannot make long chains."""
    native = fastc._fastpath if fastc.enabled() else None
    if native is not None and hasattr(native, "TopLabels"):
        return native.TopLabels(capacity, os.urandom(16))
    return TopLabels(capacity, os.urandom(16))


def label_text(label: bytes) -> str:
    """A label in presentation form (escaped as dnspython writes names); the root is "."."""
    return dns.name.Name((label,)).to_text()
