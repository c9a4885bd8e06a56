"""Trust anchors: the packaged IANA root-anchors.xml, DS and DNSKEY files, validity windows,
and clear errors for files that are not anchors."""

from __future__ import annotations

import calendar
import tomllib
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from imrs.zone.anchor import (
    AnchorError,
    default_root_anchor,
    ds_digest,
    key_tag,
    load_trust_anchor,
    parse_root_anchors_xml,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "zones"
TESTROOT = SHARED / "testroot"
AUTHENTIC = SHARED / "authentic"
ROOT = b"\x00"

KSK_2017_DIGEST = "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
KSK_2024_DIGEST = "683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16"
KSK_2010_DIGEST = "49AAC11D7B6F6446702E54A1607371607A1A41855200FD2CE1CDDE32F24E8FB5"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def dnskey_rdata(line: str) -> bytes:
    """RDATA of a presentation-format DNSKEY (flags protocol algorithm key)."""
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, line).to_wire()


def apex_dnskeys(zone_file: Path) -> list[bytes]:
    keys = []
    with open(zone_file) as fh:
        for _number, line in zip(range(60), fh):  # the apex comes first in these files
            fields = line.split()
            if len(fields) > 4 and fields[0] == "." and fields[3] == "DNSKEY":
                keys.append(dnskey_rdata(" ".join(fields[4:])))
    return keys


def test_packaged_anchor_is_ianas():
    anchor = default_root_anchor()
    assert anchor.zone == ROOT
    got = {(k.key_tag, k.algorithm, k.digest_type, k.digest.hex().upper()) for k in anchor.keys}
    assert got == {
        (19036, 8, 2, KSK_2010_DIGEST),
        (20326, 8, 2, KSK_2017_DIGEST),
        (38696, 8, 2, KSK_2024_DIGEST),
    }


def test_packaged_digest_agrees_with_the_shared_authentic_ds():
    shared = load_trust_anchor(AUTHENTIC / "root.ds")
    packaged = {k.key_tag: k.digest for k in default_root_anchor().keys}
    for key in shared.keys:
        if key.key_tag in packaged:
            assert packaged[key.key_tag] == key.digest


def test_packaged_anchor_windows():
    anchor = default_root_anchor()
    tags = lambda t: sorted(k.key_tag for k in anchor.active_keys(t))
    assert tags(utc(2009, 1, 1)) == []
    assert tags(utc(2017, 8, 21, 12, 0, 0)) == [19036, 20326]
    assert tags(utc(2019, 1, 11, 0, 0, 0)) == [20326]  # validUntil is exclusive
    assert tags(utc(2026, 8, 22)) == [20326, 38696]


def test_packaged_anchor_matches_the_2017_ksks():
    anchor = default_root_anchor()
    keys = apex_dnskeys(AUTHENTIC / "root-2017082100.zone")
    at = utc(2017, 8, 21, 12, 0, 0)
    matched = sorted(anchor.match(ROOT, k, at).key_tag for k in keys if anchor.match(ROOT, k, at))
    assert matched == [19036, 20326]
    # 19036 expired from the anchor in 2019: in 2026 only 20326 of the 2017 keys is trusted.
    later = sorted(anchor.match(ROOT, k, utc(2026, 1, 1)).key_tag for k in keys if anchor.match(ROOT, k, utc(2026, 1, 1)))
    assert later == [20326]


def test_key_tag_and_ds_digest_agree_with_dnspython():
    for rdata in apex_dnskeys(AUTHENTIC / "root-2017082100.zone") + apex_dnskeys(TESTROOT / "root-2026082201.zone"):
        rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DNSKEY, rdata, 0, len(rdata))
        assert key_tag(rdata) == dns.dnssec.key_id(rd)
        for digest_type, name in ((1, "SHA1"), (2, "SHA256"), (4, "SHA384")):
            assert ds_digest(ROOT, rdata, digest_type) == dns.dnssec.make_ds(dns.name.root, rd, name, policy=dns.dnssec.allow_all_policy).digest
    assert ds_digest(ROOT, b"\x01\x01\x03\x08abc", 3) is None


def test_ds_file():
    anchor = load_trust_anchor(TESTROOT / "root.ds")
    assert anchor.zone == ROOT and [k.key_tag for k in anchor.keys] == [13631]
    ksk, zsk = apex_dnskeys(TESTROOT / "root-2026082201.zone")[:2]
    assert anchor.match(ROOT, ksk).key_tag == 13631
    assert anchor.match(ROOT, zsk) is None
    assert anchor.match(b"\x03com\x00", ksk) is None  # same key, other owner: no match


def test_dnskey_file():
    anchor = load_trust_anchor(TESTROOT / "root.key")
    assert [k.key_tag for k in anchor.keys] == [13631]
    ksk, zsk = apex_dnskeys(TESTROOT / "root-2026082201.zone")[:2]
    assert anchor.match(ROOT, ksk) is not None and anchor.match(ROOT, zsk) is None
    tampered = ksk[:-1] + bytes([ksk[-1] ^ 1])
    assert anchor.match(ROOT, tampered) is None


def test_ds_file_with_several_keys_and_comments(tmp_path):
    path = tmp_path / "anchors"
    path.write_text(
        "; root anchors\n"
        f". IN DS 20326 8 2 {KSK_2017_DIGEST.lower()}\n"
        f".\t86400\tIN\tDS\t38696 8 2 ( {KSK_2024_DIGEST[:32]}\n {KSK_2024_DIGEST[32:]} ) ; comment\n"
    )
    anchor = load_trust_anchor(path)
    assert sorted(k.key_tag for k in anchor.keys) == [20326, 38696]


XML_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<TrustAnchor id="test" source="test">
<Zone>.</Zone>
<KeyDigest id="a" validFrom="{valid_from}"{until}>
<KeyTag>13631</KeyTag>
<Algorithm>8</Algorithm>
<DigestType>2</DigestType>
<Digest>{digest}</Digest>{extra}
</KeyDigest>
</TrustAnchor>
"""

TEST_DIGEST = "047dbb1cbe014b6dc4c23dcb9dda4690348ebc807275710dfe6a5dc55bc6390f"


def test_xml_window_is_honoured():
    text = XML_TEMPLATE.format(
        valid_from="2026-01-01T00:00:00+00:00", until=' validUntil="2027-01-01T00:00:00Z"', digest=TEST_DIGEST, extra=""
    )
    anchor = parse_root_anchors_xml(text)
    ksk = apex_dnskeys(TESTROOT / "root-2026082201.zone")[0]
    assert anchor.match(ROOT, ksk, utc(2026, 8, 22)) is not None
    assert anchor.match(ROOT, ksk, utc(2025, 12, 31)) is None
    assert anchor.match(ROOT, ksk, utc(2027, 1, 2)) is None
    # A time zone offset counts: 2026-01-01T02:00+02:00 is midnight UTC.
    shifted = parse_root_anchors_xml(XML_TEMPLATE.format(
        valid_from="2026-01-01T02:00:00+02:00", until="", digest=TEST_DIGEST, extra=""))
    assert shifted.keys[0].valid_from == utc(2026, 1, 1)


def test_xml_public_key_must_hash_to_the_digest():
    ksk = apex_dnskeys(TESTROOT / "root-2026082201.zone")[0]
    import base64

    good = f"\n<PublicKey>{base64.b64encode(ksk[4:]).decode()}</PublicKey>\n<Flags>257</Flags>"
    parse_root_anchors_xml(XML_TEMPLATE.format(valid_from="2026-01-01T00:00:00Z", until="", digest=TEST_DIGEST, extra=good))
    bad_digest = TEST_DIGEST[:-1] + "e"
    with pytest.raises(AnchorError, match="does not hash to <Digest>"):
        parse_root_anchors_xml(XML_TEMPLATE.format(valid_from="2026-01-01T00:00:00Z", until="", digest=bad_digest, extra=good))


KEY_DIGEST_XML = (
    '<TrustAnchor><Zone>.</Zone><KeyDigest id="x" validFrom="{valid_from}"><KeyTag>1</KeyTag>'
    "<Algorithm>8</Algorithm><DigestType>2</DigestType><Digest>{digest}</Digest></KeyDigest></TrustAnchor>"
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no DS or DNSKEY record"),
        ("hello world\n", "expected DS or DNSKEY records"),
        (". IN A 192.0.2.1\n", "DS or DNSKEY records only"),
        (f". IN DS 20326 8 2 {KSK_2017_DIGEST}\ncom. IN DS 20326 8 2 {KSK_2017_DIGEST}\n", "more than one zone"),
        ("<TrustAnchor><Zone>.</Zone>", "not well-formed XML"),
        ("<Other/>", "expected <TrustAnchor>"),
        ("<TrustAnchor><Zone>.</Zone></TrustAnchor>", "no DS or DNSKEY record"),
        (KEY_DIGEST_XML.format(valid_from="2017-02-02T00:00:00+00:00", digest="zz"), "not hexadecimal"),
        (KEY_DIGEST_XML.format(valid_from="yesterday", digest="00"), "not an RFC 3339"),
    ],
)
def test_bad_anchor_files(tmp_path, content, message):
    path = tmp_path / "anchor"
    path.write_text(content)
    with pytest.raises(AnchorError, match=message) as info:
        load_trust_anchor(path)
    assert str(path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(AnchorError, match="no such file"):
        load_trust_anchor(tmp_path / "missing")
    with pytest.raises(AnchorError, match="is a directory"):
        load_trust_anchor(tmp_path)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(AnchorError, match="not UTF-8"):
        load_trust_anchor(binary)


def test_packaged_xml_is_declared_package_data():
    """The wheel must carry root-anchors.xml, or `default_root_anchor()` fails once installed."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["imrs"]
    assert any(Path("data/root-anchors.xml").match(p) for p in patterns)
