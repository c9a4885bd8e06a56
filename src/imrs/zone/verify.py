"""Checks a zone version must pass before any query sees it: sanity, DNSSEC, ZONEMD.

Everything works on flat wire-format records (:class:`~imrs.zone.records.ZoneRecords`), so the
root zone is checked in a fraction of a second without building dnspython objects: the data
each signature covers (RFC 4034 section 3.1.8.1) and the ZONEMD digest input (RFC 8976 section
3.3) are assembled directly from the records' bytes, and public keys are parsed once.

Checks run cheapest and most specific first (sanity, then DNSSEC, then ZONEMD), and the first
failure raises :class:`VerificationError` naming the check and the RRset at fault.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.rdatatype
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from imrs.zone.anchor import FLAG_REVOKE, FLAG_ZONE, TrustAnchor, key_tag
from imrs.zone.records import (
    TYPE_DNSKEY,
    TYPE_DS,
    TYPE_NS,
    TYPE_NSEC,
    TYPE_RRSIG,
    TYPE_SOA,
    TYPE_ZONEMD,
    Record,
    ZoneRecords,
    canonical_name_key,
    canonical_rdata,
    group_rrsets,
    is_subdomain,
    name_labels,
    name_length,
    name_to_text,
    soa_serial,
)

TYPE_A = 1
TYPE_AAAA = 28
TYPE_NSEC3 = 50

#: ZONEMD schemes and hash algorithms (RFC 8976 section 5.2, 5.3).
ZONEMD_SCHEME_SIMPLE = 1
ZONEMD_HASHES = {1: ("SHA-384", hashlib.sha384, 48), 2: ("SHA-512", hashlib.sha512, 64)}

#: The types that are authoritative, and so signed, at a delegation point (RFC 4035 2.2).
_SIGNED_AT_CUT = frozenset({TYPE_DS, TYPE_NSEC, TYPE_NSEC3})


class VerificationError(Exception):
    """A zone version failed a check; ``check`` is "sanity", "dnssec" or "zonemd"."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check
        self.message = message


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification found, for logs and the CLI."""

    origin: str
    serial: int
    records: int
    rrsets: int
    signatures: int  # RRSIGs verified
    zonemd: str | None  # hash algorithm of the ZONEMD that verified, e.g. "SHA-384"
    anchored_keys: tuple[int, ...]  # tags of the anchored keys that signed the DNSKEY RRset
    signing_keys: tuple[int, ...]  # tags of every key that made a verified signature
    earliest_expiration: float | None  # seconds since the epoch
    elapsed: float  # seconds
    dnssec: bool  # False when no trust anchor was given

    def summary(self) -> str:
        """One line, e.g. ``serial 2026082201, 24884 records, 2793 signatures, ...``."""
        parts = [f"serial {self.serial}", f"{self.records} records"]
        if self.dnssec:
            parts.append(f"{self.signatures} signatures")
        parts.append(f"ZONEMD {self.zonemd} verified" if self.zonemd else "no ZONEMD checked")
        if self.dnssec:
            parts.append(
                f"keys {' '.join(map(str, self.signing_keys))} via anchor {' '.join(map(str, self.anchored_keys))}"
            )
            if self.earliest_expiration is not None:
                parts.append(f"signatures valid until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(self.earliest_expiration))}")
        else:
            parts.append("DNSSEC not checked (no trust anchor)")
        parts.append(f"{self.elapsed:.2f} s")
        return ", ".join(parts)


# --- RFC 1982 serial numbers -------------------------------------------------------------------

def serial_gt(a: int, b: int) -> bool:
    """Whether 32-bit serial ``a`` is newer than ``b`` (RFC 1982 section 3.2).

    The pair exactly 2**31 apart is undefined; it counts as not newer, so such a jump is refused.
    """
    a &= 0xFFFFFFFF
    b &= 0xFFFFFFFF
    return (a < b and b - a > 0x80000000) or (a > b and a - b < 0x80000000)


def _absolute_time(value: int, now: int) -> int:
    """An RRSIG time field as seconds since the epoch: the value closest to ``now`` that is
    congruent to it modulo 2**32 (RFC 4034 section 3.1.5 serial arithmetic)."""
    delta = (value - now + 0x80000000) % 0x100000000 - 0x80000000
    return now + delta


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _rrset_text(owner: bytes, rdtype: int) -> str:
    return f"{name_to_text(owner)} {dns.rdatatype.to_text(rdtype)}"


# --- entry point -------------------------------------------------------------------------------

def verify_zone(
    zone: ZoneRecords,
    anchor: TrustAnchor | None,
    *,
    now: float | None = None,
    require_zonemd: bool = False,
    signature_margin: float = 0,
    previous_serial: int | None = None,
) -> VerifyReport:
    """Check one version of a zone; raises VerificationError on the first failure.

    ``anchor`` None skips DNSSEC (zones that are not signed); ``now`` is the validation time in
    seconds since the epoch (default: the clock); signatures expiring before ``now +
    signature_margin`` are refused; ``previous_serial`` is the version being replaced.
    """
    started = time.perf_counter()
    at = time.time() if now is None else float(now)
    serial = _check_sanity(zone, previous_serial)
    groups = group_rrsets(zone.records)
    dnssec = None
    if anchor is not None:
        dnssec = _DnssecChecker(zone, groups, anchor, at, signature_margin).run()
    zonemd = _check_zonemd(zone, groups, serial, require_zonemd)
    return VerifyReport(
        origin=zone.origin_text,
        serial=serial,
        records=len(zone.records),
        rrsets=sum(1 for key in groups if key[1] != TYPE_RRSIG),
        signatures=dnssec.signatures if dnssec else 0,
        zonemd=zonemd,
        anchored_keys=dnssec.anchored_keys if dnssec else (),
        signing_keys=dnssec.signing_keys if dnssec else (),
        earliest_expiration=dnssec.earliest_expiration if dnssec else None,
        elapsed=time.perf_counter() - started,
        dnssec=dnssec is not None,
    )


# --- sanity ------------------------------------------------------------------------------------

def _check_sanity(zone: ZoneRecords, previous_serial: int | None) -> int:
    """SOA present once at the apex, every record inside the zone, serial moving forward.

    "Inside the zone" also excludes what sits below a delegation other than address records
    (glue): the zone is not authoritative for it, and a root zone never carries it.
    """
    origin = zone.origin
    soas = {r.rdata for r in zone.records if r.rdtype == TYPE_SOA and r.owner == origin}
    if not soas:
        raise VerificationError("sanity", f"no SOA record at the apex {zone.origin_text}")
    if len(soas) > 1:
        raise VerificationError("sanity", f"{len(soas)} different SOA records at the apex {zone.origin_text}")
    soa = next(r for r in zone.records if r.rdtype == TYPE_SOA and r.owner == origin)
    if not any(r.rdtype == TYPE_NS and r.owner == origin for r in zone.records):
        raise VerificationError("sanity", f"no NS RRset at the apex {zone.origin_text}")
    zone_class = soa.rdclass
    cuts = {r.owner for r in zone.records if r.rdtype == TYPE_NS and r.owner != origin}
    root = origin == b"\x00"
    checked: dict[bytes, bytes | None] = {}  # owner -> the delegation it is at or below
    for record in zone.records:
        owner = record.owner
        if record.rdclass != zone_class:
            raise VerificationError(
                "sanity", f"{_rrset_text(owner, record.rdtype)}: class {record.rdclass}, the zone's is {zone_class}"
            )
        if owner in checked:
            cut = checked[owner]
        else:
            if not root and not is_subdomain(owner, origin):
                raise VerificationError(
                    "sanity", f"{_rrset_text(owner, record.rdtype)}: out of zone (not under {zone.origin_text})"
                )
            cut = checked[owner] = _enclosing_cut(owner, origin, cuts)
        if cut is None:
            continue
        rdtype = record.rdtype
        if owner == cut and rdtype in (TYPE_NS, TYPE_DS, TYPE_NSEC, TYPE_NSEC3, TYPE_RRSIG):
            continue
        if rdtype in (TYPE_A, TYPE_AAAA):
            # Glue.  Address records no NS refers to (orphan glue) are tolerated rather than
            # refused: they are harmless, ZONEMD covers them, and refusing would stall updates.
            continue
        raise VerificationError(
            "sanity",
            f"{_rrset_text(owner, rdtype)}: out of zone (below the delegation to {name_to_text(cut)}, and not glue)",
        )
    serial = soa_serial(soa.rdata)
    if previous_serial is not None and not serial_gt(serial, previous_serial):
        raise VerificationError(
            "sanity", f"serial {serial} is not newer than the current {previous_serial} (RFC 1982)"
        )
    return serial


def _enclosing_cut(owner: bytes, origin: bytes, cuts: set[bytes]) -> bytes | None:
    """The highest delegation point at or above ``owner`` (below the apex), if any."""
    found = None
    i = 0
    stop = len(owner) - len(origin)
    while i < stop:
        suffix = owner[i:]
        if suffix in cuts:
            found = suffix  # keep walking up: the highest cut is the one that matters
        i += 1 + owner[i]
    return found


# --- DNSSEC ------------------------------------------------------------------------------------

Verifier = Callable[[bytes, bytes], bool]


@functools.lru_cache(maxsize=64)
def _verifier(algorithm: int, public_key: bytes) -> Verifier | None:
    """A function checking (signature, data) for one DNSKEY; None for an unsupported algorithm.
    Cached: the same few keys sign every RRset of every version."""
    try:
        if algorithm in (5, 7, 8, 10):
            return _rsa_verifier(algorithm, public_key)
        if algorithm in (13, 14):
            curve, hash_alg, size = (ec.SECP256R1(), hashes.SHA256(), 32) if algorithm == 13 else (ec.SECP384R1(), hashes.SHA384(), 48)
            if len(public_key) != 2 * size:
                raise ValueError("wrong key length")
            ec_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + public_key)
            ecdsa = ec.ECDSA(hash_alg)

            def verify_ecdsa(signature: bytes, data: bytes) -> bool:
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                try:
                    ec_key.verify(encode_dss_signature(r, s), data, ecdsa)
                except InvalidSignature:
                    return False
                return True

            return verify_ecdsa
        if algorithm in (15, 16):
            ed_key = (
                ed25519.Ed25519PublicKey.from_public_bytes(public_key)
                if algorithm == 15
                else ed448.Ed448PublicKey.from_public_bytes(public_key)
            )

            def verify_eddsa(signature: bytes, data: bytes) -> bool:
                try:
                    ed_key.verify(signature, data)
                except InvalidSignature:
                    return False
                return True

            return verify_eddsa
    except (ValueError, UnsupportedAlgorithm, IndexError):
        return _broken_key
    return None


def _broken_key(signature: bytes, data: bytes) -> bool:
    return False


def _rsa_verifier(algorithm: int, public_key: bytes) -> Verifier:
    # RFC 3110 section 2: exponent length in one octet, or zero then two octets.
    if public_key[0]:
        exp_len, offset = public_key[0], 1
    else:
        exp_len, offset = int.from_bytes(public_key[1:3], "big"), 3
    exponent = int.from_bytes(public_key[offset : offset + exp_len], "big")
    modulus = int.from_bytes(public_key[offset + exp_len :], "big")
    rsa_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    hash_alg = {5: hashes.SHA1, 7: hashes.SHA1, 8: hashes.SHA256, 10: hashes.SHA512}[algorithm]()
    pkcs1 = padding.PKCS1v15()

    def verify_rsa(signature: bytes, data: bytes) -> bool:
        try:
            rsa_key.verify(signature, data, pkcs1, hash_alg)
        except InvalidSignature:
            return False
        return True

    return verify_rsa


@dataclass(frozen=True)
class _ZoneKey:
    tag: int
    flags: int
    algorithm: int
    rdata: bytes
    anchored: bool


@dataclass(frozen=True)
class _DnssecResult:
    signatures: int
    anchored_keys: tuple[int, ...]
    signing_keys: tuple[int, ...]
    earliest_expiration: float | None


class _DnssecChecker:
    """Anchor -> apex DNSKEY RRset -> every RRSIG in the zone -> every authoritative RRset signed."""

    def __init__(self, zone: ZoneRecords, groups: dict[tuple[bytes, int, int], list[Record]],
                 anchor: TrustAnchor, now: float, margin: float):
        self.zone = zone
        self.groups = groups
        self.anchor = anchor
        self.now = now
        self.now_int = int(now)
        self.margin = margin
        self.keys: dict[tuple[int, int], list[_ZoneKey]] = {}
        self.signed_data_cache: dict[tuple[bytes, int], list[bytes]] = {}
        self.signing_keys: set[int] = set()
        self.earliest: int | None = None
        self.count = 0

    def fail(self, message: str) -> VerificationError:
        return VerificationError("dnssec", message)

    def run(self) -> _DnssecResult:
        origin = self.zone.origin
        if self.anchor.zone != origin:
            raise self.fail(f"the trust anchor is for {self.anchor.zone_text}, the zone is {self.zone.origin_text}")
        anchored = self._load_keys()
        dnskey_sigs = self.groups.get((origin, TYPE_RRSIG, TYPE_DNSKEY), [])
        if not dnskey_sigs:
            raise self.fail(f"{_rrset_text(origin, TYPE_DNSKEY)}: no RRSIG")
        by_anchor = set()
        for sig in dnskey_sigs:
            key = self._verify(sig, TYPE_DNSKEY)
            if key.anchored:
                by_anchor.add(key.tag)
        if not by_anchor:
            raise self.fail(
                f"{_rrset_text(origin, TYPE_DNSKEY)}: not signed by the anchored key "
                f"{' '.join(str(k.tag) for k in anchored)} (signed by {' '.join(str(key_tag_of(s)) for s in dnskey_sigs)})"
            )
        for (owner, rdtype, covered), sigs in self.groups.items():
            if rdtype != TYPE_RRSIG or (owner == origin and covered == TYPE_DNSKEY):
                continue
            for sig in sigs:
                self._verify(sig, covered)
        self._check_all_signed()
        return _DnssecResult(
            self.count, tuple(sorted(by_anchor)), tuple(sorted(self.signing_keys)),
            float(self.earliest) if self.earliest is not None else None,
        )

    def _load_keys(self) -> list[_ZoneKey]:
        origin = self.zone.origin
        dnskeys = self.groups.get((origin, TYPE_DNSKEY, 0))
        if not dnskeys:
            raise self.fail(f"no DNSKEY RRset at the apex {self.zone.origin_text}")
        anchored = []
        for record in dnskeys:
            rdata = record.rdata
            if len(rdata) < 5:
                raise self.fail(f"{_rrset_text(origin, TYPE_DNSKEY)}: malformed DNSKEY ({len(rdata)} octets)")
            flags = int.from_bytes(rdata[:2], "big")
            if not flags & FLAG_ZONE or rdata[2] != 3:
                continue  # not a zone key: may not sign anything (RFC 4034 2.1.1, 2.1.2)
            is_anchored = not flags & FLAG_REVOKE and self.anchor.match(origin, rdata, self.now) is not None
            key = _ZoneKey(key_tag(rdata), flags, rdata[3], rdata, is_anchored)
            self.keys.setdefault((key.tag, key.algorithm), []).append(key)
            if is_anchored:
                anchored.append(key)
        if not anchored:
            zone_keys = " ".join(f"{k.tag}/{k.algorithm}" for ks in self.keys.values() for k in ks) or "none"
            raise self.fail(
                f"{_rrset_text(origin, TYPE_DNSKEY)}: no key matches the trust anchor "
                f"({self.anchor.describe(self.now)}; zone keys {zone_keys})"
            )
        return anchored

    def _signed_rrset(self, owner: bytes, covered: int) -> list[bytes] | None:
        """The RRset's RDATA in canonical form, sorted, duplicates removed (RFC 4034 6.3)."""
        key = (owner, covered)
        cached = self.signed_data_cache.get(key)
        if cached is None:
            records = self.groups.get((owner, covered, 0))
            if not records:
                return None
            cached = sorted({canonical_rdata(covered, r.rdata) for r in records})
            self.signed_data_cache[key] = cached
        return cached

    def _verify(self, sig: Record, covered: int) -> _ZoneKey:
        """Check one RRSIG; returns the key that made it or raises."""
        owner = sig.owner
        rdata = sig.rdata
        what = _rrset_text(owner, covered)
        if len(rdata) < 19:
            raise self.fail(f"RRSIG for {what}: malformed ({len(rdata)} octets)")
        algorithm = rdata[2]
        labels = rdata[3]
        original_ttl = rdata[4:8]
        expiration = _absolute_time(int.from_bytes(rdata[8:12], "big"), self.now_int)
        inception = _absolute_time(int.from_bytes(rdata[12:16], "big"), self.now_int)
        tag = int.from_bytes(rdata[16:18], "big")
        label_text = f"RRSIG for {what} (key {tag})"
        try:
            signer_end = 18 + name_length(rdata, 18)
        except IndexError:
            raise self.fail(f"{label_text}: malformed signer name") from None
        signer = rdata[18:signer_end].lower()
        signature = rdata[signer_end:]
        if signer != self.zone.origin:
            raise self.fail(f"{label_text}: signer {name_to_text(signer)} is not the zone apex {self.zone.origin_text}")
        if self.now < inception:
            raise self.fail(f"{label_text}: not valid before {_utc(inception)} (validation time {_utc(self.now)})")
        if self.now > expiration:
            raise self.fail(f"{label_text}: expired {_utc(expiration)} (validation time {_utc(self.now)})")
        if expiration < self.now + self.margin:
            raise self.fail(
                f"{label_text}: expires {_utc(expiration)}, within the required margin of {self.margin:g} s"
            )
        candidates = self.keys.get((tag, algorithm))
        if not candidates:
            raise self.fail(f"{label_text}: no zone key with tag {tag} and algorithm {algorithm} in the DNSKEY RRset")
        rrset = self._signed_rrset(owner, covered)
        if rrset is None:
            raise self.fail(f"RRSIG for {what}: the zone has no such RRset")
        owner_labels = name_labels(owner)
        if labels > len(owner_labels) - (1 if owner_labels and owner_labels[0] == b"*" else 0):
            raise self.fail(f"{label_text}: labels field {labels} exceeds the owner's label count")
        signed_owner = owner
        if labels < len(owner_labels):
            # Wildcard expansion (RFC 4035 5.3.2): the signature covers "*." + the last labels.
            signed_owner = b"\x01*" + b"".join(bytes([len(lab)]) + lab for lab in owner_labels[len(owner_labels) - labels :]) + b"\x00"
        head = signed_owner + struct.pack(">HH", covered, sig.rdclass) + original_ttl
        data = rdata[:18] + signer + b"".join(head + struct.pack(">H", len(rd)) + rd for rd in rrset)
        for key in candidates:
            verifier = _verifier(algorithm, key.rdata[4:])
            if verifier is None:
                raise self.fail(f"{label_text}: algorithm {algorithm} is not supported")
            if verifier(signature, data):
                self.count += 1
                self.signing_keys.add(tag)
                if self.earliest is None or expiration < self.earliest:
                    self.earliest = expiration
                return key
        raise self.fail(f"{label_text}: signature does not verify")

    def _check_all_signed(self) -> None:
        """Every authoritative RRset has a signature: a deleted RRSIG must not go unnoticed."""
        origin = self.zone.origin
        cuts = {owner for (owner, rdtype, _c) in self.groups if rdtype == TYPE_NS and owner != origin}
        below: dict[bytes, bytes | None] = {}
        for owner, rdtype, _covers in self.groups:
            if rdtype == TYPE_RRSIG:
                continue
            cut = below.get(owner, b"")
            if cut == b"":
                cut = below[owner] = _enclosing_cut(owner, origin, cuts)
            if cut is not None and not (owner == cut and rdtype in _SIGNED_AT_CUT):
                continue  # delegation NS, glue: not authoritative, not signed
            if (owner, TYPE_RRSIG, rdtype) not in self.groups:
                raise self.fail(f"{_rrset_text(owner, rdtype)}: no RRSIG (every authoritative RRset must be signed)")


def key_tag_of(sig: Record) -> int:
    """The key tag field of an RRSIG."""
    return int.from_bytes(sig.rdata[16:18], "big")


# --- ZONEMD ------------------------------------------------------------------------------------

def _check_zonemd(
    zone: ZoneRecords, groups: dict[tuple[bytes, int, int], list[Record]], serial: int, required: bool
) -> str | None:
    """RFC 8976 section 4: some ZONEMD RR with a supported scheme and hash must match."""
    origin = zone.origin
    zonemds = groups.get((origin, TYPE_ZONEMD, 0), [])
    if not zonemds:
        if required:
            raise VerificationError("zonemd", f"no ZONEMD record at the apex {zone.origin_text}, and one is required")
        return None
    parsed = [(r.rdata[:4], r.rdata[4], r.rdata[5], r.rdata[6:]) for r in {r.rdata: r for r in zonemds}.values() if len(r.rdata) >= 18]
    seen: dict[tuple[int, int], int] = {}
    for _serial, scheme, hash_alg, _digest in parsed:
        seen[(scheme, hash_alg)] = seen.get((scheme, hash_alg), 0) + 1
    usable = [
        p for p in parsed
        if p[1] == ZONEMD_SCHEME_SIMPLE and p[2] in ZONEMD_HASHES and seen[(p[1], p[2])] == 1
    ]
    if not usable:
        duplicated = [k for k, n in seen.items() if n > 1 and k[0] == ZONEMD_SCHEME_SIMPLE and k[1] in ZONEMD_HASHES]
        if duplicated:
            scheme, hash_alg = duplicated[0]
            raise VerificationError(
                "zonemd", f"more than one ZONEMD record with scheme {scheme} and hash {ZONEMD_HASHES[hash_alg][0]} (RFC 8976 4)"
            )
        if required:
            kinds = ", ".join(f"scheme {p[1]} hash {p[2]}" for p in parsed) or "malformed"
            raise VerificationError(
                "zonemd", f"no ZONEMD record with a supported scheme and hash (SIMPLE with SHA-384 or SHA-512; found {kinds})"
            )
        return None
    reasons = []
    stream: bytes | None = None
    for zm_serial, _scheme, hash_alg, digest in usable:
        name, hasher, size = ZONEMD_HASHES[hash_alg]
        zm_serial_int = int.from_bytes(zm_serial, "big")
        if zm_serial_int != serial:
            reasons.append(f"ZONEMD {name}: serial {zm_serial_int} is not the SOA serial {serial}")
            continue
        if len(digest) != size:
            reasons.append(f"ZONEMD {name}: digest is {len(digest)} octets, not {size}")
            continue
        if stream is None:
            stream = zonemd_input(zone)
        if hasher(stream).digest() == digest:
            return name
        reasons.append(f"ZONEMD {name}: digest does not match the zone's content")
    raise VerificationError("zonemd", "; ".join(reasons))


def zonemd_input(zone: ZoneRecords) -> bytes:
    """The data a SIMPLE ZONEMD digest is computed over (RFC 8976 section 3.3.1).

    Every record of the zone (glue and occluded data included) in canonical form and DNSSEC
    canonical order, each distinct RR once, except the apex ZONEMD RRset and the apex RRSIGs
    covering ZONEMD.
    """
    origin = zone.origin
    name_keys: dict[bytes, tuple[bytes, ...]] = {}
    entries = {}
    for record in zone.records:
        owner, rdtype, rdclass, ttl, rdata = record
        if owner == origin and (
            rdtype == TYPE_ZONEMD or (rdtype == TYPE_RRSIG and rdata[:2] == b"\x00\x3f")
        ):
            continue
        crdata = canonical_rdata(rdtype, rdata)
        identity = (owner, rdtype, rdclass, crdata)
        if identity in entries:
            continue
        name_key = name_keys.get(owner)
        if name_key is None:
            name_key = name_keys[owner] = canonical_name_key(owner)
        entries[identity] = (name_key, rdtype, crdata, owner + struct.pack(">HHIH", rdtype, rdclass, ttl, len(crdata)))
    ordered = sorted(entries.values(), key=lambda e: (e[0], e[1], e[2]))
    return b"".join(e[3] + e[2] for e in ordered)
