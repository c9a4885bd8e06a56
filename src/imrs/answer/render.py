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

import io
from dataclasses import dataclass

from imrs.answer.engine import Plan, Section
from imrs.zone.data import Name


@dataclass(frozen=True, slots=True)
class Rendered:
    """The records part of a response (everything after the question)."""

    body: bytes
    counts: tuple[int, int, int]  # answer, authority, additional (no OPT)
    tc: bool
    kept: tuple[bool, ...]  # per plan entry: did it go into the message


def anchor_offsets(qname_len: int, anchor: Name) -> dict[Name, int]:
    """Compression targets inside the question: the anchor and its ancestors (not root)."""
    offsets: dict[Name, int] = {}
    pos = 12 + qname_len - len(anchor.to_wire())
    name = anchor
    while len(name.labels) > 1:
        offsets[name] = pos
        pos += len(name.labels[0]) + 1
        name = name.parent()
    return offsets


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
    out = io.BytesIO()
    out.write(bytes(12))
    out.write(question)
    start = out.tell()
    compress: dict[Name, int] = anchor_offsets(len(question) - 4, plan.anchor)
    counts = [0, 0, 0]
    kept = [False] * len(plan.entries)
    tc = False
    for section in Section:
        done = False
        section_count = 0
        for index, entry in enumerate(plan.entries):
            if tc:
                break
            if entry.section != section:
                continue
            mark = out.tell()
            added = 0
            for rrset in entry.rrsets:
                added += rrset.to_wire(out, compress, None, want_shuffle=False)
            if do and entry.sigs is not None:
                added += entry.sigs.to_wire(out, compress, None, want_shuffle=False)
            end = out.tell()
            if udp and section >= Section.OPTIONAL_AUTHORITY and (end > limit or end > minimal_cap):
                _rollback(out, compress, mark)
                done = True
                continue
            if end > limit:
                _rollback(out, compress, mark)
                if section.required:
                    tc = True
                continue
            kept[index] = True
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
    return Rendered(out.getvalue()[start:], (counts[0], counts[1], counts[2]), tc, tuple(kept))


def _rollback(out: io.BytesIO, compress: dict[Name, int], mark: int) -> None:
    out.seek(mark)
    out.truncate()
    for name in [n for n, pos in compress.items() if pos >= mark]:
        del compress[name]
