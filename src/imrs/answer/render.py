"""Encoding a Plan into wire format, deciding what fits (NSD's encode_answer).

Rules, per section in order (answer, authority, optional authority, A glue, AAAA glue,
other additional):

* an RRset travels with its RRSIGs (DO set) and is kept or dropped whole;
* an answer or authority RRset that does not fit sets TC and ends the encoding;
* on UDP, an optional RRset (optional authority, additional) that does not fit, or that
  takes the message past ``minimal_cap`` octets, is dropped and ends the encoding after its
  section; if that leaves a referral with no address record at all, TC is set;
* RFC 9471: a referral that could not carry all of its in-domain glue sets TC.

Names are compressed against everything already written and against the suffixes of the
query name from the *anchor* (NSD's closest encloser) up, as NSD does.
"""

from __future__ import annotations

from dataclasses import dataclass

from imrs.answer.engine import Plan, Section
from imrs.answer.wireformat import Labels, WireRRset, rollback, wire_rrset, write_rrset
from imrs.zone.data import Name


@dataclass(frozen=True, slots=True)
class Rendered:
    """The records part of a response (everything after the question)."""

    body: bytes
    counts: tuple[int, int, int]  # answer, authority, additional (no OPT)
    tc: bool
    kept: tuple[bool, ...]  # per plan entry: did it go into the message
    spans: tuple[tuple[int, int], ...] = ()  # per plan entry: where it lies in body ((0, 0) if not kept)


def anchor_offsets(qname_len: int, anchor: Name) -> dict[Labels, int]:
    """Compression targets inside the question: the anchor and its ancestors (not root)."""
    offsets: dict[Labels, int] = {}
    labels = tuple(label.lower() for label in anchor.labels[:-1])
    pos = 12 + qname_len - len(anchor.to_wire())
    for i in range(len(labels)):
        offsets[labels[i:]] = pos
        pos += len(labels[i]) + 1
    return offsets


def _wire(cache: dict, rrset) -> WireRRset:
    hit = cache.get(id(rrset))
    if hit is not None and hit[0] is rrset:
        return hit[1]
    wire = wire_rrset(rrset)
    cache[id(rrset)] = (rrset, wire)  # the RRset is kept, so its id is not reused
    return wire


def render_plan(
    plan: Plan,
    question: bytes,
    *,
    limit: int,
    udp: bool,
    minimal_cap: int,
    do: bool,
) -> Rendered:
    """Encode ``plan`` after a header and ``question``; nothing may pass ``limit`` octets."""
    out = bytearray(12)
    out += question
    start = len(out)
    compress = anchor_offsets(len(question) - 4, plan.anchor)
    cache = plan.zone.wire_cache if plan.zone is not None else {}
    counts = [0, 0, 0]
    kept = [False] * len(plan.entries)
    spans = [(0, 0)] * len(plan.entries)
    tc = False
    for section in Section:
        done = False
        section_count = 0
        for index, entry in enumerate(plan.entries):
            if tc:
                break
            if entry.section != section:
                continue
            mark = len(out)
            added = 0
            for rrset in entry.rrsets:
                added += write_rrset(out, compress, _wire(cache, rrset))
            if do and entry.sigs is not None:
                added += write_rrset(out, compress, _wire(cache, entry.sigs))
            end = len(out)
            if udp and section >= Section.OPTIONAL_AUTHORITY and (end > limit or end > minimal_cap):
                rollback(out, compress, mark)
                done = True
                continue
            if end > limit:
                rollback(out, compress, mark)
                if section.required:
                    tc = True
                continue
            kept[index] = True
            spans[index] = (mark - start, end - start)
            counts[section.wire_section] += added
            section_count += added
        if tc:
            break
        if done:
            if section == Section.ADDITIONAL_A and section_count == 0 and plan.delegation is not None:
                tc = True
            break
    if plan.delegation is not None and not tc:
        tc = any(entry.in_domain_glue and not kept[i] for i, entry in enumerate(plan.entries))
    return Rendered(bytes(out[start:]), (counts[0], counts[1], counts[2]), tc, tuple(kept), tuple(spans))
