"""What the traffic counters cost per query, measured in process on the C UDP loop.

The end-to-end benchmark (bench_vs_nsd.py, run twice, with and without
IMRS_NO_TRAFFIC_COUNTERS=1) measures the counters in the whole server, but its rounds move by
more than the counters cost on a noisy VM.  This one times only the loop: the root-traffic
mix is queued in a UDP socket's buffer from a client socket, then `UdpListener._drain_c`
(recvmmsg, the C answer, sendmmsg) reads and answers it, timed with the process's CPU clock;
with the counters (traffic cells, distinct sources, the TLD table) and without, in
alternating rounds so that the VM's drift hits both alike.  It prints the CPU time per
query of each and the difference.

    .venv/bin/python bench/bench_counters.py [--rounds 20] [--batch 4000] [--cpu 0]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

from imrs.answer.respond import AnswerOptions
from imrs.serve.snapshot import SnapshotHolder, build_snapshot
from imrs.serve.traffic import TrafficCounters
from imrs.serve.udp import ServeStats, UdpListener, udp_drain
from imrs.zone.parse import load_zone_file

SHARED = Path(__file__).resolve().parents[2] / "shared"


def read_queries(path: Path) -> list[bytes]:
    """dnsperf -B: a 2-octet length, then the message."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def one_round(listener: UdpListener, server: socket.socket, client: socket.socket, queries: list[bytes]) -> float:
    """CPU seconds the loop took for these queries (all of them answered, or the round is void)."""
    address = server.getsockname()
    for wire in queries:
        client.sendto(wire, address)
    before = listener.stats.udp_received
    began = time.process_time()
    while listener.stats.udp_received - before < len(queries):
        listener._drain_c()
    spent = time.process_time() - began
    while True:  # the answers, out of the way
        try:
            client.recv(65535)
        except BlockingIOError:
            break
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of each (alternating) [20]")
    parser.add_argument("--batch", type=int, default=4000, help="queries queued per round [4000]")
    parser.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: no pinning) [0]")
    parser.add_argument("--zone", type=Path, default=SHARED / "zones" / "testroot" / "root-2026082201.zone")
    parser.add_argument("--queries", type=Path, default=SHARED / "bench" / "queries-rootmix-mix.bin")
    args = parser.parse_args()
    if udp_drain is None:
        print("the C extension is not built: nothing to measure", file=sys.stderr)
        return 2
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    snapshot = build_snapshot([load_zone_file(args.zone)], AnswerOptions())
    queries = read_queries(args.queries)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client.bind(("127.0.0.1", 0))
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        sock.setblocking(False)
    listeners = {
        "counters on": UdpListener(server, SnapshotHolder(snapshot), ServeStats(), traffic=TrafficCounters()),
        "counters off": UdpListener(server, SnapshotHolder(snapshot), ServeStats(), traffic=None),
    }
    for listener in listeners.values():  # warm up: every answer variant made, every table built
        for start in range(0, len(queries), args.batch):
            one_round(listener, server, client, queries[start : start + args.batch])
    per_query: dict[str, list[float]] = {name: [] for name in listeners}
    offset = 0
    for _ in range(args.rounds):
        batch = queries[offset : offset + args.batch]
        offset = (offset + args.batch) % (len(queries) - args.batch)
        for name, listener in listeners.items():
            per_query[name].append(one_round(listener, server, client, batch) / len(batch) * 1e9)
    print(f"{args.rounds} rounds of {args.batch} queries of {args.queries.name}, C UDP loop, CPU time per query:")
    medians = {}
    for name, values in per_query.items():
        medians[name] = statistics.median(values)
        print(f"  {name:13} median {medians[name]:7.0f} ns   (min {min(values):.0f}, max {max(values):.0f})")
    paired = [on / off for on, off in zip(per_query["counters on"], per_query["counters off"], strict=True)]
    print(f"counters cost: {100 * (statistics.median(paired) - 1):+.1f} % CPU per query (median of the rounds' ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
