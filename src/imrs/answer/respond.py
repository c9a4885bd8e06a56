"""From query bytes to response bytes: the reference path.

:class:`Responder` wraps parsing (:mod:`.query`), the answer engine (:mod:`.engine`), the
encoder (:mod:`.render`), EDNS and CHAOS.  It is the slow, plain path that every response
can be checked against; the compiled fast path answers the common questions with the same
bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.rdataclass
import dns.rdatatype

from imrs.answer.engine import Plan, ZoneSet, plan_answer
from imrs.answer.query import (
    AA,
    AD,
    CD,
    EDNS_BADVERS,
    EDNS_OK,
    QR,
    RCODE_NOTIMP,
    RCODE_REFUSED,
    RD,
    TC,
    TYPE_AXFR,
    TYPE_IXFR,
    EdnsInfo,
    Query,
    Reject,
    error_response,
    parse_query,
)
from imrs.answer.render import Rendered, render_plan

CLASS_IN = dns.rdataclass.IN
CLASS_CH = dns.rdataclass.CH
CLASS_ANY = dns.rdataclass.ANY
TYPE_TXT = dns.rdatatype.TXT
TYPE_ANY = dns.rdatatype.ANY

UDP_DEFAULT_MAX = 512  # RFC 1035 4.2.1, and for EDNS payloads below it (RFC 6891 6.2.5)
TCP_MAX = 65535
IPV6_MINIMAL_CAP = 1220  # NSD: optional records stop here on IPv6 UDP (1280 - headers)

_IDENTITY_NAMES = (b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00")
_VERSION_NAMES = (b"\x07version\x06server\x00", b"\x07version\x04bind\x00")


@dataclass(frozen=True)
class AnswerOptions:
    """Settings that shape answers (from the configuration)."""

    edns_buffer_size: int = 1232  # advertised, and the largest UDP response
    nsid: bytes | None = None  # RFC 5001, sent when asked for
    identity: str | None = "imrs"  # CHAOS hostname.bind / id.server; None hides it
    version: str | None = "imrs"  # CHAOS version.bind / version.server; None hides it


def header(qid: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


class Responder:
    """Answers queries for a set of zones; immutable once built."""

    def __init__(self, zones: ZoneSet, options: AnswerOptions = AnswerOptions()):
        self.zones = zones
        self.options = options
        nsid = options.nsid
        self._nsid_option = struct.pack("!HH", 3, len(nsid)) + nsid if nsid else b""

    # -- EDNS ------------------------------------------------------------------------
    def opt_record(self, edns: EdnsInfo, ext_rcode: int = 0) -> bytes:
        """Our OPT RR: payload size, DO echoed, NSID when asked for and configured."""
        rdata = self._nsid_option if edns.nsid else b""
        flags = 0x8000 if edns.do else 0
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
    def respond(self, wire: bytes, tcp: bool = False, ipv6: bool = False) -> bytes | None:
        """The response to ``wire``, or None to send nothing."""
        try:
            query = parse_query(wire)
        except Reject as reject:
            opt = self.opt_record(reject.opt) if reject.opt is not None else b""
            return error_response(wire, reject, opt)
        return self.answer(query, tcp, ipv6)

    def answer(self, q: Query, tcp: bool, ipv6: bool) -> bytes:
        edns = q.edns
        if edns.status == EDNS_BADVERS:
            flags = (q.flags | QR) & ~AD & 0xFFF0
            return header(q.id, flags, 1, 0, 0, 1) + q.question + self.opt_record(edns, ext_rcode=1)
        # RD and CD are copied (RFC 1035 4.1.1, RFC 4035 3.2.2); the rest is ours to set.
        flags = QR | (q.flags & (RD | CD))
        opt = self.opt_record(edns) if edns.status == EDNS_OK else b""
        ar_opt = 1 if opt else 0
        if q.qclass != CLASS_IN and q.qclass != CLASS_ANY:
            if q.qclass == CLASS_CH:
                return self.chaos(q, flags, opt)
            return header(q.id, flags | RCODE_REFUSED, 0, 0, 0, ar_opt) + opt
        if q.qtype == TYPE_AXFR or q.qtype == TYPE_IXFR:
            # Zone transfers are not offered: REFUSED, and AXFR over UDP is not a thing.
            rcode = RCODE_NOTIMP if q.qtype == TYPE_AXFR and not tcp else RCODE_REFUSED
            return header(q.id, flags | rcode, 1, 0, 0, ar_opt) + q.question + opt
        plan = plan_answer(self.zones, q.qname, q.qtype, q.qclass, edns.do, ipv6)
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

    def chaos(self, q: Query, flags: int, opt: bytes) -> bytes:
        """CHAOS TXT identity and version (NSD answer_chaos); REFUSED for anything else."""
        ar_opt = 1 if opt else 0
        name = q.qname_wire.lower()
        text: str | None = None
        if q.qtype in (TYPE_TXT, TYPE_ANY):
            if name in _IDENTITY_NAMES:
                text = self.options.identity
            elif name in _VERSION_NAMES:
                text = self.options.version
        if text is None:
            return header(q.id, flags | RCODE_REFUSED, 1, 0, 0, ar_opt) + q.question + opt
        data = text.encode("utf-8")[:255]
        record = b"\xc0\x0c" + struct.pack("!HHIHB", TYPE_TXT, CLASS_CH, 0, len(data) + 1, len(data)) + data
        return header(q.id, flags, 1, 1, 0, ar_opt) + q.question + record + opt
