"""Where a zone comes from: source specs, fetching with failover, and the multi-source check.

A zone lists its sources in order of preference: primaries (``ixfr://`` tries IXFR first and
falls back to AXFR, ``axfr://`` always transfers the whole zone), HTTP(S) URLs of a master
file, and local files.  :func:`fetch_zone` tries them in turn and reports which one answered,
how, and what went wrong with those before it, so one dead source never stops a refresh.
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imrs.zone.records import (
    TYPE_SOA,
    TYPE_ZONEMD,
    Diff,
    Record,
    ZoneRecords,
    apply_diff,
    canonical_rdata,
    name_to_text,
)
from imrs.zone.transfer import (
    MAX_TRANSFER_BYTES,
    IxfrUnavailable,
    TransferError,
    TsigKey,
    axfr,
    ixfr,
    query_soa,
    serial_gt,
)

#: The production default for the root zone (RFC 8806 section 2 and Appendix A, whose
#: example configurations list these primaries that allow AXFR of the root zone; the same list
#: is in Unbound's example.conf auth-zone for ".").  b, c, d, f, g and k root servers, ICANN's
#: lax.xfr.dns.icann.org and iad.xfr.dns.icann.org (formerly xfr.cjr), then IANA's copy on
#: the web.  Tests always override this; they never contact these hosts.
RFC8806_ROOT_SOURCES: tuple[str, ...] = (
    "ixfr://199.9.14.201",  # b.root-servers.net
    "ixfr://[2001:500:200::b]",
    "ixfr://192.33.4.12",  # c.root-servers.net
    "ixfr://[2001:500:2::c]",
    "ixfr://199.7.91.13",  # d.root-servers.net
    "ixfr://[2001:500:2d::d]",
    "ixfr://192.5.5.241",  # f.root-servers.net
    "ixfr://[2001:500:2f::f]",
    "ixfr://192.112.36.4",  # g.root-servers.net
    "ixfr://[2001:500:12::d0d]",
    "ixfr://193.0.14.129",  # k.root-servers.net
    "ixfr://[2001:7fd::1]",
    "ixfr://192.0.32.132",  # lax.xfr.dns.icann.org
    "ixfr://[2620:0:2d0:202::132]",
    "ixfr://192.0.47.132",  # iad.xfr.dns.icann.org
    "ixfr://[2620:0:2830:202::132]",
    "https://www.internic.net/domain/root.zone",
)

DEFAULT_PORT = 53
#: Master files bigger than this (after decompression) are refused.
MAX_FILE_BYTES = MAX_TRANSFER_BYTES


class SourceError(Exception):
    """A source spec is invalid, or one source could not deliver the zone."""


class FetchError(Exception):
    """No source delivered the zone; ``errors`` holds each source's reason."""

    def __init__(self, errors: Sequence[str]):
        self.errors = tuple(errors)
        lines = "\n".join(f"  {e}" for e in self.errors) or "  (no sources configured)"
        super().__init__(f"every source failed:\n{lines}")


@dataclass(frozen=True)
class Source:
    """One parsed source.  ``kind`` is "ixfr", "axfr", "http" or "file"."""

    spec: str
    kind: str
    address: str = ""
    port: int = DEFAULT_PORT
    tsig: TsigKey | None = None
    url: str = ""
    path: str = ""

    def __str__(self) -> str:
        return self.spec

    @property
    def is_primary(self) -> bool:
        return self.kind in ("ixfr", "axfr")


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_zone` got.  ``zone`` is None when the sources have nothing newer.

    ``how`` is "ixfr" (differences applied; they are in ``diffs``), "axfr" (a whole zone
    from a primary, also when it answered IXFR with the whole zone), "http" or "file".
    ``errors`` are the failures of sources tried before, ``notes`` the fallbacks taken."""

    zone: ZoneRecords | None
    source: Source
    how: str
    serial: int
    diffs: tuple[Diff, ...] = ()
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return self.zone is None


@dataclass(frozen=True)
class SourceStatus:
    """One source's SOA and ZONEMD, for the multi-source check (or why it could not tell)."""

    source: Source
    serial: int | None = None
    soa: Record | None = None
    zonemd: tuple[bytes, ...] = ()  # ZONEMD RDATA, sorted
    error: str | None = None


# --- specs -------------------------------------------------------------------------------------


def _key_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _parse_hostport(text: str, spec: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address."""
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SourceError(f"source {spec!r}: missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise SourceError(f"source {spec!r}: unexpected {rest!r} after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SourceError(f"source {spec!r}: {host!r} is not an IP address (host names are not accepted)") from None
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SourceError(f"source {spec!r}: bad port {port_text!r}")
        port = int(port_text)
    return str(address), port


def parse_source(spec: str, tsig_keys: Mapping[str, TsigKey]) -> Source:
    """Parse one source spec; raises SourceError saying what is wrong with it."""
    text = spec.strip()
    if not text:
        raise SourceError("empty source")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        return Source(spec, "file", path=os.path.abspath(os.path.expanduser(text)))
    if scheme in ("ixfr", "axfr"):
        hostport, _, query = rest.partition("?")
        hostport = hostport.rstrip("/")
        if "/" in hostport:
            raise SourceError(f"source {spec!r}: a primary takes no path")
        address, port = _parse_hostport(hostport, spec)
        key = None
        if query:
            params = urllib.parse.parse_qs(query, keep_blank_values=True)
            unknown = set(params) - {"tsig"}
            if unknown:
                raise SourceError(f"source {spec!r}: unknown parameter {min(unknown)!r} (only tsig=KEYNAME)")
            names = params.get("tsig", [])
            if len(names) != 1 or not names[0]:
                raise SourceError(f"source {spec!r}: give one key as tsig=KEYNAME")
            wanted = _key_name(names[0])
            matches = [k for n, k in tsig_keys.items() if _key_name(n) == wanted]
            if not matches:
                raise SourceError(f"source {spec!r}: TSIG key {names[0]!r} is not defined")
            key = matches[0]
        return Source(spec, scheme, address=address, port=port, tsig=key)
    if scheme in ("http", "https"):
        parsed = urllib.parse.urlsplit(text)
        if not parsed.hostname:
            raise SourceError(f"source {spec!r}: the URL has no host")
        try:
            parsed.port  # noqa: B018 - validates the port
        except ValueError:
            raise SourceError(f"source {spec!r}: bad port in the URL") from None
        return Source(spec, "http", url=text)
    if scheme == "file":
        parsed = urllib.parse.urlsplit(text)
        if parsed.netloc not in ("", "localhost"):
            raise SourceError(f"source {spec!r}: file URLs must be local (file:///path)")
        path = urllib.parse.unquote(parsed.path)
        if not path.startswith("/"):
            raise SourceError(f"source {spec!r}: file URLs need an absolute path (file:///path)")
        return Source(spec, "file", path=path)
    raise SourceError(f"source {spec!r}: unknown scheme {scheme!r}; expected ixfr://, axfr://, http(s)://, file:// or a path")


# --- master files --------------------------------------------------------------------------------


def _parse_text(text: str, source: str, origin: bytes) -> ZoneRecords:
    from imrs.zone.parse import ZoneFileError, parse_zone_records

    try:
        zone = parse_zone_records(text, source, name_to_text(origin))
    except ZoneFileError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise SourceError(f"{where}{exc.message}") from None
    if zone.origin != origin:
        raise SourceError(f"the file is for zone {zone.origin_text}, not {name_to_text(origin)}")
    return zone


def _decode(blob: bytes) -> str:
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"bad gzip data: {exc}") from None
        if len(blob) > MAX_FILE_BYTES:
            raise SourceError(f"the file is larger than {MAX_FILE_BYTES} octets")
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        raise SourceError(f"line {line}: not UTF-8 text") from None


def _http_get(url: str, timeout: float) -> bytes:
    """The body at ``url`` (gzip allowed), each read bounded by ``timeout``."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip", "User-Agent": "imrs"})
    deadline = time.monotonic() + max(300.0, 10 * timeout)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            chunks = []
            size = 0
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise SourceError(f"the file is larger than {MAX_FILE_BYTES} octets")
                if time.monotonic() > deadline:
                    raise SourceError("download took too long")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise SourceError(f"cannot fetch: {text}") from None
    except TimeoutError:
        raise SourceError(f"timed out after {timeout:g}s") from None
    except (OSError, ValueError) as exc:  # http.client errors are OSError or ValueError kin
        raise SourceError(f"cannot fetch: {exc}") from None


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            blob = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SourceError("no such file") from None
    except IsADirectoryError:
        raise SourceError("is a directory, not a zone file") from None
    except PermissionError:
        raise SourceError("permission denied") from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}") from None
    if len(blob) > MAX_FILE_BYTES:
        raise SourceError(f"the file is larger than {MAX_FILE_BYTES} octets")
    return blob


def _load_master(source: Source, origin: bytes, timeout: float) -> ZoneRecords:
    if source.kind == "http":
        blob = _http_get(source.url, timeout)
    else:
        blob = _read_file(source.path)
    return _parse_text(_decode(blob), source.spec, origin)


# --- fetching ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Got:
    zone: ZoneRecords | None
    how: str
    serial: int
    diffs: tuple[Diff, ...] = ()
    notes: tuple[str, ...] = ()


def _fetch_primary(source: Source, origin: bytes, current: ZoneRecords | None, timeout: float) -> _Got:
    notes: list[str] = []
    if current is not None and source.kind == "ixfr":
        try:
            result = ixfr(source.address, source.port, origin, current, tsig=source.tsig, timeout=timeout)
        except IxfrUnavailable as exc:
            notes.append(f"{source}: {exc}; fell back to AXFR")
        else:
            if result.up_to_date:
                return _Got(None, "ixfr", result.serial)
            if result.zone is not None:
                return _Got(result.zone, "axfr", result.serial, notes=("the primary answered IXFR with the whole zone",))
            try:
                zone = current
                for diff in result.diffs:
                    zone = apply_diff(zone, diff, source.spec)
                return _Got(zone, "ixfr", result.serial, diffs=result.diffs)
            except ValueError as exc:
                notes.append(f"{source}: IXFR difference does not apply ({exc}); fell back to AXFR")
    elif current is not None:
        serial, _soa, _zonemd = query_soa(source.address, source.port, origin, tsig=source.tsig, timeout=timeout)
        if not serial_gt(serial, current.serial):
            return _Got(None, "axfr", serial)
    zone = axfr(source.address, source.port, origin, tsig=source.tsig, timeout=timeout)
    return _Got(zone, "axfr", zone.serial, notes=tuple(notes))


def _fetch_one(source: Source, origin: bytes, current: ZoneRecords | None, timeout: float) -> _Got:
    if source.is_primary:
        return _fetch_primary(source, origin, current, timeout)
    zone = _load_master(source, origin, timeout)
    return _Got(zone, source.kind, zone.serial)


def _reason(exc: Exception) -> str:
    if isinstance(exc, (TransferError, SourceError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def fetch_zone(sources: Sequence[Source], origin: bytes, current: ZoneRecords | None, *,
               timeout: float = 30) -> FetchResult:
    """Get a version newer than ``current`` from the first source that can give one.

    A source whose serial equals ``current``'s ends the search with "up to date"; one that is
    behind ``current`` is noted and the next source is asked.  Raises FetchError listing every
    source's failure when none answered."""
    origin = origin.lower()
    errors: list[str] = []
    notes: list[str] = []
    behind: FetchResult | None = None
    for source in sources:
        try:
            got = _fetch_one(source, origin, current, timeout)
        except Exception as exc:  # noqa: BLE001 - one source's failure must not stop failover
            errors.append(f"{source}: {_reason(exc)}")
            continue
        notes.extend(got.notes)
        if got.zone is not None and (current is None or serial_gt(got.serial, current.serial)):
            return FetchResult(got.zone, source, got.how, got.serial, got.diffs, tuple(errors), tuple(notes))
        result = FetchResult(None, source, got.how, got.serial, (), tuple(errors), tuple(notes))
        if current is None or got.serial == current.serial:
            return result
        notes.append(f"{source}: serial {got.serial} is behind ours ({current.serial})")
        if behind is None:
            behind = result
    if behind is not None:
        return FetchResult(None, behind.source, behind.how, behind.serial, (), tuple(errors), tuple(notes))
    raise FetchError(errors)


def source_serial(source: Source, origin: bytes, timeout: float = 5) -> int:
    """The serial a source offers now: an SOA query for primaries, the file's SOA otherwise."""
    origin = origin.lower()
    try:
        if source.is_primary:
            return query_soa(source.address, source.port, origin, tsig=source.tsig, timeout=timeout)[0]
        return _load_master(source, origin, timeout).serial
    except TransferError as exc:
        raise SourceError(f"{source}: {exc}") from None
    except SourceError as exc:
        raise SourceError(f"{source}: {exc}") from None


# --- multi-source check --------------------------------------------------------------------------------


def _status(source: Source, origin: bytes, timeout: float) -> SourceStatus:
    try:
        if source.is_primary:
            serial, soa, zonemds = query_soa(source.address, source.port, origin, tsig=source.tsig, timeout=timeout)
            return SourceStatus(source, serial, soa, tuple(sorted(r.rdata for r in zonemds)))
        zone = _load_master(source, origin, timeout)
        zonemd = tuple(sorted(r.rdata for r in zone.records if r.owner == origin and r.rdtype == TYPE_ZONEMD))
        return SourceStatus(source, zone.serial, zone.soa, zonemd)
    except Exception as exc:  # noqa: BLE001 - reported per source
        return SourceStatus(source, error=_reason(exc))


def check_sources(sources: Sequence[Source], origin: bytes, *, timeout: float = 10) -> list[SourceStatus]:
    """Every source's serial, SOA and ZONEMD, asked in parallel."""
    origin = origin.lower()
    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(sources))) as pool:
        return list(pool.map(lambda s: _status(s, origin, timeout), sources))


def _zonemd_text(zonemd: tuple[bytes, ...]) -> str:
    if not zonemd:
        return "no ZONEMD"
    return ", ".join(f"ZONEMD {r[4]} {r[5]} {r[6:].hex()[:16]}..." for r in zonemd if len(r) > 6)


def disagreements(statuses: Sequence[SourceStatus]) -> list[str]:
    """Messages for sources that give the same serial but a different SOA or ZONEMD."""
    by_serial: dict[int, list[SourceStatus]] = {}
    for status in statuses:
        if status.serial is not None:
            by_serial.setdefault(status.serial, []).append(status)
    messages = []
    for serial, group in sorted(by_serial.items()):
        zonemd_groups: dict[tuple[bytes, ...], list[str]] = {}
        soa_groups: dict[bytes, list[str]] = {}
        for status in group:
            zonemd_groups.setdefault(status.zonemd, []).append(str(status.source))
            if status.soa is not None:
                soa_groups.setdefault(canonical_rdata(TYPE_SOA, status.soa.rdata), []).append(str(status.source))
        if len(zonemd_groups) > 1:
            parts = "; ".join(f"{_zonemd_text(z)} from {', '.join(names)}" for z, names in zonemd_groups.items())
            messages.append(f"sources disagree on the ZONEMD of serial {serial}: {parts}")
        if len(soa_groups) > 1:
            parts = "; ".join(", ".join(names) for names in soa_groups.values())
            messages.append(f"sources disagree on the SOA of serial {serial}: {parts}")
    return messages
