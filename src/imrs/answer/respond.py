"""From query bytes to response bytes: the reference path.

:class:`Responder` wraps parsing (:mod:`.query`), the answer engine (:mod:`.engine`), the
encoder (:mod:`.render`), EDNS and CHAOS.  It is the slow, plain path that every response
can be checked against; the compiled fast path answers the common questions with the same
bytes.

EDNS options in our OPT record come in this order: NSID (RFC 5001), COOKIE (RFC 7873),
EXPIRE (RFC 7314), edns-tcp-keepalive (RFC 7828), Extended DNS Error (RFC 8914): NSD's
place for the cookie (after NSID, before EDE), and BIND's order for all of them.

DNS Cookies (with a :class:`~imrs.answer.cookies.CookieJar` and the client's address): a
COOKIE option of a length other than 8 or 16..40 is FORMERR (RFC 7873 section 5.2.2: the
header and our OPT record); otherwise the response carries the client cookie and our server
cookie.  With ``require``, a UDP query without a valid server cookie gets BADCOOKIE (the
question and our OPT record with the cookie); over TCP cookies are never required.
Keepalive: over TCP, a query with an empty edns-tcp-keepalive option gets the option with
our idle timeout (with a TIMEOUT in it, FORMERR); over UDP the option is ignored.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass

import dns.rdataclass
import dns.rdatatype

from imrs.answer.cookies import (
    RESULT_BADCOOKIE,
    RESULT_MALFORMED,
    CookieJar,
    keepalive_option,
)
from imrs.answer.engine import Plan, ZoneSet, plan_answer
from imrs.answer.query import (
    AA,
    AD,
    CD,
    EDNS_BADVERS,
    EDNS_OK,
    QR,
    RCODE_FORMERR,
    RCODE_NOTAUTH,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RD,
    TC,
    TYPE_AXFR,
    TYPE_IXFR,
    TYPE_OPT,
    EdnsInfo,
    Query,
    Reject,
    _skip_rr,
    error_response,
    parse_query,
    read_name,
)
from imrs.answer.render import Rendered, render_plan
from imrs.zone.records import ZoneVersion, soa_timers

CLASS_IN = dns.rdataclass.IN
CLASS_CH = dns.rdataclass.CH
CLASS_ANY = dns.rdataclass.ANY
TYPE_TXT = dns.rdatatype.TXT
TYPE_ANY = dns.rdatatype.ANY
TYPE_SOA = dns.rdatatype.SOA
EDNS_OPTION_EXPIRE = 9  # RFC 7314
RCODE_BADCOOKIE_LOW = 7  # BADCOOKIE (23): 7 in the header, 1 in the OPT record (RFC 7873 8)

UDP_DEFAULT_MAX = 512  # RFC 1035 4.2.1, and for EDNS payloads below it (RFC 6891 6.2.5)
TCP_MAX = 65535
IPV6_MINIMAL_CAP = 1220  # NSD: optional records stop here on IPv6 UDP (1280 - headers)

# Extended DNS Error codes (RFC 8914 section 4) given where NSD gives them
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20
EDE_NOT_SUPPORTED = 21

_IDENTITY_NAMES = (b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00")
_VERSION_NAMES = (b"\x07version\x06server\x00", b"\x07version\x04bind\x00")


@dataclass(frozen=True)
class AnswerOptions:
    """Settings that shape answers (from the configuration)."""

    edns_buffer_size: int = 1232  # advertised, and the largest UDP response
    nsid: bytes | None = None  # RFC 5001, sent when asked for
    identity: str | None = "imrs"  # CHAOS hostname.bind / id.server; None hides it
    version: str | None = "imrs"  # CHAOS version.bind / version.server; None hides it
    tcp_keepalive: int | None = None  # RFC 7828 TIMEOUT (100 ms units) sent over TCP when asked; None = off


def header(qid: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def has_edns_option(wire: bytes, code: int) -> bool:
    """Whether the query's OPT record carries option ``code`` (question, then any authority
    records as in IXFR, then the OPT record first in the additional section)."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", wire, 4)
        if qdcount != 1 or not arcount:
            return False
        pos = read_name(wire, 12) + 4
        for _ in range(ancount + nscount):
            pos = _skip_rr(wire, pos)
        if wire[pos] != 0 or struct.unpack_from("!H", wire, pos + 1)[0] != TYPE_OPT:
            return False
        (rdlen,) = struct.unpack_from("!H", wire, pos + 9)
        cur, end = pos + 11, min(pos + 11 + rdlen, len(wire))
        while cur + 4 <= end:
            ocode, olen = struct.unpack_from("!HH", wire, cur)
            if ocode == code:
                return True
            cur += 4 + olen
    except (ValueError, IndexError, struct.error):
        return False
    return False


def expire_seconds(version: ZoneVersion, now: float | None = None) -> int:
    """What EDNS EXPIRE reports for ``version`` (RFC 7314): the seconds left before the zone
    expires here, or, for a zone that does not expire (we are its primary), its SOA expire."""
    if version.expire_at is None:
        return soa_timers(version.records.soa.rdata)[3]
    left = version.expire_at - (time.time() if now is None else now)
    return max(0, min(int(left), 0xFFFFFFFF))


def expire_option(version: ZoneVersion) -> bytes:
    """The EDNS EXPIRE option (code, length, value) for a response about ``version``."""
    return struct.pack("!HHI", EDNS_OPTION_EXPIRE, 4, expire_seconds(version))


class Responder:
    """Answers queries for a set of zones; immutable once built."""

    def __init__(
        self,
        zones: ZoneSet,
        options: AnswerOptions = AnswerOptions(),
        versions: Mapping[bytes, ZoneVersion] | None = None,
        cookies: CookieJar | None = None,
    ):
        self.zones = zones
        self.options = options
        self.versions: Mapping[bytes, ZoneVersion] = versions or {}
        self.cookies = cookies  # None: COOKIE options are ignored
        nsid = options.nsid
        self._nsid_option = struct.pack("!HH", 3, len(nsid)) + nsid if nsid else b""
        # edns-tcp-keepalive for TCP responses to queries that ask (empty: off)
        self.keepalive_option = keepalive_option(options.tcp_keepalive) if options.tcp_keepalive is not None else b""

    # -- EDNS ------------------------------------------------------------------------
    def opt_record(
        self,
        edns: EdnsInfo,
        ext_rcode: int = 0,
        ede: int | None = None,
        extra: bytes = b"",
        cookie: bytes = b"",
        keepalive: bytes = b"",
        keep_do: bool = False,
    ) -> bytes:
        """Our OPT RR: payload size, DO echoed (not with an extended rcode unless
        ``keep_do``), then the options: NSID when asked for and configured, ``cookie``
        (COOKIE), ``extra`` (EDNS EXPIRE), ``keepalive`` (edns-tcp-keepalive), and an Extended
        DNS Error (RFC 8914) code when there is one."""
        rdata = (self._nsid_option if edns.nsid else b"") + cookie + extra + keepalive
        if ede is not None:
            rdata += struct.pack("!HHH", 15, 2, ede)
        flags = 0x8000 if edns.do and (ext_rcode == 0 or keep_do) else 0
        return b"\x00" + struct.pack("!HHBBHH", 41, self.options.edns_buffer_size, ext_rcode, 0, flags, len(rdata)) + rdata

    def max_size(self, edns: EdnsInfo, tcp: bool) -> int:
        if tcp:
            return TCP_MAX
        if edns.status == EDNS_OK and edns.payload > UDP_DEFAULT_MAX:
            return min(edns.payload, self.options.edns_buffer_size)
        return UDP_DEFAULT_MAX

    def minimal_cap(self, ipv6: bool) -> int:
        size = self.options.edns_buffer_size
        return min(size, IPV6_MINIMAL_CAP) if ipv6 else size

    # -- answering --------------------------------------------------------------------
    def respond(self, wire: bytes, tcp: bool = False, ipv6: bool = False, peer: bytes | None = None) -> bytes | None:
        """The response to ``wire``, or None to send nothing.  ``peer`` is the client's
        address, packed (4 or 16 octets); without it, or without a cookie jar, COOKIE
        options are ignored."""
        try:
            query = parse_query(wire)
        except Reject as reject:
            if reject.notify is not None and not self._is_apex(reject.notify):
                reject.rcode = RCODE_NXDOMAIN  # NOTIFY for a zone we do not serve (as NSD)
            opt = self.opt_record(reject.opt) if reject.opt is not None else b""
            return error_response(wire, reject, opt)
        edns = query.edns
        cookie = keepalive = b""
        if edns.status == EDNS_OK:
            jar = self.cookies
            if edns.cookie is not None and jar is not None and peer is not None:
                length = len(edns.cookie)
                if length != 8 and not 16 <= length <= 40:
                    jar.counts[RESULT_MALFORMED] += 1
                    return self._formerr(wire, query, "malformed COOKIE option")
                if tcp and edns.keepalive and self.keepalive_option:  # the FORMERR below, uncounted
                    return self._formerr(wire, query, "edns-tcp-keepalive with a TIMEOUT in a query")
                cookie, valid = jar.response_option(edns.cookie, peer)
                if not valid and not tcp and jar.require:
                    jar.counts[RESULT_BADCOOKIE] += 1
                    return self.badcookie(query, cookie)
            if tcp and edns.keepalive is not None and self.keepalive_option:
                if edns.keepalive:  # RFC 7828 3.2.1: a query's option has no TIMEOUT
                    return self._formerr(wire, query, "edns-tcp-keepalive with a TIMEOUT in a query")
                keepalive = self.keepalive_option
        expire = b""
        if self.versions and query.qtype in (TYPE_SOA, TYPE_IXFR) and edns.status == EDNS_OK:
            version = self.versions.get(query.qname_wire.lower())
            if version is not None and has_edns_option(wire, EDNS_OPTION_EXPIRE):
                expire = expire_option(version)
        return self.answer(query, tcp, ipv6, expire, cookie, keepalive)

    def _formerr(self, wire: bytes, q: Query, reason: str) -> bytes | None:
        """FORMERR for a malformed EDNS option: the header (RD and opcode kept), our OPT."""
        reject = Reject(RCODE_FORMERR, q.flags & (RD | 0x7800), reason, opt=q.edns)
        return error_response(wire, reject, self.opt_record(q.edns))

    def badcookie(self, q: Query, cookie: bytes) -> bytes:
        """BADCOOKIE (RFC 7873 5.2.3): the question, and our OPT record with a fresh cookie."""
        flags = QR | (q.flags & (RD | CD)) | RCODE_BADCOOKIE_LOW
        return header(q.id, flags, 1, 0, 0, 1) + q.question + self.opt_record(q.edns, ext_rcode=1, cookie=cookie, keep_do=True)

    def answer(self, q: Query, tcp: bool, ipv6: bool, expire: bytes = b"", cookie: bytes = b"", keepalive: bytes = b"") -> bytes:
        """The response to a parsed query; ``expire``, ``cookie`` and ``keepalive`` are the
        EDNS options (code, length, data) our OPT record carries, if any."""
        edns = q.edns
        if edns.status == EDNS_BADVERS:
            flags = (q.flags | QR) & ~AD & 0xFFF0
            return header(q.id, flags, 1, 0, 0, 1) + q.question + self.opt_record(edns, ext_rcode=1)
        # RD and CD are copied (RFC 1035 4.1.1, RFC 4035 3.2.2); the rest is ours to set.
        flags = QR | (q.flags & (RD | CD))
        has_edns = edns.status == EDNS_OK
        opt = self.opt_record(edns, extra=expire, cookie=cookie, keepalive=keepalive) if has_edns else b""
        ar_opt = 1 if opt else 0
        if q.qclass != CLASS_IN and q.qclass != CLASS_ANY:
            if q.qclass == CLASS_CH:
                return self.chaos(q, flags, cookie, keepalive)
            opt = self.opt_record(edns, ede=EDE_NOT_SUPPORTED, cookie=cookie, keepalive=keepalive) if has_edns else b""
            return header(q.id, flags | RCODE_REFUSED, 0, 0, 0, ar_opt) + opt
        if q.qtype == TYPE_AXFR or q.qtype == TYPE_IXFR:
            # Transfers are served by the TCP listener (imrs.serve.xfrout); reaching here they
            # are not offered: REFUSED for our zones, NOTAUTH for others; AXFR over UDP is not
            # a thing (NOTIMP).  IXFR over UDP is REFUSED, as NSD does for a client its transfer
            # ACL does not admit: the UDP path does not look at the client's address, and
            # secondaries ask IXFR over TCP after a SOA query (RFC 1995 section 2 allows it).
            if q.qtype == TYPE_AXFR and not tcp:
                return header(q.id, flags | RCODE_NOTIMP, 1, 0, 0, ar_opt) + q.question + opt
            if not self._is_apex(q.qname_wire.lower()):
                return header(q.id, flags | RCODE_NOTAUTH, 1, 0, 0, ar_opt) + q.question + opt
            opt = self.opt_record(edns, ede=EDE_PROHIBITED, cookie=cookie, keepalive=keepalive) if has_edns else b""
            return header(q.id, flags | RCODE_REFUSED, 1, 0, 0, ar_opt) + q.question + opt
        plan = plan_answer(self.zones, q.qname, q.qtype, q.qclass, edns.do, ipv6)
        if plan.rcode == RCODE_REFUSED:
            opt = self.opt_record(edns, ede=EDE_NOT_AUTHORITATIVE, cookie=cookie, keepalive=keepalive) if has_edns else b""
            return header(q.id, flags | RCODE_REFUSED, 1, 0, 0, ar_opt) + q.question + opt
        out = self.render(plan, q.question, self.max_size(edns, tcp) - len(opt), tcp, ipv6, edns.do)
        flags |= plan.rcode
        if plan.aa:
            flags |= AA
        if out.tc:
            flags |= TC
        an, ns, ar = out.counts
        return header(q.id, flags, 1, an, ns, ar + ar_opt) + q.question + out.body + opt

    def render(self, plan: Plan, question: bytes, limit: int, tcp: bool, ipv6: bool, do: bool) -> Rendered:
        """Encode ``plan`` after ``question`` within ``limit`` octets."""
        return render_plan(plan, question, limit=limit, udp=not tcp, minimal_cap=self.minimal_cap(ipv6), do=do)

    def _is_apex(self, name_wire: bytes) -> bool:
        """Is this lowercased wire name the apex of a zone we serve?"""
        return any(origin.to_wire() == name_wire for origin in self.zones.zones)

    def chaos(self, q: Query, flags: int, cookie: bytes = b"", keepalive: bytes = b"") -> bytes:
        """CHAOS TXT identity and version (NSD answer_chaos); REFUSED for anything else."""
        has_edns = q.edns.status == EDNS_OK
        ar_opt = 1 if has_edns else 0
        name = q.qname_wire.lower()
        text: str | None = None
        ede = EDE_NOT_SUPPORTED
        if q.qtype in (TYPE_TXT, TYPE_ANY):
            if name in _IDENTITY_NAMES:
                text = self.options.identity
                ede = EDE_PROHIBITED
            elif name in _VERSION_NAMES:
                text = self.options.version
                ede = EDE_PROHIBITED
        if text is None:
            opt = self.opt_record(q.edns, ede=ede, cookie=cookie, keepalive=keepalive) if has_edns else b""
            return header(q.id, flags | RCODE_REFUSED, 1, 0, 0, ar_opt) + q.question + opt
        opt = self.opt_record(q.edns, cookie=cookie, keepalive=keepalive) if has_edns else b""
        data = text.encode("utf-8")[:255]
        record = b"\xc0\x0c" + struct.pack("!HHIHB", TYPE_TXT, CLASS_CH, 0, len(data) + 1, len(data)) + data
        return header(q.id, flags, 1, 1, 0, ar_opt) + q.question + record + opt
