"""The C fast path (imrs._fastpath) gives the compiled path's bytes, or None, never a crash.

Every query of the NSD differential corpus and of the benchmark's root-traffic mix (with
other RD/CD bits, EDNS buffer sizes and an EDNS option) is answered by the C function and by
CompiledAnswers.answer over UDP and TCP, IPv4 and IPv6: wherever C answers, the bytes are the
same, and so is the truncated copy an RRL slip sends (C's and rrl.slip_response); on a second
pass (variants rendered, shapes cached by the Python path) C answers nearly every ordinary query.  Random and mutated messages never crash it, and repeated calls do not
leak.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import dns.edns
import dns.message
import pytest
from peers.corpus import build_corpus

from imrs.answer import fastc
from imrs.answer.cookies import CookieJar
from imrs.answer.respond import AnswerOptions
from imrs.config import CookieConfig
from imrs.serve.rrl import slip_response
from imrs.serve.snapshot import build_snapshot
from imrs.zone.parse import load_zone_file

fastpath = pytest.importorskip("imrs._fastpath", reason="the C extension imrs._fastpath is not built (no compiler at install?)")

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"
MIX = SHARED / "bench" / "queries-rootmix-mix.bin"
TRANSPORTS = ((False, False), (True, False), (False, True), (True, True))
PEERS = (bytes([192, 0, 2, 53]), bytes.fromhex("20010db8000000000000000000000053"))


@pytest.fixture(scope="module")
def snapshot():
    jar = CookieJar(CookieConfig(rotate_interval=3600.0), b"m" * 16, clock=lambda: 1_767_227_400.0)
    return build_snapshot([load_zone_file(ZONE)], AnswerOptions(nsid=b"test-nsid", tcp_keepalive=100), cookies=jar)


def mix_queries(limit: int | None = None) -> list[bytes]:
    blob = MIX.read_bytes()
    out, pos = [], 0
    while pos < len(blob) and (limit is None or len(out) < limit):
        (length,) = struct.unpack_from("!H", blob, pos)
        out.append(blob[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def has_options(wire: bytes) -> bool:
    """Does the message end in an OPT record with options (the C path leaves those alone)?"""
    return wire[11:12] == b"\x01" and len(wire) >= 11 and wire[-11:-8] != b"\x00\x00\x29"


def variants(wire: bytes, rng: random.Random) -> list[bytes]:
    """The query, with RD/CD flipped, with other EDNS buffer sizes, and with an option."""
    out = [wire]
    flipped = bytearray(wire)
    flipped[2] ^= 0x01
    flipped[3] ^= 0x10
    out.append(bytes(flipped))
    msg = dns.message.from_wire(wire)
    if msg.edns >= 0:
        for payload in (512, 1232, 4096, rng.randint(0, 65535)):
            m = dns.message.from_wire(wire)
            m.use_edns(0, m.ednsflags, payload)
            out.append(m.to_wire())
        m = dns.message.from_wire(wire)
        m.use_edns(0, m.ednsflags, m.payload, options=[dns.edns.GenericOption(65001, b"x")])
        out.append(m.to_wire())
    else:
        m = dns.message.from_wire(wire)
        m.use_edns(0, 0, 1232)
        out.append(m.to_wire())
    return out


def compare(compiled, queries: list[bytes], passes: int = 2) -> tuple[int, int]:
    """C against Python for every query and transport, ``passes`` times; returns, for the
    last pass, (ordinary answers C gave, ordinary answers Python gave), "ordinary" meaning
    without EDNS options."""
    answer = fastpath.answer
    mismatches = []
    for _ in range(passes):
        fast_count = slow_count = 0
        for wire in queries:
            plain = not has_options(wire)
            for tcp, ipv6 in TRANSPORTS:
                fast = answer(compiled, wire, tcp, ipv6)
                slow = compiled.answer(wire, tcp, ipv6, PEERS[ipv6])
                if slow is not None and plain:
                    slow_count += 1
                    fast_count += fast is not None
                if fast is not None and fast != slow:
                    mismatches.append((wire.hex(), tcp, ipv6))
                if fast is not None and fastpath.slip(fast, wire[11]) != slip_response(fast):
                    # the C loop truncates a rate-limited answer of the C path itself
                    mismatches.append(("slip", wire.hex(), tcp, ipv6))
                if not plain:
                    assert fast is None
    assert not mismatches, f"{len(mismatches)} responses differ, first: {mismatches[:3]}"
    return fast_count, slow_count


def test_identical_bytes_on_the_corpus(snapshot):
    rng = random.Random(7)
    corpus = build_corpus(ZONE, seed=20260822, scale=0.12)
    queries = [v for entry in corpus for v in variants(entry.wire, rng)]
    fast, slow = compare(snapshot.compiled, queries)
    print(f"corpus: {len(queries)} queries x 4 transports; second pass: C answered {fast} of {slow} ordinary answers")
    assert fast > 0.9 * slow


def test_identical_bytes_on_the_root_traffic_mix(snapshot):
    rng = random.Random(8)
    queries = mix_queries(20_000)
    queries += [v for wire in queries[:2000] for v in variants(wire, rng)[1:]]
    fast, slow = compare(snapshot.compiled, queries)
    print(f"mix: {len(queries)} queries x 4 transports; second pass: C answered {fast} of {slow} ordinary answers")
    assert fast > 0.97 * slow


def mutate(wire: bytes, rng: random.Random) -> bytes:
    """A real query, damaged in one or a few of the ways a hostile or broken client would."""
    data = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(9)
        if kind == 0 and data:  # truncated
            del data[rng.randrange(len(data)) :]
        elif kind == 1 and data:  # flipped bits
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 2 and data:  # a random byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 3 and len(data) > 12:  # a huge or reserved label length
            data[rng.randrange(12, len(data))] = rng.choice((63, 64, 127, 191, 255))
        elif kind == 4 and len(data) > 14:  # a compression pointer in the name
            at = rng.randrange(12, len(data) - 1)
            data[at : at + 2] = bytes((0xC0 | rng.randrange(64), rng.randrange(256)))
        elif kind == 5:  # trailing bytes
            data += rng.randbytes(rng.randint(1, 20))
        elif kind == 6 and len(data) >= 12:  # other counts or header bits
            data[rng.randrange(2, 12)] = rng.randrange(256)
        elif kind == 7 and len(data) >= 11:  # the OPT record's fields
            data[len(data) - rng.randint(1, 11)] = rng.randrange(256)
        elif kind == 8 and len(data) > 12:  # a long name
            at = rng.randrange(12, len(data))
            data[at:at] = (b"\x3f" + b"a" * 63) * rng.randint(1, 5)
    return bytes(data)


def test_random_and_mutated_messages(snapshot):
    compiled = snapshot.compiled
    answer = fastpath.answer
    rng = random.Random(20260822)
    real = mix_queries(3000)
    for wire in real:  # warm: the mutated ones that stay valid hit cached shapes
        compiled.answer(wire, False, False)
    answered = 0
    for i in range(200_000):
        if i % 4 == 0:
            wire = rng.randbytes(rng.randint(0, 600))
        elif i % 4 == 1 and i % 40 == 1:  # a random body behind a plausible header
            wire = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00" + bytes((rng.randrange(2),)) + rng.randbytes(rng.randint(0, 300))
        else:
            wire = mutate(rng.choice(real), rng)
        tcp, ipv6 = rng.random() < 0.5, rng.random() < 0.5
        fast = answer(compiled, wire, tcp, ipv6)
        if fast is not None:
            answered += 1
            assert fast == compiled.answer(wire, tcp, ipv6, PEERS[ipv6]), wire.hex()
    print(f"random and mutated: C answered {answered} of 200000")
    assert answered > 1000  # many mutations stay valid queries (flags, IDs, letter case)


class Stub:
    def __init__(self, **attributes) -> None:
        self.__dict__.update(attributes)


def test_malformed_structures_give_none():
    """Wrong types anywhere in the structures it reads: None, not a crash or an exception."""
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x01"
    tails = tuple(tuple(bytes([0x84, rdcd]) for rdcd in range(4)) for _ in (0, 1))
    good_variant = {"fit_len": 4, "pointers": (), "full": (tails, (b"BODY", b"BODY+OPT")), "moved": {}, "cut": {}}
    bad_variants = [dict(good_variant, full=bad) for bad in (None, (), (tails,), ((), ()), (tails, (1, 2)), ((((1,),),), (b"", b"")))]
    bad_variants += [dict(good_variant, fit_len=None), dict(good_variant, pointers=(1,), moved=[]), dict(good_variant, cut=None, fit_len=10**6),
                     {k: v for k, v in good_variant.items() if k != "full"}]
    for variant_attributes in bad_variants:
        cls = Stub(variants=[Stub(**variant_attributes), None, None, None])
        entry = Stub(deeper=False, exact={6: cls}, exact_default=None, below=None, gaps=None, gap_labels=None, referral=None)
        compiled = Stub(names={b"\x00": entry}, _edns_size=1232, _caps=(1232, 1232))
        assert fastpath.answer(compiled, query, False, False) is None
    for compiled in (None, Stub(names=None), Stub(names={b"\x00": None}, _caps=()), Stub(names={b"\x00": Stub(deeper=1)}),
                     Stub(names={b"\x00": Stub(deeper=False, exact=[], exact_default=None)}, _caps=(1, 1))):
        assert fastpath.answer(compiled, query, True, True) is None
    below = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x06\x00\x01"
    for gaps, labels in ((None, None), ([], []), ([None], [1]), ([Stub()], None), ([], [b"b", 3])):
        entry = Stub(deeper=True, below=None, gaps=gaps, gap_labels=labels, referral=None)
        assert fastpath.answer(Stub(names={b"\x00": entry}, _caps=(1, 1)), below, False, False) is None
    with pytest.raises(TypeError):
        fastpath.answer(None, b"")
    assert fastpath.answer(None, bytearray(query), False, False) is None


def test_make_answer_and_the_switch(snapshot, monkeypatch):
    compiled = snapshot.compiled
    assert fastc.AVAILABLE
    answer = fastc.make_answer(compiled)
    assert answer is not compiled.answer
    rng = random.Random(3)
    for wire in mix_queries(500):
        for v in variants(wire, rng):
            for tcp, ipv6 in TRANSPORTS:
                expected = compiled.answer(v, tcp, ipv6, PEERS[ipv6])
                assert answer(v, tcp, ipv6, PEERS[ipv6]) == expected
                assert fastc.answer(compiled, v, tcp, ipv6, PEERS[ipv6]) == expected
    monkeypatch.setenv("IMRS_NO_FASTC", "1")
    assert not fastc.enabled()
    assert fastc.make_answer(compiled) == compiled.answer


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc for the resident set size")
def test_no_leak_over_a_million_calls(snapshot):
    compiled = snapshot.compiled
    answer = fastpath.answer
    rng = random.Random(5)
    queries = mix_queries(1000)
    queries += [mutate(w, rng) for w in queries]  # the early-None and error paths too
    queries = [(w, tcp, ipv6) for w in queries for tcp, ipv6 in TRANSPORTS]
    for w, tcp, ipv6 in queries:
        compiled.answer(w, tcp, ipv6)  # warm the caches (and Python's own allocations)
        answer(compiled, w, tcp, ipv6)

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    calls = 0
    while calls < 1_000_000:
        for w, tcp, ipv6 in queries:
            answer(compiled, w, tcp, ipv6)
        calls += len(queries)
    grown = rss() - before
    print(f"{calls} calls: RSS grew {grown} bytes")
    assert grown < 4 << 20


def test_c_slips_the_junk_replies_as_python_does(snapshot):
    """The bare-header replies to flood junk (FORMERR, NOTIMP: what the C loop's early replies
    are) get the same truncated copy from C as from rrl.slip_response, so that a rate-limited
    error never enters Python; anything else C declines is Python's (None), never different."""
    from flood.floodgen import junk_payload

    rng = random.Random(12)
    bare = 0
    for _ in range(6000):
        wire = junk_payload(rng, ["com", "net", "org"], (0.05, 0.05, 0.9))
        response = snapshot.reference.respond(wire, False, False)
        if response is None or len(response) < 12:
            continue
        c = fastpath.slip(response, wire[11])
        if len(response) == 12 and not any(response[4:12]):
            bare += 1
            assert c is not None, response.hex()
        if c is not None:
            assert c == slip_response(response), (wire.hex(), response.hex())
    headers = [bytes(rng.randrange(256) for _ in range(4)) + bytes(8) for _ in range(500)]
    for header in headers:  # any bare header, whatever its flags
        assert fastpath.slip(header, 0) == slip_response(header) == header[:2] + bytes([header[2] | 2]) + header[3:]
    assert bare > 1000
