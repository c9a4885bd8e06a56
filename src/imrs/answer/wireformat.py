"""Writing RRsets in wire format with name compression (RFC 1035 4.1.4), quickly.

Each RRset is turned once into a :data:`WireRRset`: per record, the fixed TYPE/CLASS/TTL
octets and the RDATA as octets, with the names that may be compressed (NS, CNAME, PTR,
MX, SOA: RFC 3597 section 4) left as label tuples.  Writing is then dictionary look-ups and
byte appends.  A WireRRset is nested tuples of bytes only, which the garbage collector stops
tracking: a snapshot build makes one for every RRset it renders.  Compression keys are lowercased label tuples, so names match whatever their
letter case, and every name written in full is registered at its position, as NSD does.
"""

from __future__ import annotations

import bisect
import functools
import socket
import struct

import dns.rdatatype
import dns.rrset

T = dns.rdatatype
Labels = tuple[bytes, ...]
NamePart = tuple[Labels, tuple[Labels, ...]]  # labels as written, lowercased suffixes (the compression keys)
Part = bytes | NamePart

_MAX_POINTER = 0x3FFF


#: An RRset ready to write: (owner, records), each record (fixed octets, RDATA parts).
WireRRset = tuple[NamePart, tuple[tuple[bytes, tuple[Part, ...]], ...]]


def name_part(name) -> NamePart:
    """A name's labels (without the root label) and the compression key of each suffix."""
    return _labels_part(name.labels)


@functools.lru_cache(maxsize=1 << 16)  # the same NS targets and owners recur in many RRsets
def _labels_part(labels: Labels) -> NamePart:
    labels = labels[:-1]
    lower = tuple(label.lower() for label in labels)
    return labels, tuple(lower[i:] for i in range(len(lower)))


@functools.lru_cache(maxsize=1 << 12)  # RRSIG signers and NSEC next names: few distinct, many uses
def _uncompressed(labels: Labels) -> bytes:
    return b"".join([bytes((len(label),)) + label for label in labels])


def _absolute_name_wire(name) -> bytes | None:
    """An absolute name in wire format, letter case kept (as dnspython writes RDATA names)."""
    labels = name.labels
    return _uncompressed(labels) if labels and labels[-1] == b"" else None


def _rrsig(rd) -> bytes:
    signer = _absolute_name_wire(rd.signer)
    if signer is None:
        return rd.to_wire()
    header = _RRSIG_HEADER(rd.type_covered, rd.algorithm, rd.labels, rd.original_ttl, rd.expiration, rd.inception, rd.key_tag)
    return header + signer + rd.signature


def _nsec(rd) -> bytes:
    next_name = _absolute_name_wire(rd.next)
    if next_name is None:
        return rd.to_wire()
    return b"".join([next_name] + [bytes((window, len(bitmap))) + bitmap for window, bitmap in rd.windows])


def _ds(rd) -> bytes:
    return _DS_HEADER(rd.key_tag, rd.algorithm, rd.digest_type) + rd.digest


_RRSIG_HEADER = struct.Struct("!HBBIIIH").pack
_DS_HEADER = struct.Struct("!HBB").pack
# What dnspython's to_wire writes for these types, written without its per-record overhead
# (tests/test_compiled_lazy.py checks they agree on the whole root zone).
_FAST_RDATA = {T.RRSIG: _rrsig, T.NSEC: _nsec, T.DS: _ds}


def _address(family: int, rd) -> bytes:
    """An A or AAAA RDATA: the C parser gives the same 4 or 16 octets as dnspython's, faster."""
    try:
        return socket.inet_pton(family, rd.address)
    except (OSError, ValueError):
        return rd.to_wire()


def _rdata_parts(rdtype: int, rd) -> tuple[Part, ...]:
    if rdtype == T.A:
        return (_address(socket.AF_INET, rd),)
    if rdtype == T.AAAA:
        return (_address(socket.AF_INET6, rd),)
    if rdtype in (T.NS, T.CNAME, T.PTR):
        return (name_part(rd.target),)
    if rdtype == T.MX:
        return (struct.pack("!H", rd.preference), name_part(rd.exchange))
    if rdtype == T.SOA:
        tail = struct.pack("!IIIII", rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum)
        return (name_part(rd.mname), name_part(rd.rname), tail)
    fast = _FAST_RDATA.get(rdtype)
    return (fast(rd) if fast is not None else rd.to_wire(),)


def wire_rrset(rrset: dns.rrset.RRset) -> WireRRset:
    """The wire form of ``rrset`` (records in the RRset's order, never shuffled)."""
    fixed = struct.pack("!HHI", rrset.rdtype, rrset.rdclass, rrset.ttl)
    rdtype = rrset.rdtype
    return name_part(rrset.name), tuple([(fixed, _rdata_parts(rdtype, rd)) for rd in rrset])


def write_name(buf: bytearray, compress: dict[Labels, int], name: NamePart, pointers: list[int] | None = None) -> None:
    """Append a name, compressed against ``compress``; register what is written in full.
    Where a compression pointer is written is noted in ``pointers``, when given."""
    labels, keys = name
    for i, key in enumerate(keys):
        pos = compress.get(key)
        if pos is not None:
            if pointers is not None:
                pointers.append(len(buf))
            buf += (0xC000 | pos).to_bytes(2, "big")
            return
        here = len(buf)
        if here <= _MAX_POINTER:
            compress[key] = here
        label = labels[i]
        buf.append(len(label))
        buf += label
    buf.append(0)


def write_rrset(buf: bytearray, compress: dict[Labels, int], rrset: WireRRset, pointers: list[int] | None = None) -> int:
    """Append every record of ``rrset``; returns how many (pointers: see write_name)."""
    owner, records = rrset
    for fixed, parts in records:
        write_name(buf, compress, owner, pointers)
        buf += fixed
        rdlen_at = len(buf)
        buf += b"\x00\x00"
        for part in parts:
            if type(part) is not bytes:
                write_name(buf, compress, part, pointers)
            else:
                buf += part
        rdlen = len(buf) - rdlen_at - 2
        buf[rdlen_at] = rdlen >> 8
        buf[rdlen_at + 1] = rdlen & 0xFF
    return len(records)


def rollback(buf: bytearray, compress: dict[Labels, int], mark: int, pointers: list[int] | None = None) -> None:
    """Undo everything written from ``mark`` on, names and pointers noted there included."""
    del buf[mark:]
    for key in [k for k, pos in compress.items() if pos >= mark]:
        del compress[key]
    if pointers:
        del pointers[bisect.bisect_left(pointers, mark) :]
