"""The fast master-file reader (imrs.zone.fastparse) and ZoneData built from records
(imrs.zone.data.build_zone_data_from_records) give exactly what the dnspython path gives.

On the five shared root zones: the same records in the same order, and a ZoneData equal in
every part the answer engine reads.  On small synthetic files (edge cases and generated ones):
the same records or the same error.  The reference is parse.py's dnspython path, the one
every file went through before.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import dns.message
import dns.name
import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imrs.answer.engine import ZoneSet
from imrs.answer.respond import AnswerOptions, Responder
from imrs.zone.data import (
    ZoneData,
    build_zone_data,
    build_zone_data_from_records,
    direct_rdata_matches_dnspython,
    paused_gc,
)
from imrs.zone.fastparse import fast_zone_records, parse_master_text
from imrs.zone.parse import (
    EMBEDDED_ROOT,
    ZoneFileError,
    _parse_with_dnspython,
    load_zone_file,
    load_zone_records,
    parse_zone_text,
    read_zone_source,
)
from imrs.zone.records import (
    Record,
    ZoneRecords,
    records_from_dnspython_zone,
    records_to_dnspython_zone,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "zones"
ZONE_FILES = [
    SHARED / "testroot" / "root-2026082101.zone",
    SHARED / "testroot" / "root-2026082102.zone",
    SHARED / "testroot" / "root-2026082200.zone",
    SHARED / "testroot" / "root-2026082201.zone",
    SHARED / "authentic" / "root-2017082100.zone",
]


# -------------------------------------------------------------------------- helpers


def _rrset_view(rrset, text: bool = True) -> tuple:
    """Everything about an RRset an answer can depend on, rdata order included (``text``:
    also each RDATA's presentation form, which shows its attribute values)."""
    return (
        rrset.name, rrset.name.labels, rrset.rdclass, rrset.rdtype, type(rrset.rdtype), rrset.covers,
        rrset.ttl, [rd.to_wire() for rd in rrset], list(rrset),
        [rd.to_text() for rd in rrset] if text else None,
    )


def assert_same_zone_data(new: ZoneData, old: ZoneData, text_every: int = 1) -> None:
    """``text_every``: compare presentation forms at every n-th owner only (it is slow)."""
    assert new.origin == old.origin and new.origin.labels == old.origin.labels
    assert new.source == old.source
    assert list(new.nodes) == list(old.nodes)  # same owners, same order
    for index, (name, node) in enumerate(old.nodes.items()):
        mine = new.nodes[name]
        text = index % text_every == 0
        assert mine.name.labels == node.name.labels
        assert list(mine.rrsets) == list(node.rrsets), name
        assert list(mine.sigs) == list(node.sigs), name
        for rdtype, rrset in node.rrsets.items():
            assert _rrset_view(mine.rrsets[rdtype], text) == _rrset_view(rrset, text), (name, rdtype)
        for rdtype, rrset in node.sigs.items():
            assert _rrset_view(mine.sigs[rdtype], text) == _rrset_view(rrset, text), (name, rdtype)
        assert [id(r) for r in mine.all_sigs] == [id(mine.sigs[r.covers]) for r in node.all_sigs]
    for part in ("existing", "tree", "delegations", "nsec_owners", "nsec_keys"):
        assert getattr(new, part) == getattr(old, part), part
    assert dict(new.stats) == dict(old.stats)
    assert _rrset_view(new.negative_soa) == _rrset_view(old.negative_soa)
    if old.negative_soa_sigs is None:
        assert new.negative_soa_sigs is None
    else:
        assert _rrset_view(new.negative_soa_sigs) == _rrset_view(old.negative_soa_sigs)
    assert new.serial == old.serial and new.secure == old.secure


def _outcome(parse, text: str, origin: str | None = None):
    try:
        return parse(text, "t.zone", origin)
    except ZoneFileError as exc:
        return ("error", exc.file, exc.line, exc.message)


def assert_same_as_dnspython(text: str, origin: str | None = None, fast: bool | None = None) -> None:
    """parse_master_text gives dnspython's records (in order) or its error; ``fast`` says
    whether the fast reader must (True) or must not (False) have handled the text."""
    mine = _outcome(parse_master_text, text, origin)
    reference = _outcome(_parse_with_dnspython, text, origin)
    assert mine == reference
    if fast is not None:
        from imrs.zone.parse import guess_origin

        apex = origin or guess_origin(text)
        assert (apex is not None and fast_zone_records(text, "t.zone", apex) is not None) == fast
    if isinstance(reference, ZoneRecords):
        old = build_zone_data(dns.zone.from_text(text, origin=origin or reference.origin_text,
                                                 relativize=False, check_origin=True), "t.zone")
        assert_same_zone_data(build_zone_data_from_records(mine), old)


# -------------------------------------------------------------------------- the shared zones


@pytest.mark.parametrize("path", ZONE_FILES, ids=lambda p: p.name)
def test_shared_zone_same_records_and_zone_data(path):
    text = read_zone_source(str(path))
    fast = fast_zone_records(text, str(path), ".")
    assert fast is not None, "the fast reader must handle a published root zone"
    with paused_gc():
        zone = dns.zone.from_text(text, origin=".", relativize=False, filename=str(path), check_origin=True)
        old = build_zone_data(zone, str(path))
    reference = records_from_dnspython_zone(zone, str(path))
    assert fast.origin == reference.origin and fast.source == reference.source
    assert fast.records == reference.records  # same records, same order
    assert load_zone_records(path) == fast
    new = build_zone_data_from_records(fast)
    assert_same_zone_data(new, old, text_every=7)
    if path.name in ("root-2026082201.zone", "root-2017082100.zone"):  # the others are alike
        _assert_same_answers(new, old, seed=old.serial)


def _queries(zone: ZoneData, count: int, seed: int) -> list[bytes]:
    """Questions about names of the zone, names below them and names that do not exist, for
    assorted types, with and without EDNS and DO."""
    rng = random.Random(seed)
    owners = list(zone.nodes)
    types = ["A", "AAAA", "NS", "DS", "SOA", "DNSKEY", "NSEC", "RRSIG", "ANY", "TXT", "ZONEMD", "TYPE666"]
    out = []
    for _ in range(count):
        name = rng.choice(owners)
        pick = rng.random()
        if pick < 0.3:
            name = dns.name.Name((b"x%d" % rng.randrange(1000), *name.labels))
        elif pick < 0.4:
            name = dns.name.from_text(f"nx{rng.randrange(10**6)}-{rng.choice('aqz')}.")
        payload = rng.choice([None, 512, 1232, 4096])
        query = dns.message.make_query(name, rng.choice(types), use_edns=payload is not None,
                                       payload=payload or 512, want_dnssec=payload is not None and rng.random() < 0.7)
        out.append(query.to_wire())
    return out


def _assert_same_answers(new: ZoneData, old: ZoneData, seed: int) -> None:
    """Both ZoneData give byte-identical responses (the reference answer path)."""
    mine, theirs = Responder(ZoneSet([new]), AnswerOptions()), Responder(ZoneSet([old]), AnswerOptions())
    queries = _queries(old, 700, seed)
    for tcp in (False, True):
        differ = [q.hex() for q in queries if mine.respond(q, tcp) != theirs.respond(q, tcp)]
        assert not differ, f"{len(differ)} responses differ, first {differ[:2]}"


def test_direct_rdata_construction_matches_dnspython():
    assert direct_rdata_matches_dnspython()


def test_embedded_root_records():
    records = load_zone_records(EMBEDDED_ROOT)
    assert records.origin == b"\x00" and records.serial == 2026082201 and records.source == EMBEDDED_ROOT
    assert records == fast_zone_records(read_zone_source(EMBEDDED_ROOT), EMBEDDED_ROOT, ".")
    assert load_zone_file(EMBEDDED_ROOT).serial == 2026082201


def test_load_zone_records_gzip_and_errors(tmp_path):
    text = ZONE_HEAD + "www.example. 3600 IN A 192.0.2.1\n"
    plain, packed = tmp_path / "z.zone", tmp_path / "z.zone.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    assert load_zone_records(plain).records == load_zone_records(packed).records
    assert load_zone_records(packed).source == str(packed)
    bad = tmp_path / "bad.zone"
    bad.write_text(text + "x.example. 3600 IN A 192.0.2.300\n")
    with pytest.raises(ZoneFileError) as err:
        load_zone_records(bad)
    assert (err.value.file, err.value.line) == (str(bad), 5)
    with pytest.raises(ZoneFileError, match="no such file"):
        load_zone_records(tmp_path / "missing.zone")
    ooz = tmp_path / "ooz.zone"
    ooz.write_text(text + "www.example.org. 3600 IN A 192.0.2.1\n")
    with pytest.raises(ZoneFileError) as err:
        load_zone_records(ooz)
    assert err.value.line == 5 and "outside the zone" in err.value.message


# -------------------------------------------------------------------------- synthetic files

ZONE_HEAD = (
    "example. 3600 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300\n"
    "example. 3600 IN NS ns1.example.\n"
    "ns1.example. 3600 IN A 192.0.2.53\n"
)
SIG = "8 2 3600 20360101000000 20260101000000 12345 example. AAECAwQFBgcICQ== "
DS2 = "0123456789ABCDEF0123456789abcdef 0123456789abcdef0123456789ABCDEF"

FAST_CASES = {
    "tabs and upper case": ZONE_HEAD.replace(" ", "\t") + "WWW.Example.\t60\tin\tA\t192.0.2.1\n",
    "many types": ZONE_HEAD + (
        "www.example. 60 IN AAAA 2001:DB8:0:0:0:0:0:1\n"
        "www.example. 60 IN AAAA ::\n"
        "www.example. 60 IN AAAA 2001:db8::\n"
        "sub.example. 86400 IN NS ns.sub.example.\n"
        "sub.example. 86400 IN NS NS.Elsewhere.test.\n"
        f"sub.example. 86400 IN DS 12345 8 2 {DS2}\n"
        "sub.example. 86400 IN DS 12345 RSASHA256 1 0123456789abcdef0123456789abcdef01234567\n"
        f"sub.example. 86400 IN RRSIG DS {SIG}\n"
        "sub.example. 86400 IN RRSIG DS 8 2 86400 1893456000 1767225600 1 Example. AAEC AwQF BgcI CQ==\n"
        "sub.example. 86400 IN NSEC www.Example. NS ds RRSIG NSEC TYPE65280\n"
        "example. 3600 IN DNSKEY 257 3 8 AwEAAb1n s9Ty Aq7g bu==\n"
        "example. 3600 IN ZONEMD 2024010101 1 1 " + "AB" * 48 + "\n"
        "*.example. 60 IN TXT \"a ; b\" \"c(d)\" plain\n"
        "www.example. 60 IN TXT \"caf\\195\\169\"\n"
        "mx.example. 60 IN MX 10 mail.example.\n"
        "x.example. 60 IN TYPE65280 \\# 4 0a000001\n"
        "x.example. 60 IN A 10.0.0.1 ; a trailing comment\n"
        "x.example. 60 IN SPF ( \"v=spf1 -all\" )\n"
        "; a comment line\n   \n\t; an indented comment\n\n"
    ),
    "duplicates and TTLs": ZONE_HEAD + (
        "a.example. 300 IN A 192.0.2.1\n"
        "a.example. 300 IN TXT x\n"
        "a.example. 200 IN A 192.0.2.2\n"
        "b.example. 300 IN A 192.0.2.1\n"
        "a.example. 100 IN A 192.0.2.1\n"
        "example. 3600 IN NS NS1.example.\n"
        "example. 60 IN NS ns2.example.\n"
        "a.example. 300 IN NSEC b.example. A TXT\n"
        "a.example. 100 IN NSEC b.example. A TXT\n"
        f"a.example. 300 IN RRSIG A {SIG}\n"
        f"a.example. 300 IN RRSIG A {SIG.replace('example.', 'EXAMPLE.')}\n"
        f"A.EXAMPLE. 300 IN RRSIG TXT {SIG}\n"
    ),
    "rarely used names": ZONE_HEAD + (
        f"{'a' * 63}.example. 60 IN A 192.0.2.1\n"
        "-.example. 60 IN A 192.0.2.2\n"
        "_tcp.example. 60 IN NS ns1.example.\n"
        "x@y.example. 60 IN A 192.0.2.3\n"
    ),
    "no final newline": ZONE_HEAD + "z.example. 4294967295 IN A 192.0.2.1",
}

SLOW_CASES = {  # dnspython reads the whole file: same result, or the same error
    "directives": "$ORIGIN example.\n$TTL 60\n@ IN SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n",
    "parentheses": ZONE_HEAD + "x.example. 60 IN TXT ( \"a\"\n  \"b\" )\n",
    "omitted owner": ZONE_HEAD + "x.example. 60 IN A 192.0.2.1\n  60 IN A 192.0.2.2\n",
    "omitted ttl": ZONE_HEAD + "x.example. IN A 192.0.2.1\n",
    "class first": ZONE_HEAD + "x.example. IN 60 A 192.0.2.1\n",
    "ttl units": ZONE_HEAD + "x.example. 1h IN A 192.0.2.1\n",
    "relative owner": ZONE_HEAD + "x 60 IN A 192.0.2.1\n",
    "escaped owner": ZONE_HEAD + "a\\.b.example. 60 IN A 192.0.2.1\n",
    "unicode owner": ZONE_HEAD + "café.example. 60 IN A 192.0.2.1\n",
    "crlf": ZONE_HEAD.replace("\n", "\r\n"),
    "cname": ZONE_HEAD + "www.example. 60 IN CNAME ns1.example.\n",
    "cname and other data": ZONE_HEAD + "ns1.example. 60 IN CNAME x.example.\n",
    "relative rdata": ZONE_HEAD + "sub.example. 60 IN NS ns.sub\n",
    "leading zero address": ZONE_HEAD + "x.example. 60 IN A 192.0.2.01\n",
    "mapped v6": ZONE_HEAD + "x.example. 60 IN AAAA ::ffff:192.0.2.1\n",
    "bad address": ZONE_HEAD + "x.example. 60 IN A 192.0.2.256\nz.example. 60 IN A 192.0.2.1\n",
    "bad v6": ZONE_HEAD + "x.example. 60 IN AAAA 1::2::3\n",
    "bad ds length": ZONE_HEAD + "x.example. 60 IN DS 1 8 2 abcd\n",
    "bad ds hex": ZONE_HEAD + "x.example. 60 IN DS 1 8 1 " + "zz" * 20 + "\n",
    "ds digest type 0": ZONE_HEAD + "x.example. 60 IN DS 1 8 0 abcd\n",
    "bad base64": ZONE_HEAD + f"x.example. 60 IN RRSIG A {SIG}!!\n",
    "bad sigtime": ZONE_HEAD + "x.example. 60 IN RRSIG A 8 2 60 20361301000000 1 1 example. AA==\n",
    "unknown type": ZONE_HEAD + "x.example. 60 IN BOGUS foo\n",
    "another class": ZONE_HEAD + "x.example. 60 CH TXT foo\n",
    "out of zone": ZONE_HEAD + "x.example.org. 60 IN A 192.0.2.1\n",
    "soa below the apex": ZONE_HEAD + "x.example. 60 IN SOA a.example. b.example. 1 2 3 4 5\n",
    "second soa": ZONE_HEAD + "example. 60 IN SOA a.example. b.example. 1 2 3 4 5\n",
    "second nsec": ZONE_HEAD + "x.example. 60 IN NSEC a.example. A\nx.example. 60 IN NSEC b.example. A\n",
    "no ns": ZONE_HEAD.replace("example. 3600 IN NS ns1.example.\n", ""),
    "ttl too big": ZONE_HEAD + "x.example. 4294967296 IN A 192.0.2.1\n",
    "label too long": ZONE_HEAD + f"{'a' * 64}.example. 60 IN A 192.0.2.1\n",
    "empty label": ZONE_HEAD + "a..example. 60 IN A 192.0.2.1\n",
    "missing rdata": ZONE_HEAD + "x.example. 60 IN A\n",
    "trailing token": ZONE_HEAD + "x.example. 60 IN NS a.example. b.example.\n",
    "unbalanced": ZONE_HEAD + "x.example. 60 IN A ( 192.0.2.1\n",
    "quote in owner": ZONE_HEAD + "\"x\".example. 60 IN A 192.0.2.1\n",
    "dollar owner": ZONE_HEAD + "$x.example. 60 IN A 192.0.2.1\n",
    "nsec bit 0": ZONE_HEAD + "x.example. 60 IN NSEC a.example. TYPE0\n",
}


@pytest.mark.parametrize("name", FAST_CASES)
def test_fast_cases_match_dnspython(name):
    assert_same_as_dnspython(FAST_CASES[name], fast=True)


@pytest.mark.parametrize("name", SLOW_CASES)
def test_other_cases_match_dnspython(name):
    assert_same_as_dnspython(SLOW_CASES[name], fast=False)


def test_explicit_origin_and_root_zone():
    text = ". 86400 IN SOA a.root. n.root. 1 2 3 4 5\n. 86400 IN NS a.root.\nA.ROOT. 60 IN A 192.0.2.1\n"
    assert_same_as_dnspython(text, fast=True)
    assert_same_as_dnspython(text, ".", fast=True)
    assert_same_as_dnspython(ZONE_HEAD, "example.", fast=True)
    assert_same_as_dnspython(ZONE_HEAD, "other.", fast=False)  # every owner outside the zone


# -------------------------------------------------------------------------- generated files

_OWNERS = ["example.", "a.example.", "B.example.", "b.example.", "c.d.example.", "*.example.", "x-1.a.example."]
_TARGETS = ["ns1.example.", "NS1.example.", "a.example.", "ns.other.test.", "."]


@st.composite
def _record_line(draw) -> str:
    owner = draw(st.sampled_from(_OWNERS))
    ttl = draw(st.sampled_from([0, 60, 300, 3600, 2**31]))
    kind = draw(st.sampled_from(["A", "AAAA", "NS", "DS", "RRSIG", "NSEC", "TXT", "MX"]))
    if kind == "A":
        rdata = draw(st.sampled_from(["192.0.2.1", "192.0.2.2", "0.0.0.0", "255.255.255.255"]))
    elif kind == "AAAA":
        rdata = draw(st.sampled_from(["2001:db8::1", "2001:DB8::1", "::", "2001:db8:0:0:0:0:0:2", "fe80::1:2"]))
    elif kind == "NS":
        rdata = draw(st.sampled_from(_TARGETS))
    elif kind == "DS":
        digest = draw(st.sampled_from(["ab" * 32, "AB" * 32, "ab" * 16 + " " + "cd" * 16]))
        rdata = f"{draw(st.integers(0, 65535))} 8 2 {digest}"
    elif kind == "RRSIG":
        covered = draw(st.sampled_from(["A", "NS", "DS", "NSEC", "TYPE65280"]))
        when = draw(st.sampled_from(["20360101000000", "20260101000000", "1767225600", "0"]))
        signer = draw(st.sampled_from(["example.", "EXAMPLE."]))
        rdata = f"{covered} 8 2 3600 {when} 20260101000000 {draw(st.integers(0, 3))} {signer} AAEC AwQ="
    elif kind == "NSEC":
        types = " ".join(draw(st.lists(st.sampled_from(["A", "NS", "RRSIG", "NSEC", "TYPE1234", "ds"]), min_size=0)))
        rdata = f"{draw(st.sampled_from(_TARGETS))} {types}".rstrip()
    elif kind == "TXT":
        rdata = draw(st.sampled_from(['"hello world"', "plain", '"a;b" c']))
    else:
        rdata = f"{draw(st.integers(0, 3))} {draw(st.sampled_from(_TARGETS))}"
    sep = draw(st.sampled_from([" ", "\t", "  \t"]))
    klass = draw(st.sampled_from(["IN", "in"]))
    return sep.join([owner, str(ttl), klass, kind, rdata])


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_record_line(), max_size=25), st.randoms(use_true_random=False))
def test_generated_zones_match_dnspython(lines, rng):
    head = ZONE_HEAD.splitlines()
    body = head + lines
    rng.shuffle(body)
    # the SOA need not come first once the origin is given
    assert_same_as_dnspython("\n".join(body) + "\n", "example.")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_record_line(), max_size=25), st.randoms(use_true_random=False))
def test_zone_data_from_unordered_records(lines, rng):
    """Records in any order, with duplicates (as a transfer may bring them) build what the
    dnspython zone made of them builds."""
    try:
        parsed = parse_master_text(ZONE_HEAD + "\n".join(lines) + "\n", "t.zone", "example.")
    except ZoneFileError:
        return
    copies = rng.sample(parsed.records, k=min(5, len(parsed.records)))
    records = list(parsed.records) + [r._replace(ttl=rng.choice([1, 60, 10**6])) for r in copies]
    rng.shuffle(records)
    zone = ZoneRecords(parsed.origin, tuple(records), "t.zone")
    old = build_zone_data(records_to_dnspython_zone(zone), "t.zone")
    assert_same_zone_data(build_zone_data_from_records(zone), old)


def test_zone_data_errors():
    base = parse_master_text(ZONE_HEAD, "t.zone")
    outside = Record(b"\x03org\x00", 1, 1, 60, b"\xc0\x00\x02\x01")
    with pytest.raises(ValueError, match="outside the zone"):
        build_zone_data_from_records(ZoneRecords(base.origin, (*base.records, outside), "t.zone"))
    chaos = Record(b"\x01x\x07example\x00", 16, 3, 60, b"\x01a")
    with pytest.raises(ValueError, match="only IN"):
        build_zone_data_from_records(ZoneRecords(base.origin, (*base.records, chaos), "t.zone"))
    no_soa = tuple(r for r in base.records if r.rdtype != 6)
    with pytest.raises(ValueError, match="no SOA"):
        build_zone_data_from_records(ZoneRecords(base.origin, no_soa, "t.zone"))
    bad = Record(b"\x01x\x07example\x00", 1, 1, 60, b"\x01\x02")
    with pytest.raises(ValueError, match="bad RDATA"):
        build_zone_data_from_records(ZoneRecords(base.origin, (*base.records, bad), "t.zone"))


def test_parse_zone_text_uses_records(tmp_path):
    """parse_zone_text and load_zone_file give the ZoneData of the records."""
    text = FAST_CASES["many types"]
    path = tmp_path / "m.zone"
    path.write_text(text)
    assert_same_zone_data(load_zone_file(path), build_zone_data_from_records(load_zone_records(path)))
    old = build_zone_data(dns.zone.from_text(text, origin="example.", relativize=False), "m.zone")
    assert_same_zone_data(parse_zone_text(text, "m.zone"), old)
