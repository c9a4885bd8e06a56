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

from typing import NamedTuple

from imrs.answer.engine import Plan, Section
from imrs.answer.wireformat import Labels, WireRRset, rollback, wire_rrset, write_rrset
from imrs.zone.data import Name


class Rendered(NamedTuple):
    """The records part of a response (everything after the question).  A named tuple: one
    is made per reference answer and per variant a snapshot build renders."""

    body: bytes
    counts: tuple[int, int, int]  # answer, authority, additional (no OPT)
    tc: bool
    kept: tuple[bool, ...]  # per plan entry: did it go into the message
    spans: tuple[tuple[int, int], ...] = ()  # per plan entry: where it lies in body ((0, 0) if not kept)
    records: tuple[int, ...] = ()  # per plan entry: records it put in the message (0 if not kept)
    order: tuple[int, ...] = ()  # the kept entries, in the order they lie in body
    pointers: tuple[int, ...] | None = None  # where body has compression pointers, when asked for


def anchor_offsets(qname_len: int, anchor: Name) -> dict[Labels, int]:
    """Compression targets inside the question: the anchor and its ancestors (not root)."""
    offsets: dict[Labels, int] = {}
    labels = tuple([label.lower() for label in anchor.labels[:-1]])
    pos = 12 + qname_len - (sum(map(len, labels)) + len(labels) + 1)  # minus the anchor's wire length
    for i in range(len(labels)):
        offsets[labels[i:]] = pos
        pos += len(labels[i]) + 1
    return offsets


_SECTIONS = tuple(Section)  # in encoding order


_KEPT = -1  # wire cache key of the list that keeps the cached RRsets alive (never an id)


def _wire(cache: dict, rrset) -> WireRRset:
    wire = cache.get(id(rrset))
    if wire is None:
        wire = cache[id(rrset)] = wire_rrset(rrset)
        # An id is an object's own while the object lives: keeping every cached RRset alive
        # makes a hit by id a hit for the same RRset.  One list rather than a (RRset, wire)
        # pair per entry: the cache is made during a snapshot build, while the garbage
        # collector walks what the build keeps.
        kept = cache.get(_KEPT)
        if kept is None:
            kept = cache.setdefault(_KEPT, [])
        kept.append(rrset)
    return wire


def render_plan(
    plan: Plan,
    question: bytes,
    *,
    limit: int,
    udp: bool,
    minimal_cap: int,
    do: bool,
    find_pointers: bool = False,
) -> Rendered:
    """Encode ``plan`` after a header and ``question``; nothing may pass ``limit`` octets.
    With ``find_pointers``, the result says where the compression pointers are."""
    pointers: list[int] | None = [] if find_pointers else None
    out = bytearray(12)
    out += question
    start = len(out)
    compress = anchor_offsets(len(question) - 4, plan.anchor)
    cache = plan.zone.wire_cache if plan.zone is not None else {}
    entries = plan.entries
    counts = [0, 0, 0]
    kept = [False] * len(entries)
    spans = [(0, 0)] * len(entries)
    records = [0] * len(entries)
    order = []
    tc = False
    by_section: dict[int, list[int]] = {}  # entry indices per section, in plan order
    for index, entry in enumerate(entries):
        by_section.setdefault(entry.section, []).append(index)
    for section in _SECTIONS:
        indices = by_section.get(section)
        if indices is None:
            continue  # nothing to encode, nothing to decide
        done = False
        section_count = 0
        for index in indices:
            if tc:
                break
            entry = entries[index]
            mark = len(out)
            added = 0
            for rrset in entry.rrsets:
                added += write_rrset(out, compress, _wire(cache, rrset), pointers)
            if do and entry.sigs is not None:
                added += write_rrset(out, compress, _wire(cache, entry.sigs), pointers)
            end = len(out)
            if udp and section >= Section.OPTIONAL_AUTHORITY and (end > limit or end > minimal_cap):
                rollback(out, compress, mark, pointers)
                done = True
                continue
            if end > limit:
                rollback(out, compress, mark, pointers)
                if section.required:
                    tc = True
                continue
            kept[index] = True
            spans[index] = (mark - start, end - start)
            records[index] = added
            order.append(index)
            counts[section.wire_section] += added
            section_count += added
        if tc:
            break
        if done:
            if section == Section.ADDITIONAL_A and section_count == 0 and plan.delegation is not None:
                tc = True
            break
    if plan.delegation is not None and not tc:
        tc = any(entry.in_domain_glue and not kept[i] for i, entry in enumerate(entries))
    return Rendered(
        bytes(out[start:]),
        (counts[0], counts[1], counts[2]),
        tc,
        tuple(kept),
        tuple(spans),
        tuple(records),
        tuple(order),
        tuple([p - start for p in pointers]) if pointers is not None else None,
    )
