"""Master files → flat wire-format records, fast, for the plain form root zones are published in.

dnspython's zone reader tokenizes every character and builds an object per record; for the
root zone that costs seconds.  Root zone files (IANA's, and dnspython-written ones) have one RR
per line with an absolute owner, an explicit TTL and class, and no directives, quotes or
parentheses.  :func:`fast_zone_records` reads such files line by line with ``str.split``,
converting the common types (NS, A, AAAA, DS, RRSIG, NSEC) itself and every other type through
``dns.rdata.from_text`` for that line alone.  Whenever a file steps outside that form, or
anything looks wrong, it gives up (returns None) and the caller uses dnspython on the whole
file, which also produces the error messages: so results and errors stay dnspython's.

The result equals ``records_from_dnspython_zone(dns.zone.from_text(...))`` record for record,
in the same order: duplicates dropped (RDATA compared in canonical form), each RRset's TTL the
smallest of its records', owners in order of first appearance, an owner's RRsets in order of
their last appearance (dnspython moves an RRset to the end of its node on every addition).
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import struct

import dns.dnssectypes
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.rrsigbase
import dns.ttl

from imrs.zone.records import (
    CLASS_IN,
    TYPE_NS,
    TYPE_RRSIG,
    TYPE_SOA,
    Record,
    ZoneRecords,
    canonical_rdata,
    is_subdomain,
)

_MAX_U32 = 0xFFFFFFFF
#: Whitespace dnspython does not treat as a separator, but ``str.split`` would.
_ODD_SPACE = re.compile(r"[^\S \t\n]")
#: Characters that make dnspython's tokenizer do more than split on blanks.
_SPECIAL = re.compile(r'["();\\]')
_HEX_COLON = re.compile(r"[0-9A-Fa-f:]+")
_ASCII_DIGITS = re.compile(r"[0-9]+")

_TYPE_A = 1
_TYPE_CNAME = 5
_TYPE_AAAA = 28
_TYPE_DS = 43
_TYPE_NSEC = 47
#: dnspython keeps one RR in RRsets of these types (a second replaces the first).
_SINGLETONS = frozenset(int(t) for t in dns.rdatatype._singletons)
#: Types whose RDATA compares as its wire form when dropping duplicates (no embedded names
#: that canonical form lowercases), and those whose canonical form records.py computes cheaply
#: exactly as dnspython's ``to_digestable`` does; other types ask dnspython.
_CANONICAL_IS_WIRE = frozenset({1, 16, 28, 43, 47, 48, 63})
_CANONICAL_CHEAP = frozenset({TYPE_NS, TYPE_SOA, TYPE_RRSIG})


class _NotFast(Exception):
    """This input needs dnspython's reader."""


def fast_zone_records(text: str, source: str, origin: str) -> ZoneRecords | None:
    """The records of master-file ``text`` for zone ``origin`` (absolute, as text), or None
    when the fast reader does not apply or the file has an error (the caller then reads it
    with dnspython, which reports the error)."""
    try:
        return _Reader(origin).read(text, source)
    except _NotFast:
        return None


def parse_master_text(text: str, source: str, origin: str | None = None) -> ZoneRecords:
    """Parse a master file into records: the fast reader when it applies, dnspython otherwise.
    Errors are :class:`imrs.zone.parse.ZoneFileError`, naming ``source`` and the line."""
    from imrs.zone.parse import parse_zone_records  # parse.py imports this module

    return parse_zone_records(text, source, origin)


# --- small conversions, cached: most values repeat thousands of times ---------------------


def _ascii_int(text: str, limit: int) -> int:
    if not _ASCII_DIGITS.fullmatch(text):
        raise _NotFast
    value = int(text)
    if value > limit:
        raise _NotFast
    return value


def _name_wire(text: str) -> bytes:
    """Wire form (case kept) of an absolute ASCII name without escapes."""
    if not text.endswith(".") or not text.isascii():
        raise _NotFast
    if text == ".":
        return b"\x00"
    out = bytearray()
    for label in text[:-1].split("."):
        size = len(label)
        if size == 0 or size > 63:
            raise _NotFast
        out.append(size)
        out += label.encode()
    out.append(0)
    if len(out) > 255:
        raise _NotFast
    return bytes(out)


class _Cache(dict):
    """text → value, computed once by ``make``; any failure means "not fast"."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key: str):
        try:
            value = self.make(key)
        except _NotFast:
            raise
        except Exception:  # noqa: BLE001 - any failure: let dnspython's reader report it
            raise _NotFast from None
        self[key] = value
        return value


def _rdtype(text: str) -> int:
    rdtype = int(dns.rdatatype.from_text(text))
    if dns.rdatatype.is_metatype(rdtype):
        raise _NotFast
    return rdtype


def _ttl(text: str) -> int:
    return _ascii_int(text, _MAX_U32)


def _algorithm(text: str) -> int:
    return int(dns.dnssectypes.Algorithm.from_text(text))


def _nsec_bitmap(types: str) -> bytes:
    """The type bitmap wire form, made by dnspython itself."""
    return dns.rdata.from_text(CLASS_IN, _TYPE_NSEC, ". " + types).to_wire()[1:]


def _canonical_form(rdtype: int, rdata: bytes) -> bytes:
    """What dnspython compares RDATA by (``Rdata.to_digestable``)."""
    if rdtype in _CANONICAL_CHEAP:
        return canonical_rdata(rdtype, rdata)
    try:
        return dns.rdata.from_wire(CLASS_IN, rdtype, rdata, 0, len(rdata)).to_digestable(dns.name.root)
    except Exception:  # noqa: BLE001 - any failure: let dnspython's reader report it
        raise _NotFast from None


_DS_DIGEST_LENGTHS = {1: 20, 2: 32, 3: 32, 4: 48}
_RRSIG_HEAD = struct.Struct("!HBBIIIH")
_DS_HEAD = struct.Struct("!HBB")


class _Reader:
    """One pass over one file; caches live as long as the pass."""

    def __init__(self, origin: str):
        self.origin_text = origin
        try:
            self.origin_name = dns.name.from_text(origin)
        except Exception:  # noqa: BLE001 - any failure: let dnspython's reader report it
            raise _NotFast from None
        if not self.origin_name.is_absolute():
            raise _NotFast
        self.origin = self.origin_name.to_wire().lower()
        self.names = _Cache(_name_wire)
        self.owners = _Cache(self._owner)
        self.ttls = _Cache(_ttl)
        self.types = _Cache(_rdtype)
        self.algorithms = _Cache(_algorithm)
        self.sigtimes = _Cache(self._sigtime)
        self.bitmaps = _Cache(_nsec_bitmap)
        self.fast = {
            TYPE_NS: self._ns,
            _TYPE_A: self._a,
            _TYPE_AAAA: self._aaaa,
            _TYPE_DS: self._ds,
            TYPE_RRSIG: self._rrsig,
            _TYPE_NSEC: self._nsec,
        }

    # -- fields ------------------------------------------------------------------------

    def _owner(self, text: str) -> bytes:
        wire = _name_wire(text).lower()
        if not is_subdomain(wire, self.origin):
            raise _NotFast  # dnspython's path names the line
        return wire

    @staticmethod
    def _sigtime(text: str) -> int:
        value = dns.rdtypes.rrsigbase.sigtime_to_posixtime(text)
        if not 0 <= value <= _MAX_U32:
            raise _NotFast
        return value

    # -- RDATA of the common types -----------------------------------------------------

    def _ns(self, fields: list[str]) -> bytes:
        if len(fields) != 1:
            raise _NotFast
        return self.names[fields[0]]

    @staticmethod
    def _a(fields: list[str]) -> bytes:
        if len(fields) != 1:
            raise _NotFast
        try:
            wire = socket.inet_pton(socket.AF_INET, fields[0])
        except OSError:
            raise _NotFast from None
        # Only the canonical dotted quad: dnspython and inet_pton agree on that one.
        if socket.inet_ntop(socket.AF_INET, wire) != fields[0]:
            raise _NotFast
        return wire

    @staticmethod
    def _aaaa(fields: list[str]) -> bytes:
        if len(fields) != 1 or not _HEX_COLON.fullmatch(fields[0]):
            raise _NotFast
        try:
            return socket.inet_pton(socket.AF_INET6, fields[0])
        except OSError:
            raise _NotFast from None

    def _ds(self, fields: list[str]) -> bytes:
        if len(fields) < 4:
            raise _NotFast
        key_tag = _ascii_int(fields[0], 0xFFFF)
        algorithm = self.algorithms[fields[1]]
        digest_type = _ascii_int(fields[2], 0xFF)
        try:
            digest = binascii.unhexlify("".join(fields[3:]))
        except (binascii.Error, ValueError):
            raise _NotFast from None
        expected = _DS_DIGEST_LENGTHS.get(digest_type)
        if digest_type == 0 or (expected is not None and len(digest) != expected):
            raise _NotFast
        return _DS_HEAD.pack(key_tag, algorithm, digest_type) + digest

    def _rrsig(self, fields: list[str]) -> bytes:
        if len(fields) < 8:
            raise _NotFast
        try:
            signature = base64.b64decode("".join(fields[8:]), validate=True)
        except (binascii.Error, ValueError):
            raise _NotFast from None
        sigtimes = self.sigtimes
        return (
            _RRSIG_HEAD.pack(
                self.types[fields[0]],
                self.algorithms[fields[1]],
                _ascii_int(fields[2], 0xFF),
                self.ttls[fields[3]],
                sigtimes[fields[4]],
                sigtimes[fields[5]],
                _ascii_int(fields[6], 0xFFFF),
            )
            + self.names[fields[7]]
            + signature
        )

    def _nsec(self, fields: list[str]) -> bytes:
        if not fields:
            raise _NotFast
        return self.names[fields[0]] + self.bitmaps[" ".join(fields[1:])]

    def _any_type(self, rdtype: int, rdata: str) -> bytes:
        """Any other type, by dnspython for this line alone (the text may be quoted,
        escaped, parenthesised within the line, or end in a comment)."""
        try:
            rd = dns.rdata.from_text(CLASS_IN, rdtype, rdata, self.origin_name, False, self.origin_name)
            return rd.to_wire()
        except Exception:  # noqa: BLE001 - any failure: let dnspython's reader report it
            raise _NotFast from None

    # -- the file ----------------------------------------------------------------------

    def read(self, text: str, source: str) -> ZoneRecords:
        if _ODD_SPACE.search(text):
            raise _NotFast
        special = _SPECIAL.search(text) is not None
        owners, ttls, types, fast = self.owners, self.ttls, self.types, self.fast
        found: list[tuple[bytes, int, int, bytes]] = []
        append = found.append
        for line in text.split("\n"):
            if not line:
                continue
            first = line[0]
            if first == " " or first == "\t":
                rest = line.lstrip(" \t")
                if not rest or rest[0] == ";":
                    continue  # blank, or only a comment
                raise _NotFast  # owner omitted
            if first == ";":
                continue
            if first == "$":
                raise _NotFast  # a directive
            fields = line.split(None, 4)
            if len(fields) < 4:
                raise _NotFast
            if special and _SPECIAL.search(line, 0, len(fields[0]) + 1) is not None:
                raise _NotFast
            owner = owners[fields[0]]
            ttl = ttls[fields[1]]
            klass = fields[2]
            if klass != "IN" and klass.upper() != "IN":
                raise _NotFast
            rdtype = types[fields[3]]
            if special and _SPECIAL.search(fields[1] + fields[2] + fields[3]) is not None:
                raise _NotFast
            rdata_text = fields[4] if len(fields) == 5 else ""
            parse = fast.get(rdtype)
            if parse is not None and not (special and _SPECIAL.search(rdata_text)):
                rdata = parse(rdata_text.split())
            else:
                rdata = self._any_type(rdtype, rdata_text)
            append((owner, rdtype, ttl, rdata))
        return ZoneRecords(self.origin, self._as_dnspython_zone(found), source)

    def _as_dnspython_zone(self, found: list[tuple[bytes, int, int, bytes]]) -> tuple[Record, ...]:
        """Drop duplicates and order as dnspython's zone does (see the module docstring)."""
        owner_rank: dict[bytes, int] = {}
        last_seen: dict[tuple[bytes, int, int], int] = {}
        groups: dict[tuple[bytes, int, int], list] = {}  # key -> [ttl, rdatas, seen forms]
        for index, (owner, rdtype, ttl, rdata) in enumerate(found):
            if rdtype == _TYPE_CNAME:
                raise _NotFast  # dnspython's CNAME-and-other-data rules
            if rdtype == TYPE_RRSIG:
                covers = (rdata[0] << 8) | rdata[1]
                if covers == _TYPE_CNAME:
                    raise _NotFast
            else:
                covers = 0
                if rdtype == TYPE_SOA and owner != self.origin:
                    raise _NotFast  # dnspython refuses an SOA away from the apex
            if owner not in owner_rank:
                owner_rank[owner] = index
            key = (owner, rdtype, covers)
            last_seen[key] = index
            form = rdata if rdtype in _CANONICAL_IS_WIRE else _canonical_form(rdtype, rdata)
            group = groups.get(key)
            if group is None:
                groups[key] = [ttl, [rdata], {form}]
                continue
            if rdtype in _SINGLETONS and group[1] != [rdata]:
                raise _NotFast  # dnspython lets a later RR replace the earlier one
            if form in group[2]:
                group[0] = min(group[0], ttl)
                continue
            group[0] = min(group[0], ttl)
            group[1].append(rdata)
            group[2].add(form)
        if (self.origin, TYPE_SOA, 0) not in groups or (self.origin, TYPE_NS, 0) not in groups:
            raise _NotFast  # dnspython's path reports it
        keys = list(groups)
        ranked = [(owner_rank[k[0]], last_seen[k]) for k in keys]
        if ranked != sorted(ranked):
            order = sorted(range(len(keys)), key=ranked.__getitem__)
            keys = [keys[i] for i in order]
        make = Record._make
        out = []
        for key in keys:
            owner, rdtype, _ = key
            ttl, rdatas, _ = groups[key]
            for rdata in rdatas:
                out.append(make((owner, rdtype, CLASS_IN, ttl, rdata)))
        return tuple(out)
