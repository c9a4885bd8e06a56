"""The compiled fast path gives byte-identical responses to the reference path.

Every query of the NSD differential corpus, and the benchmark's root-traffic mix, is
answered both ways over UDP and TCP, IPv4 and IPv6, and with varied EDNS buffer sizes and
header bits; the bytes must be equal wherever the fast path answers.  The fast path must
also answer (not defer) the ordinary questions, or it would be fast for nothing.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import pytest

from imrs.answer.respond import AnswerOptions
from imrs.serve.snapshot import build_snapshot
from imrs.zone.parse import load_zone_file
from peers.corpus import build_corpus

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"
MIX = SHARED / "bench" / "queries-rootmix-mix.bin"


@pytest.fixture(scope="module")
def snapshot():
    return build_snapshot([load_zone_file(ZONE)], AnswerOptions(nsid=b"test-nsid"))


def _mix_queries(limit: int) -> list[bytes]:
    blob = MIX.read_bytes()
    out, pos = [], 0
    while pos < len(blob) and len(out) < limit:
        (length,) = struct.unpack_from("!H", blob, pos)
        out.append(blob[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def _variants(wire: bytes, rng: random.Random) -> list[tuple[bytes, bool]]:
    """The query as sent, plus copies with other RD/CD bits, other EDNS buffer sizes, an
    unknown option, and a broken option list; each with: is it an ordinary query?"""
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
        return [(w, True) for w in out] + [(out[-1][:-1], False)]
    return [(w, True) for w in out]


ALL_TRANSPORTS = ((False, False), (True, False), (False, True), (True, True))


def _check(snapshot, queries: list[bytes], rng: random.Random, transports=ALL_TRANSPORTS) -> tuple[int, int]:
    """Compare both paths; returns (ordinary queries the fast path answered, ordinary queries)."""
    compiled, reference = snapshot.compiled, snapshot.reference
    answered = compared = 0
    mismatches = []
    for wire in queries:
        for variant, ordinary in _variants(wire, rng):
            for tcp, ipv6 in transports:
                fast = compiled.answer(variant, tcp, ipv6)
                compared += ordinary
                if fast is None:
                    continue
                answered += ordinary
                slow = reference.respond(variant, tcp, ipv6)
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
