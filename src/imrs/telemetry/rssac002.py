"""RSSAC002 v5 daily reports: count one instance's traffic for a UTC day, write the per-metric
YAML files, and merge several instances' files into one service-wide set.

RSSAC002 (the RSSAC advisory on measurements of the root server system, version 5) has each
root server operator publish, per UTC day, one small YAML document per metric:

* ``traffic-volume``: queries received and responses sent, per transport and address family;
* ``traffic-sizes``: DNS message sizes in 16-octet bins (``0-15``, ``16-31``, ...), requests up
  to an open bin ``288-``, responses up to ``4096-``; empty bins are left out. A size is that of
  the DNS message alone: no IP, UDP or TCP header, and no two-octet TCP length prefix;
* ``rcode-volume``: responses sent per RCODE (the full, EDNS-extended RCODE, so 16 for BADVERS);
* ``unique-sources``: distinct source addresses of queries: IPv4, IPv6, and IPv6 /64 prefixes;
* ``load-time``: per zone serial, whole seconds from the NOTIFY (or first sight of the serial)
  until it is served.

``zone-size`` is the Root Zone Maintainer's to report and is not written here.

Files are named and laid out as in the L-root archive: ``<prefix>-YYYYMMDD-<metric>.yaml``, the
prefix derived from the service (``l.root-servers.net`` -> ``l-root``), a ``---`` start, the header
keys ``version``, ``service``, ``start-period``, ``metric``, then the metric's keys in L-root's
order, nothing quoted, nested maps indented by two spaces. They are written by hand (PyYAML is not
needed at run time) and read back by a strict parser for exactly this subset of YAML, which
refuses anything else with the file's name and line.

Unique sources, and merging them
--------------------------------
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

That state is written next to the ``unique-sources`` YAML as
``<prefix>-YYYYMMDD-unique-sources.sketch`` (JSON, :data:`SKETCH_FORMAT` version
:data:`SKETCH_VERSION`), and comment lines after the document's keys say which counts are exact
and which estimated; the document itself carries only the spec's keys. The sketches hold hashes,
not addresses, but an IPv4 hash can be reversed by trying all 2**32 addresses: keep them as
private as query logs.

Merging
-------
:func:`merge` adds several instances' files for one day: traffic counters, size bins and RCODEs
are summed; unique sources are merged through the sketches (a missing sketch is an error); a
serial's load time is the strict 95th percentile (nearest rank) of the instances that report it,
as RSSAC002 defines the service's load time as the time until 95 % of its instances serve the new
zone. With 19 instances or fewer that is the largest of them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import ipaddress
import json
import math
import os
import re
import struct
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeAlias

from siphash24 import siphash24

from imrs.zone.store import write_atomically

VERSION = "rssac002v5"
METRICS: tuple[str, ...] = ("traffic-volume", "traffic-sizes", "rcode-volume", "unique-sources", "load-time")

Transport: TypeAlias = Literal["udp", "tcp"]
Family: TypeAlias = Literal[4, 6]
Address: TypeAlias = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
Metric: TypeAlias = str
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp")
FAMILIES: tuple[Family, ...] = (4, 6)

BIN_WIDTH = 16
REQUEST_OPEN_BIN = 288  # requests of 288 octets and more share the bin "288-"
RESPONSE_OPEN_BIN = 4096  # responses of 4096 octets and more share the bin "4096-"
REQUEST_BINS = REQUEST_OPEN_BIN // BIN_WIDTH + 1
RESPONSE_BINS = RESPONSE_OPEN_BIN // BIN_WIDTH + 1

DEFAULT_EXACT_THRESHOLD = 10_000
DEFAULT_PRECISION = 14
MIN_PRECISION, MAX_PRECISION = 4, 18
DEFAULT_LOAD_TIME_PERCENTILE = 95.0

SKETCH_FORMAT = "imrs-rssac002-unique-sources"
SKETCH_VERSION = 2  # 2: SipHash-2-4 source hashes (1: BLAKE2b)
SKETCH_SUFFIX = ".sketch"

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2

# (key, "queries" or "responses", transport, family) in the order L-root publishes them.
TRAFFIC_VOLUME_KEYS: tuple[tuple[str, str, Transport, Family], ...] = (
    ("dns-udp-queries-received-ipv4", "queries", "udp", 4),
    ("dns-udp-queries-received-ipv6", "queries", "udp", 6),
    ("dns-tcp-queries-received-ipv6", "queries", "tcp", 6),
    ("dns-tcp-queries-received-ipv4", "queries", "tcp", 4),
    ("dns-udp-responses-sent-ipv4", "responses", "udp", 4),
    ("dns-udp-responses-sent-ipv6", "responses", "udp", 6),
    ("dns-tcp-responses-sent-ipv6", "responses", "tcp", 6),
    ("dns-tcp-responses-sent-ipv4", "responses", "tcp", 4),
)
# (key, transport, "request" or "response") in the order L-root publishes them.
TRAFFIC_SIZES_KEYS: tuple[tuple[str, Transport, str], ...] = (
    ("udp-request-sizes", "udp", "request"),
    ("udp-response-sizes", "udp", "response"),
    ("tcp-request-sizes", "tcp", "request"),
    ("tcp-response-sizes", "tcp", "response"),
)
UNIQUE_SOURCES_KEYS = ("num-sources-ipv4", "num-sources-ipv6", "num-sources-ipv6-aggregate")
HEADER_KEYS = ("version", "service", "start-period", "metric")

_MAX_RCODE = 4095  # 12 bits: 4 in the header, 8 in the OPT record
_MAX_SERIAL = 2**32 - 1


class Rssac002Error(Exception):
    """A report file that cannot be read, written, or merged; the message names the file."""


class SketchFormatError(ValueError):
    """A source set's JSON state (:meth:`SourceSet.from_json`) that is not one."""


# --- sizes ----------------------------------------------------------------------------------


def size_bin(size: int, open_from: int) -> int:
    """Index of the 16-octet bin for a message of ``size`` octets; ``open_from`` and larger
    share the last (open) bin."""
    if size < 0:
        raise ValueError(f"message size must not be negative: {size}")
    return min(size, open_from) // BIN_WIDTH


def bin_label(index: int, open_from: int) -> str:
    """``0-15``, ``16-31``, ..., and ``288-`` (or ``4096-``) for the open bin."""
    low = index * BIN_WIDTH
    return f"{low}-" if low >= open_from else f"{low}-{low + BIN_WIDTH - 1}"


_BIN_RE = re.compile(r"(\d+)-(\d*)\Z")


def parse_bin_label(label: str, open_from: int) -> int:
    """The bin index of a label written by :func:`bin_label`; ValueError for anything else."""
    match = _BIN_RE.match(label)
    if match is None:
        raise ValueError(f"bin {label!r} is not LOW-HIGH or LOW-")
    low, high = int(match.group(1)), match.group(2)
    if low % BIN_WIDTH:
        raise ValueError(f"bin {label!r} does not start at a multiple of {BIN_WIDTH}")
    if not high:
        if low != open_from:
            raise ValueError(f"open bin {label!r}: the only open bin is {open_from}-")
    elif low >= open_from or int(high) != low + BIN_WIDTH - 1:
        raise ValueError(f"bin {label!r}: bins are {BIN_WIDTH} octets wide below {open_from}, then {open_from}-")
    return low // BIN_WIDTH


# --- unique sources -------------------------------------------------------------------------

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
        """The state as a JSON object (see :data:`SKETCH_FORMAT`)."""
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


# --- one day's counts -----------------------------------------------------------------------


def _zero_volume() -> dict[tuple[Transport, Family], int]:
    return {(transport, family): 0 for transport in TRANSPORTS for family in FAMILIES}


def _zero_request_bins() -> dict[Transport, list[int]]:
    return {transport: [0] * REQUEST_BINS for transport in TRANSPORTS}


def _zero_response_bins() -> dict[Transport, list[int]]:
    return {transport: [0] * RESPONSE_BINS for transport in TRANSPORTS}


@dataclass(eq=False)
class DayCounters:
    """One instance's (or one worker's) RSSAC002 counts for one UTC day.

    Every field merges by addition (:meth:`merge_from`, ``+=``), so per-worker counters can be
    kept apart and added up at the end of the day; the data plane may also add its own
    aggregated numbers straight into the fields:

    * ``queries`` / ``responses``: by ``(transport, family)``, e.g. ``("udp", 6)``;
    * ``request_sizes`` / ``response_sizes``: by transport, a list of bin counts, index
      :func:`size_bin` (``REQUEST_BINS`` and ``RESPONSE_BINS`` long, the last bin open);
    * ``rcodes``: responses by extended RCODE;
    * ``sources_ipv4`` / ``sources_ipv6`` / ``sources_ipv6_aggregate``: distinct query sources
      (packed address; first 8 octets for the /64);
    * ``load_times``: whole seconds by zone serial.
    """

    queries: dict[tuple[Transport, Family], int] = field(default_factory=_zero_volume)
    responses: dict[tuple[Transport, Family], int] = field(default_factory=_zero_volume)
    request_sizes: dict[Transport, list[int]] = field(default_factory=_zero_request_bins)
    response_sizes: dict[Transport, list[int]] = field(default_factory=_zero_response_bins)
    rcodes: dict[int, int] = field(default_factory=dict)
    sources_ipv4: SourceSet = field(default_factory=SourceSet)
    sources_ipv6: SourceSet = field(default_factory=SourceSet)
    sources_ipv6_aggregate: SourceSet = field(default_factory=SourceSet)
    load_times: dict[int, int] = field(default_factory=dict)

    @classmethod
    def new(cls, exact_threshold: int = DEFAULT_EXACT_THRESHOLD, precision: int = DEFAULT_PRECISION) -> DayCounters:
        """Empty counters whose source sets use these sketch settings."""
        return cls(
            sources_ipv4=SourceSet(exact_threshold, precision),
            sources_ipv6=SourceSet(exact_threshold, precision),
            sources_ipv6_aggregate=SourceSet(exact_threshold, precision),
        )

    def add_query(self, transport: Transport, source: Address, size: int) -> None:
        """Count a query of ``size`` octets (DNS message only) received over ``transport``
        from ``source``."""
        family, packed = client_address(source)
        index = size_bin(size, REQUEST_OPEN_BIN)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        self.queries[(transport, family)] += 1
        self.request_sizes[transport][index] += 1
        if family == 4:
            self.sources_ipv4.add(packed)
        else:
            self.sources_ipv6.add(packed)
            self.sources_ipv6_aggregate.add(packed[:8])

    def add_response(self, transport: Transport, client: Address, size: int, rcode: int) -> None:
        """Count a response of ``size`` octets (DNS message only) with extended ``rcode`` sent
        over ``transport`` to ``client``."""
        family, _ = client_address(client)
        index = size_bin(size, RESPONSE_OPEN_BIN)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        if not 0 <= rcode <= _MAX_RCODE:
            raise ValueError(f"rcode must be 0..{_MAX_RCODE}, not {rcode}")
        self.responses[(transport, family)] += 1
        self.response_sizes[transport][index] += 1
        self.rcodes[rcode] = self.rcodes.get(rcode, 0) + 1

    def record_load_time(self, serial: int, seconds: float) -> None:
        """Serial ``serial`` was served ``seconds`` after its NOTIFY or first sight. Recorded
        twice, the longer time is kept (the instance serves it once every part does)."""
        if not 0 <= serial <= _MAX_SERIAL:
            raise ValueError(f"serial must be 0..{_MAX_SERIAL}, not {serial}")
        if seconds < 0:
            raise ValueError(f"load time must not be negative: {seconds}")
        whole = int(seconds + 0.5)
        self.load_times[serial] = max(whole, self.load_times.get(serial, 0))

    def merge_from(self, other: DayCounters) -> DayCounters:
        """Add ``other`` (another worker's counts for the same day) into these; returns self.
        Counts add, source sets unite, load times keep the longer."""
        for key, value in other.queries.items():
            self.queries[key] = self.queries.get(key, 0) + value
        for key, value in other.responses.items():
            self.responses[key] = self.responses.get(key, 0) + value
        for mine, theirs in ((self.request_sizes, other.request_sizes), (self.response_sizes, other.response_sizes)):
            for transport, bins in theirs.items():
                mine[transport] = [a + b for a, b in zip(mine[transport], bins, strict=True)]
        for rcode, value in other.rcodes.items():
            self.rcodes[rcode] = self.rcodes.get(rcode, 0) + value
        self.sources_ipv4.update(other.sources_ipv4)
        self.sources_ipv6.update(other.sources_ipv6)
        self.sources_ipv6_aggregate.update(other.sources_ipv6_aggregate)
        for serial, seconds in other.load_times.items():
            self.load_times[serial] = max(seconds, self.load_times.get(serial, 0))
        return self

    def __iadd__(self, other: DayCounters) -> Self:
        return self.merge_from(other)

    def source_sets(self) -> dict[str, SourceSet]:
        """The three source sets by their ``unique-sources`` key."""
        return {
            "num-sources-ipv4": self.sources_ipv4,
            "num-sources-ipv6": self.sources_ipv6,
            "num-sources-ipv6-aggregate": self.sources_ipv6_aggregate,
        }


# --- writing --------------------------------------------------------------------------------

Body: TypeAlias = list[tuple[str | int, int | list[tuple[str | int, int]]]]

_LABEL_RE = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SERVICE_RE = re.compile(rf"{_LABEL_RE}(?:\.{_LABEL_RE})*\Z")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ROOT_SERVICE_RE = re.compile(r"([a-z0-9-]+)\.root-servers\.net\Z")
_YAML_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}


def normalize_service(service: str) -> str:
    """The service name as written: lower case, no trailing dot; ValueError if not a host name."""
    name = service.strip().rstrip(".").lower()
    if not _SERVICE_RE.match(name):
        raise ValueError(f"service {service!r} is not a host name such as l.root-servers.net")
    return name


def default_prefix(service: str) -> str:
    """File name prefix for a service: ``l.root-servers.net`` -> ``l-root`` (as in the RSSAC002
    archive); other names have their dots turned into hyphens."""
    name = normalize_service(service)
    match = _ROOT_SERVICE_RE.match(name)
    return f"{match.group(1)}-root" if match else name.replace(".", "-")


def report_name(prefix: str, day: datetime.date, metric: Metric) -> str:
    """``<prefix>-YYYYMMDD-<metric>.yaml``."""
    return f"{prefix}-{day:%Y%m%d}-{metric}.yaml"


def start_period(day: datetime.date) -> str:
    """``YYYY-MM-DDT00:00:00Z``: the start of the UTC day."""
    return f"{day:%Y-%m-%d}T00:00:00Z"


def _plain(text: str) -> str:
    # Host names are plain YAML strings unless they would read as a number or a boolean.
    if text[:1].isdigit() or text in _YAML_WORDS:
        return "'" + text.replace("'", "''") + "'"
    return text


def metric_body(metric: Metric, counters: DayCounters) -> Body:
    """The metric's keys and values in the order they are written."""
    if metric == "traffic-volume":
        return [
            (key, (counters.queries if kind == "queries" else counters.responses).get((transport, family), 0))
            for key, kind, transport, family in TRAFFIC_VOLUME_KEYS
        ]
    if metric == "traffic-sizes":
        body: Body = []
        for key, transport, kind in TRAFFIC_SIZES_KEYS:
            bins = (counters.request_sizes if kind == "request" else counters.response_sizes)[transport]
            open_from = REQUEST_OPEN_BIN if kind == "request" else RESPONSE_OPEN_BIN
            body.append((key, [(bin_label(index, open_from), count) for index, count in enumerate(bins) if count]))
        return body
    if metric == "rcode-volume":
        return [(rcode, count) for rcode, count in sorted(counters.rcodes.items()) if count]
    if metric == "unique-sources":
        return [(key, sources.count()) for key, sources in counters.source_sets().items()]
    if metric == "load-time":
        return [("time", sorted(counters.load_times.items()))]
    raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")


def render_report(metric: Metric, service: str, day: datetime.date, body: Body, comments: Sequence[str] = ()) -> str:
    """One report as L-root writes it; ``comments`` become ``# `` lines after the keys."""
    lines = [
        "---",
        f"version: {VERSION}",
        f"service: {_plain(normalize_service(service))}",
        f"start-period: {start_period(day)}",
        f"metric: {metric}",
    ]
    for key, value in body:
        if isinstance(value, int):
            lines.append(f"{key}: {value}")
        elif value:
            lines.append(f"{key}:")
            lines.extend(f"  {inner}: {count}" for inner, count in value)
        else:
            lines.append(f"{key}: {{}}")  # an empty map; a bare "key:" would read as null
    lines.extend(f"# {comment}" for comment in comments)
    return "\n".join(lines) + "\n"


def sketch_path(unique_sources_yaml: str | os.PathLike[str]) -> Path:
    """Where the sketch of a ``unique-sources`` file is kept: same name, ``.sketch``."""
    return Path(unique_sources_yaml).with_suffix(SKETCH_SUFFIX)


def sketch_document(service: str, day: datetime.date, counters: DayCounters) -> dict[str, Any]:
    """The JSON object written to a ``.sketch`` file."""
    return {
        "format": SKETCH_FORMAT,
        "version": SKETCH_VERSION,
        "service": normalize_service(service),
        "start-period": start_period(day),
        "method": "per family: the set of 64-bit BLAKE2b hashes (person 'imrs-rssac002') of the packed "
        "address or /64 prefix while small ('exact'), else HyperLogLog registers ('hll', merge by "
        "register maximum); see imrs.telemetry.rssac002",
        "sets": {key: sources.to_json() for key, sources in counters.source_sets().items()},
    }


def write_day(
    directory: str | os.PathLike[str],
    service: str,
    day: datetime.date,
    counters: DayCounters,
    *,
    prefix: str | None = None,
    metrics: Iterable[Metric] = METRICS,
    sketch: bool = True,
    annotate: bool = True,
) -> list[Path]:
    """Write ``counters`` as one RSSAC002 file per metric for UTC ``day`` into ``directory``
    (created if missing), each atomically; returns the paths written.

    ``prefix`` defaults to :func:`default_prefix` of ``service``. With ``sketch`` the source
    sets go to the ``.sketch`` file beside the ``unique-sources`` file (written first, so that
    file never lacks its sketch); with ``annotate`` the ``unique-sources`` file ends with
    comment lines saying which counts are exact and which estimated.
    """
    service = normalize_service(service)
    prefix = default_prefix(service) if prefix is None else prefix
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"prefix {prefix!r}: letters, digits, '.', '_' and '-' only")
    day = datetime.date(day.year, day.month, day.day)  # a datetime names its day
    wanted = list(dict.fromkeys(metrics))
    for metric in wanted:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for metric in wanted:
        path = out / report_name(prefix, day, metric)
        comments: list[str] = []
        if metric == "unique-sources":
            if sketch:
                state = json.dumps(sketch_document(service, day, counters), indent=1) + "\n"
                write_atomically(str(sketch_path(path)), state.encode(), mode=0o640)  # hashes of sources
                written.append(sketch_path(path))
            if annotate:
                comments = _unique_sources_note(counters, sketch_path(path).name if sketch else None)
        text = render_report(metric, service, day, metric_body(metric, counters), comments)
        write_atomically(str(path), text.encode(), mode=0o644)  # published reports
        written.append(path)
    return written


def _unique_sources_note(counters: DayCounters, sketch_name: str | None) -> list[str]:
    sets = counters.source_sets()
    notes = [f"imrs: {key}: {sources.method()}" for key, sources in sets.items()]
    threshold = max(sources.exact_threshold for sources in sets.values())
    notes.append(f"imrs: exact up to {threshold} sources, then HyperLogLog; merge with `imrs rssac002 merge`")
    if sketch_name:
        notes.append(f"imrs: mergeable state in {sketch_name}")
    return notes


# --- reading --------------------------------------------------------------------------------

_INT_RE = re.compile(r"[-+]?[0-9]+\Z")
_START_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T00:00:00Z\Z")
_NAME_RE = re.compile(r".+-(\d{8})-(" + "|".join(re.escape(m) for m in METRICS) + r")\.yaml\Z")


@dataclass(frozen=True)
class Report:
    """One validated RSSAC002 file: its header and its metric's values (keys as in the file:
    strings, or ints for RCODEs and serials; nested maps for ``traffic-sizes`` and ``load-time``)."""

    path: Path
    service: str
    day: datetime.date
    metric: Metric
    values: dict[Any, Any]


def _strip_comment(value: str) -> str:
    if value.startswith("#"):
        return ""
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        while value[0] == "'" and end != -1 and value[end + 1:end + 2] == "'":
            end = value.find("'", end + 2)  # '' is a quote inside single quotes
        if end == -1:
            raise ValueError("unterminated quoted string")
        rest = value[end + 1:].strip()
        if rest and not rest.startswith("#"):
            raise ValueError(f"text after a quoted string: {rest!r}")
        return value[:end + 1]
    cut = value.find(" #")
    return (value if cut == -1 else value[:cut]).rstrip()


def _scalar(text: str) -> str | int:
    if text[:1] == "'":
        return text[1:-1].replace("''", "'")
    if text[:1] == '"':
        if "\\" in text:
            raise ValueError("escape sequences are not supported")
        return text[1:-1]
    if not text or text[0] in "[]{}&*!|>%@`,?":
        raise ValueError(f"unsupported YAML value {text!r}")
    return int(text) if _INT_RE.match(text) else text


def parse_document(text: str, where: str) -> dict[Any, Any]:
    """Parse the YAML subset RSSAC002 files use: one document of ``key: value`` lines, values
    being integers, plain or quoted strings, ``{}``, or a map one level deeper (``key:`` then
    indented ``key: value`` lines). Comments and a ``---`` start are allowed. Anything else is
    a :class:`Rssac002Error` naming ``where`` and the line."""
    document: dict[Any, Any] = {}
    nested: dict[Any, Any] | None = None  # the map that indented lines go into
    nested_indent = 0
    pending_key: Any = None  # the key whose map is being read
    started = ended = False
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = raw.rstrip("\r").rstrip(" ")
        try:
            if "\t" in line:
                raise ValueError("tab character (YAML indents with spaces)")
            stripped = line.lstrip(" ")
            if not stripped or stripped.startswith("#"):
                continue
            if ended:
                raise ValueError("text after the end of the document ('...')")
            indent = len(line) - len(stripped)
            if indent == 0 and stripped in ("---", "..."):
                if stripped == "...":
                    ended = True
                elif started or document:
                    raise ValueError("a second YAML document (one report per file)")
                started = True
                continue
            key_text, colon, value_text = stripped.partition(": ")
            if colon:
                value_text = _strip_comment(value_text.strip())
            elif stripped.endswith(":"):
                key_text, value_text = stripped[:-1], ""
            else:
                raise ValueError("expected 'key: value'")
            key = _scalar(key_text.strip())
            if indent == 0:
                if key in document:
                    raise ValueError(f"key {key!r} appears twice")
                nested = None
                if value_text == "":
                    nested = {}
                    nested_indent = 0
                    document[key] = None  # null unless indented lines follow
                    pending_key = key
                elif value_text == "{}":
                    document[key] = {}
                else:
                    document[key] = _scalar(value_text)
                continue
            if nested is None:
                raise ValueError("indented line outside a map")
            if nested_indent == 0:
                nested_indent = indent
                document[pending_key] = nested
            elif indent != nested_indent:
                raise ValueError(f"indented by {indent} spaces, the lines above by {nested_indent}")
            if value_text in ("", "{}"):
                raise ValueError("maps nest only one level in RSSAC002 files")
            if key in nested:
                raise ValueError(f"key {key!r} appears twice")
            nested[key] = _scalar(value_text)
        except ValueError as exc:
            raise Rssac002Error(f"{where}:{number}: malformed YAML: {exc}") from None
    if not document:
        raise Rssac002Error(f"{where}: empty: no YAML keys")
    return document


def _count(value: object, where: str, key: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Rssac002Error(f"{where}: {key}: expected a count (an integer >= 0), got {value!r}")
    return value


def _map(value: object, where: str, key: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rssac002Error(f"{where}: {key}: expected a map, got {value!r}")
    return value


def _exact_keys(values: dict[Any, Any], expected: Sequence[str], where: str, metric: str) -> None:
    missing = [key for key in expected if key not in values]
    extra = [str(key) for key in values if key not in expected]
    if missing:
        raise Rssac002Error(f"{where}: {metric}: missing {', '.join(missing)}")
    if extra:
        raise Rssac002Error(f"{where}: {metric}: unexpected key(s) {', '.join(extra)}")


def _validate_values(metric: str, values: dict[Any, Any], where: str) -> dict[Any, Any]:
    if metric == "traffic-volume":
        _exact_keys(values, [key for key, *_ in TRAFFIC_VOLUME_KEYS], where, metric)
        return {key: _count(value, where, key) for key, value in values.items()}
    if metric == "traffic-sizes":
        _exact_keys(values, [key for key, *_ in TRAFFIC_SIZES_KEYS], where, metric)
        checked: dict[Any, Any] = {}
        for key, _transport, kind in TRAFFIC_SIZES_KEYS:
            open_from = REQUEST_OPEN_BIN if kind == "request" else RESPONSE_OPEN_BIN
            bins: dict[str, int] = {}
            for label, count in _map(values[key], where, key).items():
                try:
                    parse_bin_label(str(label), open_from)
                except ValueError as exc:
                    raise Rssac002Error(f"{where}: {key}: {exc}") from None
                bins[str(label)] = _count(count, where, f"{key}: {label}")
            checked[key] = bins
        return checked
    if metric == "rcode-volume":
        for rcode in values:
            if not isinstance(rcode, int) or not 0 <= rcode <= _MAX_RCODE:
                raise Rssac002Error(f"{where}: rcode-volume: key {rcode!r} is not an RCODE (0..{_MAX_RCODE})")
        return {rcode: _count(count, where, rcode) for rcode, count in values.items()}
    if metric == "unique-sources":
        _exact_keys(values, UNIQUE_SOURCES_KEYS, where, metric)
        return {key: _count(value, where, key) for key, value in values.items()}
    if metric == "load-time":
        _exact_keys(values, ["time"], where, metric)
        times: dict[int, int] = {}
        for serial, seconds in _map(values["time"], where, "time").items():
            if not isinstance(serial, int) or not 0 <= serial <= _MAX_SERIAL:
                raise Rssac002Error(f"{where}: load-time: key {serial!r} is not a zone serial")
            times[serial] = _count(seconds, where, f"time: {serial}")
        return {"time": times}
    raise Rssac002Error(f"{where}: metric {metric!r} is not one imrs reads (known: {', '.join(METRICS)})")


def parse_report(text: str, path: str | os.PathLike[str]) -> Report:
    """Validate one RSSAC002 v5 file's text; :class:`Rssac002Error` naming ``path`` if it is
    not one: malformed YAML, another version, missing or unexpected keys, bad bins or counts."""
    where = os.fspath(path)
    document = parse_document(text, where)
    missing = [key for key in HEADER_KEYS if key not in document]
    if missing:
        raise Rssac002Error(f"{where}: not an RSSAC002 file: missing {', '.join(missing)}")
    version = document.pop("version")
    if version != VERSION:
        raise Rssac002Error(f"{where}: version {version!r}, expected {VERSION}")
    service = document.pop("service")
    try:
        service = normalize_service(str(service))
    except ValueError as exc:
        raise Rssac002Error(f"{where}: {exc}") from None
    start = document.pop("start-period")
    match = _START_RE.match(str(start))
    try:
        if match is None:
            raise ValueError
        day = datetime.date(*(int(group) for group in match.groups()))
    except ValueError:
        raise Rssac002Error(f"{where}: start-period {start!r} is not the start of a UTC day (YYYY-MM-DDT00:00:00Z)") from None
    metric = str(document.pop("metric"))
    values = _validate_values(metric, document, where)
    name = _NAME_RE.match(Path(path).name)
    if name is not None:  # a conventionally named file must hold what its name says
        if name.group(2) != metric:
            raise Rssac002Error(f"{where}: holds metric {metric}, but its name says {name.group(2)}")
        if name.group(1) != f"{day:%Y%m%d}":
            raise Rssac002Error(f"{where}: start-period is {day}, but its name says {name.group(1)}")
    return Report(Path(path), service, day, metric, values)


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read and validate one RSSAC002 v5 file (see :func:`parse_report`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise Rssac002Error(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rssac002Error(f"{os.fspath(path)}: not UTF-8 text") from None
    return parse_report(text, path)


def load_sketch(report: Report, exact_threshold: int = DEFAULT_EXACT_THRESHOLD) -> dict[str, SourceSet]:
    """The source sets kept beside a ``unique-sources`` report, checked against it."""
    path = sketch_path(report.path)
    where = os.fspath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Rssac002Error(
            f"{report.path}: no sketch {path.name} beside it: unique sources can only be merged from "
            "the sketches imrs writes with its reports"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Rssac002Error(f"{where}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rssac002Error(f"{where}: not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != SKETCH_FORMAT:
        raise Rssac002Error(f"{where}: not an imrs unique-sources sketch (format {SKETCH_FORMAT!r})")
    if document.get("version") != SKETCH_VERSION:
        raise Rssac002Error(f"{where}: sketch version {document.get('version')!r}, expected {SKETCH_VERSION}")
    if document.get("service") != report.service or document.get("start-period") != start_period(report.day):
        raise Rssac002Error(
            f"{where}: is for {document.get('service')} {document.get('start-period')}, "
            f"but {report.path.name} is for {report.service} {start_period(report.day)}"
        )
    sets_json = document.get("sets")
    if not isinstance(sets_json, dict):
        raise Rssac002Error(f"{where}: no 'sets' object")
    sets: dict[str, SourceSet] = {}
    for key in UNIQUE_SOURCES_KEYS:
        try:
            sets[key] = SourceSet.from_json(sets_json.get(key), exact_threshold)
        except ValueError as exc:
            raise Rssac002Error(f"{where}: {key}: {exc}") from None
        if sets[key].count() != report.values[key]:
            raise Rssac002Error(
                f"{where}: {key} counts {sets[key].count()}, but {report.path.name} says "
                f"{report.values[key]}: a stale or foreign sketch"
            )
    return sets


# --- merging --------------------------------------------------------------------------------


@dataclass
class MergedDay:
    """The service-wide counts :func:`merge` made of several instances' files."""

    service: str
    day: datetime.date
    counters: DayCounters
    metrics: tuple[Metric, ...]  # those found in the inputs, in METRICS order
    instances: int  # files per metric
    files: tuple[Path, ...]


def percentile_nearest_rank(values: Sequence[int], percentile: float) -> int:
    """The strict (nearest-rank) percentile: the smallest value that at least ``percentile`` %
    of ``values`` do not exceed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def find_reports(inputs: Iterable[str | os.PathLike[str]], day: datetime.date | None = None) -> list[Path]:
    """Files named on the command line, plus each directory's ``*-YYYYMMDD-<metric>.yaml``
    files (of ``day`` only, if given); each file once."""
    found: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(
                entry for entry in path.iterdir()
                if (name := _NAME_RE.match(entry.name)) and entry.is_file()
                and (day is None or name.group(1) == f"{day:%Y%m%d}")
            )
            if not matches:
                which = f" for {day}" if day else ""
                raise Rssac002Error(f"{path}: no RSSAC002 files (*-YYYYMMDD-<metric>.yaml){which}")
        elif path.exists():
            matches = [path]
        else:
            raise Rssac002Error(f"{path}: no such file or directory")
        for match in matches:
            found.setdefault(match.resolve(), match)
    return list(found.values())


def merge(
    inputs: Iterable[str | os.PathLike[str]],
    service: str | None = None,
    *,
    day: datetime.date | None = None,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    load_time_percentile: float = DEFAULT_LOAD_TIME_PERCENTILE,
) -> MergedDay:
    """Merge several instances' RSSAC002 files (files, or directories of them) for one day.

    Counters, size bins and RCODEs are summed; unique sources are united through the ``.sketch``
    files (one missing is an error); a serial's load time is the ``load_time_percentile``
    (nearest rank, default the spec's 95) of the instances that report it. The inputs must all
    be RSSAC002 v5 files of one day (``day`` picks it from directories holding several), of one
    service unless ``service`` names the merged one, and must hold as many files of each metric.
    Raises :class:`Rssac002Error` naming the file at fault.
    """
    if not 0 < load_time_percentile <= 100:
        raise ValueError(f"load-time percentile must be in (0, 100], not {load_time_percentile}")
    out_service = None if service is None else normalize_service(service)
    paths = find_reports(inputs, day)
    if not paths:
        raise Rssac002Error("no input files")
    reports = [load_report(path) for path in paths]
    wanted_day = day
    for report in reports:
        if wanted_day is None:
            wanted_day = report.day
        elif report.day != wanted_day:
            days = sorted({str(r.day) for r in reports})
            hint = "" if day else f" (inputs cover {', '.join(days)}; choose one)"
            raise Rssac002Error(f"{report.path}: is for {report.day}, not {wanted_day}{hint}")
    assert wanted_day is not None
    if out_service is None:
        services = sorted({report.service for report in reports})
        if len(services) > 1:
            raise Rssac002Error(f"inputs are for several services ({', '.join(services)}): name the merged one")
        out_service = services[0]
    by_metric: dict[str, list[Report]] = {}
    for report in reports:
        by_metric.setdefault(report.metric, []).append(report)
    counts = {metric: len(group) for metric, group in by_metric.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{n} {metric}" for metric, n in sorted(counts.items()))
        raise Rssac002Error(f"mismatched metrics: every instance must supply the same ones, found {listing}")
    counters = DayCounters.new(exact_threshold)
    serial_times: dict[int, list[int]] = {}
    for report in reports:
        _add_report(counters, report, serial_times, exact_threshold)
    counters.load_times = {
        serial: percentile_nearest_rank(times, load_time_percentile) for serial, times in serial_times.items()
    }
    metrics = tuple(metric for metric in METRICS if metric in by_metric)
    return MergedDay(out_service, wanted_day, counters, metrics, next(iter(counts.values())), tuple(paths))


def _add_report(counters: DayCounters, report: Report, serial_times: dict[int, list[int]], exact_threshold: int) -> None:
    values = report.values
    if report.metric == "traffic-volume":
        for key, kind, transport, family in TRAFFIC_VOLUME_KEYS:
            table = counters.queries if kind == "queries" else counters.responses
            table[(transport, family)] += values[key]
    elif report.metric == "traffic-sizes":
        for key, transport, kind in TRAFFIC_SIZES_KEYS:
            bins = (counters.request_sizes if kind == "request" else counters.response_sizes)[transport]
            open_from = REQUEST_OPEN_BIN if kind == "request" else RESPONSE_OPEN_BIN
            for label, count in values[key].items():
                bins[parse_bin_label(label, open_from)] += count
    elif report.metric == "rcode-volume":
        for rcode, count in values.items():
            counters.rcodes[rcode] = counters.rcodes.get(rcode, 0) + count
    elif report.metric == "unique-sources":
        sets = load_sketch(report, exact_threshold)
        for key, sources in counters.source_sets().items():
            try:
                sources.update(sets[key])
            except ValueError as exc:
                raise Rssac002Error(f"{sketch_path(report.path)}: {key}: {exc}") from None
    elif report.metric == "load-time":
        for serial, seconds in values["time"].items():
            serial_times.setdefault(serial, []).append(seconds)


# --- command line ---------------------------------------------------------------------------


def add_rssac002_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``imrs rssac002`` with ``merge`` and ``check``; returns the group for more commands.
    Each command sets ``rssac002_handler``, which :func:`rssac002_main` runs."""
    group = sub.add_parser("rssac002", help="RSSAC002 daily reports: merge instances' files, check files")
    group_sub = group.add_subparsers(dest="rssac002_command", required=True, metavar="COMMAND")
    merge_cmd = group_sub.add_parser(
        "merge",
        help="merge several instances' RSSAC002 files for one day into the service's",
        description="Merge several instances' RSSAC002 v5 files for one UTC day (files, or directories "
        "holding <prefix>-YYYYMMDD-<metric>.yaml files) into one service-wide set written to --out: counts "
        "summed, unique sources united through the .sketch files, load time the 95th percentile over "
        "instances. Exit 0 when written, 1 when an input is rejected, 2 for usage errors.",
    )
    merge_cmd.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="instance files or directories")
    merge_cmd.add_argument("--out", required=True, metavar="DIR", help="where to write the merged files")
    merge_cmd.add_argument("--service", metavar="NAME", help="service of the merged files (default: the inputs')")
    merge_cmd.add_argument("--prefix", metavar="PREFIX", help="file name prefix (default: from the service, l-root)")
    merge_cmd.add_argument("--day", metavar="YYYY-MM-DD", help="the day to merge, when directories hold several")
    merge_cmd.add_argument(
        "--load-time-percentile", metavar="P", type=float, default=DEFAULT_LOAD_TIME_PERCENTILE,
        help="a serial's merged load time: this percentile (nearest rank) over instances [95]",
    )
    merge_cmd.add_argument(
        "--exact-threshold", metavar="N", type=int, default=DEFAULT_EXACT_THRESHOLD,
        help=f"count sources exactly up to N per family, then by HyperLogLog [{DEFAULT_EXACT_THRESHOLD}]",
    )
    merge_cmd.set_defaults(rssac002_handler=merge_main)
    check = group_sub.add_parser(
        "check",
        help="check RSSAC002 v5 files: header, keys, bins, counts, sketches",
        description="Check RSSAC002 v5 files (or directories of them): one line each. Exit 0 if all "
        "pass, 1 if any is rejected, 2 for usage errors.",
    )
    check.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    check.set_defaults(rssac002_handler=check_main)
    return group_sub


def rssac002_main(args: argparse.Namespace) -> int:
    """Run the ``imrs rssac002`` command parsed into ``args``; returns the exit status."""
    return args.rssac002_handler(args)


def merge_main(args: argparse.Namespace) -> int:
    """``imrs rssac002 merge``: one line on stdout when written, errors on stderr."""
    prog = "imrs rssac002 merge"
    try:
        day = datetime.date.fromisoformat(args.day) if args.day else None
        service = normalize_service(args.service) if args.service else None
        if args.prefix is not None and not _PREFIX_RE.match(args.prefix):
            raise ValueError(f"--prefix {args.prefix!r}: letters, digits, '.', '_' and '-' only")
        if not 0 < args.load_time_percentile <= 100:
            raise ValueError("--load-time-percentile must be in (0, 100]")
        if args.exact_threshold < 0:
            raise ValueError("--exact-threshold must not be negative")
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        merged = merge(args.inputs, service, day=day, exact_threshold=args.exact_threshold,
                       load_time_percentile=args.load_time_percentile)
        out = Path(args.out)
        prefix = args.prefix or default_prefix(merged.service)
        for metric in merged.metrics:  # instance files of one service share names: keep them whole
            target = (out / report_name(prefix, merged.day, metric)).resolve()
            if any(target == path.resolve() for path in merged.files):
                raise Rssac002Error(f"{target}: is an input; choose another --out or --prefix")
        written = write_day(out, merged.service, merged.day, merged.counters, prefix=prefix, metrics=merged.metrics)
    except Rssac002Error as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:
        print(f"{prog}: cannot write {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REJECTED
    names = ", ".join(path.name for path in written)
    print(f"{args.out}: {merged.service} {merged.day}: merged {merged.instances} instance(s): {names}")
    return EXIT_OK


def check_main(args: argparse.Namespace) -> int:
    """``imrs rssac002 check``: one line per file, ``OK`` or the reason it is rejected."""
    try:
        paths = find_reports(args.inputs)
    except Rssac002Error as exc:
        print(f"imrs rssac002 check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for path in paths:
        try:
            report = load_report(path)
            note = ""
            if report.metric == "unique-sources":
                if sketch_path(path).exists():
                    load_sketch(report)
                    note = ", sketch OK"
                else:
                    note = ", no sketch (cannot be merged)"
        except Rssac002Error as exc:
            print(exc)  # every message names the file
            status = EXIT_REJECTED
            continue
        print(f"{path}: OK {report.metric} {report.day} {report.service}{note}")
    return status
