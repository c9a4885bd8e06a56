"""The most queried TLDs (Space-Saving): its guarantees, its bounded table under a random-TLD
flood, and the C table (which the C UDP loop counts into) equal to the Python one."""

from __future__ import annotations

import collections
import os
import random

import pytest

from imrs.answer import fastc
from imrs.serve.toplabels import CAPACITY, TopLabels, label_text, make_top_labels

NATIVE = fastc._fastpath if fastc.enabled() and hasattr(fastc._fastpath, "TopLabels") else None
KINDS = ["python", "c"] if NATIVE is not None else ["python"]


def table(kind: str, capacity: int):
    key = os.urandom(16)
    return NATIVE.TopLabels(capacity, key) if kind == "c" else TopLabels(capacity, key)


def zipf_stream(rng: random.Random, n: int, labels: int, junk_share: float) -> list[bytes]:
    """Queries whose TLDs follow a Zipf law over `labels` real ones, mixed with random junk TLDs."""
    real = [f"tld{i}".encode() for i in range(labels)]
    weights = [1 / (i + 1) for i in range(labels)]
    out = []
    for _ in range(n):
        if rng.random() < junk_share:
            out.append(bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randrange(1, 12))))
        else:
            out.append(rng.choices(real, weights)[0])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_heavy_hitters_are_kept_with_bounded_error(kind):
    """Every label counted more than N / capacity times is kept; each kept count is at most its
    error above the truth and never below it; the table never holds more than capacity."""
    rng = random.Random(5)
    stream = zipf_stream(rng, 60_000, 400, junk_share=0.5)
    capacity = 64
    top = table(kind, capacity)
    for label in stream:
        top.add(label)
    truth = collections.Counter(stream)
    kept = {label: (count, error) for label, count, error in top.top(-1)}
    assert len(kept) == capacity
    assert sum(count for count, _ in kept.values()) == len(stream)  # Space-Saving keeps the total
    for label, true_count in truth.items():
        if true_count > len(stream) / capacity:
            assert label in kept, label
    for label, (count, error) in kept.items():
        assert count - error <= truth[label] <= count, label
    # With the table a worker keeps, the five most queried real TLDs come out on top, in
    # order, though half the queries are junk (their counts are more than twice the error
    # bound N / capacity apart).
    top = table(kind, CAPACITY)
    for label in stream:
        top.add(label)
    assert [label for label, _, _ in top.top(5)] == [f"tld{i}".encode() for i in range(5)]


@pytest.mark.parametrize("kind", KINDS)
def test_case_long_labels_and_the_root(kind):
    top = table(kind, 8)
    for label in (b"COM", b"com", b"Com", b"", b"", b"x" * 63):
        top.add(label)
    top.add(b"y" * 64)  # not a label: ignored
    assert top.top(-1) == [(b"com", 3, 0), (b"", 2, 0), (b"x" * 63, 1, 0)]
    assert top.top(1) == [(b"com", 3, 0)]
    top.reset()
    assert top.top(-1) == []


@pytest.mark.skipif(NATIVE is None, reason="the C extension is not built")
@pytest.mark.parametrize("capacity", [1, 2, 7, 64, 512])
def test_c_table_equals_python_table(capacity):
    """The same adds give the same entries, counts and errors (the same heap moves), also with
    takeovers on every other add."""
    rng = random.Random(capacity)
    stream = zipf_stream(rng, 20_000, 300, junk_share=0.3)
    stream += [label.upper() for label in stream[:2000]]
    c, py = NATIVE.TopLabels(capacity, os.urandom(16)), TopLabels(capacity, bytes(16))
    for i, label in enumerate(stream):
        c.add(label)
        py.add(label)
        if i % 997 == 0:
            assert c.top(-1) == py.top(-1), i
    assert c.top(-1) == py.top(-1)
    assert c.top(5) == py.top(5)


@pytest.mark.skipif(NATIVE is None, reason="the C extension is not built")
def test_c_table_rejects_bad_arguments():
    with pytest.raises(ValueError):
        NATIVE.TopLabels(0, bytes(16))
    with pytest.raises(ValueError):
        NATIVE.TopLabels(8, bytes(15))
    with pytest.raises(TypeError):
        NATIVE.TopLabels(8, bytes(16)).add("com")
    assert type(make_top_labels()) is NATIVE.TopLabels


def test_label_text():
    assert label_text(b"") == "."
    assert label_text(b"com") == "com"
    assert label_text(b"a.b\x00") == "a\\.b\\000"
