"""Zone verification: the four test-root versions and the authentic 2017 root pass; every kind
of tampering is refused by the check that should catch it, and the verdicts agree with
dnspython's own ZONEMD and DNSSEC code.  Small zones signed here with every supported
algorithm cover what the root zone does not use (ECDSA, EdDSA, wildcards, mixed-case RDATA).
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone
import dns.zonetypes
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from imrs.zone.anchor import (
    AnchorKey,
    TrustAnchor,
    default_root_anchor,
    key_tag,
    load_trust_anchor,
)
from imrs.zone.parse import load_zone_records
from imrs.zone.records import (
    TYPE_DS,
    TYPE_RRSIG,
    TYPE_SOA,
    TYPE_ZONEMD,
    Record,
    ZoneRecords,
    name_from_text,
    records_from_dnspython_zone,
    records_to_dnspython_zone,
    rrsig_type_covered,
)
from imrs.zone.verify import VerificationError, serial_gt, verify_zone, zonemd_input

SHARED = Path(__file__).resolve().parents[2] / "shared" / "zones"
TESTROOT = SHARED / "testroot"
AUTHENTIC = SHARED / "authentic"
VERSIONS = ["2026082101", "2026082102", "2026082200", "2026082201"]
TYPE_A = 1


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


AUTHENTIC_TIME = utc(2017, 8, 21, 12)
TESTROOT_TIME = utc(2026, 8, 22, 12)


@pytest.fixture(scope="module")
def testroot() -> ZoneRecords:
    return load_zone_records(TESTROOT / "root-2026082201.zone")


@pytest.fixture(scope="module")
def test_anchor() -> TrustAnchor:
    return load_trust_anchor(TESTROOT / "root.ds")


@pytest.fixture(scope="module")
def authentic() -> ZoneRecords:
    return load_zone_records(AUTHENTIC / "root-2017082100.zone")


@pytest.fixture(scope="module")
def authentic_anchor() -> TrustAnchor:
    return load_trust_anchor(AUTHENTIC / "root.ds")


# --- helpers to tamper with a zone ---------------------------------------------------------

def index_of(zone: ZoneRecords, owner: str, rdtype: int, covers: int | None = None) -> int:
    wire = name_from_text(owner)
    for i, record in enumerate(zone.records):
        if record.owner == wire and record.rdtype == rdtype and (covers is None or rrsig_type_covered(record.rdata) == covers):
            return i
    raise LookupError(f"{owner} {rdtype} not in zone")


def with_record(zone: ZoneRecords, index: int, record: Record | None) -> ZoneRecords:
    records = list(zone.records)
    if record is None:
        del records[index]
    else:
        records[index] = record
    return ZoneRecords(zone.origin, tuple(records), zone.source)


def flip_last_byte(zone: ZoneRecords, index: int, position: int = -1) -> ZoneRecords:
    """One bit of one record's RDATA changed (by default in its last octet)."""
    record = zone.records[index]
    rdata = bytearray(record.rdata)
    rdata[position] ^= 0x01
    return with_record(zone, index, record._replace(rdata=bytes(rdata)))


def rejected(zone: ZoneRecords, anchor: TrustAnchor | None, **kw) -> VerificationError:
    kw.setdefault("now", TESTROOT_TIME)
    with pytest.raises(VerificationError) as info:
        verify_zone(zone, anchor, **kw)
    return info.value


# --- authentic versions pass ---------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_testroot_versions_pass(version, test_anchor):
    zone = load_zone_records(TESTROOT / f"root-{version}.zone")
    report = verify_zone(zone, test_anchor, now=TESTROOT_TIME, require_zonemd=True)
    assert report.serial == int(version)
    assert report.records == len(zone.records) > 20000
    assert report.signatures == sum(1 for r in zone.records if r.rdtype == TYPE_RRSIG)
    assert report.zonemd == "SHA-384"
    assert report.anchored_keys == (13631,)
    assert report.signing_keys == (13631, 60546)
    assert report.earliest_expiration == utc(2036, 1, 1)
    summary = report.summary()
    assert summary.startswith(f"serial {version}, ") and "ZONEMD SHA-384 verified" in summary
    assert "\n" not in summary


def test_testroot_passes_with_a_dnskey_anchor(testroot):
    report = verify_zone(testroot, load_trust_anchor(TESTROOT / "root.key"), now=TESTROOT_TIME)
    assert report.anchored_keys == (13631,)


def test_authentic_2017_root_passes_at_its_time(authentic, authentic_anchor):
    report = verify_zone(authentic, authentic_anchor, now=AUTHENTIC_TIME)
    assert report.serial == 2017082100
    assert report.zonemd is None
    assert report.anchored_keys == (19036,)
    assert report.signing_keys == (15768, 19036)
    assert report.signatures == sum(1 for r in authentic.records if r.rdtype == TYPE_RRSIG)
    # The packaged IANA anchor still lists KSK-2010 as valid until 2019.
    assert verify_zone(authentic, default_root_anchor(), now=AUTHENTIC_TIME).anchored_keys == (19036,)


def test_full_root_verification_is_fast(testroot, test_anchor):
    """Goal: well under a second for the root zone (about 0.3 s measured on a shared 2-core box)."""
    best = min(verify_zone(testroot, test_anchor, now=TESTROOT_TIME).elapsed for _ in range(2))
    assert best < 2.0


def test_without_anchor_dnssec_is_skipped(testroot):
    report = verify_zone(testroot, None)
    assert not report.dnssec and report.signatures == 0 and report.zonemd == "SHA-384"
    assert "DNSSEC not checked" in report.summary()


# --- DNSSEC failures -------------------------------------------------------------------------

def test_tampered_ds_is_caught_by_its_signature(testroot, test_anchor):
    error = rejected(flip_last_byte(testroot, index_of(testroot, "abbvie.", TYPE_DS)), test_anchor)
    assert error.check == "dnssec"
    assert str(error) == "RRSIG for abbvie. DS (key 60546): signature does not verify"


def test_tampered_ds_in_the_authentic_zone(authentic, authentic_anchor):
    error = rejected(flip_last_byte(authentic, index_of(authentic, "com.", TYPE_DS)), authentic_anchor, now=AUTHENTIC_TIME)
    assert error.check == "dnssec" and "com. DS (key 15768): signature does not verify" in str(error)


def test_tampered_rrsig(testroot, test_anchor):
    error = rejected(flip_last_byte(testroot, index_of(testroot, "org.", TYPE_RRSIG, covers=47)), test_anchor)
    assert error.check == "dnssec" and str(error) == "RRSIG for org. NSEC (key 60546): signature does not verify"


def test_tampered_dnskey(testroot, test_anchor):
    error = rejected(flip_last_byte(testroot, index_of(testroot, ".", 48)), test_anchor)
    assert error.check == "dnssec" and ". DNSKEY" in str(error)


def test_removed_rrsig(testroot, test_anchor):
    error = rejected(with_record(testroot, index_of(testroot, "net.", TYPE_RRSIG, covers=TYPE_DS), None), test_anchor)
    assert error.check == "dnssec" and str(error).startswith("net. DS: no RRSIG")


def test_rrsig_without_its_rrset(testroot, test_anchor):
    error = rejected(with_record(testroot, index_of(testroot, "net.", TYPE_DS), None), test_anchor)
    assert error.check == "dnssec" and "net. DS" in str(error)


def test_expired_signatures(testroot, test_anchor):
    error = rejected(testroot, test_anchor, now=utc(2036, 1, 1, 0, 0, 1))
    assert error.check == "dnssec" and "expired 2036-01-01 00:00:00 UTC" in str(error)


def test_not_yet_valid_signatures(testroot, test_anchor):
    error = rejected(testroot, test_anchor, now=utc(2025, 12, 31))
    assert error.check == "dnssec" and "not valid before 2026-01-01" in str(error)


def test_authentic_zone_rejected_today(authentic, authentic_anchor):
    error = rejected(authentic, authentic_anchor, now=time.time())
    assert error.check == "dnssec" and "expired 2017-09-10" in str(error)


def test_signature_margin(testroot, test_anchor):
    verify_zone(testroot, test_anchor, now=utc(2035, 12, 1), signature_margin=86400)
    error = rejected(testroot, test_anchor, now=utc(2035, 12, 31), signature_margin=2 * 86400)
    assert error.check == "dnssec" and "within the required margin of 172800 s" in str(error)


def test_wrong_anchor(testroot):
    error = rejected(testroot, default_root_anchor())
    assert error.check == "dnssec"
    assert "no key matches the trust anchor" in str(error) and "20326" in str(error) and "13631" in str(error)


def test_anchor_outside_its_window(authentic):
    # At 2020 the packaged anchor no longer trusts 19036, the only key signing the 2017 DNSKEY RRset.
    error = rejected(authentic, default_root_anchor(), now=utc(2020, 1, 1))
    assert error.check == "dnssec"


def test_anchor_for_another_zone(testroot, test_anchor):
    other = TrustAnchor(name_from_text("example."), test_anchor.keys)
    error = rejected(testroot, other)
    assert error.check == "dnssec" and "trust anchor is for example." in str(error)


# --- ZONEMD ------------------------------------------------------------------------------------

def test_tampered_glue_is_caught_by_zonemd(testroot, test_anchor):
    zone = flip_last_byte(testroot, index_of(testroot, "a.gtld-servers.net.", TYPE_A))
    error = rejected(zone, test_anchor)
    assert error.check == "zonemd" and "SHA-384: digest does not match" in str(error)


def test_tampered_glue_passes_where_nothing_covers_it(authentic, authentic_anchor):
    """Glue is not signed: without ZONEMD (the 2017 zone has none) nothing can catch it."""
    zone = flip_last_byte(authentic, index_of(authentic, "a.root-servers.net.", TYPE_A))
    verify_zone(zone, authentic_anchor, now=AUTHENTIC_TIME)


def test_tampered_zonemd_digest(testroot, test_anchor):
    zone = flip_last_byte(testroot, index_of(testroot, ".", TYPE_ZONEMD))
    assert rejected(zone, None).check == "zonemd"
    error = rejected(zone, test_anchor)  # its signature fails first
    assert error.check == "dnssec" and "RRSIG for . ZONEMD" in str(error)


def zonemd_changed(zone: ZoneRecords, rdata_edit) -> ZoneRecords:
    i = index_of(zone, ".", TYPE_ZONEMD)
    return with_record(zone, i, zone.records[i]._replace(rdata=rdata_edit(zone.records[i].rdata)))


def test_zonemd_serial_must_match(testroot):
    zone = zonemd_changed(testroot, lambda rd: (int.from_bytes(rd[:4], "big") - 1).to_bytes(4, "big") + rd[4:])
    error = rejected(zone, None)
    assert error.check == "zonemd" and "serial 2026082200 is not the SOA serial 2026082201" in str(error)


def test_unsupported_zonemd_is_ignored_unless_required(testroot):
    zone = zonemd_changed(testroot, lambda rd: rd[:5] + b"\xf0" + rd[6:])  # hash algorithm 240
    assert verify_zone(zone, None).zonemd is None
    error = rejected(zone, None, require_zonemd=True)
    assert error.check == "zonemd" and "no ZONEMD record with a supported scheme" in str(error)


def test_duplicate_zonemd_of_one_algorithm_fails(testroot):
    i = index_of(testroot, ".", TYPE_ZONEMD)
    twin = testroot.records[i]._replace(rdata=testroot.records[i].rdata[:-1] + b"\x00")
    zone = ZoneRecords(testroot.origin, testroot.records + (twin,))
    error = rejected(zone, None)
    assert error.check == "zonemd" and "more than one ZONEMD" in str(error)


def test_zonemd_required(authentic, authentic_anchor):
    error = rejected(authentic, authentic_anchor, now=AUTHENTIC_TIME, require_zonemd=True)
    assert error.check == "zonemd" and "one is required" in str(error)


def test_duplicate_records_count_once(testroot, test_anchor):
    i = index_of(testroot, "com.", TYPE_DS)
    zone = ZoneRecords(testroot.origin, testroot.records + (testroot.records[i],))
    assert verify_zone(zone, test_anchor, now=TESTROOT_TIME, require_zonemd=True).zonemd == "SHA-384"


def test_zonemd_agrees_with_dnspython(testroot):
    """Same verdicts as dns.zone.Zone.verify_digest, on the real zone and a tampered one."""
    records_to_dnspython_zone(testroot).verify_digest()
    tampered = flip_last_byte(testroot, index_of(testroot, "a.gtld-servers.net.", TYPE_A))
    with pytest.raises(dns.zone.DigestVerificationFailure):
        records_to_dnspython_zone(tampered).verify_digest()
    assert rejected(tampered, None).check == "zonemd"


# --- sanity ------------------------------------------------------------------------------------

def test_out_of_zone_data_below_a_delegation(testroot, test_anchor):
    stray = Record(name_from_text("www.example.com."), 16, 1, 3600, b"\x05hello")
    error = rejected(ZoneRecords(testroot.origin, testroot.records + (stray,)), test_anchor)
    assert error.check == "sanity"
    assert str(error) == "www.example.com. TXT: out of zone (below the delegation to com., and not glue)"
    at_cut = Record(name_from_text("com."), 16, 1, 3600, b"\x05hello")
    error = rejected(ZoneRecords(testroot.origin, testroot.records + (at_cut,)), test_anchor)
    assert error.check == "sanity" and str(error).startswith("com. TXT: out of zone")


def test_orphan_glue_is_left_to_zonemd(testroot, test_anchor):
    """An address record below a delegation passes as glue even if no NS names it; ZONEMD
    (when the zone has one) still refuses it, being data the publisher did not sign off."""
    stray = Record(name_from_text("www.example.com."), TYPE_A, 1, 3600, bytes([192, 0, 2, 1]))
    error = rejected(ZoneRecords(testroot.origin, testroot.records + (stray,)), test_anchor)
    assert error.check == "zonemd"


def test_out_of_zone_owner(testroot):
    origin = name_from_text("example.")
    soa = testroot.soa._replace(owner=origin)
    ns = Record(origin, 2, 1, 3600, name_from_text("ns.example."))
    stray = Record(name_from_text("www.example.org."), TYPE_A, 1, 3600, bytes(4))
    error = rejected(ZoneRecords(origin, (soa, ns, stray)), None)
    assert error.check == "sanity" and str(error) == "www.example.org. A: out of zone (not under example.)"
    verify_zone(ZoneRecords(origin, (soa, ns)), None)


def test_other_class(testroot):
    stray = Record(name_from_text("version.bind."), 16, 3, 0, b"\x01x")
    error = rejected(ZoneRecords(testroot.origin, testroot.records + (stray,)), None)
    assert error.check == "sanity" and "class 3" in str(error)


def test_soa_exactly_once(testroot):
    i = index_of(testroot, ".", TYPE_SOA)
    assert "no SOA" in str(rejected(with_record(testroot, i, None), None))
    other = testroot.records[i]._replace(rdata=testroot.records[i].rdata[:-1] + b"\x00")
    error = rejected(ZoneRecords(testroot.origin, testroot.records + (other,)), None)
    assert error.check == "sanity" and "2 different SOA records" in str(error)


def test_serial_must_move_forward(testroot, test_anchor):
    verify_zone(testroot, test_anchor, now=TESTROOT_TIME, previous_serial=2026082200)
    for previous in (2026082201, 2026082202, 2026082201 + 2**31 - 1):
        error = rejected(testroot, test_anchor, previous_serial=previous)
        assert error.check == "sanity" and f"not newer than the current {previous}" in str(error)
    # Wrapped around: 2026082201 is newer than a serial just below 2**32 (RFC 1982).
    verify_zone(testroot, None, previous_serial=2**32 - 5)


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        (1, 0, True), (0, 1, False), (5, 5, False),
        (0, 2**32 - 1, True),  # wraps
        (2**32 - 1, 0, False),
        (100, 2**32 - 100, True),
        (2**31 - 1, 0, True), (2**31, 0, False), (2**31 + 1, 0, False),  # 2**31 apart: undefined, refused
        (0, 2**31 + 1, True), (0, 2**31, False),
        (2026082201, 2026082102, True), (2026082102, 2026082201, False),
    ],
)
def test_serial_gt(a, b, newer):
    assert serial_gt(a, b) is newer


# --- small zones signed here: every algorithm, wildcards, mixed case -----------------------------

SMALL_ZONE = """$TTL 3600
@            IN SOA  ns1 hostmaster 2024010101 3600 900 604800 300
@            IN NS   ns1
@            IN NS   ns.Other.Test.
@            IN ZONEMD 2024010101 1 1 000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
ns1          IN A    192.0.2.1
*            IN TXT  "wildcard"
www          IN CNAME Host.Example.
host         IN MX   10 Mail.Example.
host         IN A    192.0.2.2
host         IN A    192.0.2.3
mail         IN AAAA 2001:db8::25
sub          IN NS   ns.sub
sub          IN DS   12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.sub       IN A    192.0.2.53
"""

INCEPTION = utc(2024, 1, 1)
EXPIRATION = utc(2024, 3, 1)
SMALL_TIME = utc(2024, 2, 1)


def _private_key(algorithm: int):
    if algorithm == 8:
        return rsa.generate_private_key(65537, 2048)
    if algorithm == 13:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == 14:
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == 15:
        return ed25519.Ed25519PrivateKey.generate()
    return ed448.Ed448PrivateKey.generate()


def signed_small_zone(algorithm: int) -> tuple[ZoneRecords, TrustAnchor]:
    """SMALL_ZONE signed with one key of ``algorithm`` (NSEC), ZONEMD computed afterwards."""
    origin = dns.name.from_text("example.")
    zone = dns.zone.from_text(SMALL_ZONE, origin, relativize=False)
    private = _private_key(algorithm)
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=257)
    dns.dnssec.sign_zone(zone, keys=[(private, dnskey)], inception=INCEPTION, expiration=EXPIRATION)
    digest = zone.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384)
    node = zone.find_node(origin)
    node.replace_rdataset(dns.rdataset.from_rdata(300, digest))
    rrsig = dns.dnssec.sign(
        (origin, node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.ZONEMD)),
        private, origin, dnskey, inception=INCEPTION, expiration=EXPIRATION,
    )
    node.replace_rdataset(dns.rdataset.from_rdata(300, rrsig))
    zone.verify_digest()
    rdata = dnskey.to_wire()
    anchor = TrustAnchor(origin.to_wire(), (AnchorKey(origin.to_wire(), key_tag(rdata), algorithm, dnskey=rdata),))
    return records_from_dnspython_zone(zone), anchor


@pytest.mark.parametrize("algorithm", [8, 13, 14, 15, 16])
def test_small_zone_every_algorithm(algorithm):
    zone, anchor = signed_small_zone(algorithm)
    report = verify_zone(zone, anchor, now=SMALL_TIME, require_zonemd=True)
    assert report.zonemd == "SHA-384" and report.signatures > 10
    # The wildcard's RRSIG has 1 label for a 2-label owner: tampering with it must still be seen.
    error = rejected(flip_last_byte(zone, index_of(zone, "*.example.", 16)), anchor, now=SMALL_TIME)
    assert error.check == "dnssec" and "*.example. TXT" in str(error)
    error = rejected(flip_last_byte(zone, index_of(zone, "*.example.", TYPE_RRSIG)), anchor, now=SMALL_TIME)
    assert error.check == "dnssec"


def test_small_zone_delegation_and_case():
    zone, anchor = signed_small_zone(13)
    # Glue and the delegation NS are unsigned; the DS at the cut is signed.
    glue = index_of(zone, "ns.sub.example.", TYPE_A)
    assert rejected(flip_last_byte(zone, glue), anchor, now=SMALL_TIME).check == "zonemd"
    with pytest.raises(LookupError):
        index_of(zone, "sub.example.", TYPE_RRSIG, covers=2)
    index_of(zone, "sub.example.", TYPE_RRSIG, covers=TYPE_DS)
    # RDATA names keep their case in the records, and are lowercased for signatures and digest.
    mx = zone.records[index_of(zone, "host.example.", 15)]
    assert b"Mail" in mx.rdata
    assert b"Mail" not in zonemd_input(zone) and b"mail" in zonemd_input(zone)


def dnspython_rrset(zone: ZoneRecords, owner: str, rdtype: int, covers: int = 0) -> dns.rrset.RRset:
    wire = name_from_text(owner)
    records = [
        r for r in zone.records
        if r.owner == wire and r.rdtype == rdtype and (rdtype != TYPE_RRSIG or rrsig_type_covered(r.rdata) == covers)
    ]
    rdatas = [dns.rdata.from_wire(1, rdtype, r.rdata, 0, len(r.rdata)) for r in records]
    return dns.rrset.from_rdata_list(dns.name.from_text(owner), records[0].ttl, rdatas)


@pytest.mark.parametrize(
    ("owner", "rdtype"),
    [(".", 6), (".", 48), (".", 2), (".", 63), ("abbvie.", 43), ("org.", 47), ("com.", 43)],
)
def test_signatures_agree_with_dnspython(testroot, test_anchor, owner, rdtype):
    """dns.dnssec.validate gives the same verdict as verify_zone, before and after one byte changes."""
    keys = {dns.name.root: dnspython_rrset(testroot, ".", 48)}
    # An NS name ends in the root label, which must stay zero: change a letter instead.
    tampered = flip_last_byte(testroot, index_of(testroot, owner, rdtype), 1 if rdtype == 2 else -1)
    for zone, valid in ((testroot, True), (tampered, False)):
        rrset = dnspython_rrset(zone, owner, rdtype)
        sigs = dnspython_rrset(zone, owner, TYPE_RRSIG, rdtype)
        if valid:
            dns.dnssec.validate(rrset, sigs, keys, now=TESTROOT_TIME)
            verify_zone(zone, test_anchor, now=TESTROOT_TIME)
        else:
            with pytest.raises(dns.dnssec.ValidationFailure):
                dns.dnssec.validate(rrset, sigs, {dns.name.root: dnspython_rrset(zone, ".", 48)}, now=TESTROOT_TIME)
            error = rejected(zone, test_anchor)
            assert error.check == "dnssec" and dns.rdatatype.to_text(rdtype) in str(error)
