"""Traffic counters of one worker: what RSSAC002 and the metrics need, cheap per packet.

One flat ``array("Q")`` (`TrafficCounters.values`) with a fixed layout, so that the C UDP loop
(csrc/fastpath/traffic.c) and the Python paths (the Python UDP loops, TCP) count into the
same cells by the same rules; the supervisor sums the workers' `as_dict` (only non-zero
cells, keys below).  tests/test_traffic.py shows the C loop and the Python loops count alike.

Per query received (every datagram or TCP message, malformed or not):

- ``queries_{udp,tcp}_{ipv4,ipv6}``;
- ``request_size_{udp,tcp}_{LO}``: 16-octet bins of the DNS message (RSSAC002 traffic-sizes),
  LO = 0, 16, ..., 288, the last one open (288 octets and over);
- for a query whose question parses (a header, QDCOUNT >= 1, an uncompressed name of at
  most 255 octets, type and class): ``qtype_{N}`` (N < 256) or ``qtype_other``, and
  ``edns_none`` / ``edns_plain`` / ``edns_do`` by the record that follows the question when
  it is the only record besides it (an OPT record; with the DO bit).

Per response sent (handed to the kernel):

- ``responses_{udp,tcp}_{ipv4,ipv6}``; ``response_size_{udp,tcp}_{LO}``, LO = 0, ..., 4096
  (the last open);
- ``rcode_{N}`` (the full rcode: the header's four bits and the OPT record's upper eight,
  N <= 23) or ``rcode_other``; ``truncated`` (TC set).

Per query, its source address, for RSSAC002 unique-sources (`TrafficCounters.sources`):
distinct IPv4 addresses, IPv6 addresses and IPv6 /64 prefixes, each a mergeable
:class:`~imrs.telemetry.unique_sources.SourceSet` (exact, then HyperLogLog).

Per query whose question parses, its top-level label (the last label of the question name;
the root name's is empty), in the Space-Saving table `TrafficCounters.tlds`
(:mod:`imrs.serve.toplabels`); `TrafficCounters.top_tlds` reports the most queried as
``tld_<label>`` keys with their estimated counts.

Per batch (UDP: the datagrams one receive call brought; TCP: each query), the processing
time from receiving to sending, in ``latency_{udp,tcp}_{LE}`` for LE (microseconds, upper
bounds of non-cumulative buckets) in `LATENCY_BOUNDS_US`, and ``latency_{udp,tcp}_inf``.

The histograms' sums (Prometheus' ``_sum``): ``request_octets_{udp,tcp}`` and
``response_octets_{udp,tcp}``, the octets of the messages counted in the size bins, and
``latency_sum_us_{udp,tcp}``, the microseconds (rounded, per query) counted in the latency
buckets.
"""

from __future__ import annotations

import struct
from array import array

from imrs.answer import fastc
from imrs.answer.query import read_name
from imrs.serve.rrl import _last_opt, _skip_name, _skip_records
from imrs.serve.toplabels import label_text, make_top_labels
from imrs.telemetry.rssac002 import DayCounters
from imrs.telemetry.unique_sources import DEFAULT_EXACT_THRESHOLD, SourceSet

_fastpath = fastc._fastpath if fastc.enabled() and hasattr(fastc._fastpath, "SourceCounter") else None
_IPV4_MAPPED = b"\0" * 10 + b"\xff\xff"
#: the unique-sources kinds of RSSAC002, in SourceCounter.export's order
SOURCE_KINDS = ("ipv4", "ipv6", "ipv6_aggregate")

TRANSPORTS = ("udp", "tcp")
FAMILIES = ("ipv4", "ipv6")
REQUEST_BINS = 19  # 0-15 ... 272-287, 288-
RESPONSE_BINS = 257  # 0-15 ... 4080-4095, 4096-
RCODES = 24  # 0 .. 23 (BADCOOKIE); others in one cell
LATENCY_BOUNDS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000)
#: How many of its most queried TLDs a worker reports (it keeps toplabels.CAPACITY).
TOP_TLDS = 50

# the layout (csrc/fastpath/traffic.c has the same numbers)
QUERIES = 0  # [transport * 2 + family]
RESPONSES = 4
RCODE = 8  # RCODES + 1 cells
QTYPE = RCODE + RCODES + 1  # 257 cells: 0..255, other
EDNS = QTYPE + 257  # none, plain, do
TRUNCATED = EDNS + 3
REQUEST_SIZE = TRUNCATED + 1  # [transport * REQUEST_BINS + bin]
RESPONSE_SIZE = REQUEST_SIZE + 2 * REQUEST_BINS  # [transport * RESPONSE_BINS + bin]
LATENCY = RESPONSE_SIZE + 2 * RESPONSE_BINS  # [transport * 10 + bucket]
REQUEST_OCTETS = LATENCY + 2 * (len(LATENCY_BOUNDS_US) + 1)  # [transport]: the histograms' sums
RESPONSE_OCTETS = REQUEST_OCTETS + 2
LATENCY_SUM_US = RESPONSE_OCTETS + 2
SIZE = LATENCY_SUM_US + 2


def _names() -> list[str]:
    """The key of every cell."""
    names = [""] * SIZE
    for t, transport in enumerate(TRANSPORTS):
        for f, family in enumerate(FAMILIES):
            names[QUERIES + t * 2 + f] = f"queries_{transport}_{family}"
            names[RESPONSES + t * 2 + f] = f"responses_{transport}_{family}"
        for b in range(REQUEST_BINS):
            names[REQUEST_SIZE + t * REQUEST_BINS + b] = f"request_size_{transport}_{16 * b}"
        for b in range(RESPONSE_BINS):
            names[RESPONSE_SIZE + t * RESPONSE_BINS + b] = f"response_size_{transport}_{16 * b}"
        for b, bound in enumerate((*LATENCY_BOUNDS_US, "inf")):
            names[LATENCY + t * (len(LATENCY_BOUNDS_US) + 1) + b] = f"latency_{transport}_{bound}"
        names[REQUEST_OCTETS + t] = f"request_octets_{transport}"
        names[RESPONSE_OCTETS + t] = f"response_octets_{transport}"
        names[LATENCY_SUM_US + t] = f"latency_sum_us_{transport}"
    for n in range(RCODES):
        names[RCODE + n] = f"rcode_{n}"
    names[RCODE + RCODES] = "rcode_other"
    for n in range(256):
        names[QTYPE + n] = f"qtype_{n}"
    names[QTYPE + 256] = "qtype_other"
    names[EDNS:EDNS + 3] = ["edns_none", "edns_plain", "edns_do"]
    names[TRUNCATED] = "truncated"
    assert all(names), "a cell without a name"
    return names


NAMES = _names()


class TrafficCounters:
    """The counters of one worker (not thread-safe: the event loop's thread counts)."""

    def __init__(self, exact_threshold: int = DEFAULT_EXACT_THRESHOLD) -> None:
        self.values = array("Q", bytes(8 * SIZE))
        self._day_base = array("Q", bytes(8 * SIZE))  # the values when the day began
        self.exact_threshold = exact_threshold
        #: the distinct sources the Python paths saw (IPv4, IPv6, IPv6 /64: RSSAC002's three)
        self._sources = [SourceSet(exact_threshold) for _ in SOURCE_KINDS]
        #: those the C UDP loop saw (imrs._fastpath.SourceCounter), when it runs
        self.c_sources = _fastpath.SourceCounter(exact_threshold) if _fastpath is not None else None
        #: the most queried top-level labels since the worker started (the C loop's and the
        #: Python paths', in one: the C TopLabels when the extension is built)
        self.tlds = make_top_labels()

    def source(self, peer: bytes) -> None:
        """Count a query's source (packed, 4 or 16 octets; IPv4-mapped counts as IPv4)."""
        if len(peer) == 16 and peer[:12] == _IPV4_MAPPED:
            peer = peer[12:]
        if len(peer) == 4:
            self._sources[0].add(peer)
        else:
            self._sources[1].add(peer)
            self._sources[2].add(peer[:8])

    def sources(self, reset: bool = False) -> dict[str, SourceSet]:
        """The distinct sources so far, by kind (the Python paths' and the C loop's, merged);
        with ``reset``, counting starts afresh (a new UTC day)."""
        out = {}
        for i, kind in enumerate(SOURCE_KINDS):
            merged = SourceSet(self.exact_threshold)
            merged.update(self._sources[i])
            if self.c_sources is not None:
                how, data = self.c_sources.export(i)
                if how == "hll":
                    merged.update(SourceSet.from_registers(data, exact_threshold=self.exact_threshold))
                else:
                    for (value,) in struct.iter_unpack(">Q", data):
                        merged.add_hash(value)
            out[kind] = merged
        if reset:
            self._sources = [SourceSet(self.exact_threshold) for _ in SOURCE_KINDS]
            if self.c_sources is not None:
                self.c_sources.reset()
        return out

    def as_dict(self) -> dict[str, int]:
        """The non-zero cells by key (since the worker started: for the metrics)."""
        return {NAMES[i]: v for i, v in enumerate(self.values) if v}

    def top_tlds(self, n: int = TOP_TLDS) -> dict[str, int]:
        """The ``n`` most queried top-level labels and their (estimated) counts, as counter
        keys ``tld_<label>`` (presentation form; the root is ``tld_.``)."""
        return {f"tld_{label_text(label)}": count for label, count, _error in self.tlds.top(n)}

    def day(self, reset: bool = False) -> dict[str, int]:
        """The non-zero cells counted since the last reset (the UTC day's, for RSSAC002);
        ``reset``: the next day starts now."""
        values = self.values
        base = self._day_base
        out = {NAMES[i]: values[i] - base[i] for i in range(SIZE) if values[i] != base[i]}
        if reset:
            self._day_base = array("Q", values)
        return out

    def query(self, wire: bytes, tcp: bool, ipv6: bool) -> None:
        """Count one query received."""
        v = self.values
        t = 1 if tcp else 0
        v[QUERIES + 2 * t + (1 if ipv6 else 0)] += 1
        v[REQUEST_SIZE + t * REQUEST_BINS + min(len(wire) >> 4, REQUEST_BINS - 1)] += 1
        v[REQUEST_OCTETS + t] += len(wire)
        parsed = question_of(wire)
        if parsed is not None:
            qtype, edns = parsed
            v[QTYPE + (min(256, qtype))] += 1
            v[EDNS + edns] += 1
            last = last_label(wire)
            self.tlds.add(wire[last + 1 : last + 1 + wire[last]])

    def response(self, wire: bytes, tcp: bool, ipv6: bool) -> None:
        """Count one response sent."""
        v = self.values
        t = 1 if tcp else 0
        v[RESPONSES + 2 * t + (1 if ipv6 else 0)] += 1
        v[RESPONSE_SIZE + t * RESPONSE_BINS + min(len(wire) >> 4, RESPONSE_BINS - 1)] += 1
        v[RESPONSE_OCTETS + t] += len(wire)
        if len(wire) >= 12:
            rcode = full_rcode(wire)
            v[RCODE + (min(RCODES, rcode))] += 1
            if wire[2] & 0x02:
                v[TRUNCATED] += 1

    def latency(self, seconds: float, tcp: bool, count: int = 1) -> None:
        """Count ``count`` queries that took ``seconds`` from receipt to sending."""
        us = seconds * 1e6
        b = 0
        for bound in LATENCY_BOUNDS_US:
            if us <= bound:
                break
            b += 1
        t = 1 if tcp else 0
        self.values[LATENCY + t * (len(LATENCY_BOUNDS_US) + 1) + b] += count
        self.values[LATENCY_SUM_US + t] += int(us + 0.5) * count


def question_of(wire: bytes) -> tuple[int, int] | None:
    """(qtype, EDNS cell: 0 none, 1 OPT, 2 OPT with DO) of a query whose question parses."""
    n = len(wire)
    if n < 12 or not (wire[4] or wire[5]):
        return None
    try:
        pos = read_name(wire, 12)
    except ValueError:
        return None
    if pos + 4 > n:
        return None
    qtype = (wire[pos] << 8) | wire[pos + 1]
    pos += 4
    edns = 0
    # the OPT record right after the question, when it is the only other record
    if (wire[4] == 0 and wire[5] == 1 and not (wire[6] or wire[7] or wire[8] or wire[9]) and wire[10] == 0
            and wire[11] == 1 and pos + 11 <= n and wire[pos] == 0 and wire[pos + 1] == 0 and wire[pos + 2] == 41):
        edns = 2 if wire[pos + 7] & 0x80 else 1
    return qtype, edns


def last_label(wire: bytes) -> int:
    """Where the question name's last label starts (its length octet; 12, the root's octet,
    for the root), in a query whose question parses (`question_of`)."""
    pos = last = 12
    while wire[pos]:
        last = pos
        pos += wire[pos] + 1
    return last


def full_rcode(response: bytes) -> int:
    """The response's rcode with the OPT record's extended bits (RFC 6891)."""
    rcode = response[3] & 0x0F
    if not (response[10] or response[11]):
        return rcode
    try:
        o = 12
        for _ in range((response[4] << 8) | response[5]):
            o = _skip_name(response, o) + 4
        start = _last_opt(response, o)
        if start < 0:  # walk the records to the OPT
            o = _skip_records(response, o, ((response[6] << 8) | response[7]) + ((response[8] << 8) | response[9]))
            for _ in range((response[10] << 8) | response[11]):
                b = response[o]
                e = o + 2 if b >= 0xC0 else o + 1 if b == 0 else _skip_name(response, o)
                if b == 0 and response[e] == 0 and response[e + 1] == 41:
                    start = o
                    break
                o = e + 10 + ((response[e + 8] << 8) | response[e + 9])
        if start >= 0:
            return rcode | (response[start + 5] << 4)  # the TTL's first octet
    except IndexError:
        pass
    return rcode


def day_counters(counters: dict[str, int], sources: dict[str, SourceSet],
                 load_times: dict[int, float] | None = None) -> DayCounters:
    """A UTC day's RSSAC002 counts from the workers' day (`WorkerPool.day`: counter keys as
    above, sources by `SOURCE_KINDS`) and the zone keepers' load times (serial -> seconds)."""
    day = DayCounters.new()
    for t, transport in enumerate(TRANSPORTS):
        for family in (4, 6):
            day.queries[(transport, family)] = counters.get(f"queries_{transport}_ipv{family}", 0)
            day.responses[(transport, family)] = counters.get(f"responses_{transport}_ipv{family}", 0)
        day.request_sizes[transport] = [counters.get(NAMES[REQUEST_SIZE + t * REQUEST_BINS + b], 0)
                                        for b in range(REQUEST_BINS)]
        day.response_sizes[transport] = [counters.get(NAMES[RESPONSE_SIZE + t * RESPONSE_BINS + b], 0)
                                         for b in range(RESPONSE_BINS)]
    # (imrs sends no rcode above 23: "rcode_other" stays empty and is left out)
    day.rcodes = {n: counters[f"rcode_{n}"] for n in range(RCODES) if counters.get(f"rcode_{n}")}
    for kind, target in zip(SOURCE_KINDS, (day.sources_ipv4, day.sources_ipv6, day.sources_ipv6_aggregate)):
        if kind in sources:
            target.update(sources[kind])
    for serial, seconds in (load_times or {}).items():
        day.record_load_time(serial, seconds)
    return day
