"""ZoneData: one immutable, query-ready snapshot of an authoritative zone.

A ZoneData is built once from a parsed zone (see :mod:`imrs.zone.parse`) and never changed
afterwards, so the data plane can read it without locks while the control plane builds the
next one.  Names are stored lowercased (DNS names compare case-insensitively); RRSIGs are kept
apart from the RRsets they cover, keyed by the covered type, because that is how answers use
them.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import dns.dnssectypes
import dns.ipv4
import dns.ipv6
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.dsbase
import dns.rdtypes.util
import dns.rrset
import dns.wire
import dns.zone

from imrs.zone.records import (
    TYPE_NS,
    TYPE_RRSIG,
    TYPE_SOA,
    ZoneRecords,
    canonical_rdata,
    is_subdomain,
    name_length,
)

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

    if origin in nodes:
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
    else:
        existing = tree = set()  # _finish reports the missing apex
    return _finish(origin, nodes, existing, tree, delegations, records, source)


def _finish(
    origin: Name,
    nodes: dict[Name, Node],
    existing: set[Name],
    tree: set[Name],
    delegations: set[Name],
    records: int,
    source: str,
) -> ZoneData:
    """Checks and the parts of a ZoneData derived from its nodes (shared by both builders)."""
    if origin not in nodes or dns.rdatatype.SOA not in nodes[origin].rrsets:
        raise ZoneDataError(f"{source}: the zone {origin} has no SOA at its apex")
    if dns.rdatatype.NS not in nodes[origin].rrsets:
        raise ZoneDataError(f"{source}: the zone {origin} has no NS RRset at its apex")

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




# --- from flat records --------------------------------------------------------------------

_IN = dns.rdataclass.IN
_RRSIG = dns.rdatatype.RRSIG
_NS = dns.rdatatype.NS
#: Wire-format types whose RDATA names draw additional data (as ``_RDATA_NAME_TYPES``):
#: those whose RDATA is one name, and those with a fixed-size prefix before it (SOA aside).
_RDATA_NAME_WIRE_TYPES = frozenset(int(t) for t in _RDATA_NAME_TYPES)
_NAME_ONLY_TYPES = frozenset({2, 5, 12, 39})  # NS CNAME PTR DNAME
_PREFIX_NAME_TYPES = {15: 2, 33: 6}  # MX, SRV
#: Types whose canonical RDATA form is the wire form (no embedded names that it lowercases).
_CANONICAL_IS_WIRE = frozenset({1, 16, 28, 43, 47, 48, 63})


def _rdata_name_wires(rdtype: int, rdata: bytes) -> tuple[bytes, ...]:
    """The lowercased wire names in RDATA that ``_RDATA_NAME_TYPES`` lists."""
    if rdtype in _NAME_ONLY_TYPES:
        return (rdata.lower(),)
    if rdtype == TYPE_SOA:
        cut = name_length(rdata, 0)
        return (rdata[:cut].lower(), rdata[cut : cut + name_length(rdata, cut)].lower())
    prefix = _PREFIX_NAME_TYPES[rdtype]
    return (rdata[prefix:].lower(),)


def _digestable(rdtype: int, rdata: bytes) -> bytes:
    """What dnspython compares RDATA by (duplicates are dropped as a dnspython zone does)."""
    if rdtype in _CANONICAL_IS_WIRE:
        return rdata
    if rdtype in (TYPE_NS, TYPE_SOA, TYPE_RRSIG):
        return canonical_rdata(rdtype, rdata)  # the same bytes, without building objects
    return dns.rdata.from_wire(_IN, rdtype, rdata, 0, len(rdata)).to_digestable(dns.name.root)


class _Group:
    """The RRs of one (owner, type, covered type) in arrival order, duplicates dropped."""

    __slots__ = ("covers", "rdatas", "rdtype", "seen", "ttl")

    def __init__(self, rdtype: int, covers: int, ttl: int, rdata: bytes):
        self.rdtype = rdtype
        self.covers = covers
        self.ttl = ttl
        self.rdatas = [rdata]
        self.seen: set[bytes] | None = None  # canonical forms, made when a second RR comes

    def add(self, ttl: int, rdata: bytes) -> None:
        # As dns.rdataset.Rdataset.add: smallest TTL; a singleton type keeps the newest RR.
        self.ttl = min(self.ttl, ttl)
        rdtype = self.rdtype
        if dns.rdatatype.is_singleton(rdtype):
            self.rdatas = [rdata]
            self.seen = None
            return
        if self.seen is None:
            self.seen = {_digestable(rdtype, self.rdatas[0])}
        form = _digestable(rdtype, rdata)
        if form not in self.seen:
            self.seen.add(form)
            self.rdatas.append(rdata)


class _RdataMaker:
    """dnspython Rdata objects from wire RDATA, made directly for the common root zone types.

    ``dns.rdata.from_wire`` runs a parser, enum conversions and an immutability guard per
    record: most of the cost of building the root zone.  For NS, A, AAAA, DS, RRSIG and NSEC
    this sets the same attribute values directly (as dnspython's own unpickling does), sharing
    Name objects; anything unusual, and every other type, goes through ``from_wire``.
    :func:`direct_rdata_matches_dnspython` checks the two agree on this dnspython version.
    """

    def __init__(self, direct: bool = True):
        self.names: dict[bytes, Name] = {}
        self.enums: dict[tuple[object, int], object] = {}
        self.bitmaps: dict[bytes, tuple] = {}
        self.shared: dict[tuple[int, bytes], dns.rdata.Rdata] = {}  # NS RDATA repeats a lot
        self.direct = {
            1: self._a,
            28: self._aaaa,
            2: self._ns,
            43: self._ds,
            46: self._rrsig,
            47: self._nsec,
        } if direct else {}

    def make(self, rdtype: dns.rdatatype.RdataType, rdata: bytes) -> dns.rdata.Rdata:
        build = self.direct.get(rdtype)
        if build is not None:
            try:
                rd = build(rdata)
            except (ValueError, IndexError, struct.error):
                rd = None
            if rd is not None:
                return rd
        return dns.rdata.from_wire(_IN, rdtype, rdata, 0, len(rdata))

    # -- pieces ------------------------------------------------------------------------

    def _name(self, wire: bytes, start: int = 0) -> tuple[Name, int]:
        """The uncompressed name at ``start`` and the offset after it."""
        end = start
        while wire[end]:
            if wire[end] > 63:
                raise ValueError("compressed or odd label")
            end += 1 + wire[end]
        end += 1
        key = wire[start:end] if start or end != len(wire) else wire
        name = self.names.get(key)
        if name is None:
            labels = []
            i = 0
            while key[i]:
                labels.append(key[i + 1 : i + 1 + key[i]])
                i += 1 + key[i]
            labels.append(b"")
            name = self.names[key] = Name(labels)
        return name, end

    def _enum(self, kind, value: int):
        key = (kind, value)
        member = self.enums.get(key)
        if member is None:
            member = self.enums[key] = kind.make(value)
        return member

    @staticmethod
    def _new(rdtype: int, **slots) -> dns.rdata.Rdata:
        cls = dns.rdata.get_rdata_class(_IN, rdtype)
        rd = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(rd, "rdclass", _IN)
        setattr_(rd, "rdtype", dns.rdatatype.RdataType(rdtype))
        setattr_(rd, "rdcomment", None)
        for slot, value in slots.items():
            setattr_(rd, slot, value)
        return rd

    # -- types -------------------------------------------------------------------------

    def _a(self, rdata: bytes) -> dns.rdata.Rdata | None:
        if len(rdata) != 4:
            return None
        return self._new(1, address=dns.ipv4.inet_ntoa(rdata))

    def _aaaa(self, rdata: bytes) -> dns.rdata.Rdata | None:
        if len(rdata) != 16:
            return None
        return self._new(28, address=dns.ipv6.inet_ntoa(rdata))

    def _ns(self, rdata: bytes) -> dns.rdata.Rdata | None:
        rd = self.shared.get((2, rdata))
        if rd is None:
            target, end = self._name(rdata)
            if end != len(rdata):
                return None
            rd = self.shared[(2, rdata)] = self._new(2, target=target)
        return rd

    def _ds(self, rdata: bytes) -> dns.rdata.Rdata | None:
        key_tag, algorithm, digest_type = _DS_HEAD.unpack_from(rdata)
        digest = rdata[4:]
        expected = _DS_DIGEST_LENGTHS.get(digest_type)
        if digest_type == 0 or (expected is not None and len(digest) != expected):
            return None  # from_wire raises the error
        return self._new(
            43,
            key_tag=key_tag,
            algorithm=self._enum(dns.dnssectypes.Algorithm, algorithm),
            digest_type=self._enum(dns.dnssectypes.DSDigest, digest_type),
            digest=digest,
        )

    def _rrsig(self, rdata: bytes) -> dns.rdata.Rdata | None:
        covered, algorithm, labels, original_ttl, expiration, inception, key_tag = _RRSIG_HEAD.unpack_from(rdata)
        signer, end = self._name(rdata, 18)
        return self._new(
            46,
            type_covered=self._enum(dns.rdatatype.RdataType, covered),
            algorithm=self._enum(dns.dnssectypes.Algorithm, algorithm),
            labels=labels,
            original_ttl=original_ttl,
            expiration=expiration,
            inception=inception,
            key_tag=key_tag,
            signer=signer,
            signature=rdata[end:],
        )

    def _nsec(self, rdata: bytes) -> dns.rdata.Rdata | None:
        next_, end = self._name(rdata)
        bitmap = rdata[end:]
        windows = self.bitmaps.get(bitmap)
        if windows is None:
            parsed = dns.rdtypes.util.Bitmap.from_wire_parser(dns.wire.Parser(bitmap))
            windows = self.bitmaps[bitmap] = tuple(parsed.windows)
        return self._new(47, next=next_, windows=windows)


_DS_HEAD = struct.Struct("!HBB")
_RRSIG_HEAD = struct.Struct("!HBBIIIH")
_DS_DIGEST_LENGTHS = dns.rdtypes.dsbase.DSBase._digest_length_by_type

#: One RDATA of each type :class:`_RdataMaker` builds directly, in wire form.
_SAMPLES = (
    (1, b"\xc0\x00\x02\x01"),
    (28, bytes.fromhex("20010db8000000000000000000000001")),
    (2, b"\x03Ns1\x07Example\x00"),
    (43, b"\x30\x39\x08\x02" + bytes(range(32))),
    (43, b"\x30\x39\x0d\x01" + bytes(range(20))),
    (46, bytes.fromhex("0002080200015180") + (2**31).to_bytes(4, "big") + (10**9).to_bytes(4, "big")
     + b"\x30\x39\x07Example\x00" + bytes(range(64))),
    (47, b"\x03aaa\x00" + bytes.fromhex("000722000000000380")),
)


def direct_rdata_matches_dnspython() -> bool:
    """Whether :class:`_RdataMaker`'s objects equal ``dns.rdata.from_wire``'s, attribute by
    attribute (types included): a guard against dnspython changing its internals."""
    maker = _RdataMaker()
    for rdtype, wire in _SAMPLES:
        mine = maker.make(dns.rdatatype.RdataType(rdtype), wire)
        theirs = dns.rdata.from_wire(_IN, rdtype, wire, 0, len(wire))
        if type(mine) is not type(theirs):
            return False
        a, b = mine.__getstate__(), theirs.__getstate__()
        if a != b or any(type(a[k]) is not type(b[k]) for k in b) or mine.to_text() != theirs.to_text():
            return False
    return True


_direct_ok: bool | None = None


def _direct_rdata_ok() -> bool:
    global _direct_ok
    if _direct_ok is None:
        try:
            _direct_ok = direct_rdata_matches_dnspython()
        except Exception:  # noqa: BLE001 - any failure means: use from_wire
            _direct_ok = False
    return _direct_ok


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a zone.

    Building the root zone allocates a few hundred thousand objects, none of them garbage;
    each allocation burst triggers collections that walk the whole heap, which costs as much
    as the building itself.  Reference counting still frees everything that is dropped."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_zone_data_from_records(zone: ZoneRecords) -> ZoneData:
    """Turn flat records into an immutable :class:`ZoneData`, without a dnspython zone.

    Gives what ``build_zone_data(records_to_dnspython_zone(zone))`` gives: owners in order of
    first appearance, an owner's RRsets in order of first appearance, duplicates dropped, each
    RRset's TTL the smallest of its records'.  Records from the master-file reader come
    grouped already, in the order dnspython's zone reader gives them, so their ZoneData is
    the one ``build_zone_data`` makes of dnspython's zone.
    """
    with paused_gc():
        return _build_from_records(zone)


def _build_from_records(zone: ZoneRecords) -> ZoneData:
    source = zone.source
    origin_wire = zone.origin
    maker = _RdataMaker(direct=_direct_rdata_ok())
    origin = maker._name(origin_wire)[0]
    by_owner: dict[bytes, dict[tuple[int, int], _Group]] = {}
    for owner, rdtype, rdclass, ttl, rdata in zone.records:
        if rdclass != _IN:
            klass = dns.rdataclass.RdataClass.make(rdclass)
            raise ZoneDataError(f"{source}: {maker._name(owner)[0]} has class {klass!r}, only IN is served")
        covers = (rdata[0] << 8) | rdata[1] if rdtype == _RRSIG and len(rdata) >= 2 else 0
        groups = by_owner.get(owner)
        if groups is None:
            if not is_subdomain(owner, origin_wire):
                raise ZoneDataError(f"{source}: {maker._name(owner)[0]} is outside the zone {origin}")
            by_owner[owner] = {(rdtype, covers): _Group(rdtype, covers, ttl, rdata)}
            continue
        group = groups.get((rdtype, covers))
        if group is None:
            groups[(rdtype, covers)] = _Group(rdtype, covers, ttl, rdata)
        else:
            group.add(ttl, rdata)

    rdtypes: dict[int, dns.rdatatype.RdataType] = {}
    name_wires: set[bytes] = set()
    owner_names: dict[bytes, Name] = {}
    nodes: dict[Name, Node] = {}
    delegations: set[Name] = set()
    records = 0
    for owner_wire, groups in by_owner.items():
        owner = owner_names[owner_wire] = maker._name(owner_wire)[0]
        plain: dict[int, RRset] = {}
        sigs: dict[int, RRset] = {}
        all_sigs: list[RRset] = []
        for group in groups.values():
            rdtype = rdtypes.get(group.rdtype)
            if rdtype is None:
                rdtype = rdtypes[group.rdtype] = dns.rdatatype.RdataType.make(group.rdtype)
            covers = rdtypes.get(group.covers)
            if covers is None:
                covers = rdtypes[group.covers] = dns.rdatatype.RdataType.make(group.covers)
            try:
                rdatas = [maker.make(rdtype, rdata) for rdata in group.rdatas]
            except Exception as exc:  # noqa: BLE001 - dnspython's errors vary by type
                raise ZoneDataError(
                    f"{source}: {owner} {dns.rdatatype.to_text(rdtype)}: bad RDATA ({exc})"
                ) from None
            rrset = RRset(owner, _IN, rdtype, covers)
            rrset.ttl = group.ttl
            rrset.items = dict.fromkeys(rdatas)
            records += len(rdatas)
            if rdtype == _RRSIG:
                sigs[covers] = rrset
                all_sigs.append(rrset)
            else:
                plain[rdtype] = rrset
                if rdtype in _RDATA_NAME_WIRE_TYPES:
                    for rdata in group.rdatas:
                        name_wires.update(_rdata_name_wires(rdtype, rdata))
        if _NS in plain and owner_wire != origin_wire:
            delegations.add(owner)
        nodes[owner] = Node(owner, MappingProxyType(plain), MappingProxyType(sigs), tuple(all_sigs))
    if origin_wire not in owner_names:
        raise ZoneDataError(f"{source}: the zone {origin} has no SOA at its apex")

    # Empty non-terminals and the name tree, worked out on wire names (cheap to cut labels
    # off and to hash), then turned into Names, reusing the owners'.
    existing_wires = set(owner_names)
    cut_at = len(origin_wire)
    for wire in owner_names:
        while len(wire) > cut_at:
            wire = wire[1 + wire[0] :]
            if wire in existing_wires:
                break
            existing_wires.add(wire)
    tree_wires = set(existing_wires)
    for wire in name_wires:
        if is_subdomain(wire, origin_wire):
            while wire not in tree_wires:
                tree_wires.add(wire)
                wire = wire[1 + wire[0] :]

    def as_name(wire: bytes) -> Name:
        name = owner_names.get(wire)
        return name if name is not None else maker._name(wire)[0]

    existing = {as_name(wire) for wire in existing_wires}
    tree = {as_name(wire) for wire in tree_wires}
    return _finish(origin, nodes, existing, tree, delegations, records, source)
