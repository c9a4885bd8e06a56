"""Trust anchors: the keys a zone's DNSKEY RRset must be signed with before anything in it counts.

Three file formats are read, the ones an operator is likely to have at hand: DS records or
DNSKEY records in master-file syntax (``root.ds``, ``root.key``, unbound's auto-trust-anchor
file) and IANA's ``root-anchors.xml`` (RFC 9718), whose validity windows are honoured against
the validation time rather than the wall clock, so that an old zone can be checked at its time.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import importlib.resources
import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zonefile

from imrs.zone.records import TYPE_DNSKEY, TYPE_DS, name_to_text

#: DS digest types this module can compute (RFC 4034, RFC 4509, RFC 6605).
DS_DIGESTS = {1: hashlib.sha1, 2: hashlib.sha256, 4: hashlib.sha384}
DS_DIGEST_NAMES = {1: "SHA-1", 2: "SHA-256", 4: "SHA-384"}

FLAG_ZONE = 0x0100
FLAG_REVOKE = 0x0080
FLAG_SEP = 0x0001


class AnchorError(Exception):
    """A trust anchor file could not be read or makes no sense."""


# --- DNSKEY helpers (shared with verify.py) ----------------------------------------------------

def key_tag(dnskey_rdata: bytes) -> int:
    """The key tag of a DNSKEY (RFC 4034 appendix B; algorithm 1 is not supported anywhere)."""
    total = 0
    for i in range(0, len(dnskey_rdata) - 1, 2):
        total += (dnskey_rdata[i] << 8) | dnskey_rdata[i + 1]
    if len(dnskey_rdata) % 2:
        total += dnskey_rdata[-1] << 8
    total += (total >> 16) & 0xFFFF
    return total & 0xFFFF


def ds_digest(owner: bytes, dnskey_rdata: bytes, digest_type: int) -> bytes | None:
    """The DS digest of a DNSKEY (RFC 4034 section 5.1.4), None for an unknown digest type."""
    hasher = DS_DIGESTS.get(digest_type)
    if hasher is None:
        return None
    return hasher(owner.lower() + dnskey_rdata).digest()


# --- the anchor ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnchorKey:
    """One trusted key, given either as a DS (digest) or as the DNSKEY itself."""

    owner: bytes  # wire format, lowercased
    key_tag: int
    algorithm: int
    digest_type: int | None = None  # set for a DS
    digest: bytes | None = None  # set for a DS
    dnskey: bytes | None = None  # DNSKEY RDATA, set for a DNSKEY anchor
    valid_from: float | None = None  # seconds since the epoch (root-anchors.xml windows)
    valid_until: float | None = None

    def active(self, now: float) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until

    def matches(self, owner: bytes, dnskey_rdata: bytes) -> bool:
        """Whether the DNSKEY with this RDATA at ``owner`` is this trusted key."""
        if owner != self.owner or len(dnskey_rdata) < 4 or dnskey_rdata[3] != self.algorithm:
            return False
        if self.dnskey is not None:
            # Flags may differ (SEP bit, an added REVOKE is checked by the caller); the key may not.
            return dnskey_rdata[2:] == self.dnskey[2:]
        if key_tag(dnskey_rdata) != self.key_tag:
            return False
        return self.digest is not None and ds_digest(owner, dnskey_rdata, self.digest_type or 0) == self.digest

    def describe(self) -> str:
        kind = f"DS {DS_DIGEST_NAMES.get(self.digest_type or 0, self.digest_type)}" if self.dnskey is None else "DNSKEY"
        return f"{self.key_tag}/{self.algorithm} ({kind})"


@dataclass(frozen=True)
class TrustAnchor:
    """The trusted keys of one zone (normally the root), read from ``source``."""

    zone: bytes  # wire format, lowercased
    keys: tuple[AnchorKey, ...]
    source: str = "<memory>"

    @property
    def zone_text(self) -> str:
        return name_to_text(self.zone)

    def active_keys(self, now: float | None = None) -> tuple[AnchorKey, ...]:
        """The keys whose validity window (if any) contains ``now``."""
        at = time.time() if now is None else now
        usable = [k for k in self.keys if k.active(at)]
        # An anchor of an unsupported digest type can never match; it is skipped, not fatal.
        return tuple(k for k in usable if k.dnskey is not None or k.digest_type in DS_DIGESTS)

    def match(self, owner: bytes, dnskey_rdata: bytes, now: float | None = None) -> AnchorKey | None:
        """The active anchor key this DNSKEY matches, if any."""
        for key in self.active_keys(now):
            if key.matches(owner, dnskey_rdata):
                return key
        return None

    def describe(self, now: float | None = None) -> str:
        keys = self.active_keys(now)
        return ", ".join(k.describe() for k in keys) if keys else "no key valid at this time"


# --- loading -----------------------------------------------------------------------------------

def load_trust_anchor(path: str | os.PathLike) -> TrustAnchor:
    """Read a DS file, a DNSKEY file or a root-anchors.xml; raises AnchorError."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise AnchorError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise AnchorError(f"{source}: is a directory, not a trust anchor file") from None
    except OSError as exc:
        raise AnchorError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise AnchorError(f"{source}: not UTF-8 text") from None
    if text.lstrip().startswith("<"):
        return parse_root_anchors_xml(text, source)
    return parse_anchor_records(text, source)


def default_root_anchor() -> TrustAnchor:
    """IANA's root trust anchor as shipped inside the package (KSK-2017, KSK-2024)."""
    text = importlib.resources.files("imrs").joinpath("data/root-anchors.xml").read_text("utf-8")
    return parse_root_anchors_xml(text, "packaged root-anchors.xml")


def parse_anchor_records(text: str, source: str = "<memory>") -> TrustAnchor:
    """DS and/or DNSKEY records in master-file syntax, all for one owner."""
    try:
        rrsets = dns.zonefile.read_rrsets(text, rdclass=None, default_ttl=0, relativize=False)
    except dns.exception.DNSException as exc:
        message = str(exc).replace("<input>", source)
        if not message.startswith(source):
            message = f"{source}: {message}"
        raise AnchorError(f"{message} (expected DS or DNSKEY records, or root-anchors.xml)") from None
    keys: list[AnchorKey] = []
    for rrset in rrsets:
        owner = rrset.name.to_wire().lower()
        if rrset.rdclass != dns.rdataclass.IN:
            raise AnchorError(f"{source}: {rrset.name} {dns.rdataclass.to_text(rrset.rdclass)}: only class IN anchors")
        for rd in rrset:
            if rrset.rdtype == TYPE_DS:
                keys.append(AnchorKey(owner, rd.key_tag, int(rd.algorithm), int(rd.digest_type), bytes(rd.digest)))
            elif rrset.rdtype == TYPE_DNSKEY:
                rdata = rd.to_wire()
                keys.append(AnchorKey(owner, key_tag(rdata), int(rd.algorithm), dnskey=rdata))
            else:
                raise AnchorError(
                    f"{source}: {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: "
                    "a trust anchor file holds DS or DNSKEY records only"
                )
    return _anchor_from_keys(keys, source)


def _anchor_from_keys(keys: list[AnchorKey], source: str) -> TrustAnchor:
    if not keys:
        raise AnchorError(f"{source}: no DS or DNSKEY record in it")
    owners = {k.owner for k in keys}
    if len(owners) > 1:
        names = ", ".join(sorted(name_to_text(o) for o in owners))
        raise AnchorError(f"{source}: anchors for more than one zone ({names})")
    return TrustAnchor(owners.pop(), tuple(keys), source)


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _xml_time(text: str, where: str) -> float:
    match = _RFC3339.match(text.strip())
    if not match:
        raise AnchorError(f"{where}: {text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    zone = match.group(7)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    try:
        return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    except (ValueError, OverflowError):
        raise AnchorError(f"{where}: {text!r} is not a valid date") from None


def _xml_field(element: ET.Element, tag: str, where: str) -> str:
    child = element.find(tag)
    if child is None or not (child.text or "").strip():
        raise AnchorError(f"{where}: no <{tag}>")
    return "".join((child.text or "").split())


def _xml_int(element: ET.Element, tag: str, where: str, limit: int) -> int:
    text = _xml_field(element, tag, where)
    if not text.isdigit() or int(text) > limit:
        raise AnchorError(f"{where}: <{tag}> {text!r} is not a number up to {limit}")
    return int(text)


def parse_root_anchors_xml(text: str, source: str = "<memory>") -> TrustAnchor:
    """IANA's trust anchor XML (RFC 9718): one KeyDigest per key, with its validity window.

    When a KeyDigest also carries the public key and flags, they must hash to its digest:
    a file that contradicts itself is refused rather than half used.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise AnchorError(f"{source}: not well-formed XML: {exc}") from None
    if root.tag != "TrustAnchor":
        raise AnchorError(f"{source}: root element is <{root.tag}>, expected <TrustAnchor>")
    zone_text = _xml_field(root, "Zone", source)
    try:
        owner = dns.name.from_text(zone_text).to_wire().lower()
    except dns.exception.DNSException as exc:
        raise AnchorError(f"{source}: <Zone> {zone_text!r}: {exc}") from None
    keys: list[AnchorKey] = []
    for element in root.findall("KeyDigest"):
        where = f"{source}: KeyDigest {element.get('id', '?')}"
        tag = _xml_int(element, "KeyTag", where, 0xFFFF)
        algorithm = _xml_int(element, "Algorithm", where, 0xFF)
        digest_type = _xml_int(element, "DigestType", where, 0xFF)
        try:
            digest = bytes.fromhex(_xml_field(element, "Digest", where))
        except ValueError:
            raise AnchorError(f"{where}: <Digest> is not hexadecimal") from None
        valid_from = _xml_time(element.get("validFrom", ""), where) if element.get("validFrom") else None
        valid_until = _xml_time(element.get("validUntil", ""), where) if element.get("validUntil") else None
        if element.find("PublicKey") is not None:
            _check_public_key(element, owner, tag, algorithm, digest_type, digest, where)
        keys.append(AnchorKey(owner, tag, algorithm, digest_type, digest, None, valid_from, valid_until))
    return _anchor_from_keys(keys, source)


def _check_public_key(
    element: ET.Element, owner: bytes, tag: int, algorithm: int, digest_type: int, digest: bytes, where: str
) -> None:
    flags = _xml_int(element, "Flags", where, 0xFFFF)
    try:
        public_key = base64.b64decode(_xml_field(element, "PublicKey", where), validate=True)
    except (binascii.Error, ValueError):
        raise AnchorError(f"{where}: <PublicKey> is not base64") from None
    rdata = flags.to_bytes(2, "big") + bytes([3, algorithm]) + public_key
    if key_tag(rdata) != tag:
        raise AnchorError(f"{where}: <PublicKey> has key tag {key_tag(rdata)}, not {tag}")
    computed = ds_digest(owner, rdata, digest_type)
    if computed is not None and computed != digest:
        raise AnchorError(f"{where}: <PublicKey> does not hash to <Digest>")
