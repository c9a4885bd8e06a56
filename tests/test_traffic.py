"""Traffic counters: the C UDP loop and the Python loops count the same traffic alike, and the
counts are those of the traffic sent (queries, responses, sizes, rcodes, qtypes, EDNS, TC)."""

from __future__ import annotations

import datetime
import random
import socket

import dns.message
import dns.rcode
import pytest
from flood.floodgen import junk_payload
from serverproc import ROOT_ZONE
from test_fastc import mix_queries, variants

from imrs.answer import fastc
from imrs.answer.respond import AnswerOptions
from imrs.config import RrlConfig
from imrs.serve import batchio, udp
from imrs.serve.rrl import RateLimiter
from imrs.serve.snapshot import SnapshotHolder, build_snapshot
from imrs.serve.toplabels import CAPACITY, TopLabels
from imrs.serve.traffic import NAMES, TrafficCounters, day_counters, full_rcode
from imrs.serve.udp import ServeStats, UdpListener
from imrs.telemetry.rssac002 import load_report, write_day
from imrs.zone.parse import load_zone_file

NATIVE = udp.udp_drain is not None
LOOPS = ["c", "batched", "plain"] if NATIVE else ["batched", "plain"]


@pytest.fixture(scope="module")
def snapshot():
    return build_snapshot([load_zone_file(ROOT_ZONE)], AnswerOptions())


def traffic_mix(seed: int) -> list[bytes]:
    """Ordinary queries of the root mix, their variants (EDNS sizes, an option, RD/CD) and
    flood junk (cut short, opcodes, responses, random octets)."""
    rng = random.Random(seed)
    queries = mix_queries(600)
    queries += [v for wire in queries[:150] for v in variants(wire, rng)[1:]]
    queries += [junk_payload(rng, ["com", "net", "org"], (0.2, 0.2, 0.6)) for _ in range(400)]
    return queries


def run_loop(loop: str, snapshot, queries: list[bytes], rrl: RateLimiter | None) -> tuple[TrafficCounters, list[bytes]]:
    """Send the queries in bursts to a listener drained by `loop`; its counters and the
    responses that came back."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        client.bind(("127.0.0.1", 0))
        server.setblocking(False)
        traffic = TrafficCounters()
        listener = UdpListener(server, SnapshotHolder(snapshot), ServeStats(), rrl=rrl, traffic=traffic)
        if loop == "batched":
            listener._batch = batchio.BatchSocket(server.fileno())
        drain = {"c": listener._drain_c, "batched": listener._drain_batched, "plain": listener._drain}[loop]
        got = []
        client.settimeout(0.05)  # the drain has queued every response when it returns
        for start in range(0, len(queries), 50):
            for wire in queries[start:start + 50]:
                client.sendto(wire, server.getsockname())
            drain()
            while True:
                try:
                    got.append(client.recv(65535))
                except TimeoutError:
                    break
        return traffic, got
    finally:
        server.close()
        client.close()


def without_latency(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if not k.startswith("latency_")}


def expected(queries: list[bytes], responses: list[bytes]) -> dict[str, int]:
    """What the counters should say, counted one by one by the Python rules."""
    counters = python_counters()
    for wire in queries:
        counters.query(wire, False, False)
    for wire in responses:
        counters.response(wire, False, False)
    return without_latency(counters.as_dict()) | counters.top_tlds(-1)


def python_counters() -> TrafficCounters:
    """Counters whose TLD table is the pure-Python one (the C loop counts into the C one)."""
    counters = TrafficCounters()
    counters.tlds = TopLabels(CAPACITY, bytes(16))
    return counters


@pytest.mark.skipif(not batchio.AVAILABLE, reason="no recvmmsg here")
@pytest.mark.parametrize("rrl_rate", [0, 5])
def test_every_loop_counts_what_it_received_and_sent(snapshot, rrl_rate):
    """Each loop's counters are exactly the Python count of the queries it received and the
    responses that came back; every loop gives the same responses and so the same counters
    (with RRL at 5/s the C loop drops and slips by the same decisions: same clock second)."""
    queries = traffic_mix(1)
    results = {}
    for loop in LOOPS:
        rrl = RateLimiter(RrlConfig(rate=rrl_rate), native=loop == "c", secret=bytes(16)) if rrl_rate else None
        traffic, responses = run_loop(loop, snapshot, queries, rrl)
        counts = without_latency(traffic.as_dict()) | traffic.top_tlds(-1)
        assert counts == expected(queries, responses), loop
        results[loop] = counts
        # the latency cells count every datagram once; one source
        assert sum(v for k, v in traffic.as_dict().items() if k.startswith("latency_udp_")) == len(queries)
        sources = traffic.sources()
        assert (sources["ipv4"].count(), sources["ipv6"].count()) == (1, 0), loop
    assert results[LOOPS[0]]["queries_udp_ipv4"] == len(queries)
    assert results[LOOPS[0]]["responses_udp_ipv4"] > len(queries) // 3
    if not rrl_rate:  # (with RRL the seconds may differ between runs)
        for loop in LOOPS[1:]:
            assert results[loop] == results[LOOPS[0]], loop
    assert {"rcode_0", "rcode_1", "rcode_3", "rcode_4", "qtype_1", "qtype_28", "edns_none", "edns_do",
            "edns_plain", "tld_com", "tld_net", "tld_."} <= results[LOOPS[0]].keys()


def test_known_traffic_in_the_right_cells():
    counters = TrafficCounters()
    soa = dns.message.make_query(".", "SOA", want_dnssec=True, payload=1232).to_wire()
    plain = dns.message.make_query("com.", "NS").to_wire()
    private = dns.message.make_query("com.", 65280).to_wire()
    for _ in range(3):
        counters.query(soa, False, True)
    counters.query(plain, True, False)
    counters.query(private, False, False)
    counters.query(b"\x00" * 5, False, False)  # a runt: a query received, no question
    counts = counters.as_dict()
    assert counts["queries_udp_ipv6"] == 3 and counts["queries_tcp_ipv4"] == 1 and counts["queries_udp_ipv4"] == 2
    assert counts["qtype_6"] == 3 and counts["qtype_2"] == 1 and counts["qtype_other"] == 1
    assert counts["edns_do"] == 3 and counts["edns_none"] == 2 and "edns_plain" not in counts
    assert counts["request_size_udp_16"] == 3 + 1  # 28 octets and 29 (with OPT: 17 + 11)
    assert counts["request_size_udp_0"] == 1
    big = bytes(12 + 400)
    counters.query(big, False, False)
    assert counters.as_dict()["request_size_udp_288"] == 1  # the open bin
    response = dns.message.make_response(dns.message.from_wire(soa))
    response.flags |= 0x0200  # TC
    counters.response(response.to_wire(), False, True)
    assert counters.as_dict()["truncated"] == 1 and counters.as_dict()["rcode_0"] == 1
    assert set(counters.as_dict()) <= set(NAMES)


@pytest.mark.parametrize(("rcode", "cell"), [(dns.rcode.BADVERS, "rcode_16"), (dns.rcode.BADCOOKIE, "rcode_23"),
                                             (dns.rcode.NXDOMAIN, "rcode_3"), (dns.rcode.BADSIG, "rcode_16")])
def test_extended_rcodes_are_read_from_the_opt_record(rcode, cell):
    query = dns.message.make_query("example.", "A", use_edns=0, options=[dns.edns.GenericOption(10, bytes(8))])
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    wire = response.to_wire()
    assert full_rcode(wire) == int(rcode)
    counters = TrafficCounters()
    counters.response(wire, False, False)
    assert cell in counters.as_dict() or (int(rcode) > 23 and "rcode_other" in counters.as_dict())


@pytest.mark.skipif(not fastc.enabled(), reason="the C extension is not built")
def test_c_reads_extended_rcodes_as_python_does(snapshot):
    """Responses the Python path makes (BADVERS, cookies, odd OPT placement) through the C loop's
    handler: the C counter's full rcode is Python's."""
    rng = random.Random(3)
    queries = []
    for _ in range(200):
        q = dns.message.make_query(f"x{rng.randrange(99)}.com.", "A", use_edns=rng.choice([0, 1]), payload=1232,
                                   options=[dns.edns.GenericOption(rng.choice([10, 65001, 3]), bytes(8))])
        queries.append(q.to_wire())
    traffic, responses = run_loop("c", snapshot, queries, None)
    assert without_latency(traffic.as_dict()) | traffic.top_tlds(-1) == expected(queries, responses)
    assert traffic.as_dict().get("rcode_16", 0) > 0  # EDNS version 1: BADVERS


@pytest.mark.skipif(not fastc.enabled(), reason="the C extension is not built")
@pytest.mark.parametrize("threshold", [0, 50, 10_000])
def test_c_source_counter_keeps_the_python_sets(threshold):
    """The C loop's SourceCounter and the Python paths' SourceSets, fed the same sources (IPv4,
    IPv6 in few /64s, IPv4-mapped, repeats), hold the same hashes, then the same registers."""
    rng = random.Random(threshold)
    peers = []
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.5:
            peers.append(bytes([10, rng.randrange(4), rng.randrange(256), rng.randrange(256)]))
        elif kind < 0.9:
            peers.append(bytes.fromhex("20010db8") + bytes([0, 0, 0, rng.randrange(8)]) + rng.randbytes(8))
        else:
            peers.append(b"\0" * 10 + b"\xff\xff" + bytes([10, 0, 0, rng.randrange(256)]))
    peers += peers[:500]  # repeats
    python, c = TrafficCounters(threshold), TrafficCounters(threshold)
    python.c_sources = None
    for peer in peers:
        python.source(peer)
        c.c_sources.add(peer)
    ours, theirs = python.sources(), c.sources(reset=True)
    for kind in ("ipv4", "ipv6", "ipv6_aggregate"):
        assert ours[kind].to_json() == theirs[kind].to_json(), kind
    v4 = {p[-4:] for p in peers if len(p) == 4 or p[:12] == b"\0" * 10 + b"\xff\xff"}
    if threshold >= len(v4):
        assert ours["ipv4"].count() == len(v4)
    assert ours["ipv6_aggregate"].count() <= 8
    assert c.sources()["ipv4"].count() == 0  # reset


def test_workers_sources_merge_for_unique_sources(tmp_path):
    """Two workers (in process: the supervisor's pool): queries from 40 distinct addresses over
    UDP and one over TCP reach either worker; the pool's merged sets count 41 IPv4 sources,
    the day's counters are the totals, and the RSSAC002 files written from them carry the
    traffic sent; after a reset (a new day) counts and sources start from nothing."""
    import asyncio

    from serverproc import query, tcp_ask

    from imrs.config import ListenAddress, default_settings, with_overrides
    from imrs.serve.server import Supervisor, load_static_zones, transfer_policy

    settings = with_overrides(default_settings(), listen=[ListenAddress("127.0.0.1", 0, socket.AF_INET)],
                              zones=[str(ROOT_ZONE)], workers=2, rrl_rate=0)
    supervisor = Supervisor(settings, load_static_zones(settings), transfer_policy(settings))

    def ask_from(source: str, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            s.settimeout(2.0)
            s.sendto(query("com.", "NS", 1), ("127.0.0.1", port))
            return len(s.recv(65535)) > 12

    def write_rssac002(counts: dict[str, int], sources: dict) -> None:
        """The day's files from these counts: the numbers of the traffic sent."""
        day = datetime.date(2026, 11, 30)
        paths = write_day(tmp_path / "rssac002", "x.root-servers.net", day,
                          day_counters(counts, sources, {2026082201: 1.6}))
        reports = {(r := load_report(p)).metric: r for p in paths if p.suffix == ".yaml"}
        volume = reports["traffic-volume"].values
        assert volume["dns-udp-queries-received-ipv4"] == counts["queries_udp_ipv4"] >= 80
        assert volume["dns-udp-responses-sent-ipv4"] == counts["responses_udp_ipv4"] >= 80
        assert volume["dns-tcp-queries-received-ipv4"] == counts["queries_tcp_ipv4"] >= 1
        assert reports["unique-sources"].values["num-sources-ipv4"] == 41
        assert reports["rcode-volume"].values[0] == counts["rcode_0"] >= 81
        sizes = reports["traffic-sizes"].values["udp-request-sizes"]
        assert sum(sizes.values()) == counts["queries_udp_ipv4"]
        assert reports["load-time"].values["time"] == {2026082201: 2}

    async def scenario() -> tuple[int, int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        try:
            for _ in range(600):
                pool = supervisor.pool
                if pool is not None and supervisor.addresses and sum(s.state == "serving" for s in pool.slots.values()) == 2:
                    break
                await asyncio.sleep(0.1)
            port = supervisor.addresses[0].port
            answered = 0
            for n in range(40):
                answered += await asyncio.to_thread(ask_from, f"127.1.0.{n + 1}", port)
                answered += await asyncio.to_thread(ask_from, f"127.1.0.{n + 1}", port)  # a repeat
            assert await asyncio.to_thread(tcp_ask, "127.0.0.1", port, query("org.", "NS", 2)) is not None
            assert answered == 80
            day_counts, first = await supervisor.pool.day(reset=True)
            write_rssac002(day_counts, first)
            next_day, second = await supervisor.pool.day()
            counters = await supervisor.pool.counters()
            assert day_counts["queries_udp_ipv4"] == counters["queries_udp_ipv4"] >= 80
            assert next_day.get("queries_udp_ipv4", 0) == 0
            return first["ipv4"].count(), second["ipv4"].count() if second else 0, counters.get("queries_udp_ipv4", 0)
        finally:
            stop.set()
            await task

    first, after_reset, udp_queries = asyncio.run(scenario())
    # 40 clients + 127.0.0.1 over TCP (a probe from 127.0.0.1 may come too: it is the same source)
    assert first == 41
    assert after_reset == 0
    assert udp_queries >= 80
