"""The reference answer engine: what to say to a question, decided from the zone model.

This follows NSD's answer logic (query.c): referrals with NS in authority and glue in the
additional section, DS or the NSEC proving its absence with DO; authoritative answers with
the apex NS as optional authority; NODATA and NXDOMAIN with the SOA and NSEC proofs.
:func:`plan_answer` only decides *what* goes into the response; :mod:`imrs.answer.render`
decides what fits.  The compiled fast path (:mod:`imrs.answer.compiled`) is built from the
plans this module makes, and must give byte-identical responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterable, Sequence

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from imrs.answer.query import RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED
from imrs.zone.data import Name, RRset, ZoneData

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


@dataclass(frozen=True)
class Entry:
    """One RRset to send (several for a qtype=RRSIG answer), with its signatures."""

    section: Section
    rrsets: tuple[RRset, ...]
    sigs: RRset | None = None  # RRSIGs sent with it when DO is set
    in_domain_glue: bool = False  # RFC 9471: must fit, or TC

    @property
    def key(self) -> tuple:
        first = self.rrsets[0]
        rdtype = T.RRSIG if len(self.rrsets) > 1 or first.rdtype == T.RRSIG else first.rdtype
        return (first.name, rdtype)


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
        entry = Entry(section, tuple(rrsets), sigs, in_domain_glue)
        key = entry.key
        i = self._index.get(key)
        if i is not None:
            old = self.entries[i]
            if section < old.section:
                self.entries[i] = Entry(section, old.rrsets, old.sigs, old.in_domain_glue)
                return True
            return False
        self._index[key] = len(self.entries)
        self.entries.append(entry)
        return True


class ZoneSet:
    """The zones a server answers for, looked up by longest match."""

    def __init__(self, zones: Iterable[ZoneData]):
        self.zones: dict[Name, ZoneData] = {}
        for zone in zones:
            if zone.origin in self.zones:
                raise ValueError(f"zone {zone.origin} is configured twice")
            self.zones[zone.origin] = zone

    def __iter__(self):
        return iter(self.zones.values())

    def __len__(self) -> int:
        return len(self.zones)

    def find(self, name: Name) -> ZoneData | None:
        """The deepest served zone containing ``name``."""
        while True:
            zone = self.zones.get(name)
            if zone is not None:
                return zone
            if name == dns.name.root:
                return None
            name = name.parent()

    def parent_of(self, zone: ZoneData) -> ZoneData | None:
        if zone.origin == dns.name.root:
            return None
        return self.find(zone.origin.parent())

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
        self.glue_order = (T.AAAA, T.A) if ipv6 else (T.A, T.AAAA)
        self.plan = Plan(anchor=zones.anchor(qname))

    # -- adding RRsets -----------------------------------------------------------------
    def add(self, zone: ZoneData, section: Section, rrset: RRset, sigs: RRset | None = None) -> bool:
        if sigs is None and self.do and zone.secure:
            node = zone.nodes.get(rrset.name)
            sigs = node.sigs.get(rrset.rdtype) if node is not None else None
        added = self.plan.add(section, (rrset,), sigs)
        if rrset.rdtype == T.NS:
            self.add_glue(zone, rrset)
        return added

    def add_glue(self, zone: ZoneData, ns: RRset) -> None:
        """A and AAAA for each NS target found in the zone (NSD add_additional_rrsets)."""
        delegation = ns.name if ns.name != zone.origin else None
        for rdtype in self.glue_order:
            section = Section.ADDITIONAL_A if rdtype == self.glue_order[0] else Section.ADDITIONAL_AAAA
            for rd in ns:
                target = rd.target
                node = zone.nodes.get(Name([label.lower() for label in target.labels]))
                if node is None:
                    continue
                rrset = node.rrsets.get(rdtype)
                if rrset is None:
                    continue
                in_domain = delegation is not None and node.name.is_subdomain(delegation)
                self.plan.add(section, (rrset,), None, in_domain)

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
        self.add(zone, Section.AUTHORITY, node.rrsets[T.NS])
        if self.do and zone.secure:
            proof = node.rrsets.get(T.DS) or node.rrsets.get(T.NSEC)
            if proof is not None:
                self.add(zone, Section.AUTHORITY, proof)

    def authoritative(self, zone: ZoneData, ce: Name, exact: bool) -> None:
        if self.do and zone.secure and not exact:
            nsec_node = zone.covering_nsec(self.qname)
            if nsec_node is not None:
                self.add(zone, Section.AUTHORITY, nsec_node.rrsets[T.NSEC])
            wildcard = Name((b"*",) + ce.labels)
            nsec_node = zone.covering_nsec(wildcard)
            if nsec_node is not None:
                self.add(zone, Section.AUTHORITY, nsec_node.rrsets[T.NSEC])
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
                plan.add(Section.ANSWER, node.all_sigs, None)
            else:
                self.add(zone, Section.ANSWER, chosen)
        elif self.qtype == T.RRSIG and node is not None and node.all_sigs:
            plan.add(Section.ANSWER, node.all_sigs, None)
        elif self.qtype in rrsets and self.qtype != T.RRSIG:
            self.add(zone, Section.ANSWER, rrsets[self.qtype])
        elif T.CNAME in rrsets:
            # The CNAME itself; its target is not chased (the root zone has none).
            self.add(zone, Section.ANSWER, rrsets[T.CNAME])
            plan.kind = "answer"
            return
        else:
            self.nodata(zone, owner)
            return
        plan.kind = "answer"
        if self.qclass != ANY_CLASS and self.qtype not in (T.DNSKEY, T.DS, T.ANY):
            self.add(zone, Section.OPTIONAL_AUTHORITY, zone.apex.rrsets[T.NS])

    def _pick_any(self, zone: ZoneData, node) -> RRset | None:
        """RFC 8482 4.1 as NSD does it: one RRset, preferring small popular types."""
        if node is None:
            return None
        preferred = normal = non_preferred = None
        # NSD keeps a node's RRsets newest first.
        candidates = list(node.rrsets.values())[::-1]
        if node.all_sigs and not (self.do and zone.secure):
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
            sigs = zone.negative_soa_sigs if self.do and zone.secure else None
            self.add(zone, Section.AUTHORITY, zone.negative_soa, sigs)

    def nodata(self, zone: ZoneData, owner: Name) -> None:
        self.plan.kind = "nodata"
        self.soa(zone)
        if self.do and zone.secure:
            nsec_node = zone.covering_nsec(owner)
            if nsec_node is not None:
                self.add(zone, Section.AUTHORITY, nsec_node.rrsets[T.NSEC])


def plan_answer(zones: ZoneSet, qname: Name, qtype: int, qclass: int, do: bool, ipv6: bool = False) -> Plan:
    """Decide the content of the answer to (qname, qtype, qclass) for a query with DO = ``do``."""
    return _Builder(zones, qname, qtype, qclass, do, ipv6).run()
