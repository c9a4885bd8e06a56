"""Serving zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995) out, with an ACL and TSIG (RFC 8945).

A local resolver (unbound auth-zone, a BIND mirror zone) or a secondary takes its copy of a
zone from us over TCP.  :func:`answer_transfer` turns one AXFR/IXFR query into the response
messages; the TCP listener writes them.  Rendering a zone into messages is done once per
zone version (and per IXFR starting serial) and cached, so a second transfer of the same
version costs only the TSIG signatures, if any.

Who may transfer is a :class:`TransferPolicy`: by default nobody (REFUSED, as NSD without
``provide-xfr``); each rule names a network and, optionally, a TSIG key the query must be
signed with.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from imrs.answer.query import read_name
from imrs.answer.respond import EDNS_OPTION_EXPIRE, expire_option
from imrs.zone.records import (
    TYPE_SOA,
    Diff,
    Record,
    ZoneVersion,
    name_to_text,
    soa_serial,
)

if TYPE_CHECKING:
    from imrs.serve.snapshot import Snapshot

log = logging.getLogger("imrs.xfrout")

TYPE_IXFR = 251
TYPE_AXFR = 252
QR, AA, RD = 0x8000, 0x0400, 0x0100
RCODE_FORMERR, RCODE_NOTAUTH, RCODE_REFUSED = 1, 9, 5
EDE_PROHIBITED = 18
#: Answer records are packed into messages of about this size (NSD uses 16 KB too): small
#: enough to leave room for OPT and TSIG, large enough to keep the message count low.
MESSAGE_LIMIT = 16384
TSIG_FUDGE = 300

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- policy -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TransferRule:
    """Transfers are allowed from ``network``, signed with TSIG key ``key`` if one is named."""

    network: Network
    key: dns.name.Name | None = None


@dataclass(frozen=True)
class TransferPolicy:
    """Who may transfer which zone.  ``allow`` applies to every zone without an entry in
    ``zone_allow`` (origin wire, lowercased → rules); ``tsig_keys`` are the keys queries may be
    signed with, by name."""

    allow: tuple[TransferRule, ...] = ()
    tsig_keys: Mapping[str, dns.tsig.Key] = field(default_factory=dict)
    zone_allow: Mapping[bytes, tuple[TransferRule, ...]] = field(default_factory=dict)

    def key(self, name: dns.name.Name) -> dns.tsig.Key | None:
        for key in self.tsig_keys.values():
            if key.name == name:
                return key
        return None

    def permits(self, origin: bytes, peer: str, key_name: dns.name.Name | None) -> bool:
        """Whether ``peer`` (an address) may transfer zone ``origin`` with that TSIG key."""
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for rule in self.zone_allow.get(origin, self.allow):
            if address in rule.network and (rule.key is None or rule.key == key_name):
                return True
        return False


def parse_rule(text: str) -> TransferRule:
    """``CIDR``, ``CIDR key NAME`` (the configuration's form) or ``CIDR/NAME``; ValueError
    with a message saying what is wrong."""
    parts = text.split()
    key: str | None = None
    if len(parts) == 3 and parts[1].lower() == "key":
        cidr, key = parts[0], parts[2]
    elif len(parts) == 1:
        cidr = parts[0]
        head, _, tail = cidr.rpartition("/")
        if head and not tail.isdigit():
            cidr, key = head, tail
    else:
        raise ValueError(f"transfer rule {text!r}: expected 'CIDR' or 'CIDR key NAME'")
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ValueError(f"transfer rule {text!r}: {cidr!r} is not an address or network") from None
    try:
        name = dns.name.from_text(key) if key else None
    except dns.exception.DNSException:
        raise ValueError(f"transfer rule {text!r}: bad key name {key!r}") from None
    return TransferRule(network, name)


def parse_tsig_key(text: str) -> dns.tsig.Key:
    """``name:algorithm:base64-secret`` (as ``dig -y``, with the name first)."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"TSIG key {text!r}: expected name:algorithm:secret")
    name, algorithm, secret = parts
    try:
        return dns.tsig.Key(name, secret, algorithm)
    except Exception:  # noqa: BLE001 - dnspython raises several kinds for a bad secret or name
        raise ValueError(f"TSIG key {name!r}: bad name, algorithm or base64 secret") from None


def make_policy(rules: Iterable[TransferRule], keys: Iterable[dns.tsig.Key],
                zone_allow: Mapping[bytes, Sequence[TransferRule]] | None = None) -> TransferPolicy:
    """A policy; ValueError when a rule names a key that is not given."""
    key_map = {key.name.to_text().lower(): key for key in keys}
    zone_rules = {origin: tuple(r) for origin, r in (zone_allow or {}).items()}
    every = [*rules] + [r for rs in zone_rules.values() for r in rs]
    for rule in every:
        if rule.key is not None and rule.key.to_text().lower() not in key_map:
            raise ValueError(f"transfer rule for {rule.network} names TSIG key {rule.key} that is not defined")
    return TransferPolicy(tuple(rules), key_map, zone_rules)


# --- recognising a transfer query ------------------------------------------------------

def transfer_qtype(wire: bytes) -> int | None:
    """AXFR or IXFR when ``wire`` is a standard query for one, else None (cheap: runs for
    every TCP query)."""
    if len(wire) < 17 or wire[2] & 0xF8:  # a response, or an opcode other than QUERY
        return None
    try:
        end = read_name(wire, 12)
    except ValueError:
        return None
    if end + 4 > len(wire):
        return None
    qtype = (wire[end] << 8) | wire[end + 1]
    return qtype if qtype == TYPE_AXFR or qtype == TYPE_IXFR else None


# --- rendering ------------------------------------------------------------------------------

#: Types whose RDATA names may be compressed (RFC 3597 section 4), with the offset of the name.
_NAME_AT = {2: 0, 5: 0, 12: 0, 15: 2}  # NS CNAME PTR MX


def _write_name(buf: bytearray, compress: dict[bytes, int], base: int, wire: bytes) -> None:
    i = 0
    lower = wire.lower()
    while wire[i]:
        suffix = lower[i:]
        pos = compress.get(suffix)
        if pos is not None:
            buf += (0xC000 | pos).to_bytes(2, "big")
            return
        here = base + len(buf)
        if here <= 0x3FFF:
            compress[suffix] = here
        n = wire[i]
        buf += wire[i : i + 1 + n]
        i += 1 + n
    buf.append(0)


def _write_record(buf: bytearray, compress: dict[bytes, int], base: int, record: Record) -> None:
    owner, rdtype, rdclass, ttl, rdata = record
    _write_name(buf, compress, base, owner)
    buf += struct.pack("!HHI", rdtype, rdclass, ttl)
    at = len(buf)
    buf += b"\0\0"
    if rdtype == TYPE_SOA:
        i = read_name(rdata, 0)
        j = read_name(rdata, i)
        _write_name(buf, compress, base, rdata[:i])
        _write_name(buf, compress, base, rdata[i:j])
        buf += rdata[j:]
    elif rdtype in _NAME_AT:
        k = _NAME_AT[rdtype]
        buf += rdata[:k]
        _write_name(buf, compress, base, rdata[k:])
    else:
        buf += rdata
    size = len(buf) - at - 2
    buf[at : at + 2] = size.to_bytes(2, "big")


@dataclass(frozen=True)
class RenderedTransfer:
    """The answer sections of a transfer: (records octets, record count) per message; the
    first message's octets assume a question of ``qlen`` octets after the header."""

    messages: tuple[tuple[bytes, int], ...]
    qlen: int
    record_count: int

    @property
    def size(self) -> int:
        return sum(len(body) for body, _ in self.messages)


def render_records(records: Iterable[Record], qlen: int, limit: int = MESSAGE_LIMIT) -> RenderedTransfer:
    """Pack records into messages of at most ``limit`` octets (header and question counted),
    with name compression within each message."""
    out: list[tuple[bytes, int]] = []
    base = 12 + qlen
    buf = bytearray()
    compress: dict[bytes, int] = {}
    count = total = 0
    for record in records:
        mark = len(buf)
        _write_record(buf, compress, base, record)
        if base + len(buf) > limit and count:
            del buf[mark:]
            out.append((bytes(buf), count))
            base, buf, compress, count = 12, bytearray(), {}, 0
            _write_record(buf, compress, base, record)
        count += 1
        total += 1
    out.append((bytes(buf), count))
    return RenderedTransfer(tuple(out), qlen, total)


def axfr_records(version: ZoneVersion) -> list[Record]:
    """SOA, every other record, SOA (RFC 5936 section 2.2)."""
    zone = version.records
    soa = zone.soa
    body = [r for r in zone.records if not (r.rdtype == TYPE_SOA and r.owner == zone.origin)]
    return [soa, *body, soa]


def ixfr_records(version: ZoneVersion, chain: Sequence[Diff]) -> list[Record]:
    """New SOA, then per difference old SOA, deleted, new SOA, added; new SOA (RFC 1995 section 4)."""
    soa = version.records.soa
    out = [soa]
    for diff in chain:
        out.extend(diff.deleted)
        out.extend(diff.added)
    out.append(soa)
    return out


def journal_chain(version: ZoneVersion, serial: int) -> tuple[Diff, ...] | None:
    """The differences leading from ``serial`` to the current version, if the journal has them."""
    journal = version.journal
    current = version.records.serial
    for i, diff in enumerate(journal):
        if diff.old_serial == serial:
            chain = journal[i:]
            linked = all(a.new_serial == b.old_serial for a, b in itertools.pairwise(chain))
            if linked and chain[-1].new_serial == current:
                return chain
            return None
    return None


def serial_newer_or_same(a: int, b: int) -> bool:
    """a >= b in serial number arithmetic (RFC 1982)."""
    return a == b or (0 < (a - b) % (1 << 32) < (1 << 31))


class _RenderCache:
    """Rendered transfers of recent versions: a second transfer of a version is cheap."""

    def __init__(self, size: int = 8):
        self.size = size
        self._entries: OrderedDict[tuple, tuple[ZoneVersion, RenderedTransfer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: ZoneVersion, kind: tuple, make) -> RenderedTransfer:
        key = (id(version.records), *kind)  # the entry holds the version, so the id stays its own
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0].records is version.records:
                self._entries.move_to_end(key)
                return entry[1]
            rendered = make()
            self._entries[key] = (version, rendered)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return rendered


_cache = _RenderCache()


# --- TSIG on raw messages -------------------------------------------------------------------

@dataclass
class _Signer:
    """Signs a sequence of response messages (RFC 8945 section 5.3.1)."""

    key: dns.tsig.Key
    request_mac: bytes
    qid: int
    error: int = 0
    other: bytes = b""
    ctx: object | None = None

    def sign(self, wire: bytes, multi: bool) -> bytes:
        template = dns.rdtypes.ANY.TSIG.TSIG(
            dns.rdataclass.ANY, dns.rdatatype.TSIG, self.key.algorithm, 0, TSIG_FUDGE, b"",
            self.qid, self.error, self.other,
        )
        now = int(time.time())
        tsig, self.ctx = dns.tsig.sign(wire, self.key, template, now, self.request_mac, self.ctx, multi)
        return _append_tsig(wire, self.key.name, tsig)


def _append_tsig(wire: bytes, name: dns.name.Name, tsig) -> bytes:
    rdata = tsig.to_wire()
    arcount = struct.unpack_from("!H", wire, 10)[0] + 1
    return (wire[:10] + arcount.to_bytes(2, "big") + wire[12:] + name.to_wire()
            + struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata)) + rdata)


def _unsigned_tsig_error(wire: bytes, name: dns.name.Name, algorithm: dns.name.Name, qid: int, error: int) -> bytes:
    """BADKEY / BADSIG: a TSIG record with the error and an empty MAC (RFC 8945 5.3.2)."""
    tsig = dns.rdtypes.ANY.TSIG.TSIG(
        dns.rdataclass.ANY, dns.rdatatype.TSIG, algorithm, int(time.time()), TSIG_FUDGE, b"", qid, error, b"",
    )
    return _append_tsig(wire, name, tsig)


# --- answering --------------------------------------------------------------------------------

@dataclass
class _Request:
    wire: bytes
    msg: dns.message.Message
    question: bytes  # as sent
    origin: bytes  # lowercased wire
    qtype: int
    peer: str
    signer: _Signer | None = None
    edns_payload: int = 1232

    @property
    def zone_text(self) -> str:
        return name_to_text(self.origin)


def answer_transfer(wire: bytes, peer: str, snapshot: Snapshot, policy: TransferPolicy, *, ipv6: bool = False) -> list[bytes]:
    """The response messages to an AXFR or IXFR query over TCP from address ``peer``
    (one message for an error).  Blocking for a first transfer of a large version: call it
    in a worker thread."""
    try:
        msg = dns.message.from_wire(wire, keyring=False)
    except Exception:  # noqa: BLE001 - malformed: the reference path answers as NSD does
        return _reference(snapshot, wire, ipv6)
    if len(msg.question) != 1 or msg.edns > 0 or msg.question[0].rdclass != dns.rdataclass.IN:
        return _reference(snapshot, wire, ipv6)
    qend = read_name(wire, 12) + 4
    req = _Request(wire, msg, wire[12:qend], wire[12 : qend - 4].lower(), msg.question[0].rdtype, peer)
    req.edns_payload = snapshot.reference.options.edns_buffer_size
    if msg.tsig is not None:
        failure = _check_tsig(req, policy)
        if failure is not None:
            return [failure]
    version = snapshot.versions.get(req.origin)
    if version is None:
        log.info("%s of %s from %s: not a zone we serve", _kind(req.qtype), req.zone_text, peer)
        return [_error(req, RCODE_NOTAUTH)]
    key_name = req.signer.key.name if req.signer is not None else None
    if not policy.permits(req.origin, peer, key_name):
        log.info("%s of %s from %s%s refused (no transfer rule matches)", _kind(req.qtype), req.zone_text, peer,
                 f" with key {key_name}" if key_name else "")
        return [_error(req, RCODE_REFUSED, ede=EDE_PROHIBITED)]
    if req.qtype == TYPE_IXFR:
        return _ixfr(req, version)
    return _send(req, version, _cache.get(version, ("axfr", len(req.question)),
                                          lambda: render_records(axfr_records(version), len(req.question))), "AXFR")


def _kind(qtype: int) -> str:
    return "IXFR" if qtype == TYPE_IXFR else "AXFR"


def _reference(snapshot: Snapshot, wire: bytes, ipv6: bool) -> list[bytes]:
    response = snapshot.reference.respond(wire, True, ipv6)
    return [response] if response is not None else []


def _check_tsig(req: _Request, policy: TransferPolicy) -> bytes | None:
    """Verify the query's TSIG; an error response (NOTAUTH with the TSIG error) if it fails."""
    msg = req.msg
    name = msg.tsig.name
    rd = msg.tsig[0]
    key = policy.key(name)
    error = None
    if key is None or key.algorithm != rd.algorithm:
        error = dns.rcode.BADKEY
    else:
        try:
            dns.message.from_wire(req.wire, keyring={name: key})
        except dns.tsig.BadTime:
            req.signer = _Signer(key, rd.mac, msg.id, dns.rcode.BADTIME, int(time.time()).to_bytes(6, "big"))
            log.info("%s of %s from %s: TSIG key %s, time out of range", _kind(req.qtype), req.zone_text, req.peer, name)
            return _error(req, RCODE_NOTAUTH)
        except (dns.tsig.BadSignature, dns.exception.FormError):
            error = dns.rcode.BADSIG
        except dns.exception.DNSException:
            error = dns.rcode.BADKEY
    if error is not None:
        log.info("%s of %s from %s: TSIG %s with key %s", _kind(req.qtype), req.zone_text, req.peer,
                 dns.rcode.to_text(error), name)
        wire = _header(req, RCODE_NOTAUTH, 1, 0, 0) + req.question
        return _unsigned_tsig_error(wire, name, rd.algorithm, msg.id, error)
    req.signer = _Signer(key, rd.mac, msg.id)
    return None


def _flags(req: _Request, rcode: int, aa: bool) -> int:
    return QR | (AA if aa else 0) | (req.msg.flags & RD) | rcode


def _header(req: _Request, rcode: int, qd: int, an: int, ar: int, aa: bool = False) -> bytes:
    return struct.pack("!HHHHHH", req.msg.id, _flags(req, rcode, aa), qd, an, 0, ar)


def _opt(req: _Request, options: bytes = b"") -> bytes:
    flags = req.msg.ednsflags & 0x8000  # DO echoed
    return b"\x00" + struct.pack("!HHBBHH", 41, req.edns_payload, 0, 0, flags, len(options)) + options


def _error(req: _Request, rcode: int, ede: int | None = None) -> bytes:
    opt = b""
    if req.msg.edns == 0:
        opt = _opt(req, struct.pack("!HHH", 15, 2, ede) if ede is not None else b"")
    wire = _header(req, rcode, 1, 0, 1 if opt else 0) + req.question + opt
    return req.signer.sign(wire, multi=False) if req.signer is not None else wire


def _ixfr(req: _Request, version: ZoneVersion) -> list[bytes]:
    soa = [rrset for rrset in req.msg.authority if rrset.rdtype == TYPE_SOA]
    if not soa or not soa[0]:
        log.info("IXFR of %s from %s without a SOA in the authority section", req.zone_text, req.peer)
        return [_error(req, RCODE_FORMERR)]
    serial = soa[0][0].serial
    current = version.records.serial
    if serial_newer_or_same(serial, current):
        rendered = _cache.get(version, ("soa", len(req.question)),
                              lambda: render_records([version.records.soa], len(req.question)))
        return _send(req, version, rendered, f"IXFR (up to date at {serial})")
    chain = journal_chain(version, serial)
    if chain is None:
        rendered = _cache.get(version, ("axfr", len(req.question)),
                              lambda: render_records(axfr_records(version), len(req.question)))
        return _send(req, version, rendered, f"IXFR from {serial} (full zone: not in the journal)")
    rendered = _cache.get(version, ("ixfr", serial, len(req.question)),
                          lambda: render_records(ixfr_records(version, chain), len(req.question)))
    return _send(req, version, rendered, f"IXFR from {serial} ({len(chain)} differences)")


def _send(req: _Request, version: ZoneVersion, rendered: RenderedTransfer, what: str) -> list[bytes]:
    """Headers, the question (first message only), OPT (first message only, with EXPIRE when
    asked for), and TSIG on every message when the query was signed."""
    assert rendered.qlen == len(req.question)
    out = []
    opt = b""
    if req.msg.edns == 0:
        asked_expire = any(option.otype == EDNS_OPTION_EXPIRE for option in req.msg.options)
        opt = _opt(req, expire_option(version) if asked_expire else b"")
    multi = len(rendered.messages) > 1
    for index, (body, count) in enumerate(rendered.messages):
        if index == 0:
            wire = _header(req, 0, 1, count, 1 if opt else 0, aa=True) + req.question + body + opt
        else:
            wire = _header(req, 0, 0, count, 0, aa=True) + body
        if req.signer is not None:
            wire = req.signer.sign(wire, multi)
        out.append(wire)
    log.info("%s of %s serial %d to %s%s: %d records in %d messages, %d octets", what, req.zone_text,
             soa_serial(version.records.soa.rdata), req.peer,
             f" (TSIG {req.signer.key.name})" if req.signer is not None else "",
             rendered.record_count, len(out), sum(len(w) for w in out))
    return out
