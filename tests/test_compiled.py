"""The compiled fast path gives byte-identical responses to the reference path.

Every query of the NSD differential corpus, and the benchmark's root-traffic mix, is
answered both ways over UDP and TCP, IPv4 and IPv6, and with varied EDNS buffer sizes and
header bits; the bytes must be equal wherever the fast path answers.  The fast path must
also answer (not defer) the ordinary questions, or it would be fast for nothing.

The snapshot has a cookie jar on a fixed clock (both paths compute the same timestamps) and
TCP keepalive on; queries come from one IPv4 and one IPv6 address, and get COOKIE and
keepalive variants (client cookie only, valid / renewed / expired / foreign server cookies,
bad lengths, with other options) as well, with ``require`` off and on.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from peers.corpus import build_corpus

from imrs.answer.cookies import CookieJar
from imrs.answer.respond import AnswerOptions
from imrs.config import CookieConfig
from imrs.serve.snapshot import build_snapshot
from imrs.zone.parse import load_zone_file

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"
MIX = SHARED / "bench" / "queries-rootmix-mix.bin"


NOW = 1_767_227_400.0  # the jar's fixed clock (mid-way through a rotation epoch of an hour)
PEER4 = bytes([192, 0, 2, 53])
PEER6 = bytes.fromhex("20010db8000000000000000000000053")
PEER4_MAPPED = bytes(10) + b"\xff\xff" + PEER4


def _peer(ipv6: bool) -> bytes:
    return PEER6 if ipv6 else PEER4


@pytest.fixture(scope="module")
def jar():
    return CookieJar(CookieConfig(rotate_interval=3600.0), b"m" * 16, clock=lambda: NOW)


@pytest.fixture(scope="module")
def snapshot(jar):
    return build_snapshot([load_zone_file(ZONE)], AnswerOptions(nsid=b"test-nsid", tcp_keepalive=100), cookies=jar)


def _cookie_options(jar: CookieJar, rng: random.Random) -> list[tuple[list, bool]]:
    """EDNS option lists with COOKIE / keepalive options, each with: does the fast path answer
    it over UDP and TCP alike (malformed ones go the reference way)?"""
    client = rng.randbytes(8)

    def server(peer: bytes, at: float = NOW, secret: bytes | None = None) -> bytes:
        return jar.make_server_cookie(client, peer, at, secret or jar.keys(NOW).current)

    def cookie(data: bytes):
        return dns.edns.GenericOption(10, data)

    keepalive = dns.edns.GenericOption(11, b"")
    unknown = dns.edns.GenericOption(65001, b"x" * rng.randint(0, 9))
    valid4, valid6 = client + server(PEER4), client + server(PEER6)
    bad_hash = bytearray(valid4)
    bad_hash[-1] ^= 1
    return [
        ([cookie(client)], True),
        ([cookie(valid4)], True),
        ([cookie(valid6)], True),
        ([cookie(client + server(PEER4, NOW - 2000))], True),  # valid, renewed
        ([cookie(client + server(PEER6, NOW - 4000))], True),  # expired
        ([cookie(client + server(PEER4, NOW + 200))], True),  # a little ahead: valid
        ([cookie(client + server(PEER4, NOW + 400))], True),  # too far ahead
        ([cookie(client + server(PEER4, secret=jar.derive_secret(int(NOW // 3600) - 1)))], True),  # previous secret
        ([cookie(client + server(PEER4, secret=jar.derive_secret(int(NOW // 3600) - 2)))], True),  # retired secret
        ([cookie(bytes(bad_hash))], True),
        ([cookie(client + rng.randbytes(8))], True),  # 16 octets
        ([cookie(client + rng.randbytes(32))], True),  # 40 octets
        ([cookie(client[:7])], False),  # malformed: FORMERR
        ([cookie(client + b"1234")], False),
        ([cookie(client + rng.randbytes(33))], False),
        ([cookie(b"")], False),
        ([unknown, cookie(valid4)], True),
        ([cookie(client), unknown], True),
        ([cookie(valid6), keepalive], True),
        ([keepalive, cookie(client)], True),
        ([keepalive], True),
        ([dns.edns.GenericOption(11, b"\x00\x64")], False),  # keepalive with a TIMEOUT: FORMERR over TCP
        ([cookie(valid4), cookie(client[:3])], True),  # the first COOKIE counts
        ([cookie(client), dns.edns.GenericOption(3, b"")], False),  # NSID: the reference adds it
        ([dns.edns.GenericOption(9, b""), keepalive, cookie(valid4)], False),  # EXPIRE likewise
    ]


def _mix_queries(limit: int) -> list[bytes]:
    blob = MIX.read_bytes()
    out, pos = [], 0
    while pos < len(blob) and len(out) < limit:
        (length,) = struct.unpack_from("!H", blob, pos)
        out.append(blob[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def _variants(wire: bytes, rng: random.Random, jar: CookieJar | None = None, cookies: int = 3) -> list[tuple[bytes, bool]]:
    """The query as sent, plus copies with other RD/CD bits, other EDNS buffer sizes, an
    unknown option, and a broken option list, and (with ``jar``) ``cookies`` of the cookie
    and keepalive variants; each with: is it an ordinary query?"""
    out = [wire]
    flags = bytearray(wire)
    flags[2] ^= 0x01  # RD
    flags[3] ^= 0x10  # CD
    out.append(bytes(flags))
    msg = dns.message.from_wire(wire)
    if msg.edns >= 0:
        for payload in (512, 700, 1232, 4096, rng.randint(0, 65535)):
            m = dns.message.from_wire(wire)
            m.use_edns(0, m.ednsflags, payload)
            out.append(m.to_wire())
        # unknown options are ignored (RFC 6891 6.1.2); a malformed option list is FORMERR
        m = dns.message.from_wire(wire)
        m.use_edns(0, m.ednsflags, m.payload, options=[dns.edns.GenericOption(65001, b"x" * rng.randint(0, 9))])
        out.append(m.to_wire())
        variants = [(w, True) for w in out] + [(out[-1][:-1], False)]
        if jar is not None:
            for options, ordinary in rng.sample(_cookie_options(jar, rng), cookies):
                m = dns.message.from_wire(wire)
                m.use_edns(0, m.ednsflags, rng.choice((512, 1232, 4096, m.payload)), options=options)
                variants.append((m.to_wire(), ordinary))
        return variants
    return [(w, True) for w in out]


ALL_TRANSPORTS = ((False, False), (True, False), (False, True), (True, True))


def _check(snapshot, queries: list[bytes], rng: random.Random, transports=ALL_TRANSPORTS, cookies: int = 3) -> tuple[int, int]:
    """Compare both paths; returns (ordinary queries the fast path answered, ordinary queries)."""
    compiled, reference = snapshot.compiled, snapshot.reference
    jar = reference.cookies
    answered = compared = 0
    mismatches = []
    for wire in queries:
        for variant, ordinary in _variants(wire, rng, jar, cookies):
            for tcp, ipv6 in transports:
                peer = _peer(ipv6)
                fast = compiled.answer(variant, tcp, ipv6, peer)
                compared += ordinary
                if fast is None:
                    continue
                answered += ordinary
                slow = reference.respond(variant, tcp, ipv6, peer)
                if fast != slow:
                    mismatches.append((variant.hex(), tcp, ipv6))
    assert not mismatches, f"{len(mismatches)} responses differ, first: {mismatches[:3]}"
    return answered, compared


def test_fast_path_matches_reference_on_the_corpus(snapshot):
    rng = random.Random(7)
    corpus = build_corpus(ZONE, seed=20260822, scale=0.12)
    answered, compared = _check(snapshot, [e.wire for e in corpus], rng, ((False, False), (True, True)))
    print(f"corpus: {compared} comparisons, fast path answered {answered}")
    assert answered > compared * 0.6


def test_fast_path_matches_reference_on_the_root_traffic_mix(snapshot):
    rng = random.Random(8)
    answered, compared = _check(snapshot, _mix_queries(2500), rng)
    print(f"mix: {compared} comparisons, fast path answered {answered}")
    # Every query of the mix is an ordinary one: the fast path must answer all of them.
    assert answered == compared


@pytest.mark.parametrize("require", [False, True])
def test_cookie_and_keepalive_variants_match_and_stay_on_the_fast_path(snapshot, monkeypatch, require):
    """Every cookie / keepalive variant of a few ordinary questions, every transport, with
    ``require`` off and on: the same bytes both ways, and the well-formed ones answered fast."""
    monkeypatch.setattr(snapshot.reference.cookies, "require", require)
    compiled, reference = snapshot.compiled, snapshot.reference
    rng = random.Random(11)
    seen_rcodes = set()
    for name, rdtype in (("com.", "A"), ("www.example.com.", "AAAA"), (".", "SOA"), ("nosuchtld.", "A"), ("aaa.", "DS"),
                         ("a.root-servers.net.", "A"), (".", "DNSKEY")):
        for do in (False, True):
            base = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do)
            for options, ordinary in _cookie_options(reference.cookies, rng):
                for payload in (512, 1232):
                    m = dns.message.make_query(name, rdtype, use_edns=0, payload=payload, want_dnssec=do, options=options)
                    m.id = base.id
                    wire = m.to_wire()
                    for tcp, ipv6 in ALL_TRANSPORTS:
                        for peer in (_peer(ipv6), PEER4_MAPPED):
                            fast = compiled.answer(wire, tcp, ipv6, peer)
                            slow = reference.respond(wire, tcp, ipv6, peer)
                            if ordinary:
                                assert fast is not None, (name, rdtype, options, tcp, ipv6)
                            if fast is not None:
                                assert fast == slow, (name, rdtype, options, tcp, ipv6, peer.hex())
                            response = dns.message.from_wire(slow)
                            seen_rcodes.add(response.rcode())
                            if tcp:
                                assert response.rcode() != dns.rcode.BADCOOKIE
    if require:
        assert dns.rcode.BADCOOKIE in seen_rcodes
    else:
        assert dns.rcode.BADCOOKIE not in seen_rcodes
    assert dns.rcode.FORMERR in seen_rcodes


def test_cookie_variants_of_the_root_traffic_mix_with_cookies_required(snapshot, monkeypatch):
    monkeypatch.setattr(snapshot.reference.cookies, "require", True)
    rng = random.Random(12)
    answered, compared = _check(snapshot, _mix_queries(300), rng, cookies=8)
    print(f"mix, cookies required: {compared} comparisons, fast path answered {answered}")
    assert answered == compared


def test_repeated_queries_come_from_the_shape_caches(snapshot):
    """Same question, longer names and truncation: relocation and piece selection agree."""
    reference, compiled = snapshot.reference, snapshot.compiled
    names = ["com.", "www.example.com.", "a.b.c.d.e.f.g.h.example.com.", "x" * 60 + ".nosuchtld.",
             "nic.aaa.", "a.nic.aaa.", "ns1.dns.nic.aaa.", "aa.", "zzzzzzzzzz.", "a.root-servers.net."]
    for name in names:
        for rdtype in ("A", "NS", "DS", "SOA", "TYPE666"):
            for payload in (None, 512, 600, 900, 1232):
                for do in (False, True):
                    if payload is None and do:
                        continue
                    q = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 512, want_dnssec=do)
                    wire = q.to_wire()
                    for _ in range(2):  # the second time comes from the cache
                        for tcp in (False, True):
                            fast = compiled.answer(wire, tcp, False)
                            assert fast is not None, (name, rdtype, payload, do)
                            assert fast == reference.respond(wire, tcp, False), (name, rdtype, payload, do, tcp)


def test_unusual_queries_are_left_to_the_reference_path(snapshot):
    compiled = snapshot.compiled
    nsid = dns.message.make_query(".", "SOA", use_edns=0, options=[dns.edns.GenericOption(3, b"")]).to_wire()
    chaos = dns.message.make_query("version.bind.", "TXT", rdclass="CH").to_wire()
    axfr = dns.message.make_query(".", "AXFR").to_wire()
    badvers = dns.message.make_query(".", "SOA", use_edns=1).to_wire()
    trailing = dns.message.make_query(".", "SOA", use_edns=False).to_wire() + b"\x00"
    for wire in (nsid, chaos, axfr, badvers, trailing):
        assert compiled.answer(wire, False, False) is None
    # ... and the server still answers them, through the reference path.
    assert b"test-nsid" in snapshot.answer(nsid, False, False)
    assert dns.message.from_wire(snapshot.answer(chaos, False, False)).answer


def test_rfc9471_referral_with_in_domain_glue_sets_tc(snapshot):
    """aaa. has only in-domain name servers; with DO at 512 octets their glue cannot fit."""
    q = dns.message.make_query("www.aaa.", "A", use_edns=0, payload=512, want_dnssec=True)
    response = dns.message.from_wire(snapshot.answer(q.to_wire(), False, False))
    assert response.flags & dns.flags.TC
    assert len(snapshot.answer(q.to_wire(), False, False)) <= 512
    full = dns.message.from_wire(snapshot.answer(q.to_wire(), True, False))
    assert not full.flags & dns.flags.TC
    assert {rrset.rdtype for rrset in full.additional} >= {dns.rdatatype.A, dns.rdatatype.AAAA}


CHILD_ZONE = """\
$ORIGIN root-servers.net.
$TTL 3600000
@ IN SOA a.root-servers.net. nstld.verisign-grs.com. 2026082201 14400 7200 1209600 3600000
@ IN NS a.root-servers.net.
@ IN NS b.root-servers.net.
a IN A 198.41.0.4
a IN AAAA 2001:503:ba3e::2:30
b IN A 170.247.170.2
www.deep IN TXT "an empty non-terminal above me"
"""


ISLAND_ZONE = """\
$ORIGIN in.a.far.island.
@ 3600 IN SOA ns.in.a.far.island. hostmaster.in.a.far.island. 1 3600 900 604800 300
@ 3600 IN NS ns
ns 3600 IN A 192.0.2.53
"""


def test_fast_path_matches_reference_with_several_zones(tmp_path):
    """The root, root-servers.net and a zone whose parents the root does not hold, served
    together: each name is answered by its own zone, both paths alike."""
    child = tmp_path / "root-servers.net.zone"
    child.write_text(CHILD_ZONE)
    island = tmp_path / "island.zone"
    island.write_text(ISLAND_ZONE)
    snap = build_snapshot([load_zone_file(ZONE), load_zone_file(child), load_zone_file(island)], AnswerOptions())
    names = ["root-servers.net.", "a.root-servers.net.", "b.root-servers.net.", "c.root-servers.net.",
             "x.y.root-servers.net.", "deep.root-servers.net.", "www.deep.root-servers.net.", "net.", "com.",
             "island.", "far.island.", "a.far.island.", "in.a.far.island.", "ns.in.a.far.island.",
             "x.in.a.far.island.", "x.a.far.island."]
    answered = 0
    for name in names:
        for rdtype in ("A", "AAAA", "NS", "DS", "SOA", "TXT", "ANY"):
            for do in (False, True):
                wire = dns.message.make_query(name, rdtype, want_dnssec=do).to_wire()
                slow = snap.reference.respond(wire, False, False)
                fast = snap.compiled.answer(wire, False, False)
                if fast is not None:
                    answered += 1
                    assert fast == slow, (name, rdtype, do)
    assert answered > len(names) * 10
    island_ns = dns.message.make_query("ns.in.a.far.island.", "A").to_wire()
    assert dns.message.from_wire(snap.answer(island_ns, False, False)).answer[0][0].address == "192.0.2.53"
    # a.root-servers.net. comes from its own zone, authoritatively ...
    a = dns.message.from_wire(snap.answer(dns.message.make_query("a.root-servers.net.", "A").to_wire(), False, False))
    assert a.flags & dns.flags.AA and a.answer[0][0].address == "198.41.0.4"
    # ... and DS at its apex from the parent side, as NSD does: the root, which refers to net.
    ds = dns.message.from_wire(snap.answer(dns.message.make_query("root-servers.net.", "DS", use_edns=0).to_wire(), False, False))
    assert not ds.flags & dns.flags.AA and not ds.answer
    assert ds.authority[0].name == dns.name.from_text("net.") and ds.authority[0].rdtype == dns.rdatatype.NS


def test_shape_caches_stay_bounded(snapshot, monkeypatch):
    """Past the bound the caches start afresh, and answers stay the same."""
    import imrs.answer.compiled as compiled_module

    monkeypatch.setattr(compiled_module, "_SHAPE_CACHE_LIMIT", 50)
    compiled = snapshot.compiled
    compiled._count_shape()  # earlier tests filled the caches past 50: this empties them
    assert compiled._shape_count == 1
    for wire in _mix_queries(1500):
        assert compiled.answer(wire, False, False) == snapshot.reference.respond(wire, False, False)
        assert compiled._shape_count <= 50
    cached = sum(len(v.moved) + len(v.cut) for c in compiled._classes for v in c.variants if v is not None)
    assert cached <= 50


def test_a_fast_path_failure_falls_back_to_the_reference(snapshot, monkeypatch):
    wire = dns.message.make_query("www.example.com.", "A", want_dnssec=True).to_wire()
    expected = snapshot.reference.respond(wire, False, False)

    def broken(*_args):
        raise RuntimeError("simulated fast-path bug")

    monkeypatch.setattr(snapshot.compiled, "answer", broken)
    assert snapshot.answer(wire, False, False) == expected
