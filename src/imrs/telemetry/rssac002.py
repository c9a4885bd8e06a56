"""RSSAC002 v5 daily reports: count one instance's traffic for a UTC day, write the
per-metric YAML files, and read them back (strictly validated).

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

Several instances' files are merged into the service's by :mod:`imrs.telemetry.rssac002_merge`;
``imrs rssac002 merge|check`` is :mod:`imrs.telemetry.rssac002_cli`.

Unique sources are counted in mergeable source sets (exact, then HyperLogLog:
:class:`~imrs.telemetry.unique_sources.SourceSet`). Their state is written next to the
``unique-sources`` YAML as ``<prefix>-YYYYMMDD-unique-sources.sketch`` (JSON,
:data:`SKETCH_FORMAT` version :data:`SKETCH_VERSION`), and comment lines after the document's
keys say which counts are exact and which estimated; the document itself carries only the spec's
keys. The sketches hold hashes, not addresses, but an IPv4 hash can be reversed by trying all
2**32 addresses: keep them as private as query logs.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeAlias

from imrs.telemetry.unique_sources import (
    DEFAULT_EXACT_THRESHOLD,
    DEFAULT_PRECISION,
    Address,
    Family,
    SourceSet,
    client_address,
)
from imrs.zone.store import write_atomically

VERSION = "rssac002v5"
METRICS: tuple[str, ...] = ("traffic-volume", "traffic-sizes", "rcode-volume", "unique-sources", "load-time")

Transport: TypeAlias = Literal["udp", "tcp"]
Metric: TypeAlias = str
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp")
FAMILIES: tuple[Family, ...] = (4, 6)

BIN_WIDTH = 16
REQUEST_OPEN_BIN = 288  # requests of 288 octets and more share the bin "288-"
RESPONSE_OPEN_BIN = 4096  # responses of 4096 octets and more share the bin "4096-"
REQUEST_BINS = REQUEST_OPEN_BIN // BIN_WIDTH + 1
RESPONSE_BINS = RESPONSE_OPEN_BIN // BIN_WIDTH + 1

SKETCH_FORMAT = "imrs-rssac002-unique-sources"
SKETCH_VERSION = 2  # 2: SipHash-2-4 source hashes (1: BLAKE2b)
SKETCH_SUFFIX = ".sketch"

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
        "method": "per family: the set of 64-bit SipHash-2-4 hashes (key 'imrs-rssac002-v2') of the packed "
        "address or /64 prefix while small ('exact'), else HyperLogLog registers ('hll', merge by "
        "register maximum); see imrs.telemetry.unique_sources",
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
