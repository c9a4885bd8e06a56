"""Writing a zone as a master file, in the form IANA publishes the root zone.

One record per line, ``owner TTL IN TYPE RDATA`` with absolute names, the SOA first and the
rest by owner in DNSSEC canonical order; :func:`imrs.zone.parse.load_zone_records` reads it
back to the same records.  RDATA text comes from dnspython (this is not a hot path).
"""

from __future__ import annotations

import os

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from imrs.zone.records import TYPE_SOA, ZoneRecords, canonical_name_key, name_to_text
from imrs.zone.store import write_atomically


def master_file_text(zone: ZoneRecords) -> str:
    soa = zone.soa
    rest = [r for r in zone.records if r is not soa]
    rest.sort(key=lambda r: (canonical_name_key(r.owner), r.rdtype == TYPE_SOA, r.rdtype))
    names: dict[bytes, str] = {}
    lines = []
    for record in (soa, *rest):
        owner = names.get(record.owner)
        if owner is None:
            owner = names[record.owner] = name_to_text(record.owner)
        rd = dns.rdata.from_wire(record.rdclass, record.rdtype, record.rdata, 0, len(record.rdata))
        lines.append(f"{owner}\t{record.ttl}\t{dns.rdataclass.to_text(record.rdclass)}\t"
                     f"{dns.rdatatype.to_text(record.rdtype)}\t{rd.to_text()}\n")
    return "".join(lines)


def write_master_file(zone: ZoneRecords, path: str | os.PathLike) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never a part."""
    write_atomically(os.fspath(path), master_file_text(zone).encode("ascii"), mode=0o644)
