"""The fast path: answers decided when the snapshot is built, bytes copied per packet.

The root zone has few distinct answers: a referral per TLD, an NXDOMAIN per NSEC gap and a
handful at the apex.  When a snapshot is built, every name of every zone's name tree gets
an entry that says which answer a question at it, or below it, receives (glue owners share
one per delegation); each distinct answer is an :class:`AnswerClass`, rendered with DO clear
and set, over IPv4 and IPv6.  Per packet the work is: check the header, walk the question
name, look up the entry, and copy the rendered bytes, spliced with the query's ID, RD/CD
bits, question (with its letter case) and OPT record.

Each answer class is rendered in full once (a :class:`Variant`) with its anchor name as the
question: the common ones (referrals, NXDOMAINs, the apex; IPv4, DO clear and set) when the
snapshot is built, within the time a zone change allows; the others (IPv6, DS at delegations,
glue owners) on first use, by whichever thread asks (the same bytes whoever renders them;
tests/test_compiled_lazy.py).  A real question changes the response only through the length
of its name, which moves every compression pointer by the same amount, and through the size
limit.  So a
*shape* (question length, size limit, transport) is derived from the full rendering by
moving pointers or, when not all of it fits, by keeping the pieces NSD's rules keep, and
cached (bounded).  Anything unusual (NSID, other classes, zone transfers, trailing data,
names outside the served zones, wildcards, DNAME, CNAME) is left to the reference path by
returning None.  tests/test_compiled.py proves both paths give the same bytes.

DNS Cookies and TCP keepalive do not change which records a response holds, only its OPT
record and the room left for records: a query with a COOKIE option (and, over TCP, an
edns-tcp-keepalive one) is answered as the same query without it, with the size limit
lowered by the options our OPT record then carries, and those options (COOKIE, then
keepalive, the reference path's order) appended to the OPT record.  BADCOOKIE is built here
too; a malformed COOKIE or keepalive option (FORMERR) goes the reference way.
"""

from __future__ import annotations

import bisect
import struct

import dns.name
import dns.rdatatype

from imrs.answer.cookies import COOKIE_OPTION_LENGTH, RESULT_BADCOOKIE
from imrs.answer.engine import Plan, Section, plan_answer, plan_answer_pair
from imrs.answer.query import AA, QR, TC
from imrs.answer.render import render_plan
from imrs.answer.respond import UDP_DEFAULT_MAX, Responder
from imrs.zone.data import Name, ZoneData

T = dns.rdatatype
_HEADER_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_HEADER_ONE_QUESTION_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_join = b"".join
_unpack_type_class = struct.Struct("!HH").unpack_from
_unpack_opt = struct.Struct("!BHHIH").unpack_from  # owner, type, payload, ext rcode/version/flags, rdlen
_U16 = tuple(i.to_bytes(2, "big") for i in range(256))  # OPT RDATA lengths of the options we add
_CLIENT_COOKIE_ONLY = b"\x00\x0a\x00\x08"  # COOKIE, 8 octets: the whole OPT RDATA of many queries
_CLIENT_AND_SERVER_COOKIE = b"\x00\x0a\x00\x18"  # COOKIE, 24 octets (8 + an RFC 9018 server cookie)
_SHAPE_CACHE_LIMIT = 200_000  # derived shapes kept (about 150 MB at most) before the caches start afresh


_UNRENDERED = (None, None, None, None)
_ABSENT_TYPE = 65534  # a private-use type no zone here holds: stands for "any other type"


class AnswerClass:
    """One distinct answer (e.g. 'referral to com.'), for every DO/transport variant."""

    __slots__ = ("anchor", "base", "eager", "qname", "qtype", "variants")

    def __init__(self, qname: Name, qtype: int, anchor: Name | None = None, base: AnswerClass | None = None, eager: bool = False):
        self.qname = qname  # a representative question
        self.qtype = qtype
        self.eager = eager  # rendered (IPv4, DO clear and set) when the snapshot is built
        self.anchor = anchor  # compression anchor when it differs from the representative's
        self.base = base  # same content as this class, other anchor
        # Index: do + 2 * ipv6.  The shared empty tuple until a variant is rendered: a build
        # should leave few objects for the garbage collector to walk.  (Plans are not kept
        # either; one is made again in the rare case a variant needs it later.)
        self.variants: list[Variant | None] | tuple[None, ...] = _UNRENDERED


class NameEntry:
    """What a question at (``exact``) or below (``below``/gaps) one tree name is answered.

    Names below a delegation other than the delegation itself (glue owners: thousands in the
    root zone, rarely asked about) share one entry per delegation, with ``referral`` set:
    their answer is that referral compressed against the name, a class made on first use.
    """

    __slots__ = ("below", "deeper", "exact", "exact_default", "gap_labels", "gaps", "owners", "referral")

    def __init__(self, referral: AnswerClass | None = None):
        self.deeper = referral is not None  # are there entries for names below this one?
        self.exact: dict[int, AnswerClass] = {}
        self.exact_default: AnswerClass | None = None
        self.below: AnswerClass | None = None  # one answer for every name below (referral)
        self.gap_labels: list[bytes] | None = None  # sorted child labels, for NXDOMAIN gaps
        self.gaps: list[AnswerClass] | None = None
        self.referral = referral  # for glue owners: the referral they get
        self.owners: dict[bytes, AnswerClass] | None = {} if referral is not None else None  # wire -> class


class CompiledAnswers:
    """Precomputed answers for a Responder's zones."""

    def __init__(self, reference: Responder):
        self.reference = reference
        self.options = reference.options
        self.names: dict[bytes, NameEntry] = {}
        self._shape_count = 0
        self._classes: list[AnswerClass] = []
        edns = self.options.edns_buffer_size
        # [do][has_opt]: the OPT record to append (RFC 6891), echoing DO.
        self._opt = (
            (b"", b"\x00\x00\x29" + struct.pack("!H", edns) + b"\x00\x00\x00\x00\x00\x00"),
            (b"", b"\x00\x00\x29" + struct.pack("!H", edns) + b"\x00\x00\x80\x00\x00\x00"),
        )
        self._edns_size = edns
        # [do][RDATA length]: our OPT record up to its RDATA, for responses that carry options.
        self._opt_heads = tuple(tuple(self._opt[do][1][:9] + length for length in _U16) for do in (0, 1))
        # BADCOOKIE: header after the ID [RD | CD<<1], and OPT record head [do][RDATA length] (rcode 23).
        self._badcookie_tails = tuple(
            struct.pack("!HHHHH", QR | 7 | (0x0100 if rdcd & 1 else 0) | (0x0010 if rdcd & 2 else 0), 1, 0, 0, 1)
            for rdcd in range(4)
        )
        self._badcookie_opt = tuple(
            tuple(b"\x00\x00\x29" + struct.pack("!HBBH", edns, 1, 0, do << 15) + length for length in _U16) for do in (0, 1)
        )
        self._cookies = reference.cookies
        self._keepalive = reference.keepalive_option
        self._caps = (reference.minimal_cap(False), reference.minimal_cap(True))
        for zone in sorted(reference.zones, key=lambda z: -len(z.origin)):
            self._compile_zone(zone)
        for zone in reference.zones:
            # The question name is looked up from the root down: every ancestor of a zone
            # needs an entry (an empty one defers to the reference path).
            name = zone.origin
            while name != dns.name.root:
                name = name.parent()
                self.names.setdefault(name.to_wire(), NameEntry())
        for wire in self.names:
            if wire != b"\x00":
                parent = wire[wire[0] + 1 :]
                if parent in self.names:
                    self.names[parent].deeper = True
        # Render the common answers for IPv4 now, with DO clear and set (planned in one go):
        # referrals, NXDOMAINs and the apex.  IPv6 variants, DS answers at delegations and
        # answers for glue owners are rendered on first use.
        zones = reference.zones
        for answer_class in self._classes:
            if answer_class.eager:
                plans = plan_answer_pair(zones, answer_class.qname, answer_class.qtype, 1, False)
                for do in (0, 1):
                    self._variant(answer_class, do, plans[do])

    @property
    def name_count(self) -> int:
        return len(self.names)

    # -- building ----------------------------------------------------------------------
    def _new_class(self, qname: Name, qtype: int, anchor: Name | None = None, base: AnswerClass | None = None, eager: bool = True) -> AnswerClass:
        answer_class = AnswerClass(qname, qtype, anchor, base, eager and base is None)
        self._classes.append(answer_class)  # atomic, also when a glue owner's class is made by a reader
        return answer_class

    def _glue_owner_class(self, entry: NameEntry, wire: bytes) -> AnswerClass:
        """The referral for a question at or below a glue owner, compressed against that name."""
        owners = entry.owners
        answer_class = owners.get(wire)
        if answer_class is None:
            name = dns.name.from_wire(wire, 0)[0]
            made = self._new_class(name, _ABSENT_TYPE, name, entry.referral)
            answer_class = owners.setdefault(wire, made)  # a racing reader's class may have won: same answer
        return answer_class

    def _plan(self, answer_class: AnswerClass, do: int, ipv6: bool) -> Plan:
        """A fresh plan (plan_answer is deterministic, so the same plan every time)."""
        base = answer_class.base
        if base is not None:
            plan = self._plan(base, do, ipv6)
            plan.anchor = answer_class.anchor  # a new Plan object: changing it is safe
            return plan
        return plan_answer(self.reference.zones, answer_class.qname, answer_class.qtype, 1, bool(do), ipv6)

    def _compile_zone(self, zone: ZoneData) -> None:
        absent_type = _ABSENT_TYPE
        # Names are handled by their labels and wire form: making and hashing dnspython
        # names is what would take the time here.
        children: dict[tuple[bytes, ...], list[bytes]] = {}  # parent's labels -> child labels
        origin_labels = zone.origin.labels
        for name in zone.existing:
            labels = name.labels
            if labels != origin_labels:
                children.setdefault(labels[1:], []).append(labels[0])
        delegations = {_wire_of(name): name for name in zone.delegations}
        # wire -> the highest delegation at or above it, in wire form (ZoneData's
        # find_delegation): parents come first, as the names are taken shallowest first.
        delegation_at: dict[bytes, bytes] = {}
        referrals: dict[bytes, AnswerClass] = {}
        glue_owners: dict[bytes, NameEntry] = {}  # delegation wire -> its glue owners' entry
        zones = self.reference.zones
        for name in sorted(zone.tree, key=len):
            wire = _wire_of(name)
            delegation = delegation_at.get(wire[wire[0] + 1 :])
            if delegation is None and wire in delegations:
                delegation = wire
            if delegation is not None:
                delegation_at[wire] = delegation
            if zones.find(name) is not zone:
                continue  # inside a deeper zone we also serve: that zone answers for it
            if delegation is not None:
                referral = referrals.get(delegation)
                if referral is None:
                    referral = referrals[delegation] = self._new_class(delegations[delegation], absent_type)
                if delegation == wire:
                    entry = NameEntry()
                    entry.exact[T.DS] = self._new_class(name, T.DS, eager=False)  # DS is asked less
                    entry.below = referral
                    entry.exact_default = referral
                    self.names[wire] = entry
                else:  # same referral, compressed against this deeper name in the question
                    shared = glue_owners.get(delegation)
                    if shared is None:
                        shared = glue_owners[delegation] = NameEntry(referral)
                    self.names[wire] = shared
                continue
            entry = NameEntry()
            if name not in zone.existing:
                self.names[wire] = entry  # empty entry: the reference path answers
                continue
            node = zone.nodes.get(name)
            child_labels = children.get(name.labels, ())
            if b"*" in child_labels or (node and T.DNAME in node.rrsets):
                self.names[wire] = entry
                continue
            if node is not None and T.CNAME in node.rrsets:
                self.names[wire] = entry
                continue
            types = set(node.rrsets) if node is not None else set()
            for qtype in types | {T.ANY, T.RRSIG, T.DS}:
                entry.exact[qtype] = self._new_class(name, qtype)
            entry.exact_default = self._new_class(name, absent_type)
            labels = sorted({label.lower() for label in child_labels})
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
    def answer(self, wire: bytes, tcp: bool, ipv6: bool, peer: bytes | None = None) -> bytes | None:
        """The response bytes, or None when the reference path must decide.  ``peer`` is the
        client's packed address (for cookies; None ignores them, as the reference does)."""
        n = len(wire)
        if n < 17 or wire[2] & 0xF8 or wire[3] & 0x0F:
            return None  # too short, a response, an opcode other than QUERY, or an rcode
        counts = wire[4:12]
        if counts == _HEADER_ONE_QUESTION:
            has_opt = 0
        elif counts == _HEADER_ONE_QUESTION_OPT:
            has_opt = 1
        else:
            return None
        pos = 12
        starts = []  # where each label starts, counted from the start of the name
        try:
            length = wire[12]
            while length:
                starts.append(pos - 12)
                pos += length + 1
                if length > 63:
                    return None  # a compression pointer or an unknown label type
                length = wire[pos]
            qtype, qclass = _unpack_type_class(wire, pos + 1)
        except (IndexError, struct.error):
            return None  # the question runs past the end
        starts.append(pos - 12)  # the root label
        qend = pos + 1
        if qend > 267 or qclass != 1 or qtype == 252 or qtype == 251:
            return None  # name too long, a class other than IN, or AXFR / IXFR
        end = qend + 4
        options = b""  # EDNS options our OPT record carries (COOKIE, keepalive)
        cookie = None  # the query's COOKIE option data, when the jar is to answer it
        if has_opt:
            # An OPT record exactly at the end, version 0; options other than NSID, EXPIRE,
            # COOKIE and keepalive are ignored (RFC 6891 6.1.2), anything else goes the slow way.
            if n < end + 11:
                return None
            owner, rrtype, payload, ttl, rdlen = _unpack_opt(wire, end)
            if owner or rrtype != 41 or ttl & 0xFF0000:
                return None  # not an OPT with the root as owner, or EDNS version > 0
            do = (ttl >> 15) & 1
            if tcp:
                limit = 65535 - 11
            else:  # an if-expression, not min(): this runs per packet
                limit = (payload if payload < self._edns_size else self._edns_size) - 11 if payload > UDP_DEFAULT_MAX else UDP_DEFAULT_MAX - 11  # noqa: FURB136
            if rdlen or n != end + 11:
                if rdlen != n - end - 11:
                    return None  # the OPT record does not end the message
                if (rdlen == 28 and wire[end + 11 : end + 15] == _CLIENT_AND_SERVER_COOKIE) or (
                    rdlen == 12 and wire[end + 11 : end + 15] == _CLIENT_COOKIE_ONLY
                ):
                    cookie = wire[end + 15 : n]  # one COOKIE option and nothing else: the common case
                    keepalive = -1
                else:
                    found_options = _scan_options(wire, end + 11, n)
                    if found_options is None:
                        return None
                    cookie, keepalive = found_options
                if keepalive >= 0 and tcp and self._keepalive:
                    if keepalive:
                        return None  # a TIMEOUT in a query: FORMERR, by the reference path
                    options = self._keepalive
                if cookie is not None and peer is not None and self._cookies is not None:
                    # The jar is asked (and counts) only once this path answers, below; its
                    # option always has the same length, client and server cookie.
                    limit -= COOKIE_OPTION_LENGTH
                else:
                    cookie = None
                limit -= len(options)
        else:
            if n != end:
                return None
            do = 0
            limit = 65535 if tcp else UDP_DEFAULT_MAX
        # Find the deepest name we hold that ends the question name: from the root down,
        # stopping where the tree ends (an entry with nothing below it, or a miss).
        lname = wire[12:qend].lower()
        get = self.names.get
        entry = None
        k = found = len(starts) - 1
        while k >= 0:
            candidate = get(lname[starts[k] :])
            if candidate is None:
                if entry is not None:
                    break
            else:
                entry = candidate
                found = k
                if not candidate.deeper:
                    break
            k -= 1
        if entry is None:
            return None  # in none of our zones: REFUSED, by the reference path
        if found == 0:
            answer_class = entry.exact.get(qtype) or entry.exact_default
        else:
            answer_class = entry.below
            if answer_class is None:
                gaps = entry.gaps
                if gaps is not None:
                    label = lname[starts[found - 1] + 1 : starts[found]]
                    answer_class = gaps[bisect.bisect_right(entry.gap_labels, label)]
        if answer_class is None:
            if entry.referral is None:
                return None
            answer_class = self._glue_owner_class(entry, lname[starts[found] :])
        index = do + 2 * ipv6
        variant = answer_class.variants[index] or self._variant(answer_class, index)
        qlen = qend - 12
        cap = self._caps[ipv6]
        if end + variant.fit_len <= (limit if tcp or limit < cap else cap):  # it all fits
            if variant.pointers:
                shape = variant.moved.get(qlen)
                if shape is None:
                    self._count_shape()
                    shape = variant.moved[qlen] = variant.relocate(qlen)
            else:
                shape = variant.full
        else:
            key = qlen | (limit << 8) | (tcp << 25)
            shape = variant.cut.get(key)
            if shape is None:
                shape = variant.cut[key] = self._cut(answer_class, variant, wire[12:end], limit, tcp, ipv6, do)
        rdcd = (wire[2] & 1) | ((wire[3] >> 3) & 2)
        if cookie is not None:
            jar = self._cookies
            option, valid = jar.response_option(cookie, peer)
            if not valid and not tcp and jar.require:
                jar.counts[RESULT_BADCOOKIE] += 1
                return _join((wire[:2], self._badcookie_tails[rdcd], wire[12:end],
                              self._badcookie_opt[do][len(option)], option))
            options = option + options
        if options:
            return _join((wire[:2], shape[0][1][rdcd], wire[12:end], shape[1][0], self._opt_heads[do][len(options)], options))
        return _join((wire[:2], shape[0][has_opt][rdcd], wire[12:end], shape[1][has_opt]))

    # -- variants and shapes ---------------------------------------------------------------
    def _variant(self, answer_class: AnswerClass, index: int, plan: Plan | None = None) -> Variant:
        """Render an answer class in full once, with the question being its anchor name."""
        do, ipv6 = index & 1, bool(index & 2)
        if plan is None:
            plan = self._plan(answer_class, do, ipv6)
        question = _wire_of(plan.anchor) + b"\x00\x01\x00\x01"
        cap = self.reference.minimal_cap(ipv6)
        # As Responder.render over TCP, with the pointers noted for relocating them.
        full = render_plan(plan, question, limit=65535, udp=False, minimal_cap=cap, do=bool(do), find_pointers=True)
        variant = Variant(plan, full, len(question) - 4, cap, self._opt[do][1])
        variants = answer_class.variants
        if type(variants) is tuple:
            # The class's first variant.  Two threads racing here may each make a list and
            # one variant be lost: it is rendered again, the same, when next asked for.
            variants = answer_class.variants = [None, None, None, None]
        variants[index] = variant
        return variant

    def _count_shape(self) -> None:
        """Bound the memory the shape caches take: past the limit, start them afresh."""
        self._shape_count += 1
        if self._shape_count > _SHAPE_CACHE_LIMIT:
            for answer_class in self._classes:
                for variant in answer_class.variants:
                    if variant is not None:
                        variant.cut.clear()
                        variant.moved.clear()
            self._shape_count = 1

    def _cut(self, answer_class: AnswerClass, variant: Variant, question: bytes, limit: int, tcp: bool, ipv6: bool, do: int) -> tuple:
        """A response that does not fit whole: select what fits, as the reference encoder would."""
        self._count_shape()
        if variant.pieces is not None:
            return variant.select(len(question) - 4, limit, tcp)
        plan = variant.plan or self._plan(answer_class, do, ipv6)
        out = self.reference.render(plan, question, limit, tcp, ipv6, bool(do))
        return _tails(variant.flags, out.counts, out.tc), (out.body, out.body + variant.opt)


def _scan_options(wire: bytes, pos: int, n: int) -> tuple[bytes | None, int] | None:
    """The EDNS options from ``pos`` to ``n``: the first COOKIE option's data (None: none),
    and the first keepalive option's length (-1: none).  None when they do not fill the
    RDATA exactly, when one is NSID or EXPIRE (the reference path adds those), or when the
    COOKIE option is malformed (FORMERR, with cookies on: the reference path decides)."""
    cookie = None
    keepalive = -1
    while pos < n:
        if pos + 4 > n:
            return None
        code = (wire[pos] << 8) | wire[pos + 1]
        length = (wire[pos + 2] << 8) | wire[pos + 3]
        pos += 4
        if code == 10:
            if cookie is None:
                if length != 8 and (length < 16 or length > 40):
                    return None
                cookie = wire[pos : pos + length]
        elif code == 11:
            if keepalive < 0:
                keepalive = length
        elif code == 3 or code == 9:
            return None
        pos += length
    if pos != n:
        return None
    return cookie, keepalive


def _wire_of(name: Name) -> bytes:
    """A name in wire format, lowercased (Name.to_wire is slow and keeps the case)."""
    return b"".join([bytes((len(label),)) + label for label in name.labels]).lower()


def _tails(flags: int, counts: tuple[int, int, int], tc: bool) -> tuple:
    """Header bytes after the ID: [with OPT][RD | CD<<1] -> flags and the four counts."""
    if tc:
        flags |= TC
    key = (flags, counts)
    tails = _TAILS.get(key)
    if tails is None:
        tails = _TAILS[key] = _make_tails(flags, counts)
    return tails


_TAILS: dict[tuple, tuple] = {}  # few distinct headers: shared by every variant


def _make_tails(flags: int, counts: tuple[int, int, int]) -> tuple:
    an, ns, ar = counts
    return tuple(
        tuple(
            struct.pack("!HHHHH", flags | (0x0100 if rdcd & 1 else 0) | (0x0010 if rdcd & 2 else 0), 1, an, ns, ar + has_opt)
            for rdcd in range(4)
        )
        for has_opt in (0, 1)
    )


_WIRE_SECTION = tuple(section.wire_section for section in Section)  # by Section value
_LAST_REQUIRED = max(section for section in Section if section.required)


class Variant:
    """One answer class rendered in full for one (DO, IPv4/IPv6) case, and its shapes.

    The full rendering has the anchor as question name.  A longer question moves every
    compression pointer by the same amount (all point at the question's anchor or later),
    so a shape that fits whole is the full body with its pointers moved; a shape that does
    not fit keeps the same pieces NSD's rules keep (see :mod:`imrs.answer.render`).

    Thousands are made per build: everything kept is a tuple of ints and bytes (which the
    garbage collector stops tracking), and the plan is kept only when shapes need it.
    """

    __slots__ = ("cap", "cut", "delegation", "fit_len", "flags", "full", "moved", "opt", "pieces", "plan", "pointers", "qlen0")

    def __init__(self, plan: Plan, rendered, qlen0: int, cap: int, opt: bytes):
        self.qlen0 = qlen0
        self.cap = cap
        body = rendered.body
        self.opt = opt
        self.flags = QR | plan.rcode | (AA if plan.aa else 0)
        self.full = (_tails(self.flags, rendered.counts, rendered.tc), (body, body + opt))
        self.delegation = plan.delegation is not None
        self.moved: dict[int, tuple] = {}
        self.cut: dict[int, tuple] = {}
        base = 12 + qlen0 + 4
        pointers = rendered.pointers  # noted by the encoder (render_plan(find_pointers=True))
        self.pointers = pointers
        self.fit_len = len(body)  # octets the whole body needs after the question
        # Pieces, in encoding order: (section, bytes, record count, in-domain glue, pointer offsets).
        entries = plan.entries
        spans, records, order = rendered.spans, rendered.records, rendered.order
        pieces = []
        optional_start = None
        for i in order:
            entry = entries[i]
            lo, hi = spans[i]
            if pointers:
                ptrs = tuple([p - lo for p in pointers[bisect.bisect_left(pointers, lo) : bisect.bisect_left(pointers, hi)]])
            else:
                ptrs = ()
            pieces.append((int(entry.section), body[lo:hi], records[i], entry.in_domain_glue, ptrs))
            if optional_start is None and not entry.section.required:
                optional_start = lo
        # Selecting pieces is safe only if no pointer leads into optional pieces (which may go).
        selectable = len(order) == len(entries) and not rendered.tc
        if selectable and optional_start is not None:
            for p in pointers:
                target = ((body[p] & 0x3F) << 8 | body[p + 1]) - base
                if target >= optional_start:
                    selectable = False
                    break
        self.pieces = tuple(pieces) if selectable else None
        # Without pieces, shapes that do not fit are rendered from the plan by the reference
        # encoder: keep it for them (few answers, at the apex).
        self.plan = None if selectable else plan

    def relocate(self, qlen: int) -> tuple:
        """The full body for a question name of ``qlen`` octets."""
        body = _move_pointers(self.full[1][0], self.pointers, qlen - self.qlen0)
        return self.full[0], (body, body + self.opt)

    def select(self, qlen: int, limit: int, tcp: bool) -> tuple:
        """NSD's rules over precomputed pieces (must match imrs.answer.render.render_plan)."""
        delta = qlen - self.qlen0
        pos = 12 + qlen + 4
        udp = not tcp
        pieces = self.pieces
        counts = [0, 0, 0]
        kept = [False] * len(pieces)
        chunks = []
        tc = False
        current = None
        done_section = None
        section_count = 0
        for i, (section, data, count, _in_domain, ptrs) in enumerate(pieces):
            if section != current:
                if done_section is not None:
                    break
                current = section
                section_count = 0
            end = pos + len(data)
            if udp and section >= Section.OPTIONAL_AUTHORITY and (end > limit or end > self.cap):
                done_section = section
                continue
            if end > limit:
                if section <= _LAST_REQUIRED:
                    tc = True
                    break
                continue
            chunks.append(_move_pointers(data, ptrs, delta) if ptrs and delta else data)
            kept[i] = True
            counts[_WIRE_SECTION[section]] += count
            section_count += count
            pos = end
        if not tc and done_section == Section.ADDITIONAL_A and section_count == 0 and self.delegation:
            tc = True
        if not tc and self.delegation:
            tc = any(piece[3] and not kept[i] for i, piece in enumerate(pieces))
        body = b"".join(chunks)
        return _tails(self.flags, (counts[0], counts[1], counts[2]), tc), (body, body + self.opt)


def _move_pointers(data: bytes, pointers: tuple[int, ...], delta: int) -> bytes:
    """``data`` with each compression pointer at ``pointers`` moved by ``delta`` octets."""
    out = bytearray(data)
    for p in pointers:
        value = ((out[p] << 8) | out[p + 1]) + delta
        if not 0xC000 <= value <= 0xFFFF:
            raise OverflowError("compression pointer out of range")
        out[p] = value >> 8
        out[p + 1] = value & 0xFF
    return bytes(out)


