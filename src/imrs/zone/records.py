"""Zone content as flat wire-format records: the form the control plane checks and stores.

Parsing a master file or a transfer into dnspython objects costs seconds for the root zone;
verification (ZONEMD, DNSSEC) and storage only need each record's owner, type, TTL and RDATA
bytes.  A :class:`Record` keeps exactly that, with RDATA in uncompressed wire format and its
letter case as received, so a zone can be fetched, checked and saved without building objects,
and only turned into a query-ready :class:`~imrs.zone.data.ZoneData` once it has passed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone

CLASS_IN = 1
TYPE_SOA = 6
TYPE_NS = 2
TYPE_RRSIG = 46
TYPE_NSEC = 47
TYPE_DNSKEY = 48
TYPE_DS = 43
TYPE_ZONEMD = 63


class Record(NamedTuple):
    """One resource record."""

    owner: bytes  # wire format, lowercased (owner names compare without case)
    rdtype: int
    rdclass: int
    ttl: int
    rdata: bytes  # wire format, uncompressed, letter case as received


@dataclass(frozen=True)
class ZoneRecords:
    """One version of a zone: its origin and every record, in the order received."""

    origin: bytes  # wire format, lowercased
    records: tuple[Record, ...]
    source: str = "<memory>"

    @property
    def soa(self) -> Record:
        for record in self.records:
            if record.rdtype == TYPE_SOA and record.owner == self.origin:
                return record
        raise LookupError("zone has no SOA at its apex")

    @property
    def serial(self) -> int:
        return soa_serial(self.soa.rdata)

    @property
    def origin_text(self) -> str:
        return name_to_text(self.origin)


# --- names in wire format --------------------------------------------------------------

def name_labels(wire: bytes) -> list[bytes]:
    """The labels of an uncompressed wire-format name, root label excluded."""
    labels = []
    i = 0
    length = wire[0]
    while length:
        labels.append(wire[i + 1 : i + 1 + length])
        i += 1 + length
        length = wire[i]
    return labels


def name_to_text(wire: bytes) -> str:
    return dns.name.from_wire(wire, 0)[0].to_text()


def name_from_text(text: str) -> bytes:
    """The lowercased wire form of an absolute name given as text."""
    return dns.name.from_text(text).to_wire().lower()


def canonical_name_key(wire: bytes) -> tuple[bytes, ...]:
    """Sort key of DNSSEC canonical name order (RFC 4034 section 6.1)."""
    labels = name_labels(wire.lower())
    labels.reverse()
    return tuple(labels)


def is_subdomain(wire: bytes, origin: bytes) -> bool:
    """Whether lowercased name ``wire`` is ``origin`` or below it."""
    if not wire.endswith(origin):
        return False
    if len(wire) == len(origin):
        return True
    # The suffix must start on a label boundary.
    i = 0
    cut = len(wire) - len(origin)
    while i < cut:
        i += 1 + wire[i]
    return i == cut


def name_length(wire: bytes, offset: int) -> int:
    """The length of the uncompressed name starting at ``offset``."""
    i = offset
    while wire[i]:
        i += 1 + wire[i]
    return i + 1 - offset


# --- RDATA ------------------------------------------------------------------------------

def soa_serial(rdata: bytes) -> int:
    i = name_length(rdata, 0)
    i += name_length(rdata, i)
    return int.from_bytes(rdata[i : i + 4], "big")


def soa_timers(rdata: bytes) -> tuple[int, int, int, int, int]:
    """(serial, refresh, retry, expire, minimum) of SOA RDATA."""
    i = name_length(rdata, 0)
    i += name_length(rdata, i)
    fields = rdata[i : i + 20]
    return tuple(int.from_bytes(fields[k : k + 4], "big") for k in range(0, 20, 4))  # type: ignore[return-value]


#: Types whose RDATA is a single domain name, lowercased in canonical form (RFC 4034 section
#: 6.2, as corrected by RFC 6840 section 5.1: NSEC's next name keeps its case).
_NAME_ONLY_TYPES = frozenset({2, 3, 4, 5, 7, 8, 9, 12, 39})  # NS MD MF CNAME MB MG MR PTR DNAME
#: Types whose RDATA is fixed-size fields followed by one domain name, and that prefix's size.
_PREFIX_NAME_TYPES = {15: 2, 18: 2, 21: 2, 36: 2, 33: 6}  # MX AFSDB RT KX SRV


def canonical_rdata(rdtype: int, rdata: bytes) -> bytes:
    """RDATA in DNSSEC canonical form: domain names it embeds lowercased (RFC 4034 6.2).

    Lowercasing a whole uncompressed name with ``bytes.lower`` is safe: its length octets are
    at most 63, below ``A``.  Types not handled here keep their bytes, which is right for every
    type found in the root zone; rarer ones go through dnspython.
    """
    if rdtype in _NAME_ONLY_TYPES:
        return rdata.lower()
    if rdtype == TYPE_SOA:
        i = name_length(rdata, 0)
        i += name_length(rdata, i)
        return rdata[:i].lower() + rdata[i:]
    if rdtype == TYPE_RRSIG:
        end = 18 + name_length(rdata, 18)
        return rdata[:18] + rdata[18:end].lower() + rdata[end:]
    prefix = _PREFIX_NAME_TYPES.get(rdtype)
    if prefix is not None:
        return rdata[:prefix] + rdata[prefix:].lower()
    if rdtype in (1, 28, TYPE_DS, TYPE_DNSKEY, TYPE_NSEC, TYPE_ZONEMD, 16, 50, 51, 52, 59, 60, 61):
        return rdata
    return _canonical_rdata_slow(rdtype, rdata)


def _canonical_rdata_slow(rdtype: int, rdata: bytes) -> bytes:
    rd = dns.rdata.from_wire(CLASS_IN, rdtype, rdata, 0, len(rdata))
    return rd.to_digestable()


def rrsig_type_covered(rdata: bytes) -> int:
    return int.from_bytes(rdata[0:2], "big")


# --- conversion from and to dnspython ------------------------------------------------------

def records_from_dnspython_zone(zone: dns.zone.Zone, source: str = "<memory>") -> ZoneRecords:
    """Flatten a dnspython zone (the slow path for unusual master files)."""
    origin = zone.origin.to_wire().lower()
    records = []
    for name, node in zone.nodes.items():
        owner = name.derelativize(zone.origin).to_wire().lower()
        for rdataset in node.rdatasets:
            for rd in rdataset:
                records.append(Record(owner, rdataset.rdtype, rdataset.rdclass, rdataset.ttl, rd.to_wire()))
    return ZoneRecords(origin, tuple(records), source)


def records_to_dnspython_zone(zone: ZoneRecords) -> dns.zone.Zone:
    """Build a dnspython zone (absolute names) from records."""
    origin = dns.name.from_wire(zone.origin, 0)[0]
    result = dns.zone.Zone(origin, relativize=False)
    names: dict[bytes, dns.name.Name] = {}
    for owner, rdtype, rdclass, ttl, rdata in zone.records:
        name = names.get(owner)
        if name is None:
            name = names[owner] = dns.name.from_wire(owner, 0)[0]
        rd = dns.rdata.from_wire(rdclass, rdtype, rdata, 0, len(rdata))
        covers = rd.covers()
        rdataset = result.find_rdataset(name, rdtype, covers, create=True)
        rdataset.add(rd, ttl)
    return result


def group_rrsets(records: Iterable[Record]) -> dict[tuple[bytes, int, int], list[Record]]:
    """Records grouped by (owner, type, covered type); covered type is 0 except for RRSIG."""
    groups: dict[tuple[bytes, int, int], list[Record]] = {}
    for record in records:
        covers = rrsig_type_covered(record.rdata) if record.rdtype == TYPE_RRSIG else 0
        key = (record.owner, record.rdtype, covers)
        group = groups.get(key)
        if group is None:
            groups[key] = [record]
        else:
            group.append(record)
    return groups


# --- versions and differences -------------------------------------------------------------

def _rr_identity(record: Record) -> tuple[bytes, int, int, bytes]:
    # TTL is not part of an RR's identity; RDATA compares in canonical form (RFC 4034 6.3).
    return (record.owner, record.rdtype, record.rdclass, canonical_rdata(record.rdtype, record.rdata))


@dataclass(frozen=True)
class Diff:
    """The change from one version to the next, as IXFR carries it (RFC 1995 section 4).

    ``deleted`` starts with the old SOA and ``added`` with the new one, as on the wire.
    """

    old_serial: int
    new_serial: int
    deleted: tuple[Record, ...]
    added: tuple[Record, ...]


def diff_records(old: ZoneRecords, new: ZoneRecords) -> Diff:
    """The IXFR difference between two versions of a zone."""
    old_soa, new_soa = old.soa, new.soa
    old_ids = {_rr_identity(r): r for r in old.records if r.rdtype != TYPE_SOA or r.owner != old.origin}
    new_ids = {_rr_identity(r): r for r in new.records if r.rdtype != TYPE_SOA or r.owner != new.origin}
    deleted = [old_ids[k] for k in old_ids.keys() - new_ids.keys()]
    added = [new_ids[k] for k in new_ids.keys() - old_ids.keys()]
    # An RR whose TTL changed is deleted and added again, so the receiver gets the new TTL.
    for key in old_ids.keys() & new_ids.keys():
        if old_ids[key].ttl != new_ids[key].ttl:
            deleted.append(old_ids[key])
            added.append(new_ids[key])
    return Diff(old.serial, new.serial, (old_soa, *deleted), (new_soa, *added))


def apply_diff(zone: ZoneRecords, diff: Diff, source: str | None = None) -> ZoneRecords:
    """Apply an IXFR difference; raises ValueError when it does not apply (RFC 1995 section 4)."""
    if zone.serial != diff.old_serial:
        raise ValueError(f"diff starts at serial {diff.old_serial}, zone is at {zone.serial}")
    current: dict[tuple[bytes, int, int, bytes], Record] = {_rr_identity(r): r for r in zone.records}
    for record in diff.deleted:
        if current.pop(_rr_identity(record), None) is None:
            raise ValueError(
                f"diff deletes a record the zone does not have: {name_to_text(record.owner)} "
                f"{dns.rdatatype.to_text(record.rdtype)}"
            )
    for record in diff.added:
        current[_rr_identity(record)] = record
    return ZoneRecords(zone.origin, tuple(current.values()), source or zone.source)


@dataclass(frozen=True)
class ZoneVersion:
    """A verified version of a zone as the data plane sees it, for serving transfers.

    ``journal`` holds the differences leading up to ``records``, oldest first, so an IXFR
    from any serial in it can be answered; ``expire_at`` is the wall-clock time (seconds since
    the epoch) at which the zone stops being served unless refreshed (for EDNS EXPIRE,
    RFC 7314), or None for a zone loaded from a file that does not expire.
    """

    records: ZoneRecords
    journal: tuple[Diff, ...] = ()
    expire_at: float | None = None
