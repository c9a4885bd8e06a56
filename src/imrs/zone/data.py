"""ZoneData: one immutable, query-ready snapshot of an authoritative zone.

A ZoneData is built once from a parsed zone (see :mod:`imrs.zone.parse`) and never changed
afterwards, so the data plane can read it without locks while the control plane builds the
next one.  Names are stored lowercased (DNS names compare case-insensitively); RRSIGs are kept
apart from the RRsets they cover, keyed by the covered type, because that is how answers use
them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

Name = dns.name.Name
RRset = dns.rrset.RRset

#: Record types whose RDATA names may draw additional-section data or appear as compression
#: targets (the names a server keeps in its name tree besides owners).
_RDATA_NAME_TYPES = {
    dns.rdatatype.NS: ("target",),
    dns.rdatatype.CNAME: ("target",),
    dns.rdatatype.DNAME: ("target",),
    dns.rdatatype.PTR: ("target",),
    dns.rdatatype.MX: ("exchange",),
    dns.rdatatype.SRV: ("target",),
    dns.rdatatype.SOA: ("mname", "rname"),
}


def canonical_key(name: Name) -> tuple[bytes, ...]:
    """Sort key giving DNSSEC canonical order (RFC 4034 section 6.1)."""
    return tuple(label.lower() for label in reversed(name.labels))


class ZoneDataError(ValueError):
    """The zone content cannot be served (no SOA, data outside the zone, ...)."""


@dataclass(frozen=True)
class Node:
    """All RRsets at one owner name."""

    name: Name
    rrsets: Mapping[int, RRset]  # rdtype -> RRset (RRSIG excluded)
    sigs: Mapping[int, RRset]  # covered rdtype -> RRSIG RRset
    all_sigs: tuple[RRset, ...] = ()  # every RRSIG RRset here, in zone order (for qtype RRSIG)

    def get(self, rdtype: int) -> RRset | None:
        return self.rrsets.get(rdtype)


@dataclass(frozen=True)
class ZoneData:
    """An immutable authoritative zone."""

    origin: Name
    nodes: Mapping[Name, Node]
    #: owners and empty non-terminals: every name that exists (RFC 4592 section 2.2.2)
    existing: frozenset[Name]
    #: every name a server keeps in its name tree: existing names, names in RDATA and all
    #: their ancestors inside the zone.  Used to pick compression anchors.
    tree: frozenset[Name]
    #: delegation points (NS RRsets below the apex)
    delegations: frozenset[Name]
    #: NSEC owners in canonical order, with their sort keys, for denial-of-existence proofs
    nsec_owners: tuple[Name, ...]
    nsec_keys: tuple[tuple[bytes, ...], ...]
    source: str = "<memory>"
    stats: Mapping[str, int] = field(default_factory=dict)
    #: the SOA as sent in negative answers, TTL = min(SOA TTL, MINIMUM) (RFC 2308 section 3),
    #: and its RRSIGs with the same TTL (as NSD sends them)
    negative_soa: RRset | None = None
    negative_soa_sigs: RRset | None = None
    #: wire forms of this zone's RRsets, made on first use by the encoder (keyed by id)
    wire_cache: dict = field(default_factory=dict, compare=False, repr=False)

    # -- convenience -------------------------------------------------------------------
    @property
    def apex(self) -> Node:
        return self.nodes[self.origin]

    @property
    def soa(self) -> RRset:
        return self.apex.rrsets[dns.rdatatype.SOA]

    @property
    def serial(self) -> int:
        return self.soa[0].serial

    @property
    def secure(self) -> bool:
        """Signed with NSEC: DNSSEC records are added to answers for DO queries."""
        return dns.rdatatype.DNSKEY in self.apex.rrsets and bool(self.nsec_owners)

    def find_delegation(self, name: Name) -> Name | None:
        """The highest delegation point at or above ``name`` (below the apex), if any."""
        labels = name.labels
        depth = len(self.origin.labels)
        for cut in range(depth + 1, len(labels) + 1):
            candidate = Name(labels[-cut:])
            if candidate in self.delegations:
                return candidate
        return None

    def closest_encloser(self, name: Name) -> Name:
        """The deepest existing ancestor-or-self of ``name`` inside the zone."""
        while name not in self.existing and name != self.origin:
            name = name.parent()
        return name

    def deepest_tree_suffix(self, name: Name) -> Name:
        """The deepest ancestor-or-self of ``name`` present in the name tree."""
        while name not in self.tree and name != self.origin:
            name = name.parent()
        return name

    def covering_nsec(self, name: Name) -> Node | None:
        """The node whose NSEC has the greatest owner <= ``name`` in canonical order."""
        if not self.nsec_keys:
            return None
        i = bisect.bisect_right(self.nsec_keys, canonical_key(name)) - 1
        if i < 0:
            return None
        return self.nodes[self.nsec_owners[i]]


def _lower(name: Name) -> Name:
    return Name([label.lower() for label in name.labels])


def build_zone_data(zone: dns.zone.Zone, source: str = "<memory>") -> ZoneData:
    """Turn a dnspython zone into an immutable :class:`ZoneData` (checks what serving needs)."""
    origin = _lower(zone.origin)
    nodes: dict[Name, Node] = {}
    rdata_names: set[Name] = set()
    delegations: set[Name] = set()
    records = 0
    for owner, node in zone.nodes.items():
        if not owner.is_absolute():
            owner = owner.derelativize(zone.origin)
        owner = _lower(owner)
        if not owner.is_subdomain(origin):
            raise ZoneDataError(f"{source}: {owner} is outside the zone {origin}")
        plain: dict[int, RRset] = {}
        sigs: dict[int, RRset] = {}
        all_sigs: list[RRset] = []
        for rdataset in node.rdatasets:
            if rdataset.rdclass != dns.rdataclass.IN:
                raise ZoneDataError(f"{source}: {owner} has class {rdataset.rdclass!r}, only IN is served")
            rrset = dns.rrset.RRset(owner, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
            rrset.update(rdataset)
            records += len(rrset)
            if rdataset.rdtype == dns.rdatatype.RRSIG:
                sigs[rdataset.covers] = rrset
                all_sigs.append(rrset)
            else:
                plain[rdataset.rdtype] = rrset
                for attr in _RDATA_NAME_TYPES.get(rdataset.rdtype, ()):
                    for rd in rdataset:
                        rdata_names.add(_lower(getattr(rd, attr)))
        if not plain and not sigs:
            continue
        if dns.rdatatype.NS in plain and owner != origin:
            delegations.add(owner)
        nodes[owner] = Node(owner, MappingProxyType(plain), MappingProxyType(sigs), tuple(all_sigs))

    if origin not in nodes or dns.rdatatype.SOA not in nodes[origin].rrsets:
        raise ZoneDataError(f"{source}: the zone {origin} has no SOA at its apex")
    if dns.rdatatype.NS not in nodes[origin].rrsets:
        raise ZoneDataError(f"{source}: the zone {origin} has no NS RRset at its apex")

    existing = set(nodes)
    for owner in list(nodes):
        name = owner
        while name != origin:
            name = name.parent()
            existing.add(name)
    tree = set(existing)
    for name in rdata_names:
        if name.is_subdomain(origin):
            while name not in tree:
                tree.add(name)
                name = name.parent()
    soa = nodes[origin].rrsets[dns.rdatatype.SOA]
    negative_ttl = min(soa.ttl, soa[0].minimum)
    soa_sigs = nodes[origin].sigs.get(dns.rdatatype.SOA)
    nsec = sorted(
        (owner for owner, node in nodes.items() if dns.rdatatype.NSEC in node.rrsets),
        key=canonical_key,
    )
    return ZoneData(
        origin=origin,
        nodes=MappingProxyType(nodes),
        existing=frozenset(existing),
        tree=frozenset(tree),
        delegations=frozenset(delegations),
        nsec_owners=tuple(nsec),
        nsec_keys=tuple(canonical_key(n) for n in nsec),
        source=source,
        negative_soa=_with_ttl(soa, negative_ttl),
        negative_soa_sigs=_with_ttl(soa_sigs, negative_ttl) if soa_sigs is not None else None,
        stats=MappingProxyType({"names": len(nodes), "records": records, "delegations": len(delegations)}),
    )


def _with_ttl(rrset: RRset, ttl: int) -> RRset:
    if rrset.ttl == ttl:
        return rrset
    out = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)
    out.update_ttl(ttl)
    out.update(rrset)
    out.ttl = ttl
    return out

