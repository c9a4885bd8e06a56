"""Unique sources for RSSAC002: a mergeable count of distinct query sources (exact, then
HyperLogLog), and the hash under which a source is counted.

Distinct counts cannot be summed across instances (one resolver queries many of them), so each
family is kept as a mergeable :class:`SourceSet` of 64-bit SipHash-2-4 hashes, under a fixed key,
of the address (or of the /64 prefix):

* exact while it holds at most ``exact_threshold`` hashes (default 10,000): the count is exact up
  to 64-bit hash collisions (about 3e-12 for 10,000 sources), and a union of exact sets is exact;
* beyond that, a HyperLogLog sketch (Flajolet et al., 2007) of 2**14 one-octet registers (p=14):
  the hash's top 14 bits pick a register, which keeps the largest 1 + number of leading zeros of
  the other 50 bits. Two sketches merge by the maximum of each register, giving exactly the
  sketch of the union. The count is estimated with Ertl's improved raw estimator ("New cardinality
  estimation algorithms for HyperLogLog sketches", 2017), which includes the small-range
  (linear counting) correction without its seam: the classic estimator's switch at 2.5 * 2**14
  leaves a bias of about +1.5 % for 45,000-60,000 sources; this one has none measurable.
  Relative standard error: 1.04 / sqrt(2**14) = 0.81 %; 99.9 % of estimates fall within 2.7 %.

A set's state is a JSON object (:meth:`SourceSet.to_json`), which :mod:`imrs.telemetry.rssac002`
writes into the ``.sketch`` file beside each ``unique-sources`` report. The sketches hold hashes,
not addresses, but an IPv4 hash can be reversed by trying all 2**32 addresses: keep them as
private as query logs.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import struct
import zlib
from typing import Any, Literal, TypeAlias

from siphash24 import siphash24

Family: TypeAlias = Literal[4, 6]
Address: TypeAlias = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_EXACT_THRESHOLD = 10_000
DEFAULT_PRECISION = 14
MIN_PRECISION, MAX_PRECISION = 4, 18


class SketchFormatError(ValueError):
    """A source set's JSON state (:meth:`SourceSet.from_json`) that is not one."""


#: SipHash-2-4 key of source hashes: fixed, as sketches of different instances must hash alike
#: (and the C UDP loop, csrc/fastpath/traffic.c, hashes with it too)
SOURCE_HASH_KEY = b"imrs-rssac002-v2"
_IPV4_MAPPED = b"\0" * 10 + b"\xff\xff"


def source_hash(item: bytes) -> int:
    """The 64-bit hash under which a source (packed address or /64 prefix) is counted."""
    return int.from_bytes(siphash24(item, key=SOURCE_HASH_KEY).digest(), "little")


def client_address(address: Address) -> tuple[Family, bytes]:
    """(4 or 6, packed address) of a client; IPv4-mapped IPv6 addresses (dual-stack sockets)
    count as IPv4."""
    if isinstance(address, bytes):
        packed = address
    elif isinstance(address, str):
        packed = ipaddress.ip_address(address).packed
    else:
        packed = address.packed
    if len(packed) == 4:
        return 4, packed
    if len(packed) != 16:
        raise ValueError(f"a packed address has 4 or 16 octets, not {len(packed)}")
    if packed[:12] == _IPV4_MAPPED:
        return 4, packed[12:]
    return 6, packed


def _sigma(x: float) -> float:
    # Ertl (2017), algorithm 6: the term for the registers still at zero
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    # Ertl (2017), algorithm 6: the term for the registers at the largest rank
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


def hll_estimate(registers: bytes | bytearray, precision: int) -> float:
    """Cardinality estimate of HyperLogLog registers (Ertl's improved raw estimator)."""
    m = 1 << precision
    q = 64 - precision
    histogram = [registers.count(rank) for rank in range(q + 2)]
    z = m * _tau(1.0 - histogram[q + 1] / m)
    for rank in range(q, 0, -1):
        z = 0.5 * (z + histogram[rank])
    z += m * _sigma(histogram[0] / m)
    return m * m / (2.0 * math.log(2.0) * z)


def _pack(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 9)).decode("ascii")


def _unpack(text: object) -> bytes:
    if not isinstance(text, str):
        raise SketchFormatError("data is not a string")
    try:
        return zlib.decompress(base64.b64decode(text, validate=True))
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f"data is not base64 of zlib data ({exc})") from None


class SourceSet:
    """Mergeable count of distinct sources: an exact set of 64-bit hashes while it holds at most
    ``exact_threshold`` of them, then a HyperLogLog sketch of ``2**precision`` registers (see
    the module's docstring for the method and its error)."""

    __slots__ = ("_exact", "_registers", "exact_threshold", "precision")

    def __init__(self, exact_threshold: int = DEFAULT_EXACT_THRESHOLD, precision: int = DEFAULT_PRECISION) -> None:
        if exact_threshold < 0:
            raise ValueError(f"exact_threshold must not be negative: {exact_threshold}")
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be {MIN_PRECISION}..{MAX_PRECISION}, not {precision}")
        self.exact_threshold = exact_threshold
        self.precision = precision
        self._exact: set[int] | None = set()
        self._registers = bytearray()

    @property
    def is_exact(self) -> bool:
        """True while the count is exact (no sketch yet)."""
        return self._exact is not None

    def add(self, item: bytes) -> None:
        """Count one source, given as the octets that identify it (a packed address or prefix)."""
        self.add_hash(source_hash(item))

    def add_hash(self, value: int) -> None:
        """Count one source by its :func:`source_hash`."""
        exact = self._exact
        if exact is None:
            self._insert(value)
            return
        exact.add(value)
        if len(exact) > self.exact_threshold:
            self._to_sketch()

    def update(self, other: SourceSet) -> None:
        """Make this the union of itself and ``other``."""
        if other._exact is not None:
            if self._exact is None:
                for value in other._exact:
                    self._insert(value)
            else:
                self._exact |= other._exact
                if len(self._exact) > self.exact_threshold:
                    self._to_sketch()
            return
        if self._exact is not None:
            self.precision = other.precision  # an exact set fits any sketch
            self._to_sketch()
        elif self.precision != other.precision:
            raise ValueError(f"cannot merge HyperLogLog sketches of precision {self.precision} and {other.precision}")
        self._registers = bytearray(map(max, self._registers, other._registers))

    def count(self) -> int:
        """The number of distinct sources: exact, or the sketch's estimate rounded."""
        if self._exact is not None:
            return len(self._exact)
        return round(hll_estimate(self._registers, self.precision))

    def method(self) -> str:
        """How :meth:`count` is obtained, for the note in the written file."""
        if self._exact is not None:
            return "exact count"
        error = 104 / math.sqrt(1 << self.precision)
        return f"HyperLogLog estimate (p={self.precision}, standard error {error:.2f} %)"

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (see :data:`imrs.telemetry.rssac002.SKETCH_FORMAT`)."""
        if self._exact is not None:
            data = struct.pack(f">{len(self._exact)}Q", *sorted(self._exact))
            return {"kind": "exact", "count": len(self._exact), "data": _pack(data)}
        return {"kind": "hll", "precision": self.precision, "data": _pack(bytes(self._registers))}

    @classmethod
    def from_json(cls, obj: object, exact_threshold: int = DEFAULT_EXACT_THRESHOLD) -> SourceSet:
        """Read :meth:`to_json`'s output back; ValueError if it is not that. An exact set larger
        than ``exact_threshold`` is kept exact until it is next added to."""
        if not isinstance(obj, dict):
            raise SketchFormatError("not a JSON object")
        kind = obj.get("kind")
        if kind == "exact":
            data = _unpack(obj.get("data"))
            count = obj.get("count")
            if len(data) % 8 or not isinstance(count, int) or count != len(data) // 8:
                raise ValueError("exact set: data is not 'count' 64-bit hashes")
            values = set(struct.unpack(f">{count}Q", data))
            if len(values) != count:
                raise ValueError("exact set: repeated hashes")
            sources = cls(exact_threshold)
            sources._exact = values
            return sources
        if kind == "hll":
            precision = obj.get("precision")
            if not isinstance(precision, int) or not MIN_PRECISION <= precision <= MAX_PRECISION:
                raise ValueError(f"HyperLogLog: bad precision {precision!r}")
            registers = _unpack(obj.get("data"))
            if len(registers) != 1 << precision or max(registers) > 64 - precision + 1:
                raise ValueError(f"HyperLogLog: registers do not fit precision {precision}")
            sources = cls(exact_threshold, precision)
            sources._exact = None
            sources._registers = bytearray(registers)
            return sources
        raise ValueError(f"unknown kind {kind!r} (expected 'exact' or 'hll')")

    @classmethod
    def from_registers(cls, registers: bytes, precision: int = DEFAULT_PRECISION,
                       exact_threshold: int = DEFAULT_EXACT_THRESHOLD) -> SourceSet:
        """A sketch from HyperLogLog registers counted elsewhere (the C UDP loop's)."""
        if len(registers) != 1 << precision or max(registers, default=0) > 64 - precision + 1:
            raise ValueError(f"HyperLogLog: registers do not fit precision {precision}")
        sources = cls(exact_threshold, precision)
        sources._exact = None
        sources._registers = bytearray(registers)
        return sources

    def _insert(self, value: int) -> None:
        q = 64 - self.precision
        index = value >> q
        rank = q + 1 - (value & ((1 << q) - 1)).bit_length()
        self._registers[index] = max(self._registers[index], rank)

    def _to_sketch(self) -> None:
        exact, self._exact = self._exact or set(), None
        self._registers = bytearray(1 << self.precision)
        for value in exact:
            self._insert(value)
