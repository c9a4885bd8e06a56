"""The reference answer engine: what to say to a question, decided from the zone model.

This follows NSD's answer logic (query.c): referrals with NS in authority and glue in the
additional section, DS or the NSEC proving its absence with DO; authoritative answers with
the apex NS as optional authority; NODATA and NXDOMAIN with the SOA and NSEC proofs.
:func:`plan_answer` only decides *what* goes into the response; :mod:`imrs.answer.render`
decides what fits.  The compiled fast path (:mod:`imrs.answer.compiled`) is built from the
plans this module makes, and must give byte-identical responses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from imrs.answer.query import RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED
from imrs.zone.data import Name, Node, RRset, ZoneData

IN = dns.rdataclass.IN
ANY_CLASS = dns.rdataclass.ANY
T = dns.rdatatype


class Section(IntEnum):
    """Encoding order, as NSD's rr_section_type: earlier sections are filled first."""

    ANSWER = 0
    AUTHORITY = 1
    OPTIONAL_AUTHORITY = 2
    ADDITIONAL_A = 3
    ADDITIONAL_AAAA = 4
    ADDITIONAL_OTHER = 5

    @property
    def wire_section(self) -> int:
        """0 answer, 1 authority, 2 additional (the header count it adds to)."""
        return (0, 1, 1, 2, 2, 2)[self]

    @property
    def required(self) -> bool:
        """An RRset here that does not fit sets TC; elsewhere it is just left out."""
        return self <= Section.AUTHORITY


class Entry(NamedTuple):
    """One RRset to send (several for a qtype=RRSIG answer), with its signatures.

    A named tuple, not a dataclass: building a snapshot makes tens of thousands of these."""

    section: Section
    rrsets: tuple[RRset, ...]
    sigs: RRset | None = None  # RRSIGs sent with it when DO is set
    in_domain_glue: bool = False  # RFC 9471: must fit, or TC

    @property
    def key(self) -> tuple:
        return _entry_key(self.rrsets)


def _entry_key(rrsets: tuple[RRset, ...]) -> tuple:
    """(owner, type), the owner as lowercased labels: hashing a dnspython Name is slow."""
    first = rrsets[0]
    rdtype = T.RRSIG if len(rrsets) > 1 or first.rdtype == T.RRSIG else first.rdtype
    return (tuple([label.lower() for label in first.name.labels]), rdtype)


@dataclass
class Plan:
    """What a response says, before it is encoded."""

    rcode: int = RCODE_NOERROR
    aa: bool = False
    entries: list[Entry] = field(default_factory=list)
    delegation: Name | None = None  # set for referrals
    anchor: Name = dns.name.root  # qname suffix used as a compression target (NSD: closest encloser)
    zone: ZoneData | None = None
    kind: str = ""  # referral / answer / nodata / nxdomain / refused: for telemetry and tests
    _index: dict[tuple, int] = field(default_factory=dict, repr=False)

    def add(self, section: Section, rrsets: Sequence[RRset], sigs: RRset | None, in_domain_glue: bool = False) -> bool:
        """Add an RRset unless it is already there (then keep it in the earlier section)."""
        rrsets = tuple(rrsets)
        key = _entry_key(rrsets)
        i = self._index.get(key)
        if i is not None:
            old = self.entries[i]
            if section < old.section:
                self.entries[i] = Entry(section, old.rrsets, old.sigs, old.in_domain_glue)
                return True
            return False
        self._index[key] = len(self.entries)
        self.entries.append(Entry(section, rrsets, sigs, in_domain_glue))
        return True


class ZoneSet:
    """The zones a server answers for, looked up by longest match."""

    def __init__(self, zones: Iterable[ZoneData]):
        self.zones: dict[Name, ZoneData] = {}
        for zone in zones:
            if zone.origin in self.zones:
                raise ValueError(f"zone {zone.origin} is configured twice")
            self.zones[zone.origin] = zone
        # Origins by lowercased label tuple, deepest first: find() looks up one tuple per
        # zone depth instead of walking Name.parent() (dnspython names are slow to make).
        by_depth: dict[int, dict[tuple[bytes, ...], ZoneData]] = {}
        for origin, zone in self.zones.items():
            key = tuple(label.lower() for label in origin.labels)
            by_depth.setdefault(len(key), {})[key] = zone
        self._by_depth = sorted(by_depth.items(), reverse=True)
        self._secure = {id(zone): zone.secure for zone in self.zones.values()}
        # NS RRset id -> (NS RRset, zone, A glue, its in-domain flags, AAAA glue, its flags):
        # every referral to a TLD, with DO clear and set, and every authoritative answer (the
        # apex NS) needs the same glue.  Bounded by the NS RRsets of the zones; values are
        # immutable, so readers need no lock.  (Flags apart from RRsets: tuples of bools are
        # not tracked by the garbage collector, which a build keeps busy enough.)
        self._glue: dict[int, tuple] = {}

    def __iter__(self):
        return iter(self.zones.values())

    def __len__(self) -> int:
        return len(self.zones)

    def find(self, name: Name) -> ZoneData | None:
        """The deepest served zone containing ``name``."""
        labels = name.labels
        n = len(labels)
        for depth, origins in self._by_depth:
            if depth <= n:
                zone = origins.get(tuple(label.lower() for label in labels[n - depth :]) if depth > 1 else labels[n - 1 :])
                if zone is not None:
                    return zone
        return None

    def parent_of(self, zone: ZoneData) -> ZoneData | None:
        if zone.origin == dns.name.root:
            return None
        return self.find(zone.origin.parent())

    def is_secure(self, zone: ZoneData) -> bool:
        secure = self._secure.get(id(zone))
        return zone.secure if secure is None else secure

    def glue(self, zone: ZoneData, ns: RRset) -> tuple:
        """(A glue, in-domain flags, AAAA glue, in-domain flags) for an NS RRset: the A and
        AAAA RRsets of its targets, in the RRset's order (NSD add_additional_rrsets)."""
        hit = self._glue.get(id(ns))
        if hit is not None and hit[0] is ns and hit[1] is zone:
            return hit[2:]
        delegation = ns.name if ns.name != zone.origin else None
        # Names hash and compare without regard to case: the targets need no lowering.
        nodes = zone.nodes
        targets = [node for node in (nodes.get(rd.target) for rd in ns) if node is not None]
        in_domain = [delegation is not None and node.name.is_subdomain(delegation) for node in targets]
        glue: list[tuple] = []
        for rdtype in (T.A, T.AAAA):
            found = [(node.rrsets[rdtype], flag) for node, flag in zip(targets, in_domain) if rdtype in node.rrsets]
            glue.append(tuple([rrset for rrset, _ in found]))
            glue.append(tuple([flag for _, flag in found]))
        self._glue[id(ns)] = (ns, zone, *glue)  # the zone keeps ``ns``: its id stays its own
        return tuple(glue)

    def anchor(self, qname: Name) -> Name:
        """The deepest suffix of ``qname`` in the name tree of the zone that holds it (NSD's
        closest encloser): the part of the question that names in the answer may point to."""
        zone = self.find(qname)
        return zone.deepest_tree_suffix(qname) if zone is not None else dns.name.root


class _Builder:
    """One question's answer, built step by step as NSD's answer_lookup_zone does."""

    def __init__(self, zones: ZoneSet, qname: Name, qtype: int, qclass: int, do: bool, ipv6: bool):
        self.zones = zones
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.do = do
        self.ipv6 = ipv6
        self.plan = Plan(anchor=zones.anchor(qname))
        # For plan_answer_pair: the additions made whatever DO says, to replay with DO clear.
        self.replay: list[tuple[Section, tuple[RRset, ...], bool]] | None = None
        self.do_only = False  # adding what only DO brings (DNSSEC proofs)

    def _put(self, section: Section, rrsets: tuple[RRset, ...], sigs: RRset | None, in_domain_glue: bool = False) -> bool:
        if self.replay is not None and not self.do_only:
            self.replay.append((section, rrsets, in_domain_glue))
        return self.plan.add(section, rrsets, sigs, in_domain_glue)

    def add_proof(self, zone: ZoneData, rrset: RRset, node: Node) -> None:
        """Add a DNSSEC proof to the authority section (only ever with DO set)."""
        self.do_only = True
        try:
            self.add(zone, Section.AUTHORITY, rrset, None, node)
        finally:
            self.do_only = False

    # -- adding RRsets -----------------------------------------------------------------
    def add(self, zone: ZoneData, section: Section, rrset: RRset, sigs: RRset | None = None, node: Node | None = None) -> bool:
        """Add ``rrset`` (with its RRSIGs when DO is set); ``node``, when given, is its owner's."""
        if sigs is None and self.do and self.zones.is_secure(zone):
            if node is None:
                node = zone.nodes.get(rrset.name)
            sigs = node.sigs.get(rrset.rdtype) if node is not None else None
        added = self._put(section, (rrset,), sigs)
        if rrset.rdtype == T.NS:
            self.add_glue(zone, rrset)
        return added

    def add_glue(self, zone: ZoneData, ns: RRset) -> None:
        """A and AAAA for each NS target found in the zone, the query's address family first."""
        a_glue, a_in_domain, aaaa_glue, aaaa_in_domain = self.zones.glue(zone, ns)
        if self.ipv6:
            first, second = zip(aaaa_glue, aaaa_in_domain), zip(a_glue, a_in_domain)
        else:
            first, second = zip(a_glue, a_in_domain), zip(aaaa_glue, aaaa_in_domain)
        add = self._put
        for rrset, in_domain in first:
            add(Section.ADDITIONAL_A, (rrset,), None, in_domain)
        for rrset, in_domain in second:
            add(Section.ADDITIONAL_AAAA, (rrset,), None, in_domain)

    # -- the NSD answer procedure --------------------------------------------------------
    def run(self) -> Plan:
        plan = self.plan
        zone = self.zones.find(self.qname)
        if zone is None:
            plan.rcode = RCODE_REFUSED
            plan.kind = "refused"
            return plan
        ce = zone.closest_encloser(self.qname)
        exact = ce == self.qname
        if exact and self.qtype == T.DS and ce == zone.origin:
            parent = self.zones.parent_of(zone)
            if parent is not None:
                zone = parent
                ce = zone.closest_encloser(self.qname)
                exact = ce == self.qname
        plan.zone = zone
        if exact and self.qtype == T.DS and ce == zone.origin:
            plan.aa = self.qclass != ANY_CLASS
            self.nodata(zone, ce)
            return plan
        delegation = zone.find_delegation(ce)
        if delegation is None or (exact and self.qtype == T.DS and ce == delegation):
            plan.aa = self.qclass != ANY_CLASS
            self.authoritative(zone, ce, exact)
        else:
            self.referral(zone, delegation)
        return plan

    def referral(self, zone: ZoneData, delegation: Name) -> None:
        plan = self.plan
        plan.kind = "referral"
        plan.delegation = delegation
        plan.aa = False
        node = zone.nodes[delegation]
        self.add(zone, Section.AUTHORITY, node.rrsets[T.NS], None, node)
        if self.do and self.zones.is_secure(zone):
            proof = node.rrsets.get(T.DS) or node.rrsets.get(T.NSEC)
            if proof is not None:
                self.add_proof(zone, proof, node)

    def authoritative(self, zone: ZoneData, ce: Name, exact: bool) -> None:
        if self.do and self.zones.is_secure(zone) and not exact:
            nsec_node = zone.covering_nsec(self.qname)
            if nsec_node is not None:
                self.add_proof(zone, nsec_node.rrsets[T.NSEC], nsec_node)
            wildcard = Name((b"*",) + ce.labels)
            nsec_node = zone.covering_nsec(wildcard)
            if nsec_node is not None:
                self.add_proof(zone, nsec_node.rrsets[T.NSEC], nsec_node)
        if exact:
            self.domain(zone, ce)
        else:
            self.plan.rcode = RCODE_NXDOMAIN
            self.plan.kind = "nxdomain"
            self.soa(zone)

    def domain(self, zone: ZoneData, owner: Name) -> None:
        node = zone.nodes.get(owner)
        rrsets = node.rrsets if node is not None else {}
        plan = self.plan
        if self.qtype == T.ANY:
            chosen = self._pick_any(zone, node)
            if chosen is None:
                self.nodata(zone, owner)
                return
            if chosen.rdtype == T.RRSIG:
                self._put(Section.ANSWER, node.all_sigs, None)
            else:
                self.add(zone, Section.ANSWER, chosen, None, node)
        elif self.qtype == T.RRSIG and node is not None and node.all_sigs:
            self._put(Section.ANSWER, node.all_sigs, None)
        elif self.qtype in rrsets and self.qtype != T.RRSIG:
            self.add(zone, Section.ANSWER, rrsets[self.qtype], None, node)
        elif T.CNAME in rrsets:
            # The CNAME itself; its target is not chased (the root zone has none).
            self.add(zone, Section.ANSWER, rrsets[T.CNAME], None, node)
            plan.kind = "answer"
            return
        else:
            self.nodata(zone, owner)
            return
        plan.kind = "answer"
        if self.qclass != ANY_CLASS and self.qtype not in (T.DNSKEY, T.DS, T.ANY):
            apex = zone.apex
            self.add(zone, Section.OPTIONAL_AUTHORITY, apex.rrsets[T.NS], None, apex)

    def _pick_any(self, zone: ZoneData, node) -> RRset | None:
        """RFC 8482 4.1 as NSD does it: one RRset, preferring small popular types."""
        if node is None:
            return None
        preferred = normal = non_preferred = None
        # NSD keeps a node's RRsets newest first.
        candidates = list(node.rrsets.values())[::-1]
        if node.all_sigs and not (self.do and self.zones.is_secure(zone)):
            candidates.append(node.all_sigs[0])  # stands for the whole RRSIG set
        for rrset in candidates:
            if rrset.rdtype in (T.A, T.AAAA, T.SOA, T.MX, T.PTR):
                preferred = rrset
                break
            if rrset.rdtype in (T.DNSKEY, T.RRSIG, T.NSEC):
                non_preferred = rrset
            else:
                normal = rrset
        return preferred or normal or non_preferred

    def soa(self, zone: ZoneData) -> None:
        if self.qclass != ANY_CLASS:
            sigs = zone.negative_soa_sigs if self.do and self.zones.is_secure(zone) else None
            self.add(zone, Section.AUTHORITY, zone.negative_soa, sigs)

    def nodata(self, zone: ZoneData, owner: Name) -> None:
        self.plan.kind = "nodata"
        self.soa(zone)
        if self.do and self.zones.is_secure(zone):
            nsec_node = zone.covering_nsec(owner)
            if nsec_node is not None:
                self.add_proof(zone, nsec_node.rrsets[T.NSEC], nsec_node)


def plan_answer(zones: ZoneSet, qname: Name, qtype: int, qclass: int, do: bool, ipv6: bool = False) -> Plan:
    """Decide the content of the answer to (qname, qtype, qclass) for a query with DO = ``do``."""
    return _Builder(zones, qname, qtype, qclass, do, ipv6).run()


def plan_answer_pair(zones: ZoneSet, qname: Name, qtype: int, qclass: int, ipv6: bool = False) -> tuple[Plan, Plan]:
    """The plans for DO clear and DO set: what two plan_answer calls give, in about one's time.

    DO changes an answer only by what the builder adds for it (DNSSEC proofs and signatures):
    the lookups are the same, so the DO-clear plan is the DO-set one's other additions made
    again in the same order, without signatures.  The RRset chosen for ANY depends on DO, so
    ANY is planned twice."""
    if qtype == T.ANY:
        return plan_answer(zones, qname, qtype, qclass, False, ipv6), plan_answer(zones, qname, qtype, qclass, True, ipv6)
    builder = _Builder(zones, qname, qtype, qclass, True, ipv6)
    builder.replay = []
    with_do = builder.run()
    without = Plan(
        rcode=with_do.rcode,
        aa=with_do.aa,
        delegation=with_do.delegation,
        anchor=with_do.anchor,
        zone=with_do.zone,
        kind=with_do.kind,
    )
    for section, rrsets, in_domain_glue in builder.replay:
        without.add(section, rrsets, None, in_domain_glue)
    return without, with_do
