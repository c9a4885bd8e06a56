"""Zone transfer client: AXFR (RFC 5936), IXFR (RFC 1995) and SOA checks over TCP, with TSIG.

Runs in a worker thread of the control plane, so it is plain blocking socket code; every
connect and read has a timeout and a whole transfer has a wall-clock limit.

Messages are read with a lean wire parser straight into :class:`~imrs.zone.records.Record`s
(owner lowercased, RDATA uncompressed) because building dnspython messages for a root-zone
AXFR costs seconds.  dnspython is used only for the small parts that are not hot: building the
query and signing and verifying TSIG (``dns.tsig``).  Anything malformed becomes a
:class:`TransferError` naming the reason.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig

from imrs.zone.records import (
    CLASS_IN,
    TYPE_SOA,
    TYPE_ZONEMD,
    Diff,
    Record,
    ZoneRecords,
    is_subdomain,
    name_to_text,
    soa_serial,
)

TYPE_AXFR = 252
TYPE_IXFR = 251
TYPE_TSIG = 250
TYPE_OPT = 41

#: A transfer may take this many times its per-operation timeout in all (at least 5 min).
TOTAL_TIME_FACTOR = 10
MIN_TOTAL_TIME = 300.0
#: Refuse transfers larger than this many bytes of DNS messages.
MAX_TRANSFER_BYTES = 512 * 1024 * 1024
#: RFC 8945 section 5.3.1: a client accepts at most 99 unsigned messages in a row.
MAX_UNSIGNED_RUN = 99


class TransferError(Exception):
    """A transfer or SOA query failed; the message says why."""


class IxfrUnavailable(TransferError):
    """The primary refused IXFR (REFUSED, NOTIMP, FORMERR): ask for AXFR instead."""


# --- TSIG keys -------------------------------------------------------------------------------

TSIG_ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key (RFC 8945): its name, HMAC algorithm and secret."""

    name: str
    algorithm: str = "hmac-sha256"
    secret: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        algorithm = self.algorithm.lower().rstrip(".")
        if algorithm not in TSIG_ALGORITHMS:
            raise ValueError(f"unknown TSIG algorithm {self.algorithm!r}; expected one of {', '.join(TSIG_ALGORITHMS)}")
        object.__setattr__(self, "algorithm", algorithm)
        if not self.secret:
            raise ValueError(f"TSIG key {self.name!r}: the secret is empty")
        try:
            dns.name.from_text(self.name)
        except dns.exception.DNSException as exc:
            raise ValueError(f"TSIG key name {self.name!r} is not a domain name: {exc}") from None

    @classmethod
    def from_text(cls, text: str) -> TsigKey:
        """Parse ``name:algorithm:base64`` or ``name:base64`` (dig's ``algorithm:name:base64`` too)."""
        parts = text.strip().split(":")
        if len(parts) == 2:
            name, algorithm, secret_text = parts[0], "hmac-sha256", parts[1]
        elif len(parts) == 3:
            if parts[1].lower() in TSIG_ALGORITHMS or parts[0].lower() not in TSIG_ALGORITHMS:
                name, algorithm, secret_text = parts
            else:
                algorithm, name, secret_text = parts
        else:
            raise ValueError(f"TSIG key {text!r}: expected name:algorithm:base64-secret")
        if not name:
            raise ValueError(f"TSIG key {text!r}: the name is empty")
        try:
            secret = base64.b64decode(secret_text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"TSIG key {name!r}: the secret is not valid base64") from None
        return cls(name, algorithm, secret)

    def to_dnspython(self) -> dns.tsig.Key:
        return dns.tsig.Key(dns.name.from_text(self.name), self.secret, TSIG_ALGORITHMS[self.algorithm])


def parse_tsig_key(text: str) -> TsigKey:
    return TsigKey.from_text(text)


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IxfrResult:
    """What an IXFR brought: nothing new, differences to apply in order, or a whole zone.

    ``serial`` is the primary's serial.  When both ``diffs`` is empty and ``zone`` is None the
    primary has nothing newer (RFC 1995 section 4: the answer is its SOA alone)."""

    serial: int
    diffs: tuple[Diff, ...] = ()
    zone: ZoneRecords | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.diffs and self.zone is None


def serial_gt(a: int, b: int) -> bool:
    """Whether serial ``a`` is newer than ``b`` in serial number arithmetic (RFC 1982)."""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000


# --- wire parsing --------------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: a message is malformed; becomes a TransferError with context."""


def _read_name(msg: bytes, pos: int, limit: int, cache: dict[int, bytes]) -> tuple[bytes, int]:
    """The name at ``pos`` (compression pointers followed, letter case kept) and the offset
    after it.  The name's own bytes must end by ``limit``; pointers must go strictly
    backwards, which rules out loops."""
    start = pos
    segment_start = pos
    end = -1
    parts: list[bytes] = []
    while True:
        if pos >= limit:
            raise _Malformed("name runs past the end of its data")
        length = msg[pos]
        if length == 0:
            tail = b"\x00"
            if end < 0:
                end = pos + 1
            break
        if length >= 0xC0:
            if pos + 1 >= limit:
                raise _Malformed("compression pointer cut short")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= segment_start:
                raise _Malformed("compression pointer does not point backwards")
            hit = cache.get(target)
            if hit is not None:
                tail = hit
                break
            pos = segment_start = target
            limit = len(msg)
            continue
        if length > 63:
            raise _Malformed(f"bad label type {length >> 6:#x}")
        parts.append(msg[pos : pos + 1 + length])
        pos += 1 + length
    name = b"".join(parts) + tail if parts else tail
    if len(name) > 255:
        raise _Malformed("name longer than 255 octets")
    cache[start] = name
    return name, end


_N = "name"
_REST = "rest"
#: RDATA layouts of types that embed domain names: fixed field sizes, names, and
#: whether opaque bytes may follow.  Names are expanded if compressed (RFC 3597 allows
#: compression only in the well-known types, but expanding is harmless either way).
_LAYOUTS: dict[int, tuple[object, ...]] = {
    2: (_N,), 3: (_N,), 4: (_N,), 5: (_N,), 7: (_N,), 8: (_N,), 9: (_N,), 12: (_N,), 39: (_N,),
    6: (_N, _N, 20),  # SOA
    14: (_N, _N),  # MINFO
    17: (_N, _N),  # RP
    15: (2, _N), 18: (2, _N), 21: (2, _N), 36: (2, _N),  # MX AFSDB RT KX
    26: (2, _N, _N),  # PX
    33: (6, _N),  # SRV
    24: (18, _N, _REST), 46: (18, _N, _REST),  # SIG RRSIG
    30: (_N, _REST), 47: (_N, _REST),  # NXT NSEC
}


def _expand_rdata(msg: bytes, start: int, end: int, layout: tuple[object, ...], cache: dict[int, bytes]) -> bytes:
    pos = start
    out: list[bytes] = []
    compressed = False
    for item in layout:
        if item is _N:
            name, after = _read_name(msg, pos, end, cache)
            if after - pos != len(name):
                compressed = True
            out.append(name)
            pos = after
        elif item is _REST:
            out.append(msg[pos:end])
            pos = end
        else:
            size = item  # type: ignore[assignment]
            if pos + size > end:  # type: ignore[operator]
                raise _Malformed("RDATA shorter than its fixed fields")
            out.append(msg[pos : pos + size])  # type: ignore[operator]
            pos += size  # type: ignore[operator]
    if pos != end:
        raise _Malformed("RDATA length does not match its contents")
    return b"".join(out) if compressed else msg[start:end]


@dataclass
class _Tsig:
    """Where a message's TSIG record is and what it says."""

    start: int
    owner: dns.name.Name
    rdata: dns.rdtypes.ANY.TSIG.TSIG


@dataclass
class _Message:
    flags: int
    answers: list[Record]
    has_question: bool
    tsig: _Tsig | None


def _parse_message(msg: bytes, qid: int, qname: bytes, qtype: int) -> _Message:
    """Check the header and question of a response and read its answer records."""
    n = len(msg)
    if n < 12:
        raise _Malformed(f"message of {n} octets is shorter than a DNS header")
    rid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHHH", msg, 0)
    if rid != qid:
        raise _Malformed(f"response ID {rid} does not match query ID {qid}")
    if not flags & 0x8000:
        raise _Malformed("message is not a response (QR clear)")
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        raise _Malformed(f"unexpected opcode {dns.opcode.to_text(opcode)}")  # type: ignore[arg-type]
    if flags & 0x0200:
        raise _Malformed("response is truncated (TC) over TCP")
    if qdcount > 1:
        raise _Malformed(f"{qdcount} questions in a response")
    cache: dict[int, bytes] = {}
    pos = 12
    if qdcount:
        name, pos = _read_name(msg, pos, n, cache)
        if pos + 4 > n:
            raise _Malformed("question cut short")
        rtype, rclass = struct.unpack_from("!HH", msg, pos)
        pos += 4
        if name.lower() != qname or rtype != qtype or rclass != CLASS_IN:
            raise _Malformed(
                f"question {name_to_text(name)} {dns.rdatatype.to_text(rtype)} does not match the query "
                f"{name_to_text(qname)} {dns.rdatatype.to_text(qtype)}"
            )
    answers: list[Record] = []
    append = answers.append
    unpack = struct.unpack_from
    layouts = _LAYOUTS
    for _ in range(ancount):
        owner, pos = _read_name(msg, pos, n, cache)
        if pos + 10 > n:
            raise _Malformed("record header cut short")
        rdtype, rdclass, ttl, rdlength = unpack("!HHIH", msg, pos)
        pos += 10
        end = pos + rdlength
        if end > n:
            raise _Malformed(f"RDATA of {name_to_text(owner)} {dns.rdatatype.to_text(rdtype)} runs past the end of the message")
        layout = layouts.get(rdtype)
        if layout is None:
            rdata = msg[pos:end]
        else:
            rdata = _expand_rdata(msg, pos, end, layout, cache)
        append(Record(owner.lower(), rdtype, rdclass, ttl, rdata))
        pos = end
    tsig = None
    for index in range(nscount + arcount):
        rr_start = pos
        owner, pos = _read_name(msg, pos, n, cache)
        if pos + 10 > n:
            raise _Malformed("record header cut short")
        rdtype, rdclass, ttl, rdlength = unpack("!HHIH", msg, pos)
        pos += 10
        if pos + rdlength > n:
            raise _Malformed("RDATA runs past the end of the message")
        if rdtype == TYPE_TSIG:
            if index != nscount + arcount - 1 or index < nscount:
                raise _Malformed("TSIG record is not the last record of the additional section")
            try:
                rd = dns.rdata.from_wire(dns.rdataclass.ANY, dns.rdatatype.TSIG, msg, pos, rdlength)
                tsig = _Tsig(rr_start, dns.name.from_wire(msg, rr_start)[0], rd)  # type: ignore[arg-type]
            except (dns.exception.DNSException, ValueError, IndexError, struct.error) as exc:
                raise _Malformed(f"malformed TSIG record: {exc or type(exc).__name__}") from None
        pos += rdlength
    if pos != n:
        raise _Malformed(f"{n - pos} octets of garbage after the last record")
    return _Message(flags, answers, bool(qdcount), tsig)


# --- TSIG ------------------------------------------------------------------------------------------


_TSIG_ERRORS = {
    dns.tsig.PeerBadKey: "the primary does not know our TSIG key (BADKEY)",
    dns.tsig.PeerBadSignature: "the primary rejected our TSIG signature (BADSIG): wrong secret or algorithm?",
    dns.tsig.PeerBadTime: "the primary rejected our TSIG time (BADTIME): clocks differ",
    dns.tsig.PeerBadTruncation: "the primary reported BADTRUNC",
    dns.tsig.BadSignature: "TSIG signature of the response does not verify: wrong secret?",
    dns.tsig.BadKey: "response is signed with another TSIG key",
    dns.tsig.BadAlgorithm: "response is signed with another TSIG algorithm",
    dns.tsig.BadTime: "TSIG time of the response is outside its fudge: clocks differ",
}


def _tsig_error_text(exc: Exception) -> str:
    for kind, text in _TSIG_ERRORS.items():
        if isinstance(exc, kind):
            return text
    return f"TSIG check failed: {exc or type(exc).__name__}"


class _TsigVerifier:
    """Verifies the TSIG of every message of a response stream (RFC 8945 section 5.3.1)."""

    def __init__(self, key: TsigKey | None, request_mac: bytes):
        self.key = key.to_dnspython() if key is not None else None
        self.key_name = key.name if key is not None else ""
        self.request_mac = request_mac
        self.ctx = None
        self.unsigned_run = 0
        self.messages = 0

    def check(self, wire: bytes, tsig: _Tsig | None, multi: bool) -> None:
        first = self.messages == 0
        self.messages += 1
        if self.key is None:
            if tsig is not None:
                raise TransferError("response is TSIG-signed but no key is configured for this source")
            return
        if tsig is None:
            if first:
                raise TransferError(f"response is not TSIG-signed (key {self.key_name} expected)")
            self.unsigned_run += 1
            if self.unsigned_run > MAX_UNSIGNED_RUN:
                raise TransferError(f"more than {MAX_UNSIGNED_RUN} unsigned messages in a row")
            assert self.ctx is not None
            self.ctx.update(wire)
            return
        try:
            self.ctx = dns.tsig.validate(wire, self.key, tsig.owner, tsig.rdata, int(time.time()), self.request_mac,
                                         tsig.start, self.ctx, multi)
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm,
                dns.tsig.BadTime, dns.exception.FormError, NotImplementedError) as exc:
            raise TransferError(_tsig_error_text(exc)) from None
        self.unsigned_run = 0

    def finish(self) -> None:
        if self.key is not None and self.unsigned_run:
            raise TransferError("the last message of the transfer is not TSIG-signed")


_PEER_TSIG_ERRORS = {
    16: "the primary rejected our TSIG signature (BADSIG): wrong secret or algorithm?",
    17: "the primary does not know our TSIG key (BADKEY)",
    18: "the primary rejected our TSIG time (BADTIME): clocks differ",
    22: "the primary reported BADTRUNC",
}


def _peer_tsig_error(tsig: _Tsig | None) -> str | None:
    """The TSIG error a primary reports in its response, as text (RFC 8945 section 5.2)."""
    if tsig is None or tsig.rdata.error == 0:
        return None
    return _PEER_TSIG_ERRORS.get(tsig.rdata.error, f"the primary reported TSIG error {tsig.rdata.error}")


# --- the conversation ------------------------------------------------------------------------


def _make_query(origin: bytes, qtype: int, tsig: TsigKey | None, authority: Record | None = None) -> tuple[int, bytes, bytes]:
    """(query ID, wire, request MAC) of a query without RD, signed if a key is given."""
    name = dns.name.from_wire(origin, 0)[0]
    query = dns.message.make_query(name, qtype, dns.rdataclass.IN, flags=0)
    query.id = int.from_bytes(os.urandom(2), "big")
    if authority is not None:
        rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.SOA, authority.rdata, 0, len(authority.rdata))
        query.authority.append(dns.rrset.from_rdata(name, authority.ttl, rd))
    if tsig is not None:
        query.use_tsig(tsig.to_dnspython())
    wire = query.to_wire()
    return query.id, wire, (query.mac or b"") if tsig is not None else b""


class _Connection:
    """A TCP connection to a primary that reads length-prefixed messages within time limits."""

    def __init__(self, address: str, port: int, timeout: float):
        self.timeout = timeout
        self.total = max(MIN_TOTAL_TIME, TOTAL_TIME_FACTOR * timeout)
        self.deadline = time.monotonic() + self.total
        self.received = 0
        self.buffer = bytearray()
        try:
            self.sock = socket.create_connection((address, port), timeout=timeout)
        except TimeoutError:
            raise TransferError(f"connecting timed out after {timeout:g}s") from None
        except ConnectionRefusedError:
            raise TransferError("connection refused") from None
        except OSError as exc:
            raise TransferError(f"cannot connect: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.sock.close()

    def send(self, wire: bytes) -> None:
        try:
            self.sock.sendall(struct.pack("!H", len(wire)) + wire)
        except TimeoutError:
            raise TransferError(f"sending the query timed out after {self.timeout:g}s") from None
        except OSError as exc:
            raise TransferError(f"cannot send the query: {exc.strerror or exc}") from None

    def _fill(self, want: int, what: str) -> None:
        while len(self.buffer) < want:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TransferError(f"transfer took longer than {self.total:g}s in all")
            self.sock.settimeout(min(self.timeout, remaining))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TransferError(f"timed out after {self.timeout:g}s waiting for {what}") from None
            except OSError as exc:
                raise TransferError(f"connection failed while waiting for {what}: {exc.strerror or exc}") from None
            if not chunk:
                if self.buffer:
                    raise TransferError(f"connection closed in the middle of {what}")
                raise TransferError(f"connection closed before {what}")
            self.received += len(chunk)
            if self.received > MAX_TRANSFER_BYTES:
                raise TransferError(f"transfer is larger than {MAX_TRANSFER_BYTES} octets")
            self.buffer += chunk

    def messages(self) -> Iterator[bytes]:
        count = 0
        while True:
            what = f"message {count + 1}" if count else "the response"
            self._fill(2, what)
            length = (self.buffer[0] << 8) | self.buffer[1]
            self._fill(2 + length, what)
            wire = bytes(self.buffer[2 : 2 + length])
            del self.buffer[: 2 + length]
            count += 1
            yield wire


def _rcode_error(msg: _Message, kind: str) -> TransferError | None:
    rcode = msg.flags & 0xF
    peer = _peer_tsig_error(msg.tsig)
    if peer is not None:
        return TransferError(peer)
    if rcode == 0:
        return None
    text = dns.rcode.to_text(rcode)  # type: ignore[arg-type]
    if kind == "IXFR" and rcode in (dns.rcode.REFUSED, dns.rcode.NOTIMP, dns.rcode.FORMERR):
        return IxfrUnavailable(f"the primary answered IXFR with {text}")
    return TransferError(f"the primary answered {kind} with {text}")


class _Collector:
    """Turns the stream into records, checking class and zone membership as they arrive."""

    def __init__(self, origin: bytes, kind: str):
        self.origin = origin
        self.kind = kind
        self.root = origin == b"\x00"

    def check(self, record: Record) -> None:
        if record.rdclass != CLASS_IN:
            raise TransferError(f"{self.kind} carries a record of class {dns.rdataclass.to_text(record.rdclass)}: "  # type: ignore[arg-type]
                                f"{name_to_text(record.owner)}")
        if not self.root and not is_subdomain(record.owner, self.origin):
            raise TransferError(f"{self.kind} carries a record outside the zone: {name_to_text(record.owner)} "
                                f"{dns.rdatatype.to_text(record.rdtype)}")


def _is_apex_soa(record: Record, origin: bytes) -> bool:
    return record.rdtype == TYPE_SOA and record.owner == origin


def _soa_serial_checked(record: Record) -> int:
    try:
        serial = soa_serial(record.rdata)
    except IndexError:
        serial = -1
    if serial < 0 or len(record.rdata) < 22:
        raise TransferError("malformed SOA record")
    return serial


def _run(address: str, port: int, origin: bytes, qtype: int, tsig: TsigKey | None, timeout: float,
         authority: Record | None, consume) -> object:
    """Drive a transfer: ``consume(records, number)`` returns a result when complete."""
    kind = dns.rdatatype.to_text(qtype)  # type: ignore[arg-type]
    qid, wire, request_mac = _make_query(origin, qtype, tsig, authority)
    conn = _Connection(address, port, timeout)
    verifier = _TsigVerifier(tsig, request_mac)
    try:
        conn.send(wire)
        for number, message in enumerate(conn.messages(), 1):
            try:
                parsed = _parse_message(message, qid, origin, qtype)
            except _Malformed as exc:
                raise TransferError(f"malformed message {number} of the {kind} response: {exc}") from None
            if number == 1:
                error = _rcode_error(parsed, kind)
                if error is not None:
                    raise error
                if not parsed.has_question:
                    raise TransferError(f"the first message of the {kind} response has no question")
            elif parsed.flags & 0xF:
                raise TransferError(f"message {number} of the {kind} response has rcode "
                                    f"{dns.rcode.to_text(parsed.flags & 0xF)}")  # type: ignore[arg-type]
            verifier.check(message, parsed.tsig, multi=True)
            result = consume(parsed.answers, number)
            if result is not None:
                verifier.finish()
                return result
    finally:
        conn.close()
    raise AssertionError("unreachable")  # pragma: no cover


# --- AXFR ------------------------------------------------------------------------------------


class _AxfrBody:
    """Collects an AXFR body after its first SOA until the closing SOA (RFC 5936 section 2.2)."""

    def __init__(self, origin: bytes, kind: str, first_soa: Record, source: str):
        self.origin = origin
        self.kind = kind
        self.collector = _Collector(origin, kind)
        self.first_soa = first_soa
        self.serial = _soa_serial_checked(first_soa)
        self.records: list[Record] = [first_soa]
        self.source = source

    def feed(self, records: list[Record], start: int) -> ZoneRecords | None:
        origin = self.origin
        check = self.collector.check
        out = self.records
        for i in range(start, len(records)):
            record = records[i]
            check(record)
            if record.rdtype == TYPE_SOA and record.owner == origin:
                if _soa_serial_checked(record) != self.serial:
                    raise TransferError(f"{self.kind} ends with SOA serial {_soa_serial_checked(record)}, "
                                        f"but started with {self.serial}")
                if i != len(records) - 1:
                    raise TransferError(f"{self.kind} has {len(records) - 1 - i} records after its closing SOA")
                return ZoneRecords(origin, tuple(out), self.source)
            out.append(record)
        return None


def axfr(address: str, port: int, origin: bytes, *, tsig: TsigKey | None = None, timeout: float = 30) -> ZoneRecords:
    """Transfer a whole zone with AXFR; raises TransferError."""
    origin = origin.lower()
    source = f"axfr://{_hostport(address, port)}"
    body: _AxfrBody | None = None

    def consume(records: list[Record], number: int) -> ZoneRecords | None:
        nonlocal body
        start = 0
        if body is None:
            if not records:
                if number == 1:
                    raise TransferError("the first AXFR message has no records")
                return None
            first = records[0]
            if not _is_apex_soa(first, origin):
                raise TransferError(f"AXFR does not start with the SOA of {name_to_text(origin)} but with "
                                    f"{name_to_text(first.owner)} {dns.rdatatype.to_text(first.rdtype)}")
            _Collector(origin, "AXFR").check(first)
            body = _AxfrBody(origin, "AXFR", first, source)
            start = 1
        return body.feed(records, start)

    return _run(address, port, origin, TYPE_AXFR, tsig, timeout, None, consume)  # type: ignore[return-value]


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- IXFR ------------------------------------------------------------------------------------


class _IxfrState:
    """Parses an IXFR response record by record (RFC 1995 section 4)."""

    def __init__(self, origin: bytes, current: ZoneRecords, source: str):
        self.origin = origin
        self.current_serial = current.serial
        self.source = source
        self.collector = _Collector(origin, "IXFR")
        self.new_soa: Record | None = None
        self.new_serial = 0
        self.mode = ""  # "", "axfr", "del", "add"
        self.axfr: _AxfrBody | None = None
        self.diffs: list[Diff] = []
        self.old: Record | None = None
        self.new: Record | None = None
        self.deleted: list[Record] = []
        self.added: list[Record] = []

    def feed(self, records: list[Record], number: int) -> IxfrResult | None:
        origin = self.origin
        i = 0
        if self.new_soa is None:
            if not records:
                if number == 1:
                    raise TransferError("the first IXFR message has no records")
                return None
            first = records[0]
            if not _is_apex_soa(first, origin):
                raise TransferError(f"IXFR does not start with the SOA of {name_to_text(origin)}")
            self.collector.check(first)
            self.new_soa = first
            self.new_serial = _soa_serial_checked(first)
            i = 1
            if self.new_serial == self.current_serial or not serial_gt(self.new_serial, self.current_serial):
                if len(records) > 1:
                    raise TransferError(f"IXFR says serial {self.new_serial} (ours is {self.current_serial}) "
                                        "but carries more records")
                return IxfrResult(self.new_serial)
        if i >= len(records):
            return None
        if self.mode == "":
            second = records[i]
            if _is_apex_soa(second, origin):
                self.mode = "del"
                self.old = second
                if _soa_serial_checked(second) != self.current_serial:
                    raise TransferError(f"IXFR starts at serial {_soa_serial_checked(second)}, ours is {self.current_serial}")
                self.deleted = [second]
                i += 1
            else:
                self.mode = "axfr"
                self.axfr = _AxfrBody(origin, "IXFR (AXFR-style)", self.new_soa, self.source)
        if self.mode == "axfr":
            assert self.axfr is not None
            zone = self.axfr.feed(records, i)
            return IxfrResult(self.new_serial, zone=zone) if zone is not None else None
        return self._incremental(records, i)

    def _incremental(self, records: list[Record], i: int) -> IxfrResult | None:
        origin = self.origin
        check = self.collector.check
        for j in range(i, len(records)):
            record = records[j]
            check(record)
            if record.rdtype == TYPE_SOA and record.owner == origin:
                serial = _soa_serial_checked(record)
                if self.mode == "del":
                    self.mode = "add"
                    self.new = record
                    self.added = [record]
                    continue
                assert self.old is not None and self.new is not None
                old_serial, new_serial = _soa_serial_checked(self.old), _soa_serial_checked(self.new)
                self.diffs.append(Diff(old_serial, new_serial, tuple(self.deleted), tuple(self.added)))
                if new_serial == self.new_serial:
                    if serial != self.new_serial:
                        raise TransferError(f"IXFR ends with SOA serial {serial}, expected {self.new_serial}")
                    if j != len(records) - 1:
                        raise TransferError(f"IXFR has {len(records) - 1 - j} records after its closing SOA")
                    return IxfrResult(self.new_serial, diffs=tuple(self.diffs))
                if serial != new_serial:
                    raise TransferError(f"IXFR difference starts at serial {serial}, the previous one ended at {new_serial}")
                self.mode = "del"
                self.old = record
                self.deleted = [record]
                self.new = None
                self.added = []
            elif self.mode == "del":
                self.deleted.append(record)
            else:
                self.added.append(record)
        return None


def ixfr(address: str, port: int, origin: bytes, current: ZoneRecords, *, tsig: TsigKey | None = None,
         timeout: float = 30) -> IxfrResult:
    """Ask for the changes since ``current`` with IXFR over TCP.

    Raises IxfrUnavailable when the primary refuses IXFR (then use AXFR), TransferError on
    any other failure.  Applying the returned differences is the caller's job."""
    origin = origin.lower()
    state = _IxfrState(origin, current, f"ixfr://{_hostport(address, port)}")
    return _run(address, port, origin, TYPE_IXFR, tsig, timeout, current.soa, state.feed)  # type: ignore[return-value]


# --- SOA and ZONEMD queries ------------------------------------------------------------------------


def _single(address: str, port: int, origin: bytes, qtype: int, tsig: TsigKey | None, conn: _Connection) -> tuple[_Message, list[Record]]:
    kind = dns.rdatatype.to_text(qtype)  # type: ignore[arg-type]
    qid, wire, request_mac = _make_query(origin, qtype, tsig)
    conn.send(wire)
    message = next(conn.messages())
    try:
        parsed = _parse_message(message, qid, origin, qtype)
    except _Malformed as exc:
        raise TransferError(f"malformed {kind} response: {exc}") from None
    peer = _peer_tsig_error(parsed.tsig)
    if peer is not None:
        raise TransferError(peer)
    rcode = parsed.flags & 0xF
    if rcode:
        raise TransferError(f"the primary answered the {kind} query with {dns.rcode.to_text(rcode)}")  # type: ignore[arg-type]
    if not parsed.flags & 0x0400:
        raise TransferError(f"the {kind} answer is not authoritative (AA clear)")
    _TsigVerifier(tsig, request_mac).check(message, parsed.tsig, multi=False)
    return parsed, [r for r in parsed.answers if r.owner == origin and r.rdtype == qtype and r.rdclass == CLASS_IN]


def query_soa(address: str, port: int, origin: bytes, *, tsig: TsigKey | None = None,
              timeout: float = 5) -> tuple[int, Record, tuple[Record, ...]]:
    """(serial, SOA record, ZONEMD records) the primary serves, asked over one TCP connection."""
    origin = origin.lower()
    conn = _Connection(address, port, timeout)
    try:
        _, soas = _single(address, port, origin, TYPE_SOA, tsig, conn)
        if len(soas) != 1:
            raise TransferError(f"the SOA answer has {len(soas)} SOA records for {name_to_text(origin)}")
        soa = soas[0]
        serial = _soa_serial_checked(soa)
        _, zonemds = _single(address, port, origin, TYPE_ZONEMD, tsig, conn)
    finally:
        conn.close()
    return serial, soa, tuple(zonemds)
