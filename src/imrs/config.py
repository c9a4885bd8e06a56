"""TOML configuration file -> typed, immutable :class:`Settings`.

The configuration file is TOML (parsed with the standard library's
:mod:`tomllib`)::

    [server]
    listen = ["127.0.0.1:5300", "[::1]:5300"]
    edns-buffer-size = 1232
    tcp-idle-timeout = 10
    tcp-max-connections = 1000
    tcp-max-queries-per-connection = 0
    identity = "l1.example"
    version = "imrs"
    hide-identity = false
    hide-version = false
    nsid = "l1.example"          # or hex: "0x6c312e6578616d706c65"
    log-level = "info"
    http = "127.0.0.1:8053"      # /metrics, /health, /ready, /stats; off when absent

    [[zone]]
    file = "root.zone"           # relative to the configuration file's directory
    name = "."                   # optional origin

Every problem in a file is reported, not just the first one: :func:`load_config`
raises a single :class:`ConfigError` whose :attr:`ConfigError.errors` lists one
:class:`ConfigIssue` per problem, each naming the file, the line where the
offending key (or array element, or ``[[zone]]`` header) appears, and the key::

    imrs.toml:3: key 'server.edns-buffer-size': must be between 512 and 4096, got 100
    imrs.toml:7: key 'server.lisen': unknown key; did you mean 'listen'?

Only TOML syntax errors stop the analysis early (there is no document to
check), and they carry the line reported by :mod:`tomllib`.

No input file, however malformed, makes :func:`load_config` raise anything but
:class:`ConfigError`.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import datetime
import difflib
import ipaddress
import json
import math
import os
import re
import socket
import stat
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from imrs import __version__
from imrs.telemetry.dnstap import DnstapConfig

__all__ = [
    "DEFAULT_LISTEN",
    "LOG_LEVELS",
    "ConfigError",
    "ConfigIssue",
    "ListenAddress",
    "Settings",
    "ZoneConfig",
    "check_config_main",
    "default_settings",
    "load_config",
    "parse_http",
    "parse_listen",
    "summarize",
    "with_overrides",
]

#: Accepted ``log-level`` values (case-insensitive in the file, stored lower-case).
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")

#: Port used by :func:`parse_listen` when the text has no ``:PORT`` part.
DEFAULT_PORT = 53

EDNS_BUFFER_MIN = 512
EDNS_BUFFER_MAX = 4096
#: Upper bound on ``tcp-idle-timeout`` (one day); guards event-loop arithmetic.
TCP_IDLE_TIMEOUT_MAX = 86400.0
#: Maximum octets of ``identity`` / ``version`` (one DNS TXT character-string)
#: and of ``nsid``.
MAX_TXT_OCTETS = 255

#: Display name used for errors raised by :func:`with_overrides`.
COMMAND_LINE = "<command line>"


# --------------------------------------------------------------------------
# Typed settings
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenAddress:
    """One UDP+TCP listening socket address.

    ``host`` is an IP literal without brackets (``"::1"``, ``"127.0.0.1"``),
    ``family`` is :data:`socket.AF_INET` or :data:`socket.AF_INET6`.
    ``str()`` gives the canonical ``HOST:PORT`` / ``[HOST]:PORT`` form that
    :func:`parse_listen` accepts.  (Constructing one directly allows port 0,
    an ephemeral port, which is handy in tests; the configuration file does
    not.)
    """

    host: str
    port: int
    family: int

    def __str__(self) -> str:
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def sockaddr(self) -> tuple[str, int]:
        """``(host, port)`` suitable for :meth:`socket.socket.bind`."""
        return (self.host, self.port)


#: Default listeners: the loopback addresses, port 5300 (no privileges needed).
DEFAULT_LISTEN: tuple[ListenAddress, ...] = (
    ListenAddress("127.0.0.1", 5300, socket.AF_INET),
    ListenAddress("::1", 5300, socket.AF_INET6),
)


@dataclass(frozen=True)
class ZoneConfig:
    """A zone to serve.

    ``file`` is an absolute path (relative paths in the configuration file are
    resolved against the configuration file's directory).  ``name`` is the
    zone origin as an absolute domain name with a trailing dot (``"."``,
    ``"example."``), or ``None`` to take it from the file's SOA record
    (defaulting to the root, ``"."``).
    """

    file: str | None = None
    name: str | None = None
    #: Where new versions come from, tried in order (``ixfr://ADDR:PORT``, ``axfr://...``,
    #: ``https://...``, ``file:///...``); empty for a zone served from ``file`` alone.
    sources: tuple[str, ...] = ()
    #: Trust anchor: a DS/DNSKEY file or root-anchors.xml, ``"iana"`` for the packaged IANA
    #: root anchor, ``"none"`` for no DNSSEC check; None = ``"iana"`` for a root zone that
    #: has sources, else none.
    anchor: str | None = None
    require_zonemd: bool = False
    #: Refuse a version whose signatures expire within this many seconds.
    signature_margin: float = 0.0
    #: (floor, ceiling) in seconds for the SOA refresh, retry and expire timers.
    refresh: tuple[int, int] = (5, 86400)
    retry: tuple[int, int] = (5, 3600)
    expire: tuple[int, int] = (60, 2419200)
    #: Addresses (CIDR) whose NOTIFY is accepted; empty = the addresses of the primaries.
    allow_notify: tuple[str, ...] = ()
    #: Downstreams ("ADDR:PORT") sent a NOTIFY on every new version.
    notify: tuple[str, ...] = ()
    #: Who may transfer the zone: "CIDR" or "CIDR key NAME" (TSIG required).
    allow_transfer: tuple[str, ...] = ()
    #: What an expired zone answers: "refuse", "servfail" or "drop".
    on_expiry: str = "refuse"
    #: Compare the SOA serial and ZONEMD of every source on each refresh.
    check_sources: bool = False

    @property
    def managed(self) -> bool:
        """Whether the zone is kept fresh from sources (timers, NOTIFY, expiry)."""
        return bool(self.sources)


@dataclass(frozen=True)
class TsigKeyConfig:
    """A TSIG key (RFC 8945) named in sources and transfer ACLs."""

    name: str
    algorithm: str
    secret: bytes


@dataclass(frozen=True)
class RrlConfig:
    """Response rate limiting (the semantics of NSD's and Knot's RRL)."""

    #: Responses per second allowed per client prefix and response category; 0 = RRL off.
    rate: int = 200
    #: Every Nth limited response goes out truncated (TC) instead of being dropped, so a real
    #: client behind the prefix retries over TCP; 0 = drop all, 1 = truncate all.
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    #: Sources (CIDR) never limited.
    exempt: tuple[str, ...] = ()
    #: Count and log what would be limited, but send every response.
    log_only: bool = False
    #: Buckets in the table (memory is fixed by this, whatever the number of sources).
    table_size: int = 200_000
    #: Header-only FORMERR and NOTIMP responses (the answers to junk) per second per worker,
    #: whatever their sources, as NSD caps them at 100; more are dropped.  Independent of
    #: ``rate``: it applies with RRL off too.  0 = no cap.  See imrs.serve.errlimit.
    error_rate: int = 100
    #: When a UDP socket's queries outrun its worker (the kernel dropping them for a full
    #: queue), each client prefix (the lengths above) gets an equal share of what the worker
    #: can answer, and a prefix asking less than its share is answered in full: the busiest
    #: prefixes lose their queries, not the real clients.  Independent of ``rate``; the C
    #: loop only.  See imrs.serve.shed.
    shed: bool = True

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True)
class CookieConfig:
    """DNS Cookies (RFC 7873) with RFC 9018 interoperable server cookies."""

    enabled: bool = True
    #: The 16-octet SipHash-2-4 secret shared by the nodes of a cluster; None = a random one
    #: made at start and rotated every ``rotate_interval`` seconds.
    secret: bytes | None = None
    #: Secrets still accepted (the previous ones, during a rotation).
    previous_secrets: tuple[bytes, ...] = ()
    #: A file of hex secrets, one per line, the first the current one, the others still
    #: accepted; re-read when it changes (how a cluster rotates its shared secret).
    secret_file: str | None = None
    rotate_interval: float = 86400.0
    #: Answer BADCOOKIE to UDP queries that carry a client cookie without a valid server cookie.
    require: bool = False


@dataclass(frozen=True)
class Rssac002Config:
    """RSSAC002 v5 daily files (written at each UTC midnight, and the day so far at a stop)."""

    #: Where to write them; None = not written.
    directory: str | None = None
    #: The ``service`` they name (e.g. ``l.root-servers.net``); the file names' prefix comes
    #: from it (``l-root``).  Default: the identity (host name).
    service: str = ""


def _default_identity() -> str:
    try:
        return socket.gethostname()
    except OSError:  # pragma: no cover - practically never happens
        return "localhost"


@dataclass(frozen=True)
class Settings:
    """Complete, validated server settings.  Immutable; use
    :func:`dataclasses.replace` or :func:`with_overrides` to derive variants."""

    #: Addresses to listen on (UDP and TCP each).
    listen: tuple[ListenAddress, ...] = DEFAULT_LISTEN
    #: Zones to serve; empty means the embedded default root zone.
    zones: tuple[ZoneConfig, ...] = ()
    #: UDP payload size advertised in our OPT record and the maximum size of a
    #: UDP response (512..4096).
    edns_buffer_size: int = 1232
    #: Seconds a TCP connection may stay idle before we close it (RFC 7766).
    tcp_idle_timeout: float = 10.0
    #: Maximum simultaneous TCP connections (per worker); when full, the connection idle the
    #: longest is closed to make room.
    tcp_max_connections: int = 1000
    #: Maximum simultaneous TCP connections from one source address (per worker).
    tcp_max_connections_per_source: int = 64
    #: Seconds a TCP connection may last in all, however busy.
    tcp_session_timeout: float = 120.0
    #: Answer EDNS TCP keepalive (RFC 7828) with the idle timeout when a client asks.
    tcp_keepalive: bool = True
    #: Queries answered on one TCP connection before closing it; 0 = unlimited.
    tcp_max_queries_per_connection: int = 0
    #: Answer to CHAOS TXT ``hostname.bind`` / ``id.server``.
    identity: str = field(default_factory=_default_identity)
    #: Answer to CHAOS TXT ``version.bind`` / ``version.server``.
    version: str = "imrs " + __version__
    #: Refuse the identity queries instead of answering them.
    hide_identity: bool = False
    #: Refuse the version queries instead of answering them.
    hide_version: bool = False
    #: EDNS NSID (RFC 5001) payload returned when requested; ``None`` = off.
    nsid: bytes | None = None
    #: One of :data:`LOG_LEVELS`.
    log_level: str = "info"
    #: Where the last verified version of each managed zone is kept; None = not kept.
    state_dir: str | None = None
    #: TSIG keys by name.
    tsig_keys: tuple[TsigKeyConfig, ...] = ()
    #: Clock for signature validity (seconds since the epoch); None = the real clock.
    validation_time: float | None = None
    #: Data-plane processes sharing the listeners; 0 = one per core.
    workers: int = 0
    rrl: RrlConfig = field(default_factory=RrlConfig)
    rssac002: Rssac002Config = field(default_factory=Rssac002Config)
    dnstap: DnstapConfig = field(default_factory=DnstapConfig)
    cookies: CookieConfig = field(default_factory=CookieConfig)
    #: Where the telemetry HTTP endpoint listens (/metrics, /health, /ready, /stats); None = off.
    http: ListenAddress | None = None

    @property
    def worker_count(self) -> int:
        """How many workers to run: ``workers``, else one per core this process may use."""
        if self.workers:
            return self.workers
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0)) or 1
        return os.cpu_count() or 1


def default_settings() -> Settings:
    """Settings used when no configuration file is given."""
    return Settings()


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a configuration source.

    ``str()`` gives ``FILE:LINE: key 'KEY': MESSAGE``; the ``LINE`` and
    ``key ...`` parts are left out when unknown / not applicable.
    """

    file: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.key is None:
            return f"{where}: {self.message}"
        return f"{where}: key '{self.key}': {self.message}"


class ConfigError(Exception):
    """Invalid configuration.  Carries every problem found (``errors``, at
    least one); ``file``/``line``/``key``/``message`` are those of the first.
    ``str()`` is one :class:`ConfigIssue` per line."""

    errors: list[ConfigIssue]
    file: str
    line: int | None
    key: str | None
    message: str

    def __init__(
        self,
        file: str,
        line: int | None = None,
        key: str | None = None,
        message: str = "invalid configuration",
        *,
        errors: Iterable[ConfigIssue] | None = None,
    ) -> None:
        issues = [ConfigIssue(file, line, key, message)] if errors is None else list(errors)
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        first = issues[0]
        self.errors = issues
        self.file, self.line, self.key, self.message = first.file, first.line, first.key, first.message
        super().__init__(self.__str__())

    @classmethod
    def from_issues(cls, issues: Iterable[ConfigIssue]) -> ConfigError:
        """Build an error from a non-empty collection of issues."""
        issues = list(issues)
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        return cls(issues[0].file, errors=issues)

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_config_error, (self.errors,))


def _rebuild_config_error(issues: list[ConfigIssue]) -> ConfigError:
    return ConfigError.from_issues(issues)


# --------------------------------------------------------------------------
# Listen addresses
# --------------------------------------------------------------------------


def _parse_port(text: str, original: str) -> int:
    if not text:
        raise ValueError(f"missing port number after ':' in {original!r}")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"invalid port {text!r} in {original!r}: not a decimal number")
    if len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text} out of range in {original!r}: must be 1..65535")
    return int(text)


def parse_listen(text: str) -> ListenAddress:
    """Parse ``"IPv4:PORT"`` or ``"[IPv6]:PORT"`` into a :class:`ListenAddress`.

    The port may be omitted (``"127.0.0.1"``, ``"[::1]"``) and defaults to 53.
    Host names are not accepted, only IP literals; an IPv6 address must be in
    brackets.  Raises :class:`ValueError` with a human-readable message.
    """
    if not isinstance(text, str):
        raise ValueError(f"listen address must be a string, got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise ValueError("empty listen address")
    if s.startswith("["):
        close = s.find("]")
        if close < 0:
            raise ValueError(f"missing ']' in listen address {text!r}")
        host, rest = s[1:close], s[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in listen address {text!r}")
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address (in {text!r})") from None
        port = _parse_port(rest[1:], text) if rest else DEFAULT_PORT
        return ListenAddress(str(ip6), port, socket.AF_INET6)
    if s.count(":") > 1:
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            raise ValueError(
                f"invalid listen address {text!r}: expected IPv4:PORT or [IPv6]:PORT"
            ) from None
        raise ValueError(
            f"IPv6 listen address {text!r} must be written in brackets, e.g. '[{s}]:{DEFAULT_PORT}'"
        )
    host, colon, port_text = s.partition(":")
    try:
        ip4 = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not a valid IPv4 address (in {text!r}); "
            "use an IP literal such as 127.0.0.1:5300 or [::1]:5300"
        ) from None
    port = _parse_port(port_text, text) if colon else DEFAULT_PORT
    return ListenAddress(str(ip4), port, socket.AF_INET)


def parse_http(text: str) -> ListenAddress:
    """Parse the telemetry HTTP address: ``"IPv4:PORT"`` or ``"[IPv6]:PORT"`` as for
    :func:`parse_listen`, but the port is required (53 would be a DNS port, not a default for
    HTTP).  Raises :class:`ValueError` with a human-readable message."""
    address = parse_listen(text)
    s = text.strip()
    if not (s.rpartition("]")[2] if s.startswith("[") else s).count(":"):
        raise ValueError(f"missing port in HTTP address {text!r}: write HOST:PORT, e.g. 127.0.0.1:8053 or [::1]:8053")
    return address


def _http_clash(http: ListenAddress, listen: Iterable[ListenAddress]) -> str | None:
    """Why ``http`` cannot be used beside the DNS listeners (the same TCP socket), or None."""
    if http in listen:
        return f"HTTP address {http} is also a DNS listen address"
    return None


# --------------------------------------------------------------------------
# Locating keys in the raw TOML text
# --------------------------------------------------------------------------

#: A position in the parsed document: table keys and array indices.
_Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}#\r\n]*")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _StopScan(Exception):
    """The text is not what the locator expected; keep what was found."""


def _unescape(match: re.Match[str]) -> str:
    esc = match.group(1)
    if esc[0] in "uU":
        try:
            return chr(int(esc[1:], 16))
        except (ValueError, OverflowError):
            return match.group(0)
    return _SIMPLE_ESCAPES.get(esc, match.group(0))


class _Locator:
    """Maps document paths to the 1-based line where they are defined.

    This is a small position-tracking walker over TOML text that
    :mod:`tomllib` has already accepted.  It records the line of every key
    (``("server", "listen")``), every array element (``("server", "listen",
    1)``) and every ``[table]`` / ``[[array-of-tables]]`` header; the n-th
    ``[[zone]]`` is ``("zone", n)``, exactly as the element's index in the
    parsed list, so inline arrays of tables map the same way.  It is best
    effort: on anything unexpected it stops and keeps what it has.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[_Path, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._aot_counts: dict[_Path, int] = {}
        try:
            self._document()
        except (_StopScan, IndexError, RecursionError):
            pass

    # -- queries -----------------------------------------------------------

    def line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def line_for(self, path: _Path) -> int | None:
        """Line of ``path``, or of its closest recorded ancestor."""
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return None

    # -- lexical helpers ---------------------------------------------------

    def _peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def _skip_ws(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in " \t":
            self.pos += 1

    def _skip_blank(self) -> None:
        """Skip whitespace, newlines and comments."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t\r\n":
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break

    def _expect(self, s: str) -> None:
        if not self._peek(s):
            raise _StopScan
        self.pos += len(s)

    def _string(self) -> str:
        """Consume a string of any kind; return its (key-usable) value."""
        text, start = self.text, self.pos
        for quote in ('"""', "'''"):
            if self._peek(quote):
                i = start + 3
                while True:
                    if quote == '"""' and text[i] == "\\":
                        i += 2
                        continue
                    if text.startswith(quote, i):
                        run = 3
                        while run < 5 and i + run < len(text) and text[i + run] == quote[0]:
                            run += 1
                        self.pos = i + run
                        return text[start + 3 : i + run - 3]
                    i += 1
        if text[start] == "'":
            end = text.index("'", start + 1)
            self.pos = end + 1
            return text[start + 1 : end]
        if text[start] != '"':
            raise _StopScan
        i = start + 1
        while text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        self.pos = i + 1
        return _ESCAPE.sub(_unescape, text[start + 1 : i])

    def _key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self._skip_ws()
            c = self.text[self.pos]
            if c in "\"'":
                parts.append(self._string())
            else:
                m = _BARE_KEY.match(self.text, self.pos)
                if m is None:
                    raise _StopScan
                parts.append(m.group())
                self.pos = m.end()
            self._skip_ws()
            if self._peek("."):
                self.pos += 1
                continue
            return tuple(parts)

    # -- grammar -----------------------------------------------------------

    def _note_parents(self, path: _Path, line: int) -> None:
        for i in range(1, len(path)):
            self.lines.setdefault(path[:i], line)

    def _resolve(self, parts: tuple[str, ...]) -> _Path:
        """Header key -> path, descending into the latest element of any
        array of tables on the way."""
        path: _Path = ()
        for part in parts:
            path += (part,)
            count = self._aot_counts.get(path)
            if count:
                path += (count - 1,)
        return path

    def _document(self) -> None:
        prefix: _Path = ()
        n = len(self.text)
        while True:
            self._skip_blank()
            if self.pos >= n:
                return
            before = self.pos
            line = self.line_at(self.pos)
            if self._peek("[["):
                self.pos += 2
                parts = self._key()
                self._expect("]]")
                array = self._resolve(parts[:-1]) + (parts[-1],)
                index = self._aot_counts.get(array, 0)
                self._aot_counts[array] = index + 1
                prefix = array + (index,)
                self._note_parents(prefix, line)
                self.lines[prefix] = line
            elif self._peek("["):
                self.pos += 1
                parts = self._key()
                self._expect("]")
                prefix = self._resolve(parts)
                self._note_parents(prefix, line)
                self.lines[prefix] = line  # explicit header beats implicit
            else:
                self._keyval(prefix)
            if self.pos <= before:
                raise _StopScan

    def _keyval(self, prefix: _Path) -> None:
        line = self.line_at(self.pos)
        path = prefix + self._key()
        self._expect("=")
        self._skip_ws()
        self._note_parents(path, line)
        self.lines.setdefault(path, line)
        self._value(path)

    def _value(self, path: _Path) -> None:
        text = self.text
        c = text[self.pos]
        if c in "\"'":
            self._string()
        elif c == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip_blank()
                if text[self.pos] == "]":
                    self.pos += 1
                    return
                element = path + (index,)
                self.lines.setdefault(element, self.line_at(self.pos))
                self._value(element)
                index += 1
                self._skip_blank()
                if text[self.pos] == ",":
                    self.pos += 1
                elif text[self.pos] != "]":
                    raise _StopScan
        elif c == "{":
            self.pos += 1
            while True:
                self._skip_blank()
                if text[self.pos] == "}":
                    self.pos += 1
                    return
                self._keyval(path)
                self._skip_blank()
                if text[self.pos] == ",":
                    self.pos += 1
                elif text[self.pos] != "}":
                    raise _StopScan
        else:
            m = _SCALAR.match(text, self.pos)
            if m is None or m.end() == self.pos:
                raise _StopScan
            self.pos = m.end()


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

_SERVER_KEYS: tuple[str, ...] = (
    "listen",
    "edns-buffer-size",
    "tcp-idle-timeout",
    "tcp-max-connections",
    "tcp-max-queries-per-connection",
    "tcp-max-connections-per-source",
    "tcp-session-timeout",
    "tcp-keepalive",
    "workers",
    "identity",
    "version",
    "hide-identity",
    "hide-version",
    "nsid",
    "log-level",
    "state-dir",
    "http",
)
_ZONE_KEYS: tuple[str, ...] = (
    "file",
    "name",
    "sources",
    "anchor",
    "require-zonemd",
    "signature-margin",
    "refresh-min",
    "refresh-max",
    "retry-min",
    "retry-max",
    "expire-min",
    "expire-max",
    "allow-notify",
    "notify",
    "allow-transfer",
    "on-expiry",
    "check-sources",
)
_TSIG_KEYS: tuple[str, ...] = ("name", "algorithm", "secret")
TSIG_ALGORITHMS: tuple[str, ...] = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha1", "hmac-sha224")
ON_EXPIRY: tuple[str, ...] = ("refuse", "servfail", "drop")
_SOURCE_SCHEMES: tuple[str, ...] = ("ixfr", "axfr", "http", "https", "file")
_SECTIONS: tuple[str, ...] = ("server", "zone", "tsig-key", "rrl", "cookies", "rssac002", "dnstap")
_RRL_KEYS: tuple[str, ...] = ("rate", "slip", "ipv4-prefix-length", "ipv6-prefix-length", "exempt", "log-only", "table-size",
                               "error-rate", "shed")
_COOKIE_KEYS: tuple[str, ...] = ("enabled", "secret", "previous-secrets", "secret-file", "rotate-interval", "require")


class _Invalid(Exception):
    """A value failed validation; the message is user-facing."""


def _format_path(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
        out += f".{name}" if out else name
    return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime.datetime):
        return "date-time"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    return type(value).__name__  # pragma: no cover - tomllib yields nothing else


def _show(value: object) -> str:
    """A short TOML-ish rendering of a value for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (list, dict)):
        return _type_name(value)
    elif isinstance(value, int) and value.bit_length() > 64:
        text = "a very large integer"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wrong_type(expected: str, value: object) -> _Invalid:
    return _Invalid(f"expected {expected}, got {_type_name(value)} {_show(value)}")


def _want_int(value: object, lo: int, hi: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type("an integer", value)
    if value < lo or (hi is not None and value > hi):
        shown = _show(value)
        if hi is None:
            raise _Invalid(f"must be at least {lo}, got {shown}")
        raise _Invalid(f"must be between {lo} and {hi}, got {shown}")
    return value


def _want_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type("a number of seconds", value)
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0 or seconds > TCP_IDLE_TIMEOUT_MAX:
        raise _Invalid(
            f"must be greater than 0 and at most {TCP_IDLE_TIMEOUT_MAX:g} seconds, got {_show(value)}"
        )
    return seconds


def _want_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type("a boolean (true or false)", value)
    return value


def _want_str(value: object) -> str:
    if not isinstance(value, str):
        raise _wrong_type("a string", value)
    return value


def _want_txt(value: object) -> str:
    text = _want_str(value)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TXT_OCTETS:
        raise _Invalid(f"must be at most {MAX_TXT_OCTETS} octets (UTF-8), got {size}")
    return text


def _want_nsid(value: object) -> bytes:
    text = _want_str(value)
    if text[:2] in ("0x", "0X"):
        digits = text[2:]
        if not digits:
            raise _Invalid("hex NSID '0x' has no digits")
        if not re.fullmatch(r"[0-9A-Fa-f]+", digits):
            raise _Invalid(f"invalid hex NSID {_show(text)}: only 0-9, a-f allowed after '0x'")
        if len(digits) % 2:
            raise _Invalid(f"hex NSID {_show(text)} has an odd number of digits")
        data = bytes.fromhex(digits)
    else:
        if not text:
            raise _Invalid("must not be empty (leave the key out to disable NSID)")
        if not text.isascii():
            raise _Invalid("text NSID must be ASCII; use the '0x...' hex form for other bytes")
        data = text.encode("ascii")
    if len(data) > MAX_TXT_OCTETS:
        raise _Invalid(f"must be at most {MAX_TXT_OCTETS} octets, got {len(data)}")
    return data


def _want_log_level(value: object) -> str:
    text = _want_str(value)
    level = text.lower()
    if level not in LOG_LEVELS:
        hint = _suggest(level, LOG_LEVELS)
        raise _Invalid(f"unknown log level {_show(text)}; expected one of {', '.join(LOG_LEVELS)}{hint}")
    return level


def _want_origin(value: object) -> str:
    """A zone origin -> absolute, dotted form."""
    name = _want_str(value)
    if name == ".":
        return "."
    if not name:
        raise _Invalid("empty zone name (use \".\" for the root)")
    if not name.isascii():
        raise _Invalid(f"zone name {_show(name)} must be ASCII (use the xn-- form of IDNs)")
    if any(c.isspace() for c in name):
        raise _Invalid(f"zone name {_show(name)} contains whitespace")
    relative = name.removesuffix(".")
    labels = relative.split(".")
    if any(not label for label in labels):
        raise _Invalid(f"zone name {_show(name)} has an empty label")
    if any(len(label) > 63 for label in labels):
        raise _Invalid(f"zone name {_show(name)} has a label longer than 63 octets")
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        raise _Invalid(f"zone name {_show(name)} is longer than 255 octets")
    return relative + "."


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_zone_file(path: str, what: str = "zone file") -> None:
    """Raise :class:`_Invalid` unless ``path`` is a readable regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Invalid(f"{what} does not exist: {path}") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _Invalid(f"cannot access {what} {path}: {reason}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Invalid(f"{what} is not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise _Invalid(f"{what} is not readable: {path}")


def _want_strings(value: object, check: Callable[[str], None] = lambda _: None) -> tuple[str, ...]:
    """An array of strings (one string is also accepted), each passed through ``check``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _wrong_type("an array of strings", value)
    result = []
    for item in items:
        text = _want_str(item)
        check(text)
        result.append(text)
    return tuple(result)


def _source_key_name(spec: str) -> str | None:
    match = re.search(r"[?&]tsig=([^&]+)", spec)
    return _want_origin(match.group(1)) if match else None


#: The source keyword standing for the RFC 8806 list of root zone sources.
RFC8806 = "rfc8806"


def _check_source(spec: str) -> None:
    if spec.lower() == RFC8806:
        return
    scheme, sep, rest = spec.partition("://")
    if not sep:
        if not spec.startswith("/"):
            raise _Invalid(f"source {_show(spec)}: expected ixfr://, axfr://, http(s)://, file:// or an absolute path")
        return
    if scheme.lower() not in _SOURCE_SCHEMES:
        raise _Invalid(f"source {_show(spec)}: unknown scheme {scheme!r}; expected one of {', '.join(_SOURCE_SCHEMES)}")
    if scheme.lower() in ("ixfr", "axfr"):
        host = rest.split("?")[0]
        try:
            parse_listen(host)
        except ValueError as exc:
            raise _Invalid(f"source {_show(spec)}: {exc}") from None


def _check_network(text: str) -> None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Invalid(f"{_show(text)} is not an IP address or network (CIDR)") from None


def _check_transfer_rule(text: str) -> None:
    parts = text.split()
    if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1] != "key"):
        raise _Invalid(f"{_show(text)}: expected \"CIDR\" or \"CIDR key NAME\"")
    _check_network(parts[0])


def _check_notify_target(text: str) -> None:
    try:
        parse_listen(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _want_on_expiry(value: object) -> str:
    text = _want_str(value).lower()
    if text not in ON_EXPIRY:
        raise _Invalid(f"expected one of {', '.join(ON_EXPIRY)}, got {_show(value)}")
    return text


def _want_cookie_secret(value: object) -> bytes:
    text = _want_str(value).strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise _Invalid(f"a cookie secret is 32 hex digits (16 octets), got {_show(value)}") from None
    if len(secret) != 16:
        raise _Invalid(f"a cookie secret is 32 hex digits (16 octets), got {len(secret)} octets")
    return secret


def read_cookie_secrets(path: str) -> tuple[bytes, ...]:
    """The secrets of a cookie secret file: hex, one per line, the current one first
    (blank lines and ``#`` comments ignored).  Raises ValueError saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read cookie secret file {path}: {exc}") from None
    secrets = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            secrets.append(_want_cookie_secret(text))
        except _Invalid as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    if not secrets:
        raise ValueError(f"cookie secret file {path} holds no secret")
    return tuple(secrets)


def _want_margin(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**31:
        raise _wrong_type("a number of seconds (0 or more)", value)
    return float(value)


_ZONE_SIMPLE: dict[str, tuple[str, Callable[[object], object]]] = {
    "sources": ("sources", lambda v: _want_strings(v, _check_source)),
    "require-zonemd": ("require_zonemd", _want_bool),
    "signature-margin": ("signature_margin", _want_margin),
    "allow-notify": ("allow_notify", lambda v: _want_strings(v, _check_network)),
    "notify": ("notify", lambda v: _want_strings(v, _check_notify_target)),
    "allow-transfer": ("allow_transfer", lambda v: _want_strings(v, _check_transfer_rule)),
    "on-expiry": ("on_expiry", _want_on_expiry),
    "check-sources": ("check_sources", _want_bool),
}


class _Checker:
    """Validates a parsed document, collecting :class:`ConfigIssue` objects."""

    def __init__(self, file: str, base_dir: str, locator: _Locator | None) -> None:
        self.file = file
        self.base_dir = base_dir
        self.locator = locator
        self.issues: list[ConfigIssue] = []

    def add(self, path: _Path, message: str) -> None:
        line = self.locator.line_for(path) if self.locator is not None else None
        self.issues.append(ConfigIssue(self.file, line, _format_path(path) if path else None, message))

    def check(self, doc: Mapping[str, Any]) -> Settings:
        values: dict[str, Any] = {}
        for section, content in doc.items():
            path: _Path = (section,)
            if section == "server":
                if isinstance(content, dict):
                    self._server(content, values)
                else:
                    self.add(path, f"expected a table ([server]), got {_type_name(content)}")
            elif section == "zone":
                zones = self._zones(content)
                if zones is not None:
                    values["zones"] = zones
            elif section in ("rrl", "cookies", "rssac002"):
                if isinstance(content, dict):
                    converted = (self._rrl(content) if section == "rrl" else self._cookies(content) if section == "cookies"
                                 else self._rssac002(content))
                    if converted is not None:
                        values[section] = converted
                else:
                    self.add(path, f"expected a table ([{section}]), got {_type_name(content)}")
            elif section == "dnstap":
                if isinstance(content, dict):
                    try:
                        values["dnstap"] = DnstapConfig.from_table(
                            content, self.file, base_dir=self.base_dir,
                            line_for=self.locator.line_for if self.locator is not None else None)
                    except ConfigError as exc:
                        self.issues.extend(exc.errors)
                else:
                    self.add(path, f"expected a table ([dnstap]), got {_type_name(content)}")
            elif section == "tsig-key":
                keys = self._tsig_keys(content)
                if keys is not None:
                    values["tsig_keys"] = keys
            elif section in _SERVER_KEYS:
                self.add(path, "unknown top-level key; did you mean to put it under [server]?")
            else:
                kind = "section" if isinstance(content, (dict, list)) else "top-level key"
                self.add(path, f"unknown {kind}{_suggest(section, _SECTIONS)}")
        self._check_key_names(values)
        if "http" in values:
            clash = _http_clash(values["http"], values.get("listen", DEFAULT_LISTEN))
            if clash:
                self.add(("server", "http"), clash)
        if self.issues:
            raise ConfigError.from_issues(sorted(self.issues, key=lambda i: i.line or 0))
        return Settings(**values)

    def _check_key_names(self, values: Mapping[str, Any]) -> None:
        known = {key.name for key in values.get("tsig_keys", ())}
        for index, zone in enumerate(values.get("zones", ())):
            for spec in zone.sources:
                name = _source_key_name(spec)
                if name is not None and name not in known:
                    self.add(("zone", index, "sources"), f"TSIG key {name!r} is not defined in any [[tsig-key]]")
            for rule in zone.allow_transfer:
                parts = rule.split()
                if len(parts) == 3 and _want_origin(parts[2]) not in known:
                    self.add(("zone", index, "allow-transfer"), f"TSIG key {parts[2]!r} is not defined in any [[tsig-key]]")

    def _directory(self, value: object) -> str:
        raw = _want_str(value)
        if not raw:
            raise _Invalid("directory name is empty")
        path = os.path.abspath(os.path.join(self.base_dir, os.path.expanduser(raw)))
        if os.path.exists(path) and not os.path.isdir(path):
            raise _Invalid(f"not a directory: {path}")
        return path

    def _tsig_keys(self, value: object) -> tuple[TsigKeyConfig, ...] | None:
        path: _Path = ("tsig-key",)
        if not isinstance(value, list):
            self.add(path, "must be an array of tables: write [[tsig-key]]")
            return None
        keys: list[TsigKeyConfig] = []
        ok = True
        for index, entry in enumerate(value):
            kpath: _Path = ("tsig-key", index)
            if not isinstance(entry, dict):
                self.add(kpath, f"expected a table, got {_type_name(entry)}")
                ok = False
                continue
            try:
                for key in entry:
                    if key not in _TSIG_KEYS:
                        raise _Invalid(f"unknown key {key!r}{_suggest(key, _TSIG_KEYS)}")
                for key in ("name", "secret"):
                    if key not in entry:
                        raise _Invalid(f"missing required key {key!r}")
                name = _want_origin(entry["name"])
                algorithm = _want_str(entry.get("algorithm", "hmac-sha256")).lower()
                if algorithm not in TSIG_ALGORITHMS:
                    raise _Invalid(f"unknown TSIG algorithm {algorithm!r}; expected one of {', '.join(TSIG_ALGORITHMS)}")
                try:
                    secret = base64.b64decode(_want_str(entry["secret"]), validate=True)
                except ValueError:
                    raise _Invalid("secret is not valid base64") from None
                if not secret:
                    raise _Invalid("secret is empty")
                if any(k.name == name for k in keys):
                    raise _Invalid(f"TSIG key {name} is defined more than once")
                keys.append(TsigKeyConfig(name, algorithm, secret))
            except _Invalid as exc:
                self.add(kpath, str(exc))
                ok = False
        return tuple(keys) if ok else None


    def _table(self, section: str, table: Mapping[str, Any],
               keys: Mapping[str, tuple[str, Callable[[object], object]]]) -> dict[str, Any] | None:
        """Convert the keys of a flat section; None when any is wrong (each one reported)."""
        fields: dict[str, Any] = {}
        ok = True
        for key, value in table.items():
            if key not in keys:
                self.add((section, key), f"unknown key{_suggest(key, keys)}")
                ok = False
                continue
            attr, convert = keys[key]
            try:
                fields[attr] = convert(value)
            except _Invalid as exc:
                self.add((section, key), str(exc))
                ok = False
        return fields if ok else None

    def _rrl(self, table: Mapping[str, Any]) -> RrlConfig | None:
        fields = self._table("rrl", table, {
            "rate": ("rate", lambda v: _want_int(v, 0, 10**7)),
            "slip": ("slip", lambda v: _want_int(v, 0, 100)),
            "ipv4-prefix-length": ("ipv4_prefix", lambda v: _want_int(v, 8, 32)),
            "ipv6-prefix-length": ("ipv6_prefix", lambda v: _want_int(v, 16, 128)),
            "exempt": ("exempt", lambda v: _want_strings(v, _check_network)),
            "log-only": ("log_only", _want_bool),
            "table-size": ("table_size", lambda v: _want_int(v, 1024, 10**7)),
            "error-rate": ("error_rate", lambda v: _want_int(v, 0, 10**7)),
            "shed": ("shed", _want_bool),
        })
        return RrlConfig(**fields) if fields is not None else None

    def _rssac002(self, table: Mapping[str, Any]) -> Rssac002Config | None:
        fields = self._table("rssac002", table, {
            "directory": ("directory", self._directory),
            "service": ("service", _want_txt),
        })
        return Rssac002Config(**fields) if fields is not None else None

    def _cookies(self, table: Mapping[str, Any]) -> CookieConfig | None:
        fields = self._table("cookies", table, {
            "enabled": ("enabled", _want_bool),
            "secret": ("secret", _want_cookie_secret),
            "previous-secrets": ("previous_secrets", lambda v: tuple(_want_cookie_secret(s) for s in _want_strings(v))),
            "secret-file": ("secret_file", lambda v: self._zone_file(v, "cookie secret file")),
            "rotate-interval": ("rotate_interval", _want_seconds),
            "require": ("require", _want_bool),
        })
        if fields is None:
            return None
        if fields.get("secret_file") and fields.get("secret"):
            self.add(("cookies", "secret-file"), "give either 'secret' or 'secret-file', not both")
            return None
        if fields.get("secret_file"):
            try:
                read_cookie_secrets(fields["secret_file"])
            except ValueError as exc:
                self.add(("cookies", "secret-file"), str(exc))
                return None
        return CookieConfig(**fields)

    def _server(self, table: Mapping[str, Any], values: dict[str, Any]) -> None:
        simple: dict[str, tuple[str, Callable[[object], object]]] = {
            "edns-buffer-size": (
                "edns_buffer_size",
                lambda v: _want_int(v, EDNS_BUFFER_MIN, EDNS_BUFFER_MAX),
            ),
            "tcp-idle-timeout": ("tcp_idle_timeout", _want_seconds),
            "tcp-max-connections": ("tcp_max_connections", lambda v: _want_int(v, 1, None)),
            "tcp-max-queries-per-connection": (
                "tcp_max_queries_per_connection",
                lambda v: _want_int(v, 0, None),
            ),
            "tcp-max-connections-per-source": ("tcp_max_connections_per_source", lambda v: _want_int(v, 1, None)),
            "tcp-session-timeout": ("tcp_session_timeout", _want_seconds),
            "tcp-keepalive": ("tcp_keepalive", _want_bool),
            "workers": ("workers", lambda v: _want_int(v, 0, 256)),
            "identity": ("identity", _want_txt),
            "version": ("version", _want_txt),
            "hide-identity": ("hide_identity", _want_bool),
            "hide-version": ("hide_version", _want_bool),
            "nsid": ("nsid", _want_nsid),
            "log-level": ("log_level", _want_log_level),
            "state-dir": ("state_dir", self._directory),
        }
        for key, value in table.items():
            path: _Path = ("server", key)
            if key == "listen":
                listen = self._listen(value)
                if listen is not None:
                    values["listen"] = listen
            elif key == "http":
                http = self._http(value)
                if http is not None:
                    values["http"] = http
            elif key in simple:
                attr, convert = simple[key]
                try:
                    values[attr] = convert(value)
                except _Invalid as exc:
                    self.add(path, str(exc))
            else:
                self.add(path, f"unknown key{_suggest(key, _SERVER_KEYS)}")

    def _http(self, value: object) -> ListenAddress | None:
        path: _Path = ("server", "http")
        if not isinstance(value, str):
            self.add(path, f"expected a \"HOST:PORT\" string, got {_type_name(value)} {_show(value)}")
            return None
        try:
            return parse_http(value)
        except ValueError as exc:
            self.add(path, str(exc))
            return None

    def _listen(self, value: object) -> tuple[ListenAddress, ...] | None:
        path: _Path = ("server", "listen")
        if isinstance(value, str):
            items: list[tuple[_Path, object]] = [(path, value)]
        elif isinstance(value, list):
            items = [(path + (i,), item) for i, item in enumerate(value)]
            if not items:
                self.add(path, "at least one listen address is required")
                return None
        else:
            self.add(path, f"expected an array of \"HOST:PORT\" strings, got {_type_name(value)}")
            return None
        result: list[ListenAddress] = []
        ok = True
        for item_path, item in items:
            if not isinstance(item, str):
                self.add(item_path, f"expected a \"HOST:PORT\" string, got {_type_name(item)} {_show(item)}")
                ok = False
                continue
            try:
                address = parse_listen(item)
            except ValueError as exc:
                self.add(item_path, str(exc))
                ok = False
                continue
            if address in result:
                self.add(item_path, f"duplicate listen address {address}")
                ok = False
                continue
            result.append(address)
        return tuple(result) if ok else None

    def _zones(self, value: object) -> tuple[ZoneConfig, ...] | None:
        path: _Path = ("zone",)
        if isinstance(value, dict):
            self.add(path, "must be an array of tables: write [[zone]] instead of [zone]")
            return None
        if not isinstance(value, list):
            self.add(path, f"expected an array of tables ([[zone]]), got {_type_name(value)}")
            return None
        zones: list[ZoneConfig] = []
        seen_names: set[str] = set()
        ok = True
        for index, entry in enumerate(value):
            zpath: _Path = ("zone", index)
            if not isinstance(entry, dict):
                self.add(zpath, f"expected a table with a 'file' key, got {_type_name(entry)}")
                ok = False
                continue
            fields: dict[str, Any] = {}
            entry_ok = True
            if "file" not in entry and "sources" not in entry:
                self.add(zpath, "needs 'file', 'sources' or both")
                entry_ok = False
            for key, item in entry.items():
                kpath = zpath + (key,)
                try:
                    if key == "file":
                        fields["file"] = self._zone_file(item)
                    elif key == "name":
                        fields["name"] = _want_origin(item)
                        if fields["name"] in seen_names:
                            raise _Invalid(f"zone {fields['name']} is configured more than once")
                        seen_names.add(fields["name"])
                    elif key in _ZONE_SIMPLE:
                        attr, convert = _ZONE_SIMPLE[key]
                        fields[attr] = convert(item)
                    elif key == "anchor":
                        text = _want_str(item)
                        fields["anchor"] = text if text in ("iana", "none") else self._zone_file(text, "anchor file")
                    elif key.endswith(("-min", "-max")):
                        fields[key] = _want_int(item, 1, 2**31 - 1)
                    else:
                        entry_ok = False
                        self.add(kpath, f"unknown key{_suggest(key, _ZONE_KEYS)}")
                except _Invalid as exc:
                    entry_ok = False
                    self.add(kpath, str(exc))
            if any(spec.lower() == RFC8806 for spec in fields.get("sources", ())) and fields.get("name", ".") != ".":
                self.add(zpath + ("sources",), f"'{RFC8806}' lists sources of the root zone; this zone is {fields['name']}")
                entry_ok = False
            for timer in ("refresh", "retry", "expire"):
                default = getattr(ZoneConfig, timer)
                low = fields.pop(f"{timer}-min", default[0])
                high = fields.pop(f"{timer}-max", default[1])
                if low > high:
                    self.add(zpath, f"{timer}-min ({low}) is greater than {timer}-max ({high})")
                    entry_ok = False
                fields[timer] = (low, high)
            if entry_ok:
                zones.append(ZoneConfig(**fields))
            else:
                ok = False
        return tuple(zones) if ok else None

    def _zone_file(self, value: object, what: str = "zone file") -> str:
        raw = _want_str(value)
        if not raw:
            raise _Invalid(f"{what} name is empty")
        path = os.path.abspath(os.path.join(self.base_dir, os.path.expanduser(raw)))
        _check_zone_file(path, what)
        return path


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_error(file: str, text: str, exc: Exception) -> ConfigError:
    message = str(exc)
    m = _TOML_POSITION.search(message)
    if m:
        line: int | None = int(m.group(1))
        detail = f"{message[: m.start()]} (column {m.group(2)})"
    elif _TOML_AT_END.search(message):
        line = text.rstrip().count("\n") + 1
        detail = f"{_TOML_AT_END.sub('', message)} (at end of file)"
    else:
        line, detail = None, message
    return ConfigError(file, line, None, f"TOML syntax error: {detail}")


def _read_text(file: str, path: str | os.PathLike[str]) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(file, None, None, f"cannot read file: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. embedded NUL byte in the path
        raise ConfigError(file, None, None, f"cannot read file: {exc}") from None
    offset = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # tolerate a UTF-8 BOM
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = offset + exc.start
        line = data.count(b"\n", 0, bad) + 1
        column = bad - (data.rfind(b"\n", 0, bad) + 1) + 1
        raise ConfigError(
            file, line, None, f"file is not valid UTF-8 (byte 0x{data[bad]:02x} at column {column})"
        ) from None


def load_config(path: str | os.PathLike[str]) -> Settings:
    """Read, parse and validate the TOML configuration file at ``path``.

    Zone file paths are resolved relative to the configuration file's
    directory and must exist.  Raises :class:`ConfigError` (listing every
    problem found) for any invalid input, and nothing else.
    """
    file = os.fsdecode(path)
    text = _read_text(file, path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, exc) from None
    except (ValueError, RecursionError) as exc:
        # tomllib lets a few errors through untranslated: integers longer
        # than sys.get_int_max_str_digits(), deeply nested arrays/tables.
        reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise ConfigError(file, None, None, f"TOML syntax error: {reason}") from None
    try:
        base_dir = os.path.dirname(os.path.abspath(file))
    except ValueError:  # pragma: no cover - path was readable, so it is sane
        base_dir = os.getcwd()
    return _Checker(file, base_dir, _Locator(text)).check(doc)


def _embedded_root() -> str:
    from imrs.zone.parse import EMBEDDED_ROOT

    return EMBEDDED_ROOT


def with_overrides(
    settings: Settings,
    *,
    listen: Iterable[str | ListenAddress] | str | None = None,
    zones: Iterable[str | os.PathLike[str] | ZoneConfig] | str | os.PathLike[str] | None = None,
    primaries: Iterable[str] | None = None,
    anchor: str | None = None,
    state_dir: str | None = None,
    at: str | None = None,
    workers: int | None = None,
    rrl_rate: int | None = None,
    http: str | None = None,
) -> Settings:
    """Apply command-line overrides: ``listen`` (``--listen``) replaces all
    listeners, ``zones`` (``--zone``) replaces all zones.  ``None`` keeps the
    current value.  ``http`` (``--http``) sets the telemetry endpoint, ``"off"`` removes a
    configured one.  Strings are parsed with :func:`parse_listen`; zone paths
    are resolved relative to the current directory and must exist (their
    origin comes from the file).  Raises :class:`ConfigError` with file
    ``"<command line>"`` and key ``--listen`` / ``--zone``.
    """
    issues: list[ConfigIssue] = []
    changes: dict[str, Any] = {}

    def fail(key: str, message: str) -> None:
        issues.append(ConfigIssue(COMMAND_LINE, None, key, message))

    if listen is not None:
        items = [listen] if isinstance(listen, str) else list(listen)
        addresses: list[ListenAddress] = []
        for item in items:
            try:
                address = item if isinstance(item, ListenAddress) else parse_listen(item)
            except ValueError as exc:
                fail("--listen", str(exc))
                continue
            if address in addresses:
                fail("--listen", f"duplicate listen address {address}")
                continue
            addresses.append(address)
        if not items:
            fail("--listen", "at least one listen address is required")
        changes["listen"] = tuple(addresses)

    if zones is not None:
        zone_items = [zones] if isinstance(zones, (str, os.PathLike)) else list(zones)
        configs: list[ZoneConfig] = []
        for zone in zone_items:
            if isinstance(zone, ZoneConfig):
                configs.append(zone)
                continue
            raw = os.fsdecode(zone)
            if not raw:
                fail("--zone", "zone file name is empty")
                continue
            try:
                resolved = os.path.abspath(os.path.expanduser(raw))
                _check_zone_file(resolved)
            except _Invalid as exc:
                fail("--zone", str(exc))
                continue
            except ValueError as exc:
                fail("--zone", f"invalid zone file name: {exc}")
                continue
            configs.append(ZoneConfig(file=resolved))
        changes["zones"] = tuple(configs)

    if primaries:
        sources = []
        for text in primaries:
            try:
                sources.append(f"ixfr://{parse_listen(text)}")
            except ValueError as exc:
                fail("--primary", str(exc))
        changes["zones"] = (ZoneConfig(name=".", sources=tuple(sources)),)
    if anchor is not None:
        try:
            resolved = anchor if anchor in ("iana", "none") else os.path.abspath(os.path.expanduser(anchor))
            if resolved not in ("iana", "none"):
                _check_zone_file(resolved, "anchor file")
            changes["zones"] = tuple(
                dataclasses.replace(z, anchor=resolved) for z in changes.get("zones", settings.zones)
            ) or (ZoneConfig(file=_embedded_root(), anchor=resolved),)
        except _Invalid as exc:
            fail("--anchor", str(exc))
    if state_dir is not None:
        path = os.path.abspath(os.path.expanduser(state_dir))
        if os.path.exists(path) and not os.path.isdir(path):
            fail("--state-dir", f"not a directory: {path}")
        changes["state_dir"] = path
    if at is not None:
        try:
            moment = datetime.datetime.strptime(at, "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
            changes["validation_time"] = moment.timestamp()
        except ValueError:
            fail("--at", f"expected YYYYMMDDHHMMSS (UTC), got {at!r}")

    if workers is not None:
        if not 0 <= workers <= 256:
            fail("--workers", f"must be between 0 (one per core) and 256, got {workers}")
        changes["workers"] = workers
    if rrl_rate is not None:
        if not 0 <= rrl_rate <= 10**7:
            fail("--rrl-rate", f"must be between 0 (off) and 10000000, got {rrl_rate}")
        changes["rrl"] = dataclasses.replace(settings.rrl, rate=rrl_rate)
    if http is not None:
        if http.strip().lower() == "off":
            changes["http"] = None
        else:
            try:
                address = parse_http(http)
            except ValueError as exc:
                fail("--http", str(exc))
            else:
                clash = _http_clash(address, changes.get("listen", settings.listen))
                if clash:
                    fail("--http", clash)
                changes["http"] = address

    if issues:
        raise ConfigError.from_issues(issues)
    return dataclasses.replace(settings, **changes)


# --------------------------------------------------------------------------
# imrs check-config
# --------------------------------------------------------------------------


def _zone_summary(zone: ZoneConfig) -> str:
    where = zone.file or ""
    if zone.sources:
        where = f"{where} + " if where else ""
        where += f"{len(zone.sources)} source{'s' if len(zone.sources) > 1 else ''} ({zone.sources[0]}{', ...' if len(zone.sources) > 1 else ''})"
    return f"{where} ({zone.name})" if zone.name is not None else where


def summarize(settings: Settings) -> str:
    """One-line description of listeners and zones."""
    listen = ", ".join(str(a) for a in settings.listen)
    if settings.zones:
        zones = ", ".join(_zone_summary(z) for z in settings.zones)
    else:
        zones = "embedded root zone"
    telemetry = f"; http {settings.http}" if settings.http is not None else ""
    return f"listen {listen}; zones: {zones}{telemetry}"


def check_config_main(
    path: str | os.PathLike[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``imrs check-config FILE``: validate ``path``.

    On success prints ``FILE: OK`` and a summary line to stdout and returns 0;
    otherwise prints one error per line to stderr and returns 1.  Never
    raises for bad input.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    file = os.fsdecode(path)
    try:
        settings = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=err)
        return 1
    except Exception as exc:  # noqa: BLE001 - last line of defence, no tracebacks
        print(f"{file}: internal error while checking configuration: {exc!r}", file=err)
        return 1
    print(f"{file}: OK", file=out)
    print(f"  {summarize(settings)}", file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m imrs.config FILE
    if len(sys.argv) != 2:
        print("usage: python -m imrs.config FILE", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(check_config_main(sys.argv[1]))
