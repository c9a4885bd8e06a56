"""The C rate limiter (imrs._fastpath.RrlGate) against the Python one: the same verdicts,
counters, tables and log lines on the same traffic (tests/test_rrl.py runs every behaviour test
on each of them)."""

from __future__ import annotations

import logging
import random
from collections import Counter

import dns.rcode
import pytest
from test_rrl import (
    NATIVE,
    SEND,
    FakeClock,
    dnskey_answer,
    error,
    ip,
    nodata,
    nxdomain,
    positive,
    referral,
)

from imrs.config import RrlConfig
from imrs.serve import rrl
from imrs.serve.rrl import RateLimiter


@pytest.mark.skipif(not NATIVE, reason="the C extension is not built")
@pytest.mark.parametrize(("seed", "slip", "log_only"), [(0, 2, False), (1, 2, False), (2, 0, False), (3, 1, False),
                                                       (4, 3, True), (5, 2, False)])
def test_c_gate_makes_the_python_decisions(seed, slip, log_only, caplog):
    """The same random traffic (IPv4, IPv6, IPv4-mapped and exempt sources, every category,
    malformed responses, bursts over the rate, the clock stepping forward, standing still and
    going back) through both deciders: the same verdicts, counters, tables and log lines."""
    caplog.set_level(logging.INFO, logger="imrs.rrl")
    rnd = random.Random(seed)
    settings = {"rate": 4, "slip": slip, "log_only": log_only, "table_size": 64, "ipv6_prefix": 48,
                "exempt": ("198.51.100.0/24", "2001:db8:ffff::/48", "::ffff:203.0.113.0/120")}
    sources = ([ip(f"10.0.{n}.{rnd.randrange(256)}") for n in range(40)]
               + [ip(f"2001:db8:{n:x}::{rnd.randrange(1, 9)}") for n in range(40)]
               + [ip(f"::ffff:10.1.{n}.1") for n in range(10)]
               + [ip("198.51.100.7"), ip("2001:db8:ffff::1"), ip("::ffff:203.0.113.9"), ip("203.0.113.9")])
    responses = [referral("www.example.com.", "com."), referral("a.org.", "org."), nxdomain("nope."),
                 nodata(), positive(), positive("www.example.com.", "AAAA", "2001:db8::1"), error(),
                 dnskey_answer(), nxdomain("x.example.", "example.", soa_last=False), error("a.b.", dns.rcode.SERVFAIL),
                 # letter case (0x20): the same buckets as in lower case
                 referral("WWW.Example.COM.", "COM."), nxdomain("x.ExAmple.", "ExAmple."),
                 positive("Www.Example.Com.", "AAAA", "2001:db8::1"), nodata("Example.Org.", "MX", "Org."),
                 # a question longer than any name (malformed: an error, in both)
                 b"\x00\x01\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00" + (b"\x3fa" + b"a" * 62) * 21
                 + b"\x00\x00\x01\x00\x01" + bytes(20)]
    # malformed: cut short anywhere, or with bytes changed (labels, pointers, counts)
    for base in list(responses):
        responses.append(base[: rnd.randrange(0, len(base))])
        mutated = bytearray(base)
        for _ in range(3):
            mutated[rnd.randrange(2, len(mutated))] = rnd.choice([0x00, 0x02, 0x06, 0x3F, 0x41, 0xC0, 0xC1, 0xFF])
        responses.append(bytes(mutated))
    assert len({rrl.classify(r)[0] for r in responses}) == 6  # every category
    deciders = []
    for native in (False, True):
        clock = FakeClock(1000.0)
        rl = RateLimiter(RrlConfig(**settings), clock=clock, native=native, secret=bytes(range(16)))
        deciders.append((rl, clock))
    verdicts: list[list[int]] = [[], []]
    logged: list[list[str]] = [[], []]
    t = 1000.0
    for _ in range(6000):
        r = rnd.random()
        t += 0.0 if r < 0.997 else rnd.choice([0.3, 1.0, 2.5, 20.0, -3.0])
        # a few heavy hitters (IPv4, IPv6, mapped) and many light ones
        peer = rnd.choice(sources[:1] + sources[40:41] + sources[80:81]) if rnd.random() < 0.8 else rnd.choice(sources)
        response = rnd.choice(responses)
        for k, (rl, clock) in enumerate(deciders):
            clock.t = t
            caplog.clear()
            verdicts[k].append(rl.decide(peer, b"", response))
            logged[k] += [r.getMessage() for r in caplog.records if r.name == "imrs.rrl"]
    (py, _), (c, _) = deciders
    assert verdicts[0] == verdicts[1]
    assert logged[0] == logged[1] and any("rrl: block" in line for line in logged[0])
    if log_only:
        assert py.stats.log_only_would_limit > 0
    else:
        assert Counter(verdicts[0])[SEND] < len(verdicts[0])  # the run did limit
    assert py.stats.as_dict() == c.stats.as_dict()
    assert py.stats.exempt > 0 and py.stats.classified > 0
    for column in ("_gword", "_gused", "_ghalf", "_bkey", "_bcount", "_bhalf", "_blimited"):
        assert getattr(py, column) == getattr(c, column), column


@pytest.mark.skipif(not NATIVE, reason="the C extension is not built")
def test_c_gate_reads_any_bytes_as_python_does():
    """Random octets and heavily mutated responses, every one over the gate (rate 1, one
    source): the C reader never crashes, and files each in the bucket Python does."""
    rnd = random.Random(99)
    bases = [referral("www.example.com.", "com."), nxdomain("x.Example.", "Example."), nodata(), dnskey_answer(),
             positive("Www.Example.Com.", "AAAA", "2001:db8::1")]
    wires = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300))) for _ in range(3000)]
    for _ in range(6000):
        w = bytearray(rnd.choice(bases))
        for _ in range(rnd.randrange(1, 8)):
            w[rnd.randrange(len(w))] = rnd.choice([0, 1, 2, 6, 0x3F, 0x40, 0x41, 0x7F, 0xC0, 0xC0 | rnd.randrange(64),
                                                   rnd.randrange(256)])
        wires.append(bytes(w[: rnd.randrange(len(w) // 2, len(w) + 1)]))
    limiters = [RateLimiter(RrlConfig(rate=1, table_size=4096), clock=FakeClock(), native=native,
                            secret=bytes(range(16))) for native in (False, True)]
    peer = ip("192.0.2.1")
    for wire in wires:
        assert limiters[0].decide(peer, b"", wire) == limiters[1].decide(peer, b"", wire)
    assert limiters[0]._bkey == limiters[1]._bkey
    assert limiters[0].stats.as_dict() == limiters[1].stats.as_dict()
