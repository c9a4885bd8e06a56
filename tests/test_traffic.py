"""Traffic counters: the C UDP loop and the Python loops count the same traffic alike, and the
counts are those of the traffic sent (queries, responses, sizes, rcodes, qtypes, EDNS, TC)."""

from __future__ import annotations

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
from imrs.serve.traffic import NAMES, TrafficCounters, full_rcode
from imrs.serve.udp import ServeStats, UdpListener
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
    counters = TrafficCounters()
    for wire in queries:
        counters.query(wire, False, False)
    for wire in responses:
        counters.response(wire, False, False)
    return without_latency(counters.as_dict())


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
        counts = without_latency(traffic.as_dict())
        assert counts == expected(queries, responses), loop
        results[loop] = counts
        # the latency cells count every datagram once
        assert sum(v for k, v in traffic.as_dict().items() if k.startswith("latency_udp_")) == len(queries)
    assert results[LOOPS[0]]["queries_udp_ipv4"] == len(queries)
    assert results[LOOPS[0]]["responses_udp_ipv4"] > len(queries) // 3
    if not rrl_rate:  # (with RRL the seconds may differ between runs)
        for loop in LOOPS[1:]:
            assert results[loop] == results[LOOPS[0]], loop
    assert {"rcode_0", "rcode_1", "rcode_3", "rcode_4", "qtype_1", "qtype_28", "edns_none", "edns_do",
            "edns_plain"} <= results[LOOPS[0]].keys()


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
    assert without_latency(traffic.as_dict()) == expected(queries, responses)
    assert traffic.as_dict().get("rcode_16", 0) > 0  # EDNS version 1: BADVERS
