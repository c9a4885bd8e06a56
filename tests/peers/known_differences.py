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


KNOWN_DIFFERENCES: list[KnownDifference] = [
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
