"""`imrs selftest ADDR[:PORT]`: RSSAC047-style correctness checks against any server.

The rules are those of RSSAC047v2 section 5.3 ("RSI Correctness"), applied to every name rather
than to a random draw: the queries are ``. SOA``, ``. NS``, ``. DNSKEY``, ``TLD NS`` (a referral)
and ``TLD DS`` for every delegation in the reference zone (or a ``--sample``), and ``A`` queries
for random nonexistent names ``www.rssac047-test.<10 random letters>``; each over UDP (DO bit,
1220-octet EDNS buffer; a truncated answer is retried over TCP, as RSSAC047 does) and over TCP.

Every response is held to the rules of its kind (header AA bit, what each section must and must
not hold), and, for all kinds:

* every RRset in the Answer, Authority and Additional sections equals the reference zone's
  RRset of that owner and type (same RDATA, same TTL; RRSIGs and OPT excepted), and
* every RRSIG in the response validates (``dns.dnssec``) at the validation time: the DNSKEY
  RRset with its own keys, one of them matching the trust anchor, everything else with the
  reference zone's DNSKEY RRset.

RSSAC047 has no rule for a DS query at a delegation without DS; it is checked as a signed
NODATA answer (AA, signed SOA, signed NSEC at the name without DS in its type bitmap).  A
referral query answered authoritatively (a server that also serves the child zone, as many root
servers do for ARPA) is skipped, as RSSAC047 [unt] excludes it.  Timeouts are not retried.

Latency figures (min, median, 95th percentile, max per transport) are timed as RSSAC047 4.3
says: UDP from the query's sending, TCP from the connection's start (one connection per query).
Up to ``--concurrency`` queries are in flight (8 by default, so that ~5,800 queries take seconds,
not minutes, against a distant server); against a local server the figures then include some
queueing, and ``--concurrency 1`` gives the bare response times.  Responses are checked after
all have arrived, so checking adds nothing to them.

The reference zone (``--zone``) is verified before use as ``imrs zone verify`` does (DNSSEC
against the trust anchor, ZONEMD).  By default (``auto``) it is the target's own zone, fetched by
AXFR when the target allows it (then a ZONEMD is required: without it the unsigned delegation
data could not be trusted), else the zone packaged with imrs, the one ``imrs serve`` serves
without ``--zone`` (a server serving another version then fails the checks: give ``--zone``).
A transferred zone that fails verification is the target's failure: the ``axfr-zone`` check
fails, and the packaged zone is used instead.  The default trust anchor (``auto``) is IANA's, or, for a zone signed with
the key of the test root zone packaged with imrs, that key (said so in the output).  With
``--anchor none`` the zone's own DNSKEY RRset is trusted as it is, so a transferred zone is then
only checked for consistency with itself.

Exit status: 0 when every check passed, 1 when any failed, 2 for usage and configuration errors
(unreadable or unverifiable reference zone, bad address, ...).
"""

from __future__ import annotations

import argparse
import random
import socket
import string
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from imrs.zone.records import (
    TYPE_DNSKEY,
    TYPE_DS,
    TYPE_NS,
    TYPE_RRSIG,
    TYPE_SOA,
    ZoneRecords,
    canonical_rdata,
)

if TYPE_CHECKING:
    import asyncio

    from imrs.zone.anchor import TrustAnchor

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

TYPE_A = 1
TYPE_AAAA = 28
TYPE_NSEC = 47

#: RSSAC047 5.3: the EDNS buffer size of UDP queries, and the timeout (seconds).
UDP_PAYLOAD = 1220
DEFAULT_TIMEOUT = 4.0
DEFAULT_NXDOMAIN = 20
DEFAULT_CONCURRENCY = 8
#: Failures printed without --verbose (all are counted).
MAX_FAILURES_SHOWN = 40

RULE_APEX_SOA = "apex-soa"
RULE_APEX_NS = "apex-ns"
RULE_APEX_DNSKEY = "apex-dnskey"
RULE_REFERRAL = "tld-referral"
RULE_DS = "tld-ds"
RULE_NO_DS = "tld-no-ds"
RULE_NXDOMAIN = "nxdomain"
RULE_AXFR = "axfr-zone"
RULES = (RULE_AXFR, RULE_APEX_SOA, RULE_APEX_NS, RULE_APEX_DNSKEY, RULE_REFERRAL, RULE_DS, RULE_NO_DS, RULE_NXDOMAIN)

SECTIONS = ("answer", "authority", "additional")


class SelftestError(Exception):
    """A usage or configuration error: the checks cannot run (exit status 2)."""


# --- the reference zone ------------------------------------------------------------------------

@dataclass(frozen=True)
class ZoneRRset:
    """One RRset of the reference zone, as responses are compared with it."""

    ttls: frozenset[int]  # normally one TTL; a zone file may give an RRset several
    rdatas: frozenset[bytes]  # canonical wire form (RFC 4034 6.2)


@dataclass(frozen=True)
class Reference:
    """The zone responses are checked against, verified, indexed for the checks."""

    origin: dns.name.Name
    serial: int
    rrsets: dict[tuple[bytes, int], ZoneRRset]  # (owner, lowercased wire; type) -> RRset
    delegations: tuple[dns.name.Name, ...]  # canonical order
    dnskey: dns.rrset.RRset  # what every RRSIG but those over the DNSKEY RRset is checked with
    anchored_tags: frozenset[int]  # keys matching the trust anchor; empty: no anchor
    description: str  # for the report: where it came from and how it was verified

    def get(self, owner: dns.name.Name, rdtype: int) -> ZoneRRset | None:
        return self.rrsets.get((owner.to_wire().lower(), rdtype))

    def has(self, owner: dns.name.Name, rdtype: int) -> bool:
        return (owner.to_wire().lower(), rdtype) in self.rrsets


def index_zone(zone: ZoneRecords) -> tuple[dict[tuple[bytes, int], ZoneRRset], tuple[dns.name.Name, ...]]:
    """The zone's RRsets (RRSIGs left out) and its delegation points, highest cuts only."""
    ttls: dict[tuple[bytes, int], set[int]] = {}
    rdatas: dict[tuple[bytes, int], set[bytes]] = {}
    for record in zone.records:
        if record.rdtype == TYPE_RRSIG:
            continue
        key = (record.owner, record.rdtype)
        ttls.setdefault(key, set()).add(record.ttl)
        rdatas.setdefault(key, set()).add(canonical_rdata(record.rdtype, record.rdata))
    rrsets = {key: ZoneRRset(frozenset(ttls[key]), frozenset(rdatas[key])) for key in ttls}
    origin = dns.name.from_wire(zone.origin, 0)[0]
    cuts = {owner for owner, rdtype in rrsets if rdtype == TYPE_NS and owner != zone.origin}
    names = []
    for owner in cuts:
        name = dns.name.from_wire(owner, 0)[0]
        parent = name.parent()
        # Below another delegation, an NS RRset is occluded data, not a delegation of this zone.
        while parent != origin and parent.to_wire().lower() not in cuts:
            parent = parent.parent()
        if parent == origin:
            names.append(name)
    return rrsets, tuple(sorted(names))


def _dnskey_rrset(zone: ZoneRecords) -> dns.rrset.RRset:
    origin = dns.name.from_wire(zone.origin, 0)[0]
    records = [r for r in zone.records if r.owner == zone.origin and r.rdtype == TYPE_DNSKEY]
    if not records:
        raise SelftestError(f"the reference zone {zone.source} is not signed: no DNSKEY RRset at its apex")
    rrset = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    for record in records:
        rrset.add(dns.rdata.from_wire(record.rdclass, record.rdtype, record.rdata, 0, len(record.rdata)), record.ttl)
    return rrset


# --- trust anchor and reference loading ----------------------------------------------------------

def _packaged_key_anchor() -> TrustAnchor | None:
    """The KSKs of the zone packaged with imrs, as a trust anchor (for ``--anchor auto``)."""
    from imrs.zone.anchor import FLAG_SEP, AnchorKey, TrustAnchor, key_tag
    from imrs.zone.parse import EMBEDDED_ROOT, ZoneFileError, load_zone_records

    try:
        zone = load_zone_records(EMBEDDED_ROOT)
    except ZoneFileError:
        return None
    keys = tuple(
        AnchorKey(r.owner, key_tag(r.rdata), r.rdata[3], dnskey=r.rdata)
        for r in zone.records
        if r.owner == zone.origin and r.rdtype == TYPE_DNSKEY and len(r.rdata) > 4
        and int.from_bytes(r.rdata[:2], "big") & FLAG_SEP
    )
    source = "the test root zone packaged with imrs (its own KSK, not IANA's root anchor)"
    return TrustAnchor(zone.origin, keys, source) if keys else None


def resolve_anchor(spec: str, zone: ZoneRecords, now: float) -> TrustAnchor | None:
    """The trust anchor ``--anchor`` names; ``auto``: IANA's, unless the zone is signed with the
    packaged test root's key and not IANA's, then that key.  None for ``none``."""
    from imrs.zone.anchor import AnchorError, default_root_anchor, load_trust_anchor

    if spec == "none":
        return None
    try:
        if spec not in ("auto", "iana"):
            return load_trust_anchor(spec)
        iana = default_root_anchor()
    except AnchorError as exc:
        raise SelftestError(str(exc)) from None
    if spec == "iana":
        return iana
    keys = [r.rdata for r in zone.records if r.owner == zone.origin and r.rdtype == TYPE_DNSKEY]
    if zone.origin != iana.zone or any(iana.match(zone.origin, k, now) for k in keys):
        return iana
    packaged = _packaged_key_anchor()
    if packaged is not None and any(packaged.match(zone.origin, k, now) for k in keys):
        return packaged
    return iana  # verification fails, saying which keys it wanted


def _anchor_text(anchor: TrustAnchor | None, now: float) -> str:
    if anchor is None:
        return "no trust anchor (DNSKEY RRset taken as it is in the zone)"
    return f"anchor {anchor.describe(now)} from {anchor.source}"


def load_reference(zone_spec: str, anchor_spec: str, target: tuple[str, int], now: float,
                   timeout: float) -> tuple[Reference, list[CheckResult]]:
    """Load and verify the reference zone; raises SelftestError for what the user must fix.

    ``zone_spec``: a master file, ``embedded`` (the packaged zone), ``axfr`` (from the target),
    or ``auto`` (AXFR if the target allows it, else the packaged zone).  A transferred zone that
    fails verification is the target's failure, not the user's: it is returned as a failed
    check, and the packaged zone is used instead.
    """
    from imrs.zone.parse import EMBEDDED_ROOT, ZoneFileError, load_zone_records
    from imrs.zone.transfer import TransferError, axfr
    from imrs.zone.verify import VerificationError, verify_zone

    checks: list[CheckResult] = []
    notes: list[str] = []
    zone: ZoneRecords | None = None
    if zone_spec in ("auto", "axfr"):
        host, port = target
        try:
            zone = axfr(host, port, b"\x00", timeout=max(timeout, 10.0))
        except (TransferError, OSError) as exc:
            if zone_spec == "axfr":
                raise SelftestError(f"cannot transfer the root zone from the target: {exc}") from None
            notes.append(f"AXFR from the target failed ({exc})")
        if zone is not None:
            anchor = resolve_anchor(anchor_spec, zone, now)
            try:
                report = verify_zone(zone, anchor, now=now, require_zonemd=True)
            except VerificationError as exc:
                checks.append(CheckResult(RULE_AXFR, ". AXFR", "tcp", False,
                                          (f"the transferred zone (serial {zone.serial}) fails {exc.check}: {exc}",)))
                notes.append("the transferred zone failed verification")
                zone = None
            else:
                checks.append(CheckResult(RULE_AXFR, ". AXFR", "tcp", True, ()))
                how = f"AXFR from the target: {report.summary()}; {_anchor_text(anchor, now)}"
                return _reference(zone, anchor, now, how), checks
        zone_spec = "embedded"
    path = EMBEDDED_ROOT if zone_spec == "embedded" else zone_spec
    try:
        zone = load_zone_records(path)
    except ZoneFileError as exc:
        raise SelftestError(str(exc)) from None
    anchor = resolve_anchor(anchor_spec, zone, now)
    try:
        report = verify_zone(zone, anchor, now=now)
    except VerificationError as exc:
        raise SelftestError(f"the reference zone {path} does not verify: {exc.check}: {exc}") from None
    where = "the zone packaged with imrs" if path == EMBEDDED_ROOT else path
    how = f"{where}: {report.summary()}; {_anchor_text(anchor, now)}"
    if notes:
        how += f" ({'; '.join(notes)})"
    return _reference(zone, anchor, now, how), checks


def _reference(zone: ZoneRecords, anchor: TrustAnchor | None, now: float, description: str) -> Reference:
    from imrs.zone.anchor import key_tag

    rrsets, delegations = index_zone(zone)
    dnskey = _dnskey_rrset(zone)
    tags: frozenset[int] = frozenset()
    if anchor is not None:
        tags = frozenset(key_tag(rd.to_wire()) for rd in dnskey if anchor.match(zone.origin, rd.to_wire(), now))
    return Reference(dnskey.name, zone.serial, rrsets, delegations, dnskey, tags, description)


# --- queries -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One query to send, and the rule its response is held to."""

    rule: str
    qname: dns.name.Name
    rdtype: int
    transport: str  # "udp" or "tcp"

    @property
    def label(self) -> str:
        return f"{self.qname} {dns.rdatatype.to_text(self.rdtype)}"


@dataclass
class Exchange:
    """What came back for a probe: the response's wire form (over UDP, the TCP retry's if the
    UDP response was truncated), or why there is none."""

    probe: Probe
    query: bytes
    response: bytes | None = None
    error: str | None = None
    elapsed: float | None = None  # seconds, the first query (RSSAC047 4.3 timing)
    truncated: bool = False  # TC over UDP: ``response`` is the TCP retry's
    retry_query: bytes | None = None
    retry_elapsed: float | None = None


def random_nonexistent(rng: random.Random, origin: dns.name.Name) -> dns.name.Name:
    """An RSSAC047 "expected negative" name: www.rssac047-test.<10 random letters>."""
    label = "".join(rng.choice(string.ascii_lowercase) for _ in range(10))
    return dns.name.Name((b"www", b"rssac047-test", label.encode())).concatenate(origin)


def plan_probes(reference: Reference, *, sample: int | None, tlds: Sequence[dns.name.Name], nxdomain: int,
                transports: Sequence[str], rng: random.Random) -> tuple[list[Probe], list[dns.name.Name]]:
    """The queries of one run, and the delegations they cover (all, or ``sample`` of them plus
    ``tlds``)."""
    delegations = list(reference.delegations)
    if sample is not None and sample < len(delegations):
        chosen = set(rng.sample(delegations, sample)) | set(tlds)
        delegations = sorted(chosen)
    origin = reference.origin
    questions: list[tuple[str, dns.name.Name, int]] = [
        (RULE_APEX_SOA, origin, TYPE_SOA), (RULE_APEX_NS, origin, TYPE_NS), (RULE_APEX_DNSKEY, origin, TYPE_DNSKEY),
    ]
    for name in delegations:
        questions.append((RULE_REFERRAL, name, TYPE_NS))
        questions.append((RULE_DS if reference.has(name, TYPE_DS) else RULE_NO_DS, name, TYPE_DS))
    for _ in range(nxdomain):
        name = random_nonexistent(rng, origin)
        while reference.has(name.split(len(origin) + 1)[1], TYPE_NS):  # 26**10 to one, but be sure
            name = random_nonexistent(rng, origin)
        questions.append((RULE_NXDOMAIN, name, TYPE_A))
    probes = [Probe(rule, qname, rdtype, transport) for rule, qname, rdtype in questions for transport in transports]
    return probes, delegations


def make_query(qname: dns.name.Name, rdtype: int) -> bytes:
    """DO set, 1220-octet buffer, NSID asked for (RSSAC047 4.8), RD clear, random ID."""
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=UDP_PAYLOAD, want_dnssec=True,
                                   options=[dns.edns.NSIDOption(b"")])
    query.flags &= ~dns.flags.RD
    return query.to_wire()


def _question_end(wire: bytes) -> int:
    """Where the (single) question of a query made here ends: after QNAME, QTYPE and QCLASS."""
    i = 12
    while wire[i]:
        i += 1 + wire[i]
    return i + 5


def answers(query: bytes, response: bytes) -> bool:
    """Whether ``response`` is a response to ``query``: same ID, QR set, same question (names
    compared without regard to case).  A UDP socket keeps waiting for one that is."""
    end = _question_end(query)
    return (len(response) >= end and response[:2] == query[:2] and bool(response[2] & 0x80)
            and response[4:6] == b"\x00\x01" and response[12:end].lower() == query[12:end].lower())


def _error_text(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no response within {timeout:g} s"
    if isinstance(exc, EOFError):
        return "the server closed the connection without a (complete) response"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


async def _udp(loop: asyncio.AbstractEventLoop, host: str, port: int, query: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))  # a connected socket hears only from the target
        await loop.sock_sendall(sock, query)
        while True:
            data = await loop.sock_recv(sock, 65535)
            if answers(query, data):
                return data


async def _tcp(loop: asyncio.AbstractEventLoop, host: str, port: int, query: bytes) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, struct.pack("!H", len(query)) + query)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            chunk = await loop.sock_recv(sock, 65535)
            if not chunk:
                raise EOFError
            buf += chunk
        return buf[2 : 2 + struct.unpack("!H", buf[:2])[0]]


async def _exchange(probe: Probe, host: str, port: int, timeout: float) -> Exchange:
    import asyncio

    loop = asyncio.get_running_loop()
    done = Exchange(probe, make_query(probe.qname, probe.rdtype))
    # UDP: the timer includes a socket's setup, microseconds.  TCP: a new connection per query,
    # timed from its start (RSSAC047 4.3).
    started = time.perf_counter()
    try:
        if probe.transport == "udp":
            response = await asyncio.wait_for(_udp(loop, host, port, done.query), timeout)
        else:
            response = await asyncio.wait_for(_tcp(loop, host, port, done.query), timeout)
    except (OSError, EOFError) as exc:  # TimeoutError is an OSError
        done.error = _error_text(exc, timeout)
        return done
    done.elapsed = time.perf_counter() - started
    done.response = response
    if probe.transport == "udp" and response[2] & 0x02:
        # RSSAC047 5.3: a truncated response is retried over TCP, with the timeout restarted.
        done.truncated = True
        done.response = None
        done.retry_query = make_query(probe.qname, probe.rdtype)
        started = time.perf_counter()
        try:
            done.response = await asyncio.wait_for(_tcp(loop, host, port, done.retry_query), timeout)
        except (OSError, EOFError) as exc:
            done.error = f"truncated over UDP, and the TCP retry failed: {_error_text(exc, timeout)}"
            return done
        done.retry_elapsed = time.perf_counter() - started
    return done


async def _run_all(probes: Sequence[Probe], host: str, port: int, timeout: float, concurrency: int) -> list[Exchange]:
    import asyncio

    gate = asyncio.Semaphore(concurrency)

    async def one(probe: Probe) -> Exchange:
        async with gate:
            return await _exchange(probe, host, port, timeout)

    return list(await asyncio.gather(*(one(p) for p in probes)))


def send_probes(probes: Sequence[Probe], target: tuple[str, int], *, timeout: float, concurrency: int) -> list[Exchange]:
    """Send every probe, at most ``concurrency`` in flight, and keep the responses' wire form:
    they are parsed and checked afterwards, so that doing so adds nothing to the latency."""
    import asyncio

    return asyncio.run(_run_all(probes, target[0], target[1], timeout, concurrency))


# --- checks --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckResult:
    """The verdict on one response: which rule, which query, over what, and why it failed (or,
    for a skipped check, why it could not be made)."""

    rule: str
    query: str  # e.g. "com. NS"
    transport: str  # "udp", "tcp", or "udp>tcp" for a truncated UDP response retried over TCP
    passed: bool  # True for a skipped check too: it is no failure
    reasons: tuple[str, ...] = ()
    skipped: bool = False

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _rrset_text(rrset: dns.rrset.RRset) -> str:
    return f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"


def _find(msg: dns.message.Message, section: str, name: dns.name.Name, rdtype: int,
          covers: int = 0) -> dns.rrset.RRset | None:
    for rrset in getattr(msg, section):
        if rrset.rdtype == rdtype and rrset.name == name and (rdtype != TYPE_RRSIG or rrset.covers == covers):
            return rrset
    return None


def _data_rrsets(msg: dns.message.Message, section: str) -> list[dns.rrset.RRset]:
    return [r for r in getattr(msg, section) if r.rdtype != TYPE_RRSIG]


def _show_rdatas(rdtype: int, rdatas: Iterable[bytes], limit: int = 3) -> str:
    texts = sorted(dns.rdata.from_wire(dns.rdataclass.IN, rdtype, rd, 0, len(rd)).to_text() for rd in rdatas)
    more = f" and {len(texts) - limit} more" if len(texts) > limit else ""
    return ", ".join(texts[:limit]) + more


def check_matching(reference: Reference, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [vnk]: every RRset in every section equals the zone's (RRSIGs and OPT excepted)."""
    reasons = []
    for section in SECTIONS:
        for rrset in _data_rrsets(msg, section):
            what = f"{section}: {_rrset_text(rrset)}"
            if rrset.rdclass != dns.rdataclass.IN:
                reasons.append(f"{what}: class {dns.rdataclass.to_text(rrset.rdclass)}, not IN")
                continue
            zone = reference.get(rrset.name, rrset.rdtype)
            if zone is None:
                reasons.append(f"{what}: no such RRset in the zone")
                continue
            got = {canonical_rdata(rrset.rdtype, rd.to_wire()) for rd in rrset}
            if got != zone.rdatas:
                parts = []
                if got - zone.rdatas:
                    parts.append(f"not in the zone: {_show_rdatas(rrset.rdtype, got - zone.rdatas)}")
                if zone.rdatas - got:
                    parts.append(f"missing: {_show_rdatas(rrset.rdtype, zone.rdatas - got)}")
                reasons.append(f"{what} differs from the zone ({'; '.join(parts)})")
            elif rrset.ttl not in zone.ttls:
                reasons.append(f"{what}: TTL {rrset.ttl}, the zone's is {min(zone.ttls)}")
    return reasons


def check_signatures(reference: Reference, msg: dns.message.Message, now: float) -> list[str]:
    """RSSAC047 [yds]: every RRSIG validates; the DNSKEY RRset with its own keys (one of them the
    trust anchor's), everything else with the reference zone's DNSKEY RRset."""
    import dns.dnssec

    from imrs.zone.anchor import key_tag

    reasons = []
    zone_keys = {reference.origin: reference.dnskey}
    for section in SECTIONS:
        for sigs in getattr(msg, section):
            if sigs.rdtype != TYPE_RRSIG:
                continue
            covered = _find(msg, section, sigs.name, sigs.covers)
            what = f"{section}: RRSIG {sigs.name} {dns.rdatatype.to_text(sigs.covers)}"
            if covered is None:
                reasons.append(f"{what} without the RRset it covers")
                continue
            is_dnskey = sigs.covers == TYPE_DNSKEY and sigs.name == reference.origin
            keys = {reference.origin: covered} if is_dnskey else zone_keys
            valid_tags = set()
            for sig in sigs:
                try:
                    dns.dnssec.validate_rrsig(covered, sig, keys, now=now)
                except dns.dnssec.ValidationFailure as exc:
                    reasons.append(f"{what} (key {sig.key_tag}) does not validate: {exc}")
                except dns.exception.DNSException as exc:  # unsupported algorithm and the like
                    reasons.append(f"{what} (key {sig.key_tag}) cannot be validated: {exc}")
                else:
                    valid_tags.add(sig.key_tag)
            if is_dnskey and reference.anchored_tags and valid_tags:
                anchored = {key_tag(rd.to_wire()) for rd in covered} & reference.anchored_tags
                if not anchored & valid_tags:
                    reasons.append(f"{what}: no valid signature by the anchored key "
                                   f"{' '.join(map(str, sorted(reference.anchored_tags)))}")
    return reasons


def _require_signed(msg: dns.message.Message, section: str, name: dns.name.Name, rdtype: int,
                    reasons: list[str], what: str | None = None) -> dns.rrset.RRset | None:
    """The RRset must be in ``section`` with an RRSIG (whose validity check_signatures judges)."""
    what = what or f"{name} {dns.rdatatype.to_text(rdtype)}"
    rrset = _find(msg, section, name, rdtype)
    if rrset is None:
        reasons.append(f"{section} has no {what} RRset")
    elif _find(msg, section, name, TYPE_RRSIG, rdtype) is None:
        reasons.append(f"{section}: {what} is not signed (no RRSIG)")
    return rrset


def _require_empty(msg: dns.message.Message, section: str, reasons: list[str]) -> None:
    rrsets = getattr(msg, section)
    if rrsets:
        shown = ", ".join(_rrset_text(r) if r.rdtype != TYPE_RRSIG else f"RRSIG {r.name} "
                          f"{dns.rdatatype.to_text(r.covers)}" for r in rrsets[:3])
        reasons.append(f"{section} section is not empty ({shown}{' ...' if len(rrsets) > 3 else ''})")


def _require_aa(msg: dns.message.Message, want: bool, reasons: list[str]) -> None:
    if bool(msg.flags & dns.flags.AA) != want:
        reasons.append("AA bit set in a referral" if not want else "AA bit not set")


def _require_rcode(msg: dns.message.Message, want: int, reasons: list[str]) -> bool:
    rcode = msg.rcode()
    if rcode != want:
        reasons.append(f"RCODE {dns.rcode.to_text(rcode)}, expected {dns.rcode.to_text(want)}")
        return False
    return True


def nsec_types(nsec: dns.rdata.Rdata) -> set[int]:
    """The types an NSEC's type bit maps list."""
    types = set()
    for window, bitmap in nsec.windows:  # type: ignore[attr-defined]
        for i, octet in enumerate(bitmap):
            for bit in range(8):
                if octet & (0x80 >> bit):
                    types.add(window * 256 + i * 8 + bit)
    return types


def nsec_covers(owner: dns.name.Name, next_name: dns.name.Name, name: dns.name.Name) -> bool:
    """Whether the NSEC owner -> next proves ``name`` does not exist (canonical order, RFC 4034
    6.1; the last NSEC's next name is the apex, so it covers everything after its owner)."""
    if owner < next_name:
        return owner < name < next_name
    return name > owner or name < next_name


def check_apex_soa(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [owf]: AA; the signed SOA in the answer; the signed apex NS RRset in the
    authority section, or nothing there."""
    reasons: list[str] = []
    if _require_rcode(msg, dns.rcode.NOERROR, reasons):
        _require_aa(msg, True, reasons)
        _require_signed(msg, "answer", reference.origin, TYPE_SOA, reasons)
        if msg.authority:
            _require_signed(msg, "authority", reference.origin, TYPE_NS, reasons)
    return reasons


def _signed_answer(msg: dns.message.Message, owner: dns.name.Name, rdtype: int, empty: tuple[str, ...]) -> list[str]:
    """AA; the signed ``owner``/``rdtype`` RRset in the answer; the ``empty`` sections empty."""
    reasons: list[str] = []
    if _require_rcode(msg, dns.rcode.NOERROR, reasons):
        _require_aa(msg, True, reasons)
        _require_signed(msg, "answer", owner, rdtype, reasons)
        for section in empty:
            _require_empty(msg, section, reasons)
    return reasons


def check_apex_ns(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [amj]: AA; the signed apex NS RRset in the answer; authority empty."""
    return _signed_answer(msg, reference.origin, TYPE_NS, ("authority",))


def check_apex_dnskey(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [djd]: AA; the signed DNSKEY RRset in the answer; authority and additional empty."""
    return _signed_answer(msg, reference.origin, TYPE_DNSKEY, ("authority", "additional"))


def check_referral(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [hmk]: AA clear, answer empty; the delegation's NS RRset in the authority section
    with its signed DS RRset, or, without DS in the zone, no DS and a signed NSEC at the name
    without DS in its bit map; some glue of the NS names in the additional section (if the zone
    has any)."""
    reasons: list[str] = []
    if not _require_rcode(msg, dns.rcode.NOERROR, reasons):
        return reasons
    _require_aa(msg, False, reasons)
    _require_empty(msg, "answer", reasons)
    name = probe.qname
    ns = _find(msg, "authority", name, TYPE_NS)
    if ns is None:
        reasons.append(f"authority has no {name} NS RRset")
    if reference.has(name, TYPE_DS):
        _require_signed(msg, "authority", name, TYPE_DS, reasons)
    else:
        if _find(msg, "authority", name, TYPE_DS) is not None:
            reasons.append(f"authority has a {name} DS RRset, the zone has none")
        nsec = _require_signed(msg, "authority", name, TYPE_NSEC, reasons)
        if nsec is not None and any(TYPE_DS in nsec_types(rd) for rd in nsec):
            reasons.append(f"authority: the {name} NSEC lists DS")
    targets = [rd.target for rd in ns] if ns is not None else []
    zone_glue = [t for t in targets for rdtype in (TYPE_A, TYPE_AAAA) if reference.has(t, rdtype)]
    if zone_glue and not any(_find(msg, "additional", t, rdtype) for t in targets for rdtype in (TYPE_A, TYPE_AAAA)):
        reasons.append(f"additional has no A or AAAA record of the {len(targets)} NS names (the zone has glue for "
                       f"{len(set(zone_glue))} of them)")
    return reasons


def check_ds(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [dru]: AA; the signed DS RRset in the answer; authority and additional empty."""
    return _signed_answer(msg, probe.qname, TYPE_DS, ("authority", "additional"))


def check_no_ds(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """Not in RSSAC047 (DS queries there are for existing DS only): a DS query at a delegation
    without DS gets a signed NODATA answer: AA, answer empty, the signed SOA and a signed NSEC at
    the name without DS in its bit map in the authority section, additional empty."""
    reasons: list[str] = []
    if _require_rcode(msg, dns.rcode.NOERROR, reasons):
        _require_aa(msg, True, reasons)
        _require_empty(msg, "answer", reasons)
        _require_signed(msg, "authority", reference.origin, TYPE_SOA, reasons)
        nsec = _require_signed(msg, "authority", probe.qname, TYPE_NSEC, reasons)
        if nsec is not None and any(TYPE_DS in nsec_types(rd) for rd in nsec):
            reasons.append(f"authority: the {probe.qname} NSEC lists DS")
        _require_empty(msg, "additional", reasons)
    return reasons


def check_nxdomain(reference: Reference, probe: Probe, msg: dns.message.Message) -> list[str]:
    """RSSAC047 [vcu]: AA, answer empty; in the authority section the signed apex SOA, a signed
    NSEC covering the name ([czb]) and a signed NSEC proving there is no wildcard ([jhz]: for the
    root, the NSEC of "."); additional empty."""
    reasons: list[str] = []
    if not _require_rcode(msg, dns.rcode.NXDOMAIN, reasons):
        return reasons
    _require_aa(msg, True, reasons)
    _require_empty(msg, "answer", reasons)
    _require_signed(msg, "authority", reference.origin, TYPE_SOA, reasons)
    nsecs = [(r.name, rd.next) for r in msg.authority if r.rdtype == TYPE_NSEC for rd in r]
    signed = {r.name for r in msg.authority if r.rdtype == TYPE_RRSIG and r.covers == TYPE_NSEC}
    # The closest encloser of the random name is the apex: the name proven absent is its child.
    child = probe.qname.split(len(reference.origin) + 1)[1]
    wildcard = dns.name.Name((b"*",)).concatenate(reference.origin)
    for what, target in (("the name", child), ("a wildcard", wildcard)):
        proofs = [owner for owner, nxt in nsecs if nsec_covers(owner, nxt, target)]
        if not proofs:
            reasons.append(f"authority: no NSEC proves {what} ({target}) does not exist")
        elif not any(owner in signed for owner in proofs):
            reasons.append(f"authority: the NSEC proving {what} does not exist is not signed")
    _require_empty(msg, "additional", reasons)
    return reasons


RuleCheck = Callable[[Reference, Probe, dns.message.Message], list[str]]

RULE_CHECKS: dict[str, RuleCheck] = {
    RULE_APEX_SOA: check_apex_soa,
    RULE_APEX_NS: check_apex_ns,
    RULE_APEX_DNSKEY: check_apex_dnskey,
    RULE_REFERRAL: check_referral,
    RULE_DS: check_ds,
    RULE_NO_DS: check_no_ds,
    RULE_NXDOMAIN: check_nxdomain,
}


def check_response(reference: Reference, probe: Probe, msg: dns.message.Message, now: float) -> list[str]:
    """Hold one response to its rule, to the zone's content and to its signatures."""
    reasons = []
    if msg.edns < 0:
        reasons.append("no EDNS in the response to an EDNS query")
    elif not msg.ednsflags & dns.flags.DO:
        reasons.append("DO bit not copied into the response (RFC 3225)")
    reasons += RULE_CHECKS[probe.rule](reference, probe, msg)
    reasons += check_matching(reference, msg)
    reasons += check_signatures(reference, msg, now)
    return reasons


class Checker:
    """Turns exchanges into verdicts.  A response identical but for its ID to one already
    checked for the same question (the UDP and TCP responses, mostly) gets the same verdict
    without being parsed and validated again."""

    def __init__(self, reference: Reference, now: float):
        self.reference = reference
        self.now = now
        self.nsid: str | None = None
        self._seen: dict[tuple[str, bytes], tuple[bool, tuple[str, ...]]] = {}

    def evaluate(self, exchange: Exchange) -> CheckResult:
        probe = exchange.probe
        transport = "udp>tcp" if exchange.truncated else probe.transport
        wire = exchange.response
        if wire is None:
            return CheckResult(probe.rule, probe.label, transport, False, (exchange.error or "no response",))
        query = exchange.retry_query if exchange.truncated else exchange.query
        assert query is not None
        if not answers(query, wire):
            return CheckResult(probe.rule, probe.label, transport, False,
                               ("the response does not match the query (ID, QR bit or question)",))
        key = (probe.rule, wire[2:])  # the question is in the wire
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = self._check(probe, wire)
        skipped, reasons = seen
        if wire[2] & 0x02:  # only responses over TCP get here: a truncated UDP one was retried
            skipped, reasons = False, ("TC bit set over TCP", *reasons)
        return CheckResult(probe.rule, probe.label, transport, skipped or not reasons, reasons, skipped)

    def _check(self, probe: Probe, wire: bytes) -> tuple[bool, tuple[str, ...]]:
        """(skipped, reasons) for one response."""
        try:
            msg = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, IndexError) as exc:
            return False, (f"malformed response: {exc or type(exc).__name__}",)
        if self.nsid is None:
            self.nsid = _nsid(msg)
        if (probe.rule == RULE_REFERRAL and msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
                and _find(msg, "answer", probe.qname, TYPE_NS) is not None):
            # RSSAC047 [unt]: a server that also serves the child zone (ARPA on many root servers)
            # answers with the child's data, which this zone cannot vouch for.
            return True, (f"the server is authoritative for {probe.qname} (RSSAC047 [unt])",)
        return False, tuple(check_response(self.reference, probe, msg, self.now))


# --- latency -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    """Response times of one transport, in milliseconds."""

    count: int
    minimum: float
    median: float
    p95: float
    maximum: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency | None:
        if not seconds:
            return None
        ms = sorted(s * 1000 for s in seconds)
        n = len(ms)
        median = ms[n // 2] if n % 2 else (ms[n // 2 - 1] + ms[n // 2]) / 2
        return cls(n, ms[0], median, ms[min(n - 1, max(0, -(-95 * n // 100) - 1))], ms[-1])  # nearest rank


def latency_figures(exchanges: Sequence[Exchange]) -> dict[str, Latency]:
    """Per transport; a TCP retry after TC counts as a TCP exchange (its UDP part as UDP)."""
    times: dict[str, list[float]] = {"udp": [], "tcp": []}
    for ex in exchanges:
        if ex.elapsed is not None:
            times[ex.probe.transport].append(ex.elapsed)
        if ex.retry_elapsed is not None:
            times["tcp"].append(ex.retry_elapsed)
    return {t: lat for t, values in times.items() if (lat := Latency.of(values)) is not None}


# --- a whole run ---------------------------------------------------------------------------------

@dataclass
class SelftestReport:
    """Everything one run found."""

    target: str
    reference: Reference
    checks: list[CheckResult]
    latency: dict[str, Latency]
    delegations: int  # checked
    nxdomain: int
    transports: tuple[str, ...]
    now: float
    seed: int
    elapsed: float
    nsid: str | None = None
    timeouts: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failures


def _nsid(msg: dns.message.Message) -> str | None:
    for option in msg.options:
        if isinstance(option, dns.edns.NSIDOption) and option.nsid:
            data = option.nsid
            return data.decode("ascii") if all(32 <= b < 127 for b in data) else data.hex()
    return None


@dataclass(frozen=True)
class Options:
    """What ``imrs selftest`` was asked to do (the parsed command line)."""

    target: tuple[str, int]
    zone: str = "auto"
    anchor: str = "auto"
    now: float | None = None
    sample: int | None = None
    tlds: tuple[str, ...] = ()
    nxdomain: int = DEFAULT_NXDOMAIN
    transports: tuple[str, ...] = ("udp", "tcp")
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    seed: int | None = None


def run_selftest(options: Options) -> SelftestReport:
    """Load the reference, send every probe, check every response; raises SelftestError."""
    started = time.perf_counter()
    now = time.time() if options.now is None else options.now
    reference, checks = load_reference(options.zone, options.anchor, options.target, now, options.timeout)
    tlds = []
    for text in options.tlds:
        try:
            name = dns.name.from_text(text, origin=dns.name.root)
        except dns.exception.DNSException as exc:
            raise SelftestError(f"--tld {text!r}: {exc}") from None
        if name not in reference.delegations:
            raise SelftestError(f"--tld {text!r}: {name} is not a delegation in the reference zone")
        tlds.append(name)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    probes, delegations = plan_probes(reference, sample=options.sample, tlds=tlds, nxdomain=options.nxdomain,
                                      transports=options.transports, rng=rng)
    exchanges = send_probes(probes, options.target, timeout=options.timeout, concurrency=options.concurrency)
    checker = Checker(reference, now)
    checks += [checker.evaluate(ex) for ex in exchanges]
    timeouts: dict[str, int] = {}
    for ex in exchanges:
        if ex.response is None:
            timeouts[ex.probe.transport] = timeouts.get(ex.probe.transport, 0) + 1
    host, port = options.target
    return SelftestReport(
        target=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        reference=reference, checks=checks, latency=latency_figures(exchanges), delegations=len(delegations),
        nxdomain=options.nxdomain, transports=options.transports, now=now, seed=seed,
        elapsed=time.perf_counter() - started, nsid=checker.nsid, timeouts=timeouts,
        truncated=sum(1 for ex in exchanges if ex.truncated),
    )


def format_report(report: SelftestReport, *, verbose: bool = False) -> str:
    """The text ``imrs selftest`` prints: header, failures (every check with ``verbose``), a
    table per rule, latency figures, and the verdict."""
    ref = report.reference
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.now))
    nsid = f", NSID {report.nsid!r}" if report.nsid is not None else ""
    transports = " and ".join("UDP (DO, 1220-octet buffer, TC retried over TCP)" if t == "udp" else "TCP (DO)"
                              for t in report.transports)
    lines = [
        f"imrs selftest {report.target}{nsid}",
        f"reference: {ref.description}",
        (f"queries: apex SOA, NS, DNSKEY; NS and DS of {report.delegations} of {len(ref.delegations)} delegations; "
         f"{report.nxdomain} nonexistent names (seed {report.seed}); over {transports}; signatures validated at {when}"),
    ]
    shown = report.checks if verbose else [c for c in report.checks if c.skipped] + report.failures[:MAX_FAILURES_SHOWN]
    for check in shown:
        verdict = "skip" if check.skipped else "ok  " if check.passed else "FAIL"
        lines.append(f"{verdict} {check.rule:<12} {check.query:<36} {check.transport:<7} {check.reason}".rstrip())
    hidden = len(report.failures) - sum(1 for c in shown if not c.passed)
    if hidden > 0:
        lines.append(f"... and {hidden} more failures (--verbose shows all)")
    lines.append(f"{'rule':<14}{'checks':>8}{'pass':>8}{'fail':>8}{'skip':>8}")
    for rule in RULES:
        of_rule = [c for c in report.checks if c.rule == rule]
        if of_rule:
            failed = sum(1 for c in of_rule if not c.passed)
            skipped = sum(1 for c in of_rule if c.skipped)
            lines.append(f"{rule:<14}{len(of_rule):>8}{len(of_rule) - failed - skipped:>8}{failed:>8}{skipped:>8}")
    lines.append(f"{'latency (ms)':<14}{'queries':>8}{'min':>9}{'median':>9}{'p95':>9}{'max':>9}")
    for transport in ("udp", "tcp"):
        lat = report.latency.get(transport)
        extra = []
        if transport == "udp" and report.truncated:
            extra.append(f"{report.truncated} truncated, retried over TCP (counted under tcp)")
        if report.timeouts.get(transport):
            extra.append(f"{report.timeouts[transport]} without a response")
        tail = f"  ({'; '.join(extra)})" if extra else ""
        if lat is not None:
            lines.append(f"{transport:<14}{lat.count:>8}{lat.minimum:>9.2f}{lat.median:>9.2f}{lat.p95:>9.2f}"
                         f"{lat.maximum:>9.2f}{tail}")
        elif transport in report.transports:
            lines.append(f"{transport:<14}{0:>8}{'-':>9}{'-':>9}{'-':>9}{'-':>9}{tail}")
    total = len(report.checks)
    skipped = sum(1 for c in report.checks if c.skipped)
    if report.passed:
        but = f", {skipped} skipped" if skipped else ""
        lines.append(f"PASS: all {total - skipped} checks passed{but} ({report.elapsed:.1f} s)")
    else:
        failed = report.failures
        rules = ", ".join(r for r in RULES if any(c.rule == r for c in failed))
        lines.append(f"FAIL: {len(failed)} of {total} checks failed ({rules}) ({report.elapsed:.1f} s)")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------

def add_selftest_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``imrs selftest``; it sets ``selftest_handler`` to :func:`selftest_main`."""
    parser = sub.add_parser(
        "selftest",
        help="check a server's answers against the root zone, RSSAC047-style",
        description="Query a server for . SOA, . NS, . DNSKEY, the NS and DS of every delegation and random "
        "nonexistent names, over UDP (DO, 1220-octet buffer) and TCP, and check each response as RSSAC047 "
        "(section 5.3) does: header, sections, every RRset equal to the reference zone's, every RRSIG valid. "
        "Exit 0 if all checks pass, 1 if any fails, 2 for usage or configuration errors.",
    )
    parser.add_argument("target", metavar="ADDR[:PORT]",
                        help="the server: 127.0.0.1:5300, [::1]:5300 (port 53 if omitted)")
    parser.add_argument(
        "--zone", metavar="FILE", default="auto",
        help="reference zone: a master file (plain or gzip); 'embedded' for the zone packaged with imrs; 'axfr' "
        "to transfer it from the target; 'auto' (default): AXFR if the target allows it, else the packaged zone. "
        "It is verified first (DNSSEC against --anchor, ZONEMD; a transferred zone must have a ZONEMD)",
    )
    parser.add_argument(
        "--anchor", metavar="FILE", default="auto",
        help="trust anchor: DS or DNSKEY records, or root-anchors.xml; 'iana' for the packaged IANA root anchor; "
        "'auto' (default): IANA's, or the packaged test root's key for a zone signed with it; 'none' to take the "
        "zone's DNSKEY RRset as it is",
    )
    parser.add_argument("--at", metavar="YYYYMMDDHHMMSS", help="validation time, UTC (default: now)")
    parser.add_argument("--sample", metavar="N", type=int,
                        help="check N delegations chosen at random (default: every delegation)")
    parser.add_argument("--tld", metavar="NAME", action="append", default=[],
                        help="always check this delegation, also with --sample (repeatable)")
    parser.add_argument("--nxdomain", metavar="N", type=int, default=DEFAULT_NXDOMAIN,
                        help=f"random nonexistent names to query [{DEFAULT_NXDOMAIN}]")
    parser.add_argument("--transport", choices=("udp", "tcp", "both"), default="both", help="[both]")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
                        help=f"per query, as in RSSAC047 [{DEFAULT_TIMEOUT:g}]")
    parser.add_argument("--concurrency", metavar="N", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"queries in flight at once [{DEFAULT_CONCURRENCY}]")
    parser.add_argument("--seed", metavar="N", type=int, help="random seed, to repeat a run's names and sample")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every check, not only failures")
    parser.set_defaults(selftest_handler=selftest_main)
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    """The parsed command line as :class:`Options`; raises SelftestError (ValueError inside)."""
    from imrs.config import parse_listen
    from imrs.zone.zone_cli import parse_at

    try:
        listen = parse_listen(args.target)
        now = parse_at(args.at) if args.at else None
    except ValueError as exc:
        raise SelftestError(str(exc)) from None
    for flag, value, low in (("--sample", args.sample, 0), ("--nxdomain", args.nxdomain, 0),
                             ("--concurrency", args.concurrency, 1)):
        if value is not None and value < low:
            raise SelftestError(f"{flag} must be at least {low}")
    if not args.timeout > 0:
        raise SelftestError("--timeout must be positive")
    transports = ("udp", "tcp") if args.transport == "both" else (args.transport,)
    return Options(target=(listen.host, listen.port), zone=args.zone, anchor=args.anchor, now=now, sample=args.sample,
                   tlds=tuple(args.tld), nxdomain=args.nxdomain, transports=transports, timeout=args.timeout,
                   concurrency=args.concurrency, seed=args.seed)


def selftest_main(args: argparse.Namespace) -> int:
    """``imrs selftest``: the report on stdout, errors on stderr; exit 0, 1 or 2."""
    prog = "imrs selftest"
    try:
        options = options_from_args(args)
        report = run_selftest(options)
    except SelftestError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_USAGE
    print(format_report(report, verbose=args.verbose))
    sys.stdout.flush()
    return EXIT_OK if report.passed else EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``imrs selftest`` on its own (``python -m imrs.selftest ...``), for use before it is
    wired into the ``imrs`` command."""
    parser = argparse.ArgumentParser(prog="imrs")
    add_selftest_command(parser.add_subparsers(dest="command", required=True))
    return selftest_main(parser.parse_args(["selftest", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    raise SystemExit(main())

