"""Writing RRsets in wire format with name compression (RFC 1035 4.1.4), quickly.

Each RRset is turned once into a :class:`WireRRset`: per record, the fixed TYPE/CLASS/TTL
octets and the RDATA as octets, with the names that may be compressed (NS, CNAME, PTR,
MX, SOA: RFC 3597 section 4) left as label tuples.  Writing is then dictionary look-ups and
byte appends.  Compression keys are lowercased label tuples, so names match whatever their
letter case, and every name written in full is registered at its position, as NSD does.
"""

from __future__ import annotations

import struct
from typing import Union

import dns.rdatatype
import dns.rrset

T = dns.rdatatype
Labels = tuple[bytes, ...]
NamePart = tuple[Labels, tuple[Labels, ...]]  # labels as written, lowercased suffixes (the compression keys)
Part = Union[bytes, NamePart]

_MAX_POINTER = 0x3FFF


class WireRRset:
    """An RRset ready to write: owner labels and records as (fixed octets, RDATA parts)."""

    __slots__ = ("owner", "records")

    def __init__(self, owner: NamePart, records: list[tuple[bytes, tuple[Part, ...]]]):
        self.owner = owner
        self.records = records

    def __len__(self) -> int:
        return len(self.records)


def name_part(name) -> NamePart:
    """A name's labels (without the root label) and the compression key of each suffix."""
    labels = tuple(name.labels[:-1])
    lower = tuple(label.lower() for label in labels)
    return labels, tuple(lower[i:] for i in range(len(lower)))


def _rdata_parts(rdtype: int, rd) -> tuple[Part, ...]:
    if rdtype in (T.NS, T.CNAME, T.PTR):
        return (name_part(rd.target),)
    if rdtype == T.MX:
        return (struct.pack("!H", rd.preference), name_part(rd.exchange))
    if rdtype == T.SOA:
        tail = struct.pack("!IIIII", rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum)
        return (name_part(rd.mname), name_part(rd.rname), tail)
    return (rd.to_wire(),)


def wire_rrset(rrset: dns.rrset.RRset) -> WireRRset:
    """The wire form of ``rrset`` (records in the RRset's order, never shuffled)."""
    fixed = struct.pack("!HHI", rrset.rdtype, rrset.rdclass, rrset.ttl)
    return WireRRset(name_part(rrset.name), [(fixed, _rdata_parts(rrset.rdtype, rd)) for rd in rrset])


def write_name(buf: bytearray, compress: dict[Labels, int], name: NamePart) -> None:
    """Append a name, compressed against ``compress``; register what is written in full."""
    labels, keys = name
    for i, key in enumerate(keys):
        pos = compress.get(key)
        if pos is not None:
            buf += (0xC000 | pos).to_bytes(2, "big")
            return
        here = len(buf)
        if here <= _MAX_POINTER:
            compress[key] = here
        label = labels[i]
        buf.append(len(label))
        buf += label
    buf.append(0)


def write_rrset(buf: bytearray, compress: dict[Labels, int], rrset: WireRRset) -> int:
    """Append every record of ``rrset``; returns how many."""
    owner = rrset.owner
    for fixed, parts in rrset.records:
        write_name(buf, compress, owner)
        buf += fixed
        rdlen_at = len(buf)
        buf += b"\x00\x00"
        for part in parts:
            if type(part) is not bytes:
                write_name(buf, compress, part)
            else:
                buf += part
        rdlen = len(buf) - rdlen_at - 2
        buf[rdlen_at] = rdlen >> 8
        buf[rdlen_at + 1] = rdlen & 0xFF
    return len(rrset.records)


def rollback(buf: bytearray, compress: dict[Labels, int], mark: int) -> None:
    """Undo everything written from ``mark`` on, names registered there included."""
    del buf[mark:]
    for key in [k for k, pos in compress.items() if pos >= mark]:
        del compress[key]
