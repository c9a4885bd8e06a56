"""Master files -> ZoneData (imrs.zone.parse, imrs.zone.data): good zones, origin guessing,
errors that name file and line, encodings and gzip, the embedded root (checked against the
file itself), and the lookups the answer engine relies on, on the real root zone.
"""

from __future__ import annotations

import gzip
import importlib.resources
import random

import dns.name
import dns.rdatatype
import pytest

from imrs.zone.data import canonical_key
from imrs.zone.parse import (
    EMBEDDED_ROOT,
    ZoneFileError,
    guess_origin,
    load_zone_file,
    parse_zone_text,
)

N = dns.name.from_text

GOOD = """$ORIGIN Example.
$TTL 3600
@        IN SOA  ns1 hostmaster ( 2024010101 ; serial
                   7200 3600 1209600 300 )
@        IN NS   ns1
@        IN NS   ns.elsewhere.test.
ns1      IN A    192.0.2.53
WWW      IN A    192.0.2.1
www      IN AAAA 2001:db8::1
         IN TXT  "same owner as the line above"
mail  60 IN MX   10 mx.deep.ent
mx.deep.ent IN A 192.0.2.25
sub      IN NS   ns.sub
sub      IN DS   12345 8 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.sub   IN A    192.0.2.99
"""


# -------------------------------------------------------------------------- good zones


def test_good_zone():
    zone = parse_zone_text(GOOD, "good.zone")
    assert zone.origin == N("example.") and zone.origin.to_text() == "example."
    assert zone.serial == 2024010101 and zone.source == "good.zone"
    assert not zone.secure
    # owners are stored lower-case; RRsets grouped by type
    www = zone.nodes[N("www.example.")]
    assert set(www.rrsets) == {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT}
    assert all(label == label.lower() for label in www.name.labels)
    assert www.get(dns.rdatatype.A)[0].address == "192.0.2.1"
    assert zone.nodes[N("mail.example.")].get(dns.rdatatype.MX).ttl == 60
    assert zone.apex.get(dns.rdatatype.NS).ttl == 3600
    assert zone.delegations == {N("sub.example.")}
    # empty non-terminals exist; names that only appear in RDATA are in the tree, not existing
    assert N("deep.ent.example.") in zone.existing and N("ent.example.") in zone.existing
    assert N("nope.example.") not in zone.existing
    assert N("ns.elsewhere.test.") not in zone.tree  # outside the zone
    assert zone.stats == {"names": 7, "records": 12, "delegations": 1}
    # negative answers: SOA TTL = min(SOA TTL, MINIMUM)
    assert zone.negative_soa.ttl == 300 and zone.negative_soa[0].serial == 2024010101


def test_good_zone_lookups():
    zone = parse_zone_text(GOOD, "good.zone")
    assert zone.closest_encloser(N("a.b.deep.ent.example.")) == N("deep.ent.example.")
    assert zone.closest_encloser(N("x.example.")) == N("example.")
    assert zone.closest_encloser(N("WWW.example.")) == N("www.example.")
    assert zone.find_delegation(N("a.b.ns.sub.example.")) == N("sub.example.")
    assert zone.find_delegation(N("sub.example.")) == N("sub.example.")
    assert zone.find_delegation(N("www.example.")) is None
    assert zone.find_delegation(N("example.")) is None
    assert zone.covering_nsec(N("www.example.")) is None  # unsigned: no NSEC chain


def test_rrsigs_are_kept_apart_by_covered_type():
    sig = "8 2 3600 20360101000000 20260101000000 12345 example. AAAA"
    text = GOOD + f"www IN RRSIG A {sig}\nwww IN RRSIG AAAA {sig}\n"
    zone = parse_zone_text(text, "s.zone")
    www = zone.nodes[N("www.example.")]
    assert dns.rdatatype.RRSIG not in www.rrsets
    assert set(www.sigs) == {dns.rdatatype.A, dns.rdatatype.AAAA}
    assert len(www.all_sigs) == 2


@pytest.mark.parametrize("text", [
    # absolute names, no $ORIGIN
    ("example. 3600 IN SOA ns1.example. h.example. 1 2 3 4 5\nexample. 3600 IN NS ns1.example.\n"
     "ns1.example. 3600 IN A 192.0.2.1\n"),
    # relative names after an absolute SOA owner, odd case, lower-case type
    "EXAMPLE. 3600 IN soa ns1 h 1 2 3 4 5\n@ 3600 IN NS ns1\nns1 3600 IN A 192.0.2.1\n",
    # comments and blank lines first
    "; a zone\n\n$TTL 300\nexample.   IN SOA ns1.example. h.example. 1 2 3 4 5\n  IN NS ns1\nns1 IN A 192.0.2.1\n",
])
def test_origin_guessed_from_the_soa(text):
    zone = parse_zone_text(text, "guess.zone")
    assert zone.origin == N("example.")
    assert N("ns1.example.") in zone.nodes
    assert guess_origin(text).lower() == "example."


def test_root_origin_guessed():
    text = ". 86400 IN SOA a.root-servers.net. nstld.verisign-grs.com. 1 2 3 4 5\n. 86400 IN NS a.root-servers.net.\n"
    zone = parse_zone_text(text, "r.zone")
    assert zone.origin == dns.name.root and zone.serial == 1


def test_explicit_origin_argument():
    text = "$TTL 60\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\n"
    assert parse_zone_text(text, "o.zone", "example.org.").origin == N("example.org.")
    with pytest.raises(ZoneFileError) as err:
        parse_zone_text(text, "o.zone")
    assert err.value.file == "o.zone"


@pytest.mark.parametrize("text", [
    ("; this file has no $ORIGIN line\nexample. 3600 IN SOA ns1.example. h.example. 1 2 3 4 5\n"
     "example. 3600 IN NS ns1.example.\n"),
    ("example. 3600 IN SOA ns1.example. h.example. 1 2 3 4 5\nexample. 3600 IN NS ns1.example.\n"
     "$ORIGIN sub.example.\nwww 3600 IN A 192.0.2.7\n"),
])
def test_origin_guessed_when_origin_appears_only_later(text):
    zone = parse_zone_text(text, "later.zone")
    assert zone.origin == N("example.")


# -------------------------------------------------------------------------- errors

HEAD = "$ORIGIN example.\n$TTL 3600\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\n"  # lines 1-4


@pytest.mark.parametrize("body,line", [
    ("www BOGUS x\nz A 192.0.2.1\n", 5),  # unknown type
    ("\n\nwww A 999.1.1.1\nz A 192.0.2.1\n", 7),  # bad address (found after the end of line)
    ("www MX 10\nz A 192.0.2.1\n", 5),  # missing field
    ("www A 192.0.2.1 extra\nz A 192.0.2.1\n", 5),  # trailing token
    ("ok A 192.0.2.1\nw..x A 192.0.2.1\n", 6),  # empty label
    ("ok A 192.0.2.1\nwww CH TXT x\n", 6),  # another class
    ("ok A 192.0.2.1\nwww 1x A 192.0.2.1\n", 6),  # bad TTL
    ("www A 192.0.2.1\n$BOGUS x\n", 6),  # unknown directive
    ("www A 999.1.1.1", 5),  # last line, no newline
])
def test_syntax_errors_name_file_and_line(body, line):
    with pytest.raises(ZoneFileError) as err:
        parse_zone_text(HEAD + body, "bad.zone")
    assert (err.value.file, err.value.line) == ("bad.zone", line), err.value.message
    assert str(err.value).startswith(f"bad.zone:{line}: ")
    assert err.value.message


def test_syntax_error_in_a_file_names_the_path(tmp_path):
    path = tmp_path / "bad.zone"
    path.write_text(HEAD + "ok A 192.0.2.1\nwww A not-an-address\n")
    with pytest.raises(ZoneFileError) as err:
        load_zone_file(path)
    assert err.value.file == str(path) and err.value.line == 6


@pytest.mark.parametrize("text,words", [
    ("$ORIGIN example.\n$TTL 3600\n@ NS ns1\nns1 A 192.0.2.1\n", "SOA"),
    ("$ORIGIN example.\n$TTL 3600\n@ SOA ns1 h 1 2 3 4 5\nns1 A 192.0.2.1\n", "NS"),
    ("example. 3600 IN NS ns1.example.\n", "SOA"),
    ("", "SOA"),
    ("; nothing but a comment\n", "SOA"),
])
def test_zone_without_soa_or_ns(text, words):
    with pytest.raises(ZoneFileError) as err:
        parse_zone_text(text, "x.zone")
    assert err.value.file == "x.zone" and words in err.value.message


def test_out_of_zone_data_is_an_error():
    text = HEAD + "ns1 A 192.0.2.1\nfoo.other. A 192.0.2.2\nz A 192.0.2.3\n"
    with pytest.raises(ZoneFileError) as err:
        parse_zone_text(text, "ooz.zone")
    assert err.value.line == 6 and "foo.other" in err.value.message


def test_out_of_zone_data_is_never_served():
    text = HEAD + "ns1 A 192.0.2.1\nfoo.other. A 192.0.2.2\nz A 192.0.2.3\n"
    try:
        zone = parse_zone_text(text, "ooz.zone")
    except ZoneFileError:
        return
    assert all(name.is_subdomain(zone.origin) for name in zone.nodes)
    assert N("foo.other.") not in zone.tree


@pytest.mark.parametrize("compress", [False, True])
def test_non_utf8_names_the_line(tmp_path, compress):
    data = (HEAD + "ns1 A 192.0.2.1\nwww TXT \"caf\xe9\"\n").encode("latin-1")
    path = tmp_path / ("l1.zone.gz" if compress else "l1.zone")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ZoneFileError) as err:
        load_zone_file(path)
    assert err.value.file == str(path) and err.value.line == 6
    assert "UTF-8" in err.value.message


def test_utf8_text_is_fine():
    zone = parse_zone_text(HEAD + "ns1 A 192.0.2.1\nwww TXT \"café\"\n", "u.zone")
    assert N("www.example.") in zone.nodes


def test_gzip_input_equals_plain(tmp_path):
    plain = tmp_path / "g.zone"
    packed = tmp_path / "g.zone.gz"
    odd = tmp_path / "gzip-without-suffix"
    plain.write_text(GOOD)
    packed.write_bytes(gzip.compress(GOOD.encode()))
    odd.write_bytes(gzip.compress(GOOD.encode()))
    zones = [load_zone_file(p) for p in (plain, packed, odd)]
    for z in zones[1:]:
        assert z.origin == zones[0].origin and z.serial == zones[0].serial
        assert dict(z.stats) == dict(zones[0].stats)
        assert set(z.nodes) == set(zones[0].nodes)
        for n in z.nodes:
            assert {t: r.to_text() for t, r in z.nodes[n].rrsets.items()} == \
                {t: r.to_text() for t, r in zones[0].nodes[n].rrsets.items()}
    assert zones[1].source == str(packed)


@pytest.mark.parametrize("make", [
    "missing", "directory", "truncated-gzip", "empty-gzip-header",
    pytest.param("corrupt-gzip"),
])
def test_unreadable_inputs(tmp_path, make):
    path = tmp_path / "z"
    if make == "directory":
        path.mkdir()
    elif make == "corrupt-gzip":
        path.write_bytes(b"\x1f\x8b\x08\x00not gzip at all")
    elif make == "empty-gzip-header":
        path.write_bytes(b"\x1f\x8b")
    elif make == "truncated-gzip":
        path.write_bytes(gzip.compress(GOOD.encode())[:40])
    with pytest.raises(ZoneFileError) as err:
        load_zone_file(path)
    assert err.value.file == str(path) and err.value.line is None and err.value.message


# -------------------------------------------------------------------------- the embedded root


def _embedded_text() -> str:
    blob = importlib.resources.files("imrs").joinpath("data/root.zone.gz").read_bytes()
    return gzip.decompress(blob).decode()


@pytest.fixture(scope="module")
def root():
    return load_zone_file(EMBEDDED_ROOT)


def test_embedded_root_matches_its_file(root):
    owners: set[str] = set()
    delegated: set[str] = set()
    records = 0
    serial = None
    for line in _embedded_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(";"):
            continue
        owner, rdtype = fields[0].lower(), fields[3]
        owners.add(owner)
        records += 1
        if rdtype == "NS" and owner != ".":
            delegated.add(owner)
        if rdtype == "SOA":
            serial = int(fields[6])
    assert serial == 2026082201 == root.serial
    assert len(delegated) == 1438 == root.stats["delegations"] == len(root.delegations)
    assert {n.to_text() for n in root.delegations} == delegated
    assert root.stats["names"] == len(owners) == 7366
    assert root.stats["records"] == records
    assert root.origin == dns.name.root and root.source == EMBEDDED_ROOT
    assert root.secure
    assert len(root.nsec_owners) == 1439  # the apex and every delegation


def test_root_closest_encloser(root):
    assert root.closest_encloser(N("www.example.com.")) == N("com.")
    assert root.closest_encloser(N("no-such-tld.")) == dns.name.root
    assert root.closest_encloser(N("a.b.no-such-tld.")) == dns.name.root
    assert root.closest_encloser(N("a.root-servers.net.")) == N("a.root-servers.net.")
    assert root.closest_encloser(N("x.a.root-servers.net.")) == N("a.root-servers.net.")
    # root-servers.net. is an empty non-terminal above the glue
    assert root.closest_encloser(N("zz.root-servers.net.")) == N("root-servers.net.")
    assert root.closest_encloser(N("WWW.Example.COM.")) == N("com.")
    assert root.closest_encloser(dns.name.root) == dns.name.root


def test_root_find_delegation(root):
    assert root.find_delegation(N("www.example.com.")) == N("com.")
    assert root.find_delegation(N("com.")) == N("com.")
    assert root.find_delegation(N("a.root-servers.net.")) == N("net.")
    assert root.find_delegation(N("WWW.EXAMPLE.ORG.")) == N("org.")
    assert root.find_delegation(dns.name.root) is None
    assert root.find_delegation(N("no-such-tld.")) is None
    assert root.find_delegation(N("a.b.no-such-tld.")) is None


def _nsec_next(root, owner) -> dns.name.Name:
    return root.nodes[owner].get(dns.rdatatype.NSEC)[0].next


def test_root_covering_nsec_known_spans(root):
    cases = {
        "coa.": "co.",  # co. -> coach.
        "cob.": "coach.",  # coach. -> codes. (canonical order compares octets: coach < cob)
        "com.": "com.",  # an NSEC owner covers itself
        "www.example.com.": "com.",  # below com. sorts before commbank.
        "zzzz.": "zw.",  # after the last owner: the one that wraps to the apex
        ".": ".",
        "0.": ".",  # before aaa.
        "COA.": "co.",
    }
    for name, owner in cases.items():
        node = root.covering_nsec(N(name))
        assert node is not None and node.name == N(owner), (name, node and node.name)
    assert _nsec_next(root, N("zw.")) == dns.name.root


def test_root_covering_nsec_random_names(root):
    rng = random.Random(4034)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
    tlds = [n for n in root.nsec_owners if n != dns.name.root]
    for _ in range(300):
        if rng.random() < 0.5:
            name = N("".join(rng.choice(alphabet[:26]) for _ in range(rng.randrange(1, 8))) + ".")
        else:
            label = "".join(rng.choice(alphabet[:36]) for _ in range(rng.randrange(1, 10)))
            name = N(label + "." + rng.choice(tlds).to_text())
        node = root.covering_nsec(name)
        assert node is not None
        nxt = _nsec_next(root, node.name)
        assert canonical_key(node.name) <= canonical_key(name)
        assert nxt == dns.name.root or canonical_key(name) < canonical_key(nxt), (name, node.name, nxt)
