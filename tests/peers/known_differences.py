"""Documented, deliberate differences between imrs and NSD 4.6.1.

Every entry covers one narrowly defined difference (its predicate names the
field and the exact circumstances) and says why imrs differs on purpose.
Anything not matched here fails tests/peers/test_nsd_differential.py.
Entries are added only for choices imrs makes deliberately (documented in
its source) and that are backed by a standard; each was reported to the lead.

Predicate signature: applies(entry, transport, diff, pair) -> bool
  entry     corpus.Entry (entry.category, entry.desc, entry.wire = the query)
  transport "udp" or "tcp"
  diff      compare.Diff (diff.field, diff.a = NSD's value, diff.b = imrs's value);
            header flags come one bit at a time: field "flags.CD", "flags.TC", ...
  pair      compare.Pair (pair.wa / pair.wb raw responses, pair.va / pair.vb
            dnspython views with .msg, pair.zone the zone file both serve)
"""

from __future__ import annotations

import dns.flags
import dns.rcode
import dns.rdatatype

from .compare import KnownDifference
from .corpus import zone_info


def _flag_set(text: str, name: str) -> bool:
    return name in text.split()


def _cd_copied(entry, transport, diff, pair) -> bool:
    """imrs copies CD from the query into the response; NSD 4.6.1 clears it."""
    query_cd = bool(entry.wire[3] & 0x10)
    return (diff.field == "flags.CD" and query_cd
            and not _flag_set(diff.a, "CD") and _flag_set(diff.b, "CD"))


def _rfc9471_tc(entry, transport, diff, pair) -> bool:
    """imrs sets TC on a UDP referral whose in-domain glue NSD had to leave out."""
    if diff.field != "flags.TC" or transport != "udp" or pair.zone is None:
        return False
    if _flag_set(diff.a, "TC") or not _flag_set(diff.b, "TC"):
        return False
    va = pair.va
    if not va.ok:
        return False
    m = va.msg
    if m.rcode() != dns.rcode.NOERROR or m.flags & dns.flags.AA or m.answer:
        return False  # not a referral
    ns = [r for r in m.authority if r.rdtype == dns.rdatatype.NS]
    if len(ns) != 1:
        return False
    cut = ns[0].name
    glue_types = zone_info(str(pair.zone)).glue_types
    have = {(r.name, r.rdtype) for r in m.additional}
    for rd in ns[0]:
        if rd.target.is_subdomain(cut):  # in-domain (RFC 9471 2.1): required glue
            for t in glue_types.get(rd.target, ()):
                if (rd.target, t) not in have:
                    return True  # NSD dropped required glue without TC
    return False


def _cookie_answered(entry, transport, diff, pair) -> bool:
    """imrs answers a client cookie with client + server cookie (RFC 7873); NSD 4.6.1 ignores it."""
    if diff.field != "edns.options":
        return False
    client = _client_cookie(entry.wire)
    if client is None:
        return False
    nsd = [] if diff.a in ("-", None) else str(diff.a).split()
    imrs = [] if diff.b in ("-", None) else str(diff.b).split()
    ours = [o for o in imrs if o.startswith("10:")]
    if len(ours) != 1 or [o for o in imrs if not o.startswith("10:")] != nsd:
        return False
    return _cookie_bytes(ours[0])[:8] == client and len(_cookie_bytes(ours[0])) == 24


def _client_cookie(query: bytes) -> bytes | None:
    import dns.message

    try:
        msg = dns.message.from_wire(query)
    except Exception:  # noqa: BLE001 - not a query dnspython reads: not this case
        return None
    for option in msg.options:
        if option.otype == 10:
            data = option.to_wire()
            return data[:8] if len(data) in (8, *range(16, 41)) else None
    return None


def _cookie_bytes(text: str) -> bytes:
    """The option's data from the comparer's rendering: "10:<hex>" of dnspython's to_wire()
    (the cookie octets) or its text form."""
    value = text.split(":", 1)[1]
    try:
        return bytes.fromhex(value)
    except ValueError:
        return b""


def _cookie_space(entry, transport, diff, pair) -> bool:
    """Over UDP, the 28 octets of imrs's COOKIE option leave out optional additional records
    that NSD 4.6.1 (which sends no cookie) still fits in."""
    if diff.field != "additional" or transport != "udp" or _client_cookie(entry.wire) is None:
        return False
    va, vb = pair.va, pair.vb
    if not (va.ok and vb.ok) or not isinstance(pair.wa, bytes):
        return False
    nsd = {(r.name, r.rdtype) for r in va.msg.additional}
    ours = {(r.name, r.rdtype) for r in vb.msg.additional}
    if not ours < nsd:
        return False  # imrs must only have left records out, never added or changed one
    payload = max(512, min(_query_payload(entry.wire), 1232))
    return len(pair.wa) + 28 > payload  # NSD's response would not have fit with a cookie


def _query_payload(query: bytes) -> int:
    import dns.message

    try:
        return dns.message.from_wire(query).payload
    except Exception:  # noqa: BLE001
        return 512


KNOWN_DIFFERENCES: list[KnownDifference] = [
    KnownDifference(
        "cookie-space",
        "RFC 7873 s5.2 with RFC 6891 s7: over UDP the server cookie (28 octets of OPT option) "
        "counts against the payload size, so an optional glue record NSD 4.6.1 (no cookies) "
        "still fits is left out, as NSD 4.8+ leaves it out. Only covers: UDP, the query has a "
        "client cookie, imrs's additional section a strict subset of NSD's, and NSD's response "
        "plus 28 octets over the payload limit.",
        _cookie_space,
    ),
    KnownDifference(
        "cookie-answered",
        "RFC 7873 s5.2 / RFC 9018: a query with a client cookie gets the client cookie and a "
        "server cookie back. NSD 4.6.1 predates DNS Cookies (NSD added them in 4.8.0) and "
        "ignores the option; imrs answers it on purpose (imrs/answer/cookies.py). Only covers: "
        "imrs's options are NSD's plus one COOKIE of 24 octets starting with the query's "
        "client cookie.",
        _cookie_answered,
    ),
    KnownDifference(
        "cd-bit-copied",
        "RFC 4035 s3.2.2 (and RFC 6840 s5.9): the CD bit is copied from the query to the "
        "response. NSD 4.6.1 keeps only RD (query.c query_prepare_response); imrs copies RD and "
        "CD on purpose (imrs/answer/respond.py). Only covers: query had CD, NSD cleared it, imrs "
        "set it.",
        _cd_copied,
    ),
    KnownDifference(
        "rfc9471-glue-tc",
        "RFC 9471 s3: if the in-domain glue of a referral does not all fit in a UDP response, "
        "TC must be set. NSD 4.6.1 (pre-RFC 9471) silently drops it; imrs sets TC on purpose "
        "(imrs/answer/render.py). Only covers UDP referrals where NSD's response lacks an "
        "A/AAAA record that the zone has for an in-domain NS target.",
        _rfc9471_tc,
    ),
]
