"""Response rate limiting: buckets, accounting, slip, exemptions, log-only, bounded memory,
and the truncated (slipped) response.  Time comes from a fake clock: nothing here is timed."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.tsig
import pytest

from imrs.answer import fastc
from imrs.config import RrlConfig
from imrs.serve import rrl
from imrs.serve.rrl import DROP, SEND, SLIP, RateLimiter, classify, slip_response

ROOT_SOA = "a.root-servers.net. nstld.verisign-grs.com. 2026082201 1800 900 604800 86400"
ZONE = Path(__file__).resolve().parents[2] / "shared" / "zones" / "testroot" / "root-2026082201.zone"


class FakeClock:
    def __init__(self, t: float = 5000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


NATIVE = fastc.enabled() and hasattr(fastc._fastpath, "RrlGate")
IMPLEMENTATIONS = ["python", "c"] if NATIVE else ["python"]
_native = False  # the implementation the running test's limiters use (set by the fixture below)


@pytest.fixture(autouse=True, params=IMPLEMENTATIONS)
def implementation(request, monkeypatch):
    """Every test on both deciders: the Python closure and the C gate (when built)."""
    monkeypatch.setattr(sys.modules[__name__], "_native", request.param == "c")
    return request.param


def test_the_c_gate_is_built_where_ci_runs():
    if os.environ.get("CI") == "true":
        assert NATIVE, "CI builds the C extension: the C gate must be tested there"


def limiter(clock: FakeClock | None = None, **settings) -> tuple[RateLimiter, FakeClock]:
    clock = clock or FakeClock()
    settings.setdefault("rate", 20)
    settings.setdefault("table_size", 4096)
    # a fixed bucket secret: the same slots in every run (a test that found a bucket collision
    # finds it every time, not 1 in 200)
    rl = RateLimiter(RrlConfig(**settings), clock=clock, native=_native, secret=bytes(range(16)))
    assert (rl.gate is not None) == (_native and RrlConfig(**settings).rate > 0)
    return rl, clock


# -- responses -------------------------------------------------------------------------------

def _response(qname: str, qtype: str = "A", *, dnssec: bool = True, edns: bool = True) -> dns.message.Message:
    if edns:
        query = dns.message.make_query(qname, qtype, want_dnssec=dnssec, payload=1232)
    else:
        query = dns.message.make_query(qname, qtype)
    return dns.message.make_response(query)


def referral(qname: str, delegation: str, *, edns: bool = True) -> bytes:
    r = _response(qname, edns=edns)
    r.flags &= ~dns.flags.AA
    r.authority.append(dns.rrset.from_text(delegation, 172800, "IN", "NS", f"a.ns.{delegation}", f"b.ns.{delegation}"))
    r.additional.append(dns.rrset.from_text(f"a.ns.{delegation}", 172800, "IN", "A", "192.0.2.53"))
    return r.to_wire()


def nxdomain(qname: str, zone: str = ".", *, soa_last: bool = True) -> bytes:
    r = _response(qname)
    r.flags |= dns.flags.AA
    r.set_rcode(dns.rcode.NXDOMAIN)
    soa = dns.rrset.from_text(zone, 86400, "IN", "SOA", ROOT_SOA)
    nsec = dns.rrset.from_text(f"aaa.{zone}".replace("..", "."), 86400, "IN", "NSEC", f"zzz.{zone}".replace("..", ".") + " NS DS RRSIG NSEC")
    r.authority.extend([nsec, soa] if soa_last else [soa, nsec])
    return r.to_wire()


def nodata(qname: str = ".", qtype: str = "MX", zone: str = ".") -> bytes:
    r = _response(qname, qtype)
    r.flags |= dns.flags.AA
    r.authority.append(dns.rrset.from_text(zone, 86400, "IN", "SOA", ROOT_SOA))
    return r.to_wire()


def positive(qname: str = ".", qtype: str = "SOA", *rdatas: str, answer_type: str | None = None) -> bytes:
    r = _response(qname, qtype)
    r.flags |= dns.flags.AA
    r.answer.append(dns.rrset.from_text(qname, 86400, "IN", answer_type or qtype, *(rdatas or (ROOT_SOA,))))
    return r.to_wire()


def error(qname: str = "example.", rcode: int = dns.rcode.REFUSED) -> bytes:
    r = _response(qname)
    r.set_rcode(rcode)
    return r.to_wire()


DNSKEY = "257 3 8 AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU="


def dnskey_answer() -> bytes:
    return positive(".", "DNSKEY", DNSKEY)


def send(rl: RateLimiter, peer: bytes, response: bytes, count: int) -> Counter:
    """`count` decisions for the same response, at the current time."""
    return Counter(rl.decide(peer, b"", response) for _ in range(count))


def run_seconds(rl: RateLimiter, clock: FakeClock, peer: bytes, response: bytes,
                per_second: int, seconds: int) -> list[int]:
    """`per_second` responses spread over each of `seconds` seconds: the number sent in each."""
    start = clock.t
    sent = []
    for s in range(seconds):
        ok = 0
        for i in range(per_second):
            clock.t = start + s + i / per_second
            ok += rl.decide(peer, b"", response) == SEND
        sent.append(ok)
    clock.t = start + seconds
    return sent


def flood(rl: RateLimiter, peer: bytes, response: bytes) -> None:
    """Enough of one response at one instant to have its bucket limited."""
    decisions = send(rl, peer, response, 4 * rl.config.rate)
    assert decisions[SEND] < 4 * rl.config.rate, "the flood was not limited"


# -- accounting ------------------------------------------------------------------------------

def test_steady_rate_passes():
    rl, clock = limiter(rate=50)
    response = nxdomain("nope.")
    assert run_seconds(rl, clock, ip("192.0.2.1"), response, 50, 30) == [50] * 30
    assert rl.stats.limited == rl.stats.dropped == rl.stats.slipped == 0
    assert rl.stats.responses == 50 * 30


def test_under_the_rate_in_bursts_passes():
    rl, clock = limiter(rate=50)
    response = referral("www.example.com.", "com.")
    for _ in range(20):
        assert send(rl, ip("192.0.2.1"), response, 40)[SEND] == 40  # all at one instant
        clock.t += 1
    assert rl.stats.limited == 0


@pytest.mark.parametrize("per_second", [75, 100, 1000])
def test_flood_is_held_to_the_rate(per_second):
    rl, clock = limiter(rate=50)
    sent = run_seconds(rl, clock, ip("198.51.100.7"), nxdomain("nope."), per_second, 20)
    # NSD lets a new bucket reach twice the rate in its first second; the gate adds at most
    # one rate's worth before the prefix is accounted.  After that every response counts,
    # limited or not (as NSD counts them): a flood gets less than the rate, and one of twice
    # the rate or more gets nothing but slips
    assert sent[0] <= 3 * 50
    assert max(sent[-10:]) < 50
    if per_second >= 2 * 50:
        assert sum(sent[-10:]) <= 10
    assert rl.stats.limited == per_second * 20 - sum(sent)
    assert rl.stats.blocks == 1


class NsdBucket:
    """One bucket as NSD 4.6.1's rrl_update keeps it (rrl.c; lm is twice rrl-ratelimit): each
    response counted first, then limited when max(rate, counter + rate/2) >= lm."""

    def __init__(self, lm: int):
        self.lm, self.rate, self.counter, self.stamp = lm, 0, 0, None

    def limited(self, now: int) -> bool:
        if self.stamp is None:  # a new bucket
            self.stamp, self.counter, self.rate = now, 1, 0
            return 1 >= self.lm
        if now - self.stamp == 1:
            self.rate = self.rate // 2 + self.counter
            self.counter, self.stamp = 1, now
        elif now - self.stamp > 0:  # rrl_attenuate_bucket
            elapsed = now - self.stamp
            self.rate = 0 if elapsed > 16 else (self.rate >> elapsed) + (self.counter >> (elapsed - 1))
            self.counter, self.stamp = 1, now
        elif now != self.stamp:  # the clock went back
            self.rate, self.counter, self.stamp = 0, 1, now
        else:
            self.counter += 1
        value = self.counter + self.rate // 2 if self.counter > self.rate // 2 else self.rate
        return value >= self.lm


def test_a_flood_is_limited_exactly_as_nsd_limits_it():
    """Second by second, a prefix that floods one bucket at or above the rate (so that every
    response of it reaches the bucket) gets each response sent or limited as NSD 4.6.1 would:
    a bucket whose smoothed rate is at the limit is limited from the first response of a
    second, not only once that second's count is added."""
    rate = 50
    rng = random.Random(4)
    rl, clock = limiter(rate=rate)
    model = NsdBucket(2 * rate)
    peer, response = ip("198.51.100.7"), nxdomain("nope.")
    start = int(clock.t)
    differ = []
    for second in range(40):
        per_second = rng.choice((rate, rate + 1, 2 * rate - 1, 2 * rate, 3 * rate, 8 * rate, rng.randint(rate, 8 * rate)))
        for i in range(per_second):
            clock.t = start + second + i / per_second
            ours = rl.decide(peer, b"", response) != SEND
            nsd = model.limited(start + second)
            if ours != nsd:
                differ.append((second, per_second, i, ours, nsd))
    assert not differ, f"{len(differ)} decisions differ from NSD's, first (second, per second, index, imrs, nsd): {differ[:5]}"
    assert rl.stats.limited > 0


def test_limit_lifts_when_the_flood_stops():
    rl, clock = limiter(rate=50)
    peer, response = ip("198.51.100.7"), nxdomain("nope.")
    run_seconds(rl, clock, peer, response, 500, 5)
    assert send(rl, peer, response, 100)[SEND] == 0  # still limited
    clock.t += 5  # quiet: the debt halves every second
    assert run_seconds(rl, clock, peer, response, 50, 5) == [50] * 5


def test_sources_under_the_rate_skip_classification():
    # the gate: a prefix well under the rate is never parsed beyond its first response
    rl, clock = limiter(rate=20)
    response = referral("www.example.com.", "com.")
    for _ in range(10):
        for n in range(500):
            assert rl.decide(ip(f"10.{n // 256}.{n % 256}.1"), b"", response) == SEND
        clock.t += 1
    assert rl.stats.classified <= 500 + rl.stats.collisions
    assert rl.stats.responses == 5000


def test_gate_collisions_never_let_a_flood_through():
    # 10.0.0.0/24, 14.0.0.0/24 and 18.0.0.0/24 are 2**18 prefixes apart: one slot pair of the
    # gate (two ways) for the three, while their buckets are (almost surely) apart
    rl, clock = limiter(rate=20, table_size=1 << 18)
    flooder, quiet = ip("10.0.0.1"), (ip("14.0.0.1"), ip("18.0.0.1"))
    response = nxdomain("nope.")
    start = clock.t
    sent = []
    for s in range(10):
        ok = 0
        for i in range(200):
            clock.t = start + s + i / 200
            ok += rl.decide(flooder, b"", response) == SEND
            if i % 40 == 0:
                for peer in quiet:
                    assert rl.decide(peer, b"", response) == SEND
        sent.append(ok)
    assert sent[0] <= 2 * 20
    assert sum(sent[1:]) == 0  # 200/s, ten times the rate: held from the second second on


def test_two_prefixes_share_a_gate_pair_without_thrashing():
    rl, clock = limiter(rate=20, table_size=1 << 18)
    a, b = ip("10.0.0.1"), ip("14.0.0.1")  # one slot pair of the gate
    response = referral("www.example.com.", "com.")
    for _ in range(5):
        for _ in range(5):
            assert rl.decide(a, b"", response) == SEND
            assert rl.decide(b, b"", response) == SEND
        clock.t += 1
    assert rl.stats.classified == 10  # their first second only


def test_clock_going_back_does_not_break_or_lock():
    rl, clock = limiter(rate=10)
    peer, response = ip("192.0.2.1"), nxdomain("nope.")
    flood(rl, peer, response)
    clock.t -= 100
    assert send(rl, peer, response, 10)[SEND] == 10  # the rate is forgotten, as NSD does
    clock.t += 1000
    assert send(rl, peer, response, 10)[SEND] == 10


def test_rate_zero_sends_everything():
    rl, _ = limiter(rate=0)
    assert send(rl, ip("192.0.2.1"), nxdomain("nope."), 1000)[SEND] == 1000


# -- buckets ---------------------------------------------------------------------------------

def test_categories_are_separate_buckets():
    rl, _ = limiter()
    peer = ip("10.0.0.1")
    flood(rl, peer, nxdomain("nope."))
    assert send(rl, peer, nxdomain("other."), 10)[SEND] == 0  # same zone: same bucket
    for response in (referral("www.example.com.", "com."), nodata(), positive(), error(),
                     dnskey_answer()):
        assert send(rl, peer, response, 10)[SEND] == 10, classify(response)
    assert send(rl, peer, nxdomain("nope."), 10)[SEND] == 0


def test_referrals_are_per_delegation_point():
    rl, _ = limiter()
    peer = ip("10.0.0.1")
    flood(rl, peer, referral("www.example.com.", "com."))
    # any name under com., in any case, is the same bucket
    assert send(rl, peer, referral("mail.OTHER.Com.", "COM."), 10)[SEND] == 0
    assert send(rl, peer, referral("www.example.net.", "net."), 10)[SEND] == 10
    assert send(rl, peer, referral("a.b.c.arpa.", "arpa."), 10)[SEND] == 10


def test_nxdomain_and_nodata_are_per_zone():
    rl, _ = limiter()
    peer = ip("10.0.0.1")
    flood(rl, peer, nxdomain("a.nope.", "."))
    assert send(rl, peer, nxdomain("b.nope.", "."), 10)[SEND] == 0
    assert send(rl, peer, nxdomain("x.arpa.", "arpa."), 10)[SEND] == 10
    flood(rl, peer, nodata(".", "MX"))
    assert send(rl, peer, nodata(".", "TXT"), 10)[SEND] == 0  # nodata: by zone, not qtype
    assert send(rl, peer, nodata("arpa.", "MX", "arpa."), 10)[SEND] == 10


def test_positive_answers_are_per_qname_and_qtype():
    rl, _ = limiter()
    peer = ip("10.0.0.1")
    flood(rl, peer, positive(".", "SOA"))
    assert send(rl, peer, positive(".", "SOA"), 10)[SEND] == 0
    assert send(rl, peer, positive(".", "NS", "a.root-servers.net."), 10)[SEND] == 10
    assert send(rl, peer, positive("com.", "DS", "19718 13 2 8acbb0cd28f41250a80a491389424d341522d946b0da0c0291f2d3d771d7805a"), 10)[SEND] == 10


def test_large_answers_share_a_bucket_per_name():
    rl, _ = limiter()
    peer = ip("10.0.0.1")
    big = positive("big.", "TXT", *(f'"{"x" * 199}{n}"' for n in range(5)))
    assert len(big) >= rrl.LARGE_SIZE
    assert classify(big)[0] == rrl.LARGE and classify(dnskey_answer())[0] == rrl.LARGE
    flood(rl, peer, dnskey_answer())
    # ANY and RRSIG answers for the same name are the same (amplification) bucket
    assert send(rl, peer, positive(".", "ANY", ROOT_SOA, answer_type="SOA"), 10)[SEND] == 0
    assert send(rl, peer, positive(".", "RRSIG", ROOT_SOA, answer_type="SOA"), 10)[SEND] == 0
    assert send(rl, peer, positive(".", "SOA"), 10)[SEND] == 10  # small positive: its own
    assert send(rl, peer, big, 10)[SEND] == 10


def test_errors_share_one_bucket_per_prefix():
    rl, _ = limiter()
    peer = ip("10.0.0.1")
    flood(rl, peer, error("a.example.", dns.rcode.REFUSED))
    assert send(rl, peer, error("b.other.", dns.rcode.FORMERR), 10)[SEND] == 0
    assert send(rl, peer, error("c.example.", dns.rcode.NOTIMP), 10)[SEND] == 0
    assert send(rl, peer, b"\x00\x01\x81", 10)[SEND] == 0  # unparseable: an error too
    assert send(rl, ip("10.0.1.1"), error(), 10)[SEND] == 10


def test_ipv4_prefixes_aggregate():
    rl, _ = limiter()
    response = nxdomain("nope.")
    flood(rl, ip("10.0.0.1"), response)
    assert send(rl, ip("10.0.0.2"), response, 10)[SEND] == 0
    assert send(rl, ip("10.0.0.255"), response, 10)[SEND] == 0
    assert send(rl, ip("10.0.1.1"), response, 10)[SEND] == 10
    assert send(rl, ip("11.0.0.1"), response, 10)[SEND] == 10
    # an IPv4-mapped IPv6 source is its IPv4 address
    assert send(rl, ip("::ffff:10.0.0.9"), response, 10)[SEND] == 0


def test_ipv6_prefixes_aggregate_by_56():
    rl, _ = limiter()
    response = nxdomain("nope.")
    flood(rl, ip("2001:db8:0:100::1"), response)
    assert send(rl, ip("2001:db8:0:1ff:ffff::53"), response, 10)[SEND] == 0  # same /56
    assert send(rl, ip("2001:db8:0:200::1"), response, 10)[SEND] == 10  # next /56
    assert send(rl, ip("2001:db9:0:100::1"), response, 10)[SEND] == 10
    assert send(rl, ip("10.0.0.1"), response, 10)[SEND] == 10


def test_prefix_lengths_are_configurable():
    rl, _ = limiter(ipv4_prefix=32, ipv6_prefix=64)
    response = nxdomain("nope.")
    flood(rl, ip("10.0.0.1"), response)
    assert send(rl, ip("10.0.0.2"), response, 10)[SEND] == 10
    flood(rl, ip("2001:db8::1"), response)
    assert send(rl, ip("2001:db8::2"), response, 10)[SEND] == 0
    assert send(rl, ip("2001:db8:0:1::1"), response, 10)[SEND] == 10


def test_a_slot_collision_overwrites_the_bucket():
    # as in NSD: the table does not grow; a new key takes the slot and starts afresh
    rl, _ = limiter(table_size=1)
    a, b = nxdomain("nope."), referral("www.example.com.", "com.")
    flood(rl, ip("10.0.0.1"), a)
    assert send(rl, ip("10.0.0.1"), b, 1)[SEND] == 1
    assert rl.stats.collisions >= 1
    assert send(rl, ip("10.0.0.1"), a, 1)[SEND] == 1


# -- slip ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("slip", "pattern"), [
    (0, [DROP] * 6),
    (1, [SLIP] * 6),
    (2, [DROP, SLIP] * 3),
    (3, [DROP, DROP, SLIP] * 2),
])
def test_slip_ratio(slip, pattern):
    rl, _ = limiter(rate=10, slip=slip)
    peer, response = ip("192.0.2.1"), nxdomain("nope.")
    decisions = [rl.decide(peer, b"", response) for _ in range(100)]
    limited = [d for d in decisions if d != SEND]
    assert len(limited) >= 60
    assert limited[:6] == pattern
    counts = Counter(limited)
    if slip:
        assert counts[SLIP] == len(limited) // slip
    else:
        assert counts[SLIP] == 0
    assert rl.stats.limited == len(limited)
    assert rl.stats.dropped == counts[DROP] and rl.stats.slipped == counts[SLIP]


# -- exemptions and log-only -----------------------------------------------------------------

def test_exempt_networks_are_never_limited():
    rl, _ = limiter(exempt=("10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::ffff:198.51.100.0/120"))
    response = nxdomain("nope.")
    for peer in ("10.1.2.3", "2001:db8:1::1", "192.0.2.7", "::ffff:10.9.9.9", "198.51.100.9"):
        assert send(rl, ip(peer), response, 500)[SEND] == 500, peer
    assert rl.stats.exempt == 2500
    assert rl.stats.limited == 0
    flood(rl, ip("192.0.2.8"), response)  # the /24 of an exempt /32 is not exempt
    flood(rl, ip("2001:db9::1"), response)


def test_log_only_sends_everything_and_counts_what_it_would_limit(caplog):
    caplog.set_level(logging.INFO, logger="imrs.rrl")
    enforcing, clock_e = limiter(rate=50)
    watching, clock_w = limiter(rate=50, log_only=True)
    peer, response = ip("198.51.100.7"), nxdomain("nope.")
    sent_e = run_seconds(enforcing, clock_e, peer, response, 300, 5)
    sent_w = run_seconds(watching, clock_w, peer, response, 300, 5)
    assert sent_w == [300] * 5
    assert watching.stats.log_only_would_limit == enforcing.stats.limited == 1500 - sum(sent_e) > 0
    assert watching.stats.limited == watching.stats.dropped == watching.stats.slipped == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "imrs.rrl"]
    assert any("block" in line and "log-only" in line and "198.51.100.0/24" in line for line in lines)


# -- logging ---------------------------------------------------------------------------------

def test_block_and_unblock_are_logged(caplog):
    caplog.set_level(logging.INFO, logger="imrs.rrl")
    rl, clock = limiter(rate=20)
    flood(rl, ip("192.0.2.1"), nxdomain("nope."))
    blocks = [r for r in caplog.records if "rrl: block" in r.getMessage()]
    assert len(blocks) == 1 and blocks[0].levelno == logging.INFO
    assert "nxdomain . for 192.0.2.0/24" in blocks[0].getMessage()
    assert not [r for r in caplog.records if "unblock" in r.getMessage()]
    # the source goes quiet; other traffic keeps the server's clock going
    for _ in range(3):
        clock.t += 1
        rl.decide(ip("203.0.113.1"), b"", positive())
    unblocks = [r.getMessage() for r in caplog.records if "rrl: unblock" in r.getMessage()]
    assert len(unblocks) == 1 and "192.0.2.0/24" in unblocks[0] and "limited" in unblocks[0]
    assert rl.stats.blocks == rl.stats.unblocks == 1


def test_logging_is_bounded(caplog):
    caplog.set_level(logging.INFO, logger="imrs.rrl")
    rl, clock = limiter(rate=5)
    response = nxdomain("nope.")
    for n in range(300):
        send(rl, ip(f"10.{n // 256}.{n % 256}.1"), response, 30)
    lines = [r.getMessage() for r in caplog.records if r.name == "imrs.rrl"]
    assert rl.stats.blocks == 300
    assert len(lines) == rrl.LOG_LINES
    assert rl.stats.log_suppressed == 300 - rrl.LOG_LINES
    clock.t += rrl.LOG_WINDOW
    rl.decide(ip("203.0.113.1"), b"", positive())
    assert any("suppressed" in r.getMessage() for r in caplog.records)


# -- memory ----------------------------------------------------------------------------------

def _new_sources(rl: RateLimiter, first: int, count: int) -> None:
    """One response from each of `count` sources, each in its own /24 (so each is a new prefix
    for the tables), answered REFUSED (the cheapest to classify)."""
    decide, response = rl.decide, error()
    for n in range(first, first + count):
        decide((n << 8 | 1).to_bytes(4, "big"), b"", response)


def test_memory_is_the_same_after_a_million_sources():
    rl, clock = limiter(rate=10, table_size=50_000)
    tables = rl.memory()
    _new_sources(rl, 0, 1_000)
    blocks = sys.getallocatedblocks()
    _new_sources(rl, 1_000, 999_000)
    clock.t += 1
    _new_sources(rl, 0, 1_000)
    assert rl.stats.responses == 1_001_000
    assert rl.stats.collisions > 900_000  # the table was full, and overwritten
    assert rl.memory() == tables
    # a single object kept per source would be a million blocks
    assert abs(sys.getallocatedblocks() - blocks) < 500


def test_memory_traced_while_the_table_turns_over():
    rl, clock = limiter(rate=10, table_size=2048)
    tracemalloc.start()
    try:
        _new_sources(rl, 0, 1_000)
        after_thousand = tracemalloc.get_traced_memory()[0]
        _new_sources(rl, 1_000, 30_000)  # the table over many times
        clock.t += 1
        _new_sources(rl, 0, 1_000)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert rl.stats.collisions > 25_000
    assert abs(after - after_thousand) < 2048, (after_thousand, after)


# -- the wire ---------------------------------------------------------------------------------

def test_classify_reads_names_from_the_wire():
    assert classify(referral("www.Example.COM.", "COM.")) == (rrl.REFERRAL, b"\x03com\x00", -1)
    assert classify(nxdomain("nope.", soa_last=True)) == (rrl.NXDOMAIN, b"\x00", -1)
    assert classify(nxdomain("a.b.arpa.", "arpa.")) == (rrl.NXDOMAIN, b"\x04arpa\x00", -1)
    assert classify(nodata()) == (rrl.NODATA, b"\x00", -1)
    assert classify(positive("Com.", "DS", "1 8 2 " + "ab" * 32)) == (rrl.POSITIVE, b"\x03com\x00", 43)
    assert classify(error()) == (rrl.ERROR, b"", -1)
    assert classify(b"") == (rrl.ERROR, b"", -1)
    # an NS owner that is not a pointer into the question (no compression)
    wire = bytearray(b"\x12\x34\x80\x00\x00\x01\x00\x00\x00\x01\x00\x00")
    wire += b"\x03www\x07example\x03net\x00\x00\x01\x00\x01"
    wire += b"\x03NET\x00\x00\x02\x00\x01\x00\x00\x0e\x10\x00\x06\x01a\x01b\x00\x00"
    wire[-7:-5] = (7).to_bytes(2, "big")
    assert classify(bytes(wire))[:2] == (rrl.REFERRAL, b"\x03net\x00")


@pytest.mark.skipif(not ZONE.exists(), reason="no test root zone")
def test_classify_imrs_answers():
    from imrs.answer.respond import AnswerOptions
    from imrs.serve.snapshot import build_snapshot
    from imrs.zone.parse import load_zone_file

    snapshot = build_snapshot([load_zone_file(ZONE)], AnswerOptions())
    expected = [
        ("www.example.COM.", "A", rrl.REFERRAL, b"\x03com\x00"),
        ("nonexistent-tld-xyz.", "A", rrl.NXDOMAIN, b"\x00"),
        (".", "MX", rrl.NODATA, b"\x00"),
        (".", "DNSKEY", rrl.LARGE, b"\x00"),
        ("com.", "DS", rrl.POSITIVE, b"\x03com\x00"),
    ]
    for qname, qtype, category, name in expected:
        for dnssec in (False, True):
            query = dns.message.make_query(qname, qtype, want_dnssec=dnssec, payload=1232)
            wire = snapshot.answer(query.to_wire(), False, False)
            assert classify(wire)[:2] == (category, name), (qname, qtype, dnssec)
            check_slipped(wire, slip_response(wire))


def check_slipped(original: bytes, slipped: bytes) -> dns.message.Message:
    before = dns.message.from_wire(original)
    after = dns.message.from_wire(slipped)
    assert after.flags & dns.flags.TC
    assert after.id == before.id and after.rcode() == before.rcode()
    assert after.question == before.question
    assert not after.answer and not after.authority and not after.additional
    assert after.edns == before.edns and after.payload == before.payload
    assert after.options == before.options
    return after


def test_slip_response_keeps_question_and_opt():
    r = _response("www.example.com.")
    r.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.GenericOption(dns.edns.NSID, b"imrs-1")])
    r.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    r.authority.append(dns.rrset.from_text("com.", 172800, "IN", "NS", "a.gtld-servers.net."))
    r.additional.append(dns.rrset.from_text("a.gtld-servers.net.", 172800, "IN", "A", "192.5.6.30"))
    wire = r.to_wire()
    assert wire[11] == 2  # the glue, then the OPT
    after = check_slipped(wire, slip_response(wire))
    assert after.payload == 1232 and after.ednsflags & dns.flags.DO
    assert after.options[0].otype == dns.edns.NSID


def _with_option(data: bytes, tsig: bool = False) -> bytes:
    r = _response("www.example.com.")
    r.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.GenericOption(dns.edns.NSID, data)])
    r.authority.append(dns.rrset.from_text("com.", 172800, "IN", "NS", "a.gtld-servers.net."))
    if tsig:
        r.use_tsig(dns.tsig.Key("k.", b"0123456789abcdef", "hmac-sha256"))
        r.request_mac = b""
    return r.to_wire()


def _fake_opt_header(rdlength: int) -> bytes:
    return b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + rdlength.to_bytes(2, "big")


@pytest.mark.parametrize("tsig", [False, True])
def test_slip_response_is_not_fooled_by_a_fake_opt_in_the_options(tsig):
    # option data (a client's cookie could be such) that looks like an OPT record ending the
    # message: for the OPT last, a header with RDLENGTH 0; with a TSIG after it, one whose
    # RDLENGTH reaches over the TSIG
    placeholder = _fake_opt_header(0)
    wire = _with_option(placeholder, tsig)
    rdlength = len(wire) - wire.rindex(placeholder) - 11
    decoy = _fake_opt_header(rdlength)
    wire = _with_option(decoy, tsig)
    assert len(wire) - wire.rindex(decoy) - 11 == rdlength
    slipped = slip_response(wire)
    after = dns.message.from_wire(slipped)
    assert after.flags & dns.flags.TC and after.tsig is None
    assert [o.to_wire() for o in after.options] == [decoy] and after.payload == 1232
    assert after.question == dns.message.make_query("www.example.com.", "A").question
    assert not after.answer and not after.authority and not after.additional


def test_slip_response_without_opt():
    wire = referral("www.example.com.", "com.", edns=False)
    after = check_slipped(wire, slip_response(wire))
    assert after.edns == -1
    slipped = slip_response(wire)
    assert slipped[6:12] == bytes(6)


def test_slip_response_of_nxdomain_and_errors():
    for wire in (nxdomain("nope."), error(), dnskey_answer()):
        check_slipped(wire, slip_response(wire))


def test_slip_response_of_garbage_is_a_bare_header():
    slipped = slip_response(b"\xab\xcd\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05abc")
    assert slipped == b"\xab\xcd\x83\x00" + bytes(8)
    assert dns.message.from_wire(slipped).flags & dns.flags.TC
    with pytest.raises(ValueError):
        slip_response(b"\x00\x01")


def test_stats_as_dict():
    rl, _ = limiter(rate=5)
    flood(rl, ip("192.0.2.1"), nxdomain("nope."))
    stats = rl.stats.as_dict()
    assert set(stats) >= {"responses", "limited", "dropped", "slipped", "exempt", "log_only_would_limit"}
    assert all(type(v) is int for v in stats.values())
    assert stats["responses"] == 20 and stats["limited"] == stats["dropped"] + stats["slipped"] > 0
