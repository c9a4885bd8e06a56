#!/usr/bin/env python3
"""How long building a serving snapshot (the compiled fast path) takes, and the fast path's speed.

A benchmark, not a test: it prints figures and never fails on them.  The zone is loaded once;
before each build its wire-format cache is emptied, so every build does the work a new zone
version costs.  The machine may be shared: read medians, and compare runs made side by side.

    .venv/bin/python bench/bench_compile.py                 # 5 builds, median
    .venv/bin/python bench/bench_compile.py -n 3 --queries  # and ns per query of the fast path
    .venv/bin/python bench/bench_compile.py --profile       # cProfile of one build (top 25)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from pathlib import Path

from imrs.answer.respond import AnswerOptions
from imrs.serve.snapshot import build_snapshot
from imrs.zone.parse import load_zone_file

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_ZONE = SHARED / "zones/testroot/root-2026082201.zone"
DEFAULT_QUERIES = SHARED / "bench/queries-rootmix-mix.bin"


def read_queries(path: Path) -> list[bytes]:
    """The queries of a benchmark file: each a 2-octet length and the wire-format query."""
    blob = path.read_bytes()
    out, pos = [], 0
    while pos < len(blob):
        (length,) = struct.unpack_from("!H", blob, pos)
        out.append(blob[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def fresh_build(zone, options: AnswerOptions):
    """One build as after a zone change: nothing cached from an earlier build of this zone."""
    cache = getattr(zone, "wire_cache", None)
    if cache is not None:
        cache.clear()
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    snapshot = build_snapshot([zone], options)
    return snapshot, time.perf_counter() - started, time.process_time() - cpu_started


def fast_path_ns_per_query(snapshot, queries: list[bytes], passes: int) -> tuple[float, int]:
    """Median ns per query of compiled.answer over the queries (UDP, IPv4), after a warm-up pass
    that fills the shape caches; and how many of them the fast path answered."""
    answer = snapshot.compiled.answer
    answered = sum(answer(wire, False, False) is not None for wire in queries)
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        for wire in queries:
            answer(wire, False, False)
        times.append((time.perf_counter() - started) / len(queries) * 1e9)
    return statistics.median(times), answered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zone", type=Path, default=DEFAULT_ZONE)
    parser.add_argument("-n", "--builds", type=int, default=5)
    parser.add_argument("--queries", action="store_true", help="also time the fast path per query")
    parser.add_argument("--query-file", type=Path, default=DEFAULT_QUERIES)
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the query file")
    parser.add_argument("--profile", action="store_true", help="cProfile one build instead")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    zone = load_zone_file(args.zone)
    print(f"zone {args.zone.name}: loaded in {time.perf_counter() - started:.2f} s")
    options = AnswerOptions()

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        fresh_build(zone, options)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return 0

    times, cpu_times = [], []
    snapshot = None
    for i in range(args.builds):
        snapshot, took, cpu = fresh_build(zone, options)
        times.append(took)
        cpu_times.append(cpu)
        print(f"build {i + 1}: {took:.3f} s ({cpu:.3f} s CPU)")
    # CPU time says less about waiting for a busy machine's cores than wall-clock time does.
    print(f"build_snapshot: median {statistics.median(times):.3f} s, min {min(times):.3f} s over {len(times)} builds "
          f"(CPU median {statistics.median(cpu_times):.3f} s; {snapshot.compiled.name_count} names)")

    if args.queries:
        queries = read_queries(args.query_file)
        ns, answered = fast_path_ns_per_query(snapshot, queries, args.passes)
        print(f"fast path: {ns:.0f} ns/query (median of {args.passes} passes over {len(queries)} queries, "
              f"{answered} answered by the fast path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
