"""Parsing a query message off the wire, with NSD's rules for what is acceptable.

:func:`parse_query` either returns a :class:`Query` to be answered or raises
:class:`Reject`, which says how the server turns the packet away: drop it, or answer with
an error built from the header alone (FORMERR, NOTIMP, REFUSED, ...), exactly as
:func:`error_response` encodes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.name

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.1)
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

OPCODE_QUERY = 0
OPCODE_NOTIFY = 4

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5
RCODE_NOTAUTH = 9
RCODE_BADVERS = 16  # extended: 1 in the OPT TTL, 0 in the header

TYPE_OPT = 41
TYPE_TSIG = 250
TYPE_IXFR = 251
TYPE_AXFR = 252
EDNS_OPTION_NSID = 3
EDNS_OPTION_COOKIE = 10  # RFC 7873
EDNS_OPTION_KEEPALIVE = 11  # RFC 7828

EDNS_NONE = 0
EDNS_OK = 1
EDNS_BADVERS = 2

MAX_NAME_WIRE = 255


class Reject(Exception):
    """The packet gets no ordinary answer.

    ``rcode`` None means drop silently.  Otherwise the answer is the header only (no
    question), with ``flags`` (QR is added) and ``rcode``, plus an OPT record when
    ``opt`` is set (FORMERR for a QDCOUNT=0 query that carries only an OPT record).
    """

    def __init__(
        self, rcode: int | None, flags: int = 0, reason: str = "", opt: EdnsInfo | None = None, notify: bytes | None = None
    ):
        super().__init__(reason)
        self.rcode = rcode
        self.flags = flags
        self.reason = reason
        self.opt = opt
        self.notify = notify  # for NOTIFY: the zone name (wire, lowercased) it is about


@dataclass(frozen=True, slots=True)
class EdnsInfo:
    """What the client's OPT record said."""

    status: int  # EDNS_NONE / EDNS_OK / EDNS_BADVERS
    payload: int = 0
    do: bool = False
    nsid: bool = False
    cookie: bytes | None = None  # the first COOKIE option's data, any length (checked by the responder)
    keepalive: int | None = None  # the first edns-tcp-keepalive option's length (None: absent)


NO_EDNS = EdnsInfo(EDNS_NONE)


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed question with its EDNS information."""

    id: int
    flags: int  # the query's flags word (opcode and rcode bits included)
    qname: dns.name.Name  # lowercased
    qname_wire: bytes  # as sent, letter case preserved, with the final zero octet
    qtype: int
    qclass: int
    question: bytes  # the question section exactly as sent (name + type + class)
    edns: EdnsInfo

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def read_name(wire: bytes, pos: int) -> int:
    """Offset after an uncompressed name at ``pos``; ValueError if malformed."""
    start = pos
    end = len(wire)
    while True:
        if pos >= end:
            raise ValueError("name runs past the end of the message")
        length = wire[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0:
            raise ValueError("compression pointer or bad label type in the question")
        pos += length + 1
        if pos - start >= MAX_NAME_WIRE:
            raise ValueError("name longer than 255 octets")
    if pos - start > MAX_NAME_WIRE:
        raise ValueError("name longer than 255 octets")
    return pos


def _skip_rr(wire: bytes, pos: int) -> int:
    """Offset after one resource record at ``pos`` (names may be compressed)."""
    end = len(wire)
    while True:
        if pos >= end:
            raise ValueError("record runs past the end")
        length = wire[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            pos += 2
            break
        if length & 0xC0:
            raise ValueError("bad label type")
        pos += length + 1
    if pos + 10 > end:
        raise ValueError("record header runs past the end")
    (rdlen,) = struct.unpack_from("!H", wire, pos + 8)
    pos += 10 + rdlen
    if pos > end:
        raise ValueError("record data runs past the end")
    return pos


def parse_opt(wire: bytes, pos: int) -> tuple[EdnsInfo, int] | None:
    """Parse an OPT record at ``pos`` as NSD does; None when it is not a valid OPT."""
    if pos + 11 > len(wire):
        return None
    if wire[pos] != 0 or struct.unpack_from("!H", wire, pos + 1)[0] != TYPE_OPT:
        return None
    payload, _ext_rcode, version, flags, rdlen = struct.unpack_from("!HBBHH", wire, pos + 3)
    if version != 0:
        return EdnsInfo(EDNS_BADVERS, payload, bool(flags & 0x8000)), pos + 11
    opt_end = pos + 11 + rdlen
    if opt_end > len(wire):
        return None
    nsid = False
    cookie: bytes | None = None
    keepalive: int | None = None
    cur = pos + 11
    while opt_end - cur >= 4:
        code, olen = struct.unpack_from("!HH", wire, cur)
        cur += 4
        if cur + olen > opt_end:
            return None
        if code == EDNS_OPTION_NSID:
            nsid = True
        elif code == EDNS_OPTION_COOKIE and cookie is None:  # the first one counts (as BIND)
            cookie = wire[cur : cur + olen]
        elif code == EDNS_OPTION_KEEPALIVE and keepalive is None:
            keepalive = olen
        cur += olen
    if cur != opt_end:
        return None
    return EdnsInfo(EDNS_OK, payload, bool(flags & 0x8000), nsid, cookie, keepalive), opt_end


def parse_query(wire: bytes) -> Query:
    """Parse ``wire`` into a Query, or raise :class:`Reject`."""
    if len(wire) < 12:
        raise Reject(None, reason="shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHHH", wire)
    if flags & QR:
        raise Reject(None, reason="a response, not a query")
    opcode = (flags >> 11) & 0xF
    if opcode not in (OPCODE_QUERY, OPCODE_NOTIFY):
        # NOTIMP keeps the query's flags (less AD), drops the question.
        raise Reject(RCODE_NOTIMP, flags & ~AD & ~0xF, "opcode not implemented")
    formerr_flags = (flags & RD) | (flags & 0x7800)
    if flags & 0xF:
        raise Reject(RCODE_FORMERR, formerr_flags, "rcode set in a query")
    try:
        qend = read_name(wire, 12)
    except ValueError as exc:
        raise Reject(RCODE_FORMERR, formerr_flags, str(exc)) from None
    if qend + 4 > len(wire):
        raise Reject(RCODE_FORMERR, formerr_flags, "question runs past the end")
    qtype, qclass = struct.unpack_from("!HH", wire, qend)
    if opcode == OPCODE_NOTIFY:
        # NOTIFY is the transfer machinery's business; nothing is configured to accept it.
        raise Reject(RCODE_REFUSED, flags & ~AD & ~0xF, "NOTIFY not accepted", notify=wire[12:qend].lower())
    if qdcount != 1:
        if qdcount == 0 and ancount == 0 and nscount == 0 and arcount == 1 and len(wire) >= 12 + 11:
            parsed = parse_opt(wire, 12)
            if parsed is not None and parsed[0].status == EDNS_OK:
                raise Reject(RCODE_FORMERR, formerr_flags, "no question", opt=parsed[0])
        raise Reject(RCODE_FORMERR, flags & 0x7800, f"QDCOUNT is {qdcount}")
    if ancount != 0 or (nscount != 0 and qtype != TYPE_IXFR):
        raise Reject(RCODE_FORMERR, formerr_flags, "records in the answer or authority section")
    pos = qend + 4
    if nscount:
        if nscount > 64:
            raise Reject(RCODE_FORMERR, formerr_flags, "too many records in an IXFR query")
        try:
            for _ in range(nscount):
                pos = _skip_rr(wire, pos)
        except ValueError as exc:
            raise Reject(RCODE_FORMERR, formerr_flags, str(exc)) from None
    edns = NO_EDNS
    if arcount > 0:
        parsed = parse_opt(wire, pos)
        if parsed is not None:
            edns, pos = parsed
            arcount -= 1
    if arcount > 0:
        if _is_tsig(wire, pos):
            # No TSIG keys are configured for queries: the key is unknown (RFC 8945 5.2.1).
            raise Reject(RCODE_NOTAUTH, (flags & ~AD & ~0xF), "TSIG with an unknown key")
        raise Reject(RCODE_FORMERR, formerr_flags, "unexpected records in the additional section")
    qname_wire = wire[12:qend]
    try:
        qname = dns.name.from_wire(qname_wire.lower(), 0)[0]
    except Exception as exc:  # dnspython raises several types for bad names
        raise Reject(RCODE_FORMERR, formerr_flags, f"bad name: {exc}") from None
    return Query(qid, flags, qname, qname_wire, qtype, qclass, wire[12 : qend + 4], edns)


def _is_tsig(wire: bytes, pos: int) -> bool:
    try:
        end = read_name(wire, pos)
    except ValueError:
        return False
    return end + 2 <= len(wire) and struct.unpack_from("!H", wire, end)[0] == TYPE_TSIG


def error_response(wire: bytes, reject: Reject, opt_record: bytes = b"") -> bytes | None:
    """The header-only answer a :class:`Reject` asks for (None: drop)."""
    if reject.rcode is None:
        return None
    qid = wire[:2] if len(wire) >= 2 else b"\0\0"
    flags = (reject.flags | QR) & 0xFFF0 | (reject.rcode & 0xF)
    arcount = 1 if opt_record else 0
    return qid + struct.pack("!HHHHH", flags, 0, 0, 0, arcount) + opt_record
