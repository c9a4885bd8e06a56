"""The fast path: answers decided when the snapshot is built, bytes copied per packet.

The root zone has few distinct answers: a referral per TLD, an NXDOMAIN per NSEC gap and a
handful at the apex.  When a snapshot is built, every name of every zone's name tree gets
an entry that says which answer a question at it, or below it, receives; each distinct
answer is an :class:`AnswerClass` that holds the engine's plans (with DO clear and set, over
IPv4 and IPv6).  Per packet the work is: check the header, walk the question name, look up
the entry, and copy the rendered bytes, spliced with the query's ID, RD/CD bits, question
(with its letter case) and OPT record.

A rendered response depends on the question only through the length of its name (which
moves every compression pointer) and on the size limit; it is rendered once per such
*shape* by the reference encoder and kept.  Anything unusual (EDNS options, other classes,
zone transfers, trailing data, names outside the served zones, wildcards, DNAME) is left to
the reference path by returning None.  tests/test_compiled.py proves both paths give the
same bytes.
"""

from __future__ import annotations

import bisect
import dataclasses
import struct

import dns.name
import dns.rdatatype

from imrs.answer.engine import Plan, plan_answer
from imrs.answer.query import AA, QR, TC
from imrs.answer.render import render_plan
from imrs.answer.respond import UDP_DEFAULT_MAX, Responder
from imrs.zone.data import Name, ZoneData

T = dns.rdatatype
_HEADER_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_HEADER_ONE_QUESTION_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_SHAPE_CACHE_LIMIT = 400_000  # rendered shapes kept before the cache starts afresh


class AnswerClass:
    """One distinct answer (e.g. 'referral to com.'), for every DO/transport variant."""

    __slots__ = ("qname", "qtype", "anchor", "base", "plans", "shapes")

    def __init__(self, qname: Name, qtype: int, anchor: Name | None = None, base: "AnswerClass | None" = None):
        self.qname = qname  # a representative question
        self.qtype = qtype
        self.anchor = anchor  # compression anchor when it differs from the representative's
        self.base = base  # same content as this class, other anchor
        self.plans: list[Plan | None] = [None, None, None, None]  # index: do + 2 * ipv6
        self.shapes: dict[int, tuple] = {}


class NameEntry:
    """What a question at (``exact``) or below (``below``/gaps) one tree name is answered."""

    __slots__ = ("exact", "exact_default", "below", "gap_labels", "gaps")

    def __init__(self):
        self.exact: dict[int, AnswerClass] = {}
        self.exact_default: AnswerClass | None = None
        self.below: AnswerClass | None = None  # one answer for every name below (referral)
        self.gap_labels: list[bytes] | None = None  # sorted child labels, for NXDOMAIN gaps
        self.gaps: list[AnswerClass] | None = None


class CompiledAnswers:
    """Precomputed answers for a Responder's zones."""

    def __init__(self, reference: Responder):
        self.reference = reference
        self.options = reference.options
        self.names: dict[bytes, NameEntry] = {}
        self._shape_count = 0
        self._classes: list[AnswerClass] = []
        edns = self.options.edns_buffer_size
        self._opt = (
            b"\x00\x00\x29" + struct.pack("!H", edns) + b"\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x29" + struct.pack("!H", edns) + b"\x00\x00\x80\x00\x00\x00",
        )
        self._edns_size = edns
        for zone in reference.zones:
            self._compile_zone(zone)
        for answer_class in self._classes:
            if answer_class.base is None:
                for do in (0, 1):
                    self._plan(answer_class, do, False)

    @property
    def name_count(self) -> int:
        return len(self.names)

    # -- building ----------------------------------------------------------------------
    def _new_class(self, qname: Name, qtype: int, anchor: Name | None = None, base: AnswerClass | None = None) -> AnswerClass:
        answer_class = AnswerClass(qname, qtype, anchor, base)
        self._classes.append(answer_class)
        return answer_class

    def _plan(self, answer_class: AnswerClass, do: int, ipv6: bool) -> Plan:
        index = do + 2 * ipv6
        plan = answer_class.plans[index]
        if plan is None:
            if answer_class.base is not None:
                plan = dataclasses.replace(self._plan(answer_class.base, do, ipv6), anchor=answer_class.anchor)
            else:
                plan = plan_answer(self.reference.zones, answer_class.qname, answer_class.qtype, 1, bool(do), ipv6)
            answer_class.plans[index] = plan
        return plan

    def _compile_zone(self, zone: ZoneData) -> None:
        referrals: dict[Name, AnswerClass] = {}
        absent_type = 65534  # a private-use type no zone here holds: stands for "any other type"
        children: dict[Name, list[bytes]] = {}
        for name in zone.existing:
            if name != zone.origin:
                children.setdefault(name.parent(), []).append(name.labels[0])
        for name in sorted(zone.tree, key=len):
            wire = name.to_wire()
            if wire in self.names:
                continue  # a deeper zone's apex that is also a name in a parent zone: keep the first
            entry = NameEntry()
            delegation = zone.find_delegation(name)
            if delegation is not None:
                referral = referrals.get(delegation)
                if referral is None:
                    referral = referrals[delegation] = self._new_class(delegation, absent_type)
                if name == delegation:
                    entry.exact[T.DS] = self._new_class(name, T.DS)
                else:  # same referral, compressed against this deeper name in the question
                    referral = self._new_class(name, absent_type, name, referral)
                entry.below = referral
                entry.exact_default = referral
                self.names[wire] = entry
                continue
            if name not in zone.existing:
                self.names[wire] = entry  # empty entry: the reference path answers
                continue
            node = zone.nodes.get(name)
            if b"*" in (label for label in children.get(name, ())) or (node and T.DNAME in node.rrsets):
                self.names[wire] = entry
                continue
            if node is not None and T.CNAME in node.rrsets:
                self.names[wire] = entry
                continue
            types = set(node.rrsets) if node is not None else set()
            for qtype in types | {T.ANY, T.RRSIG, T.DS}:
                entry.exact[qtype] = self._new_class(name, qtype)
            entry.exact_default = self._new_class(name, absent_type)
            labels = sorted({label.lower() for label in children.get(name, ())})
            entry.gap_labels = labels
            entry.gaps = [self._new_class(self._gap_name(name, labels, i), absent_type) for i in range(len(labels) + 1)]
            self.names[wire] = entry

    @staticmethod
    def _gap_name(parent: Name, labels: list[bytes], i: int) -> Name:
        """A name that falls in gap ``i`` among ``parent``'s children (for planning)."""
        label = labels[i - 1] + b"\x00" if i > 0 else b"\x00"
        if len(label) > 63:
            label = labels[i - 1][:62] + b"\xff" if i > 0 else b"\x00"
        try:
            return Name((label,) + parent.labels)
        except dns.name.NameTooLong:
            return Name((b"\x00",) + parent.labels)

    # -- answering -------------------------------------------------------------------
    def answer(self, wire: bytes, tcp: bool, ipv6: bool) -> bytes | None:
        """The response bytes, or None when the reference path must decide."""
        n = len(wire)
        if n < 17 or wire[2] & 0xF8 or wire[3] & 0x0F:
            return None  # too short, a response, an opcode other than QUERY, or an rcode
        counts = wire[4:12]
        if counts == _HEADER_ONE_QUESTION:
            has_opt = False
        elif counts == _HEADER_ONE_QUESTION_OPT:
            has_opt = True
        else:
            return None
        pos = 12
        starts = []
        length = wire[pos]
        while length:
            if length > 63:
                return None
            starts.append(pos)
            pos += length + 1
            if pos >= n:
                return None
            length = wire[pos]
        starts.append(pos)  # the root label, the last suffix to try
        qend = pos + 1
        if qend > 267 or qend + 4 > n or wire[qend + 2] != 0 or wire[qend + 3] != 1:
            return None  # name too long, short question, or a class other than IN
        qtype = (wire[qend] << 8) | wire[qend + 1]
        if qtype == 252 or qtype == 251:
            return None  # AXFR / IXFR
        end = qend + 4
        if has_opt:
            # Only a bare OPT (no options) exactly at the end; anything else goes the slow way.
            if n != end + 11 or wire[end] != 0 or wire[end + 1] != 0 or wire[end + 2] != 41:
                return None
            if wire[end + 6] != 0 or wire[end + 9] != 0 or wire[end + 10] != 0:
                return None  # EDNS version > 0, or options present
            do = wire[end + 7] >> 7
            opt = self._opt[do]
            if tcp:
                maxlen = 65535
            else:
                payload = (wire[end + 3] << 8) | wire[end + 4]
                maxlen = (payload if payload < self._edns_size else self._edns_size) if payload > UDP_DEFAULT_MAX else UDP_DEFAULT_MAX
        else:
            if n != end:
                return None
            do = 0
            opt = b""
            maxlen = 65535 if tcp else UDP_DEFAULT_MAX
        lname = wire[12:qend].lower()
        entry = self.names.get(lname)
        if entry is not None:
            answer_class = entry.exact.get(qtype) or entry.exact_default
        else:
            for k in range(1, len(starts)):
                entry = self.names.get(lname[starts[k] - 12 :])
                if entry is not None:
                    break
            else:
                return None
            answer_class = entry.below
            if answer_class is None:
                gaps = entry.gaps
                if gaps is None:
                    return None
                label = lname[starts[k - 1] - 11 : starts[k] - 12]
                answer_class = gaps[bisect.bisect_right(entry.gap_labels, label)]
        if answer_class is None:
            return None
        key = (qend - 12) | (maxlen << 8) | (tcp << 25) | (has_opt << 26) | (do << 27) | (ipv6 << 28)
        shape = answer_class.shapes.get(key)
        if shape is None:
            shape = self._render(answer_class, wire[12:end], maxlen - len(opt), tcp, ipv6, do, opt)
            answer_class.shapes[key] = shape
        rdcd = (wire[2] & 1) | ((wire[3] >> 3) & 2)
        return wire[:2] + shape[0][rdcd] + wire[12:end] + shape[1]

    def _render(self, answer_class: AnswerClass, question: bytes, limit: int, tcp: bool, ipv6: bool, do: int, opt: bytes) -> tuple:
        """Render one shape with the reference encoder: header tails for the 4 RD/CD combinations, and body+OPT."""
        self._shape_count += 1
        if self._shape_count > _SHAPE_CACHE_LIMIT:
            for other in self._classes:
                other.shapes.clear()
            self._shape_count = 1
        plan = self._plan(answer_class, do, ipv6)
        out = self.reference.render(plan, question, limit, tcp, ipv6, bool(do))
        flags = QR | plan.rcode | (AA if plan.aa else 0) | (TC if out.tc else 0)
        an, ns, ar = out.counts
        ar += 1 if opt else 0
        tails = tuple(
            struct.pack("!HHHHH", flags | (0x0100 if rdcd & 1 else 0) | (0x0010 if rdcd & 2 else 0), 1, an, ns, ar)
            for rdcd in range(4)
        )
        return tails, out.body + opt
