"""Flood tests: imrs under attack traffic, on loopback only, each load bounded to seconds.

The load comes from tests/flood/floodgen.py, run as its own process pinned to core 1: as root
it writes whole IPv4+UDP packets to a raw socket, so that every query can carry any source
address in 127.0.0.0/8, and it sends them prebuilt, up to 1024 per sendmmsg(2) call, with no
Python work per packet.  On a 2-core VM it makes about 200,000-450,000 packets/s (it varies
with the VM's noise and with what the receiving side does).  A server that runs as one
process is pinned to core 0.  Every test prints its figures (``pytest -s``), writes them to
``flood_results.json`` in its temporary directory, and repeats them in its assertion messages.

test_reflection_amplification[nsd|imrs]
    One source (a victim whose address an attacker spoofs; here an ordinary socket on
    127.66.0.1) sends ``. DNSKEY`` with DO and EDNS 1232 (a 28-octet query for an 864-octet
    answer) at 20,500 q/s for 3.5 s and counts the DNS octets it sent and got back.  Just
    over the issue's 20,000 q/s is the hardest case: the slips are as long as the queries,
    so the fixed allowance of full answers weighs less the faster the victim is hit.  With
    response rate limiting on (imrs: its default, no ``--rrl-rate``, 1 worker; NSD: its
    defaults, rrl-ratelimit 200, rrl-slip 2) the octets sent back must not exceed those
    sent (amplification <= 1), some answers must be TC=1, and one of those queries asked
    again over TCP must get the whole answer.  The victim must reach 20,000 q/s, or the test
    fails rather than pass on a machine too slow to attack; if its own socket dropped
    answers the count is not valid and the test fails too.  NSD passes at 0.64-0.67 (about
    115 full answers a second, a 28-octet TC=1 answer to every other query).
test_junk_flood_legit_share
    A random-subdomain and junk flood from 500 sources, each in its own /24 (60 % names
    <random>.<random label>. for NXDOMAIN, 30 % <random>.<real TLD>. for referrals, 10 %
    malformed or odd messages; assorted types, half with EDNS), while a legitimate client
    (127.77.0.1, a /24 of its own) asks 20 different real-TLD questions (referrals and DS
    answers) at 200 q/s, about 10 q/s per rate-limit category, far under any limit, from 32
    source ports in turn (a resolver picks a random port per query, RFC 5452; with one port
    every query of a client reaches the same one of a server's reuseport sockets).  Its
    share is the fraction of its queries answered correctly (ID, question, NOERROR, TC
    clear) within 1 s.  Like for like: NSD with one server process and imrs with 1 worker,
    NSD with 2 server processes (reuseport) and imrs with 2 workers, every server pinned to
    core 0 and the load to core 1; each 4-second segment floods one server (or a pair) and
    the client asks during its middle 3 s.  Three regimes, in one run:
      floor  FLOOR_RATE (40,000) q/s at each server alone, a flood NSD absorbs (it keeps
             100 %; it reads up to about 85,000 q/s on one core here).
      max    the generator's highest rate (300,000-750,000 q/s) at each server alone, two
             rounds (the second in reverse order).  It outruns a server core: the kernel
             drops what a server cannot read, without regard to who sent it, and NSD keeps
             25-55 % here, not the 98-100 % the issue expected.  imrs sheds (serve/shed.py):
             every source prefix gets an equal share of what the worker can answer, and the
             client, asking about its share, keeps nearly all its answers.
      side   the top rate dealt out in turn to NSD and imrs side by side, at the same moment,
             both on core 0 (two rounds, the second with the pairs' order swapped): the
             same flood for both, each with part of a core.
    In every regime imrs must keep at least its NSD's share less SHARE_TOLERANCE, and never
    below 97 %.  The client's 200 q/s is close to a fair share of what a worker can answer on
    this VM (500 flooding prefixes; side by side with two workers each socket's flooding
    prefixes ask only about twice what the client does).  Since the shedder follows each
    prefix's average over windows (not one window's count, which took the client in and out
    of the filter), imrs keeps 99-100 % side by side pooled over rounds, a single segment
    0.85-1.00; when the VM is slow (the host's cores taken by others) both max and side have
    fallen under 97 % at times.  When max or side misses, two more rounds of both are
    measured and each decided on all four together.  Each server's figures give the flood's
    rate aimed at it and how many queries a second reached its socket (aimed less what the
    kernel dropped, imrs's filter included).
test_ipv6_junk_flood_is_thinned_by_the_kernel_filter
    The same junk flood over IPv6 (500 sources, each in its own /56, fd00:<i>::1; floodgen
    flood6, a raw IPv6 socket) at the generator's highest rate against imrs with 1 worker on
    [::1], while the legitimate client asks from ::1 as above during the middle 3 s of one
    5-second segment (the server has seen no flood before it: the first second is the
    shedder's, to measure).  IPv6 has one loopback address, so this runs in a network namespace the test makes
    (tests/flood/ipv6.py: its loopback up, fd00::1/16 on it, nothing else), where the
    answers to the flood's sources die on the loopback and cannot leave the machine.  The
    flood must outrun the worker (over twice what it read), the eBPF filter on the IPv6 socket
    must have dropped over a quarter of it, and the client must keep at least 97 %.
test_tcp_exhaustion
    3,000 TCP connections, each from its own source address (so that no per-source cap
    applies), are opened to imrs (1 worker) and held idle; any the server closes is opened
    again from a new address at up to 200/s, to keep up the pressure.  Meanwhile a
    legitimate client on its own address makes 20 new connections one after the other, one
    query each: every one must be answered within 2 s.  (NSD, whose default tcp-count is
    100, answers each within 0.4 s: it shortens its idle timeout when full.)
test_memory_million_sources
    imrs with 2 workers and the default RRL.  After a one-second warm-up flood (so that what
    any traffic builds, such as lazily made answer variants, is there before the baseline),
    1,200,000 queries from 1,000,000 distinct sources (127.100.0.1 to 127.249.255.27: 38,400
    /24s, 26 or 27 addresses in each; the first 200,000 send twice), 85 % of them
    <random>.<TLD>. over all 1,438 TLDs of the zone, so that nearly every (prefix, category)
    pair is new.  The generator sends up to 100,000 q/s and slows down while the server's
    sockets drop datagrams, so that the queries reach the server, for at most 30 s.  The
    summed VmRSS of the server and all its descendants (Pss reported too) is sampled every
    0.5 s: its peak may exceed the figure before the flood by at most MEMORY_GROWTH_LIMIT_MB.
    The kernel's drop count on the server's sockets gives how many distinct sources the
    server actually heard from: at least MEMORY_MIN_REACHED, or the test has not shown what
    it claims and fails.

Needs Linux, cores 0 and 1, root for the junk flood and memory tests (the raw socket, and a
network namespace for IPv6; they skip without it), and NSD 4.6 (``apt-get install nsd``; without it the tests that compare
fail, as the NSD differential tests do).
Run:  .venv/bin/python -m pytest tests/test_flood.py -m flood -s
``IMRS_FLOOD_SRC=/path/to/src`` runs the imrs servers from another source tree.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from flood.harness import TESTS, Gen, memory_kb, pin_tree, udp_port_drops, zone_tlds
from flood.ipv6 import NO_NAMESPACE
from peers.nsd_server import NsdServer, NsdUnavailable, find_nsd
from serverproc import ROOT_ZONE, ServerProc, frame, parse, query, read_frame, udp_ask

pytestmark = [pytest.mark.flood, pytest.mark.timeout(240)]

SERVER_CPU = 0
GEN_CPU = 1

VICTIM = "127.66.0.1"
LEGIT_UDP = "127.77.0.1"
LEGIT_TCP = "127.88.0.1"

# q/s asked of the victim's socket: just over the 20,000, the hardest case (at higher rates
# the slips, as long as the queries, outweigh the fixed allowance of full answers more and more)
REFLECT_RATE = 20_500
REFLECT_MIN_RATE = 20_000  # the figure: below it the test fails (the machine could not attack)
REFLECT_SECONDS = 3.5
LARGE_ANSWER_MIN = 500  # octets: ". DNSKEY" with DO must be a large answer for the test to mean anything

FLOOD_SOURCES = 500  # each in its own /24
SEGMENT_SECONDS = 4.0  # per server and round; the legit client asks during the middle 3 s
LEGIT_RATE = 200  # q/s, spread over 20 questions (about 10 q/s per RRL category)
FLOOR_RATE = 40_000  # q/s: a flood NSD absorbs on this kind of machine (it keeps up to ~85,000 q/s)
LEGIT_SOURCE_PORTS = 32  # the client's sockets, used in turn
# Shares are measured over ~1,200 queries per server and regime: at a share of 0.4 the binomial
# standard error of the difference of two such shares is 0.02; this is 2.5 of it.
SHARE_TOLERANCE = 0.05
SHARE_FLOOR = 0.97  # the issue's: never below, in every regime

TCP_IDLE_CONNECTIONS = 3000
TCP_LEGIT_QUERIES = 20
TCP_ANSWER_WITHIN = 2.0

MEMORY_SOURCES = 1_000_000
MEMORY_QUERIES = 1_200_000  # every source once, the first 200,000 twice
MEMORY_FLOOD_RATE = 100_000  # q/s at most: the generator slows down while the server's sockets drop
MEMORY_FLOOD_SECONDS = 30  # at most: 1,200,000 queries take 12 s at 100,000/s, 30 s at 40,000/s
# Per-source state must be bounded: all processes together may grow by this much over the flood.
# An unbounded rate-limit table keyed by (/24, category) would hold ~500,000 entries here, a few
# hundred MB in Python; a bounded one (NSD's is 1,000,000 fixed buckets) tens of MB.
MEMORY_GROWTH_LIMIT_MB = 150
# Distinct sources whose queries the server must actually have read (estimated from the kernel's
# drop count on its sockets) for the test to count: fewer, and it did not see a million sources.
MEMORY_MIN_REACHED = 800_000

# NsdServer's configuration turns NSD's RRL off and sets tcp-count 200 for the differential
# tests; these put back NSD 4.6.1's defaults (rrl-slip 2, rrl-ipv4-prefix-length 24, rrl-size
# 1000000 and rrl-whitelist-ratelimit 2000 are not set there, so they are the defaults already).
NSD_DEFAULTS = {"rrl-ratelimit": "200", "tcp-count": "100"}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def _flood_requirements():
    if not os.path.isdir("/proc") or not hasattr(os, "sched_setaffinity"):
        pytest.skip("flood tests need Linux (/proc, sched_setaffinity)")
    if len(os.sched_getaffinity(0)) < 2 or not {SERVER_CPU, GEN_CPU} <= os.sched_getaffinity(0):
        pytest.skip("flood tests need cores 0 and 1 (server on one, load generator on the other)")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the flood's many sources in 127.0.0.0/8 are spoofed with a raw socket (IP_HDRINCL)")


@pytest.fixture
def results(tmp_path, request):
    """A dict the test fills; printed and written to flood_results.json at the end."""
    data: dict = {"test": request.node.name}
    yield data
    path = tmp_path / "flood_results.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"\n[{request.node.name}] figures ({path}):\n{json.dumps(data, indent=2)}")


def _imrs(workdir: Path, workers: int, rrl_rate: int | None = None, name: str = "imrs") -> ServerProc:
    args = ["--zone", str(ROOT_ZONE), "--workers", str(workers)]
    if rrl_rate is not None:
        args += ["--rrl-rate", str(rrl_rate)]
    src = os.environ.get("IMRS_FLOOD_SRC")
    return ServerProc(workdir, args, name=name, env={"PYTHONPATH": src} if src else None, rrl=True)


def _nsd(workdir: Path, servers: int = 1) -> NsdServer:
    """NSD with its default RRL; ``servers`` processes sharing the port (reuseport) when > 1."""
    try:
        nsd = find_nsd()
    except NsdUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    extra = dict(NSD_DEFAULTS)
    if servers > 1:
        extra.update({"server-count": str(servers), "reuseport": "yes"})
    srv = NsdServer(ROOT_ZONE, workdir, extra_conf=extra)
    srv.start()
    checkconf = os.path.join(os.path.dirname(nsd), "nsd-checkconf")
    got = {key: subprocess.run([checkconf, "-o", key, str(workdir / "nsd.conf")], capture_output=True, text=True,
                               check=False).stdout.strip() for key in ("rrl-ratelimit", "rrl-slip", "tcp-count", "server-count")}
    if got != {"rrl-ratelimit": "200", "rrl-slip": "2", "tcp-count": "100", "server-count": str(servers)}:
        srv.stop()
        pytest.fail(f"NSD does not run with its default RRL settings and {servers} server(s): {got}", pytrace=False)
    return srv


def _pid(srv) -> int:
    return srv.proc.pid


def _pin(srv, cpus: set[int]) -> list[int]:
    pids = pin_tree(_pid(srv), cpus)
    assert pids, f"could not pin {srv!r}"
    return pids


def _still_answers(srv) -> None:
    wire = query(".", "SOA", 4242)
    resp = udp_ask(srv.host, srv.port, wire, timeout=3.0)
    assert resp is not None, f"{srv!r} no longer answers after the flood"
    assert parse(resp).rcode() == dns.rcode.NOERROR


def _stop_all(servers) -> None:
    errors = []
    for srv in servers:
        try:
            srv.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


# --------------------------------------------------------------------------- reflection


@pytest.mark.parametrize("server", ["nsd", "imrs"])
def test_reflection_amplification(server, tmp_path, results):
    """The nsd case checks the test itself: NSD with its default RRL passes it."""
    srv = _nsd(tmp_path / "nsd") if server == "nsd" else _imrs(tmp_path / "imrs", workers=1).start().wait_ready()
    retry = None
    try:
        _pin(srv, {SERVER_CPU})
        probe = udp_ask(srv.host, srv.port, query(".", "DNSKEY", 7, do=True, payload=1232))
        assert probe is not None, "no answer to . DNSKEY"
        assert len(probe) > LARGE_ANSWER_MIN and not parse(probe).flags & dns.flags.TC, \
            f". DNSKEY with DO is {len(probe)} octets (TC={bool(parse(probe).flags & dns.flags.TC)}): not a large answer"
        r = Gen("reflect", port=srv.port, duration=REFLECT_SECONDS, rate=REFLECT_RATE, cpu=GEN_CPU,
                source=VICTIM, qname=".", qtype="DNSKEY", edns=1232, do=1).result(REFLECT_SECONDS + 30)
        results.update({"server": server, "answer_octets": len(probe), **r})
        if r["tc_query"]:  # the client behind the victim's address falls back to TCP
            retry = _tcp_ask(srv.host, srv.port, bytes.fromhex(r["tc_query"]))
            results["tcp_retry_octets"] = None if retry is None else len(retry)
        _still_answers(srv)
    finally:
        _stop_all([srv])
    figures = (f"{server}: sent {r['sent']} queries ({r['sent_bytes']} octets) at {r['rate']}/s for {r['seconds']} s, "
               f"received {r['received']} answers ({r['received_bytes']} octets; {r['full']} full, {r['tc']} TC=1), "
               f"amplification {r['amplification']}")
    print("\n" + figures)
    assert r["drops"] == 0, f"the victim's socket dropped {r['drops']} answers: the count is not valid; {figures}"
    assert r["rate"] >= REFLECT_MIN_RATE, \
        f"this machine made only {r['rate']} q/s from one source (need {REFLECT_MIN_RATE}): the test is not valid here"
    assert r["received_bytes"] <= r["sent_bytes"], f"the server amplifies: {figures}"
    assert r["tc"] > 0, f"no TC=1 (slip) answer: a real client behind the victim's address cannot fall back to TCP; {figures}"
    assert r["tc_query"], f"no TC=1 answer matched a query sent; {figures}"
    assert retry is not None, "the TC=1 query asked again over TCP got no answer"
    msg = parse(retry)
    assert not msg.flags & dns.flags.TC and msg.rcode() == dns.rcode.NOERROR, f"TCP answer: {msg}"
    assert any(rr.rdtype == dns.rdatatype.DNSKEY for rr in msg.answer), f"TCP answer without the DNSKEY RRset: {msg}"
    assert len(retry) > LARGE_ANSWER_MIN


def _tcp_ask(host: str, port: int, wire: bytes, source: str | None = None, timeout: float = 5.0) -> bytes | None:
    """One query on a new TCP connection (from ``source`` if given); None if no answer in time."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            s.sendall(frame(wire))
            s.settimeout(max(0.01, deadline - time.monotonic()))
            return read_frame(s)
        except (OSError, AssertionError):
            return None


# --------------------------------------------------------------------------- junk flood, legit share


def test_floodgen_deals_a_segment_out_to_its_ports_in_turn():
    """How many packets each port of a side-by-side segment got: counted, not estimated."""
    import argparse
    import random

    from flood.floodgen import _turns, parse_schedule

    a = argparse.Namespace(schedule="5300+5301:0:4,5302:40000:2.5", port=0, rate=0, duration=0)
    assert parse_schedule(a) == [((5300, 5301), 0, 4.0), ((5302,), 40000, 2.5)]
    rng = random.Random(7)
    for _ in range(2000):
        count, k = rng.randint(1, 40), rng.randint(1, 3)
        start = rng.randint(0, 200)
        end = start + rng.randint(0, 300)
        for n in range(k):
            assert _turns(start, end, count, n, k) == sum(1 for pos in range(start, end) if pos % count % k == n)


def _share(segments: list[dict], port: int) -> tuple[float, int, int]:
    sent = sum(s["sent"] for s in segments if s["port"] == port)
    answered = sum(s["answered"] for s in segments if s["port"] == port)
    return (answered / sent if sent else 0.0), answered, sent


def _run_flood(plan: list[tuple[tuple[str, ...], int]], port_of: dict[str, int]) -> tuple[dict, dict]:
    """The flood and the legitimate client over the plan's segments ((servers, rate), rate 0:
    the generator's highest; several servers: side by side, the flood's packets dealt out
    among them in turn and the client asking each the same queries at LEGIT_RATE); their results, one entry
    per server and segment."""
    schedule = ",".join(f"{'+'.join(str(port_of[n]) for n in names)}:{rate}:{SEGMENT_SECONDS}" for names, rate in plan)
    start_at = time.time() + 2.0  # both generators prebuild their packets meanwhile
    gens = [Gen("flood", schedule=schedule, gap=1.0, sources=FLOOD_SOURCES, pool=16384, cpu=GEN_CPU,
                start_at=start_at),
            Gen("legit", schedule=schedule, gap=1.0, rate=LEGIT_RATE, cpu=GEN_CPU, source=LEGIT_UDP,
                source_ports=LEGIT_SOURCE_PORTS, start_at=start_at, margin=0.5, deadline=1.0)]
    try:
        budget = len(plan) * (SEGMENT_SECONDS + 1.0) + 30
        f, leg = (g.result(budget) for g in gens)
    finally:
        for g in gens:
            g.kill()
    assert f["spoofed"], "the flood could not spoof sources"
    return f, leg


def _share_table(fsegs: list[dict], lsegs: list[dict], port_of: dict[str, int]) -> dict[str, dict]:
    """Per server: the legitimate client's share over these segments, and the flood's rate."""
    table = {}
    for name, port in port_of.items():
        share, answered, sent = _share(lsegs, port)
        mine = [s for s in fsegs if s["port"] == port]
        seconds = sum(s["seconds"] for s in mine)
        rate = round(sum(s["sent"] for s in mine) / seconds)
        # queries the server read per second (floodgen: the machine's UDP receives meanwhile)
        read_rate = round(sum(s["read_rate"] * s["seconds"] for s in mine) / seconds)
        shares = [s["answered"] / s["sent"] for s in lsegs if s["port"] == port and s["sent"]]
        table[name] = {"share": round(share, 4), "answered": answered, "sent": sent, "flood_rate": rate,
                       "read_rate": read_rate,
                       "segments": len(mine), "late": sum(s["late"] for s in lsegs if s["port"] == port),
                       "tc": sum(s["tc"] for s in lsegs if s["port"] == port),
                       # the standard error of the share, from how much the segments' shares differ
                       "stderr": round(statistics.stdev(shares) / len(shares) ** 0.5, 4) if len(shares) > 1 else 0.0}
    return table


def _share_failures(regime: str, table: dict[str, dict]) -> list[str]:
    """Like for like (1 and 2 processes): imrs's share against NSD's, and the floor."""
    failures = []
    for name, reference in (("imrs1", "nsd"), ("imrs2", "nsd2")):
        ref = table[reference]["share"]
        got = table[name]["share"]
        if got < ref - SHARE_TOLERANCE:
            failures.append(f"{regime}: {name} keeps {got:.4f}, {reference} {ref:.4f} (tolerance {SHARE_TOLERANCE})")
        if got < SHARE_FLOOR:
            failures.append(f"{regime}: {name} keeps {got:.4f} < {SHARE_FLOOR}")
    return failures


def test_junk_flood_legit_share(tmp_path, results):
    _need_root()
    one = _imrs(tmp_path / "imrs1", workers=1, name="imrs1")
    two = _imrs(tmp_path / "imrs2", workers=2, name="imrs2")
    stoppable = [two, one]
    try:
        for s in (one, two):
            s.start()  # they load while NSD does
        nsd = _nsd(tmp_path / "nsd")
        stoppable.append(nsd)
        nsd2 = _nsd(tmp_path / "nsd2", servers=2)
        stoppable.append(nsd2)
        for s in (one, two):
            s.wait_ready()
        servers = {"nsd": nsd, "imrs1": one, "nsd2": nsd2, "imrs2": two}
        # Every server on core 0, the load on core 1.  The two-process servers too: measured
        # one at a time, the scheduler kept both their processes on core 0 about 97 % of the
        # time anyway, but two of them side by side would spread onto the load's core, each
        # segment differently (the client's queries go to one process's socket, by its address).
        for s in servers.values():
            _pin(s, {SERVER_CPU})
        port_of = {name: s.port for name, s in servers.items()}
        name_of = {port: name for name, port in port_of.items()}
        order = list(servers)
        max_plan = [((n,), 0) for n in order] + [((n,), 0) for n in reversed(order)]
        side_plan = [(("nsd", "imrs1"), 0), (("imrs2", "nsd2"), 0), (("imrs1", "nsd"), 0), (("nsd2", "imrs2"), 0)]
        floor_plan = [((n,), FLOOR_RATE) for n in order]
        drops0 = {n: udp_port_drops(p) for n, p in port_of.items()}
        # The floor regime first: its 4 s at 40,000 q/s let each server make what it makes on
        # first sight of this traffic before the top rate is measured.  For imrs that is small:
        # the flood's 16,384 packets replayed through a fresh snapshot's C answer left 3,359 to
        # the Python path on the first pass (new name lengths, answers not yet rendered) and
        # 1,406 on later ones (malformed messages, which the C loop answers before it asks the
        # C answer), about 0.05 s of work in all.
        plans = {"floor": floor_plan, "max": max_plan, "side": side_plan}
        f, leg = _run_flood(floor_plan + max_plan + side_plan, port_of)
        segments, at = {}, 0
        for regime, plan in plans.items():
            n = sum(len(names) for names, _rate in plan)
            segments[regime] = (f["segments"][at:at + n], leg["segments"][at:at + n])
            at += n
        table = {regime: _share_table(*segs, port_of) for regime, segs in segments.items()}
        failures = {regime: _share_failures(regime, t) for regime, t in table.items()}
        extended = bool(failures["max"] or failures["side"]) and not failures["floor"]
        if extended:
            # At the top rate one 4-second segment's share moves with the VM's noise (what a
            # worker can answer sets the share of each source): two rounds can miss by
            # chance, so two more of each are measured and the decision is made on all four.
            print("\ntwo rounds inconclusive:\n" + "\n".join(failures["max"] + failures["side"])
                  + "\nmeasuring two more")
            f2, leg2 = _run_flood(max_plan + side_plan, port_of)
            n = len(max_plan)
            for regime, part in (("max", slice(0, n)), ("side", slice(n, None))):
                segments[regime] = (segments[regime][0] + f2["segments"][part],
                                    segments[regime][1] + leg2["segments"][part])
                table[regime] = _share_table(*segments[regime], port_of)
                failures[regime] = _share_failures(regime, table[regime])
        drops = {n: udp_port_drops(p) - drops0[n] for n, p in port_of.items()}
        for s in servers.values():
            _still_answers(s)
    finally:
        _stop_all(stoppable)
    # what shedding did (serve/shed.py): queries shed in user space, datagrams the kernel
    # filter dropped, the kernel's drops for a full queue while shedding (each server's log)
    shed = {name: {key: servers[name].stats().get(f"udp_{key}", 0) for key in ("shed", "filtered", "overflow")}
            for name in ("imrs1", "imrs2")}
    if extended:  # the two more rounds' figures too
        results.update({"flood_more": f2, "legit_more": leg2})
    results.update({"flood": f, "legit": leg, "server_socket_drops": drops, "extended": extended, "shedding": shed,
                    "summary": {f"{r}/{n}": v for r, t in table.items() for n, v in t.items()}})
    lines = [f"{r:5} {n:5}: legit share {v['share']:.4f} +- {v['stderr']:.4f} ({v['answered']}/{v['sent']}), "
             f"flood {v['flood_rate']}/s, read {v['read_rate']}/s, "
             f"{v['segments']} segments, late {v['late']}, tc {v['tc']}" for r, t in table.items() for n, v in t.items()]
    figures = "\n".join(lines) + "\n" + "\n".join(f"{name} shedding: {c}" for name, c in shed.items())
    all_f = [fs for regime in plans for fs in segments[regime][0]]
    all_l = [ls for regime in plans for ls in segments[regime][1]]
    per_segment = "\n".join(
        f"  segment {k}: {name_of[fs['port']]:5} flood {fs['rate']}/s, read {fs['read_rate']}/s, "
        f"legit {ls['answered']}/{ls['sent']} "
        f"(p50 {ls['latency_ms_p50']} ms)"
        for k, (fs, ls) in enumerate(zip(all_f, all_l)))
    print("\n" + figures + "\n" + per_segment)
    problems = [line for regime in plans for line in failures[regime]]
    assert not problems, "\n".join(problems) + "\n" + figures


# --------------------------------------------------------------------------- junk flood over IPv6


IPV6_FLOOD_SECONDS = 5.0  # one segment, from a server that has seen no flood yet:
IPV6_MARGIN = 1.0  # ... the client asks during its middle 3 s, once the shedder has measured a second


def test_ipv6_junk_flood_is_thinned_by_the_kernel_filter(tmp_path, results):
    """The junk flood over IPv6, from 500 /56s at the generator's highest rate, against imrs
    with one worker on [::1], in a network namespace of the test's own (tests/flood/ipv6.py:
    the answers to the flood's sources must not leave the machine): the legitimate client on
    ::1 keeps at least SHARE_FLOOR of its answers, and the eBPF filter on the IPv6 socket is
    what drops the flood's excess (udp_filtered), as on IPv4."""
    _need_root()
    run = subprocess.run([sys.executable, "-m", "flood.ipv6", "--zone", str(ROOT_ZONE), "--workdir", str(tmp_path / "imrs6"),
                          "--seconds", str(IPV6_FLOOD_SECONDS), "--margin", str(IPV6_MARGIN),
                          "--sources", str(FLOOD_SOURCES), "--rate", str(LEGIT_RATE),
                          "--source-ports", str(LEGIT_SOURCE_PORTS), "--server-cpu", str(SERVER_CPU),
                          "--gen-cpu", str(GEN_CPU)],
                         cwd=TESTS, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
                         capture_output=True, text=True, timeout=180, check=False)
    if run.returncode == NO_NAMESPACE:
        pytest.skip(f"no network namespace here: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    results.update(r)
    leg, server = r["legit"], r["server"]
    figures = (f"flood {r['flood']['rate']}/s, server read {r['read_rate']}/s; legit {leg['answered']}/{leg['sent']} "
               f"(share {leg['share']}, late {leg['late']}, tc {leg['tc']}); filtered {server.get('udp_filtered')}, "
               f"shed {server.get('udp_shed')}, overflow {server.get('udp_overflow')}")
    print("\n" + figures)
    assert r["answers_after"], f"imrs no longer answers after the flood; {figures}"
    assert r["flood"]["rate"] > 2 * r["read_rate"], f"the flood did not outrun the worker: nothing to show; {figures}"
    assert server.get("udp_filtered", 0) > r["flood"]["sent"] // 4, f"the kernel filter did not take the flood; {figures}"
    assert leg["share"] >= SHARE_FLOOR, f"the legitimate client lost answers; {figures}"


# --------------------------------------------------------------------------- TCP exhaustion


def test_tcp_exhaustion(tmp_path, results):
    srv = _imrs(tmp_path / "imrs", workers=1).start().wait_ready()
    answers = []
    holder = None
    try:
        _pin(srv, {SERVER_CPU})
        holder = Gen("tcphold", port=srv.port, connections=TCP_IDLE_CONNECTIONS, duration=90, cpu=GEN_CPU,
                     reopen_rate=200, burst=256, connect_timeout=3.0)
        ready = holder.line("READY", timeout=60)
        questions = [("com", "NS"), ("org", "DS"), ("www.example.de", "A"), ("net", "NS"), ("nl", "DS")]
        failures = 0
        for k in range(TCP_LEGIT_QUERIES):
            name, qtype = questions[k % len(questions)]
            wire = query(name, qtype, 1000 + k)
            t0 = time.monotonic()
            resp = _tcp_ask(srv.host, srv.port, wire, source=LEGIT_TCP, timeout=TCP_ANSWER_WITHIN)
            took = time.monotonic() - t0
            ok = (resp is not None and resp[:2] == wire[:2] and took <= TCP_ANSWER_WITHIN
                  and parse(resp).rcode() == dns.rcode.NOERROR)
            answers.append({"query": f"{name} {qtype}", "answered": ok, "seconds": round(took, 3)})
            failures += not ok
            if failures >= 5:
                break  # enough to know; keeps the test short
            time.sleep(0.1)
        held = holder.stop()
        holder = None
        _still_answers(srv)
    finally:
        if holder is not None:
            holder.kill()
        _stop_all([srv])
    results.update({"ready": ready, "holder": held, "legit": answers, "server_stats": srv.stats()})
    answered = sum(a["answered"] for a in answers)
    figures = (f"idle connections: {ready['attempts']} opened in {ready['seconds_to_open']} s, {ready['open']} still open "
               f"when the legit client started, {held['closed_by_server']} closed by the server, {held['reopened']} "
               f"reopened, open at end {held['open_at_end']}; legit TCP client: {answered}/{len(answers)} answered "
               f"within {TCP_ANSWER_WITHIN} s ({[a['seconds'] for a in answers]})")
    print("\n" + figures)
    assert ready["attempts"] >= TCP_IDLE_CONNECTIONS and ready["established"] >= 0.95 * TCP_IDLE_CONNECTIONS, \
        f"the idle connections could not be made: the test is not valid; {figures}"
    assert answered == TCP_LEGIT_QUERIES, f"legitimate TCP queries went unanswered; {figures}"


# --------------------------------------------------------------------------- memory


def _sample_memory(pid: int, stop: threading.Event, out: list[dict], interval: float = 0.5) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        m = memory_kb(pid)
        m["t"] = round(time.monotonic() - t0, 2)
        out.append(m)
        stop.wait(interval)


def test_memory_million_sources(tmp_path, results):
    _need_root()
    tld_file = tmp_path / "tlds.txt"
    tld_file.write_text("\n".join(zone_tlds(ROOT_ZONE)))
    srv = _imrs(tmp_path / "imrs", workers=2).start().wait_ready()
    samples: list[dict] = []
    try:
        time.sleep(1.0)  # workers settle
        # warm-up: the same mix from a few sources, so what any traffic builds (lazily made answer
        # variants, allocator arenas) is there before the baseline
        Gen("flood", port=srv.port, duration=1.0, rate=MEMORY_FLOOD_RATE, sources=500, pool=16384,
            tld_file=tld_file, mix="0.1,0.85,0.05", cpu=GEN_CPU, seed=2).result(60)
        time.sleep(1.0)
        baseline = memory_kb(_pid(srv))
        drops0 = udp_port_drops(srv.port)
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_memory, args=(_pid(srv), stop, samples), daemon=True)
        sampler.start()
        try:
            f = Gen("flood", port=srv.port, duration=MEMORY_FLOOD_SECONDS, rate=MEMORY_FLOOD_RATE, adaptive=True,
                    distinct_sources=MEMORY_SOURCES, total=MEMORY_QUERIES, pool=65536, tld_file=tld_file,
                    mix="0.1,0.85,0.05", cpu=GEN_CPU, seed=3).result(MEMORY_FLOOD_SECONDS + 60)
            time.sleep(1.5)  # what was queued is read
        finally:
            stop.set()
            sampler.join(timeout=5)
        drops = udp_port_drops(srv.port) - drops0
        after = memory_kb(_pid(srv))
        _still_answers(srv)
    finally:
        _stop_all([srv])
    peak = max(samples + [after], key=lambda m: m["rss_kb"])
    read = f["sent"] - drops
    # sources go round in order: min(sent, N) sent once or more, the first sent - N of them twice;
    # a query is lost (dropped by the kernel) with p = drops / sent
    p = min(1.0, drops / f["sent"]) if f["sent"] else 1.0
    once_or_more = min(f["sent"], MEMORY_SOURCES)
    twice = max(0, f["sent"] - MEMORY_SOURCES)
    reached = round((once_or_more - twice) * (1 - p) + twice * (1 - p * p))
    growth_mb = (peak["rss_kb"] - baseline["rss_kb"]) / 1024
    results.update({"baseline": baseline, "peak": peak, "after": after, "growth_mb": round(growth_mb, 1),
                    "flood": f, "server_socket_drops": drops, "queries_read": read,
                    "distinct_sources_reached_estimate": reached, "samples": samples,
                    "server_stats": srv.stats()})
    figures = (f"{f['sent']} queries in {f['seconds']} s ({f['rate']}/s on average, down to "
               f"{f['segments'][0]['adaptive_rate_low']}/s) from {min(f['sent'], MEMORY_SOURCES)} sources; server read {read} "
               f"(dropped {drops}; about {reached} distinct sources reached it); summed RSS "
               f"{baseline['rss_kb'] // 1024} MB before ({baseline['processes']} processes), peak "
               f"{peak['rss_kb'] // 1024} MB at {peak.get('t')} s, {after['rss_kb'] // 1024} MB after; "
               f"Pss {baseline['pss_kb'] // 1024} -> {max(m['pss_kb'] for m in samples + [after]) // 1024} MB; "
               f"growth {growth_mb:.1f} MB (limit {MEMORY_GROWTH_LIMIT_MB} MB)")
    print("\n" + figures)
    assert growth_mb <= MEMORY_GROWTH_LIMIT_MB, f"memory grows with the number of sources; {figures}"
    assert reached >= MEMORY_MIN_REACHED, \
        f"the server read too few of the queries (from too few sources) for the test to count; {figures}"
