#!/usr/bin/env python3
"""The junk flood's legitimate-client share, segment by segment: imrs beside NSD, many rounds.

tests/test_flood.py::test_junk_flood_legit_share decides on two (or four) rounds; this prints
how the share spreads over as many rounds as asked, which is what a change to the shedder
(csrc/fastpath/shed.c) has to move.  It uses the test's own servers, flood and client
(tests/test_flood.py, tests/flood/floodgen.py): imrs with --workers N and its default RRL, NSD
with N server processes and its default RRL, both pinned to core 0, the load on core 1; every
segment lasts 4 s at the generator's top rate, the client asking 200 q/s in its middle 3 s.

    --mode side   imrs and NSD flooded at the same moment, sharing core 0 (the flood dealt out
                  to both in turn), the pair's order swapped each round
    --mode alone  imrs alone, then NSD alone, each with core 0 to itself

Needs root (the flood spoofs sources in 127.0.0.0/8 with a raw socket), NSD, cores 0 and 1.

    sudo .venv/bin/python bench/bench_flood_share.py --workers 2 --rounds 5            # ~1 min
    sudo .venv/bin/python bench/bench_flood_share.py --workers 1 --mode alone --rounds 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="imrs workers and NSD server processes [2]")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each a segment per server [5]")
    ap.add_argument("--mode", choices=("side", "alone"), default="side", help="[side]")
    a = ap.parse_args()
    if a.workers < 1 or a.rounds < 1:
        ap.error("--workers and --rounds must be at least 1")
    if os.geteuid() != 0:
        print("bench_flood_share: needs root (the flood's sources are spoofed with a raw socket)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(TESTS))
    os.chdir(TESTS)  # the test's helpers find the zone and floodgen from here
    import test_flood as tf

    work = Path(tempfile.mkdtemp(prefix="flood-share-"))
    imrs = tf._imrs(work / "imrs", workers=a.workers, name="imrs")
    imrs.start()
    nsd = tf._nsd(work / "nsd", servers=a.workers)
    servers = {"imrs": imrs, "nsd": nsd}
    try:
        imrs.wait_ready()
        for srv in servers.values():
            tf._pin(srv, {tf.SERVER_CPU})
        port_of = {name: srv.port for name, srv in servers.items()}
        if a.mode == "side":
            plan = [(("imrs", "nsd"), 0), (("nsd", "imrs"), 0)] * ((a.rounds + 1) // 2)
            plan = plan[:a.rounds]
        else:
            plan = [(("imrs",), 0), (("nsd",), 0)] * a.rounds
        flood, legit = tf._run_flood(plan, port_of)
        name_of = {port: name for name, port in port_of.items()}
        rows: dict[str, list] = {name: [] for name in servers}
        for fs, ls in zip(flood["segments"], legit["segments"]):
            rows[name_of[ls["port"]]].append((ls["answered"], ls["sent"], fs["rate"], fs["read_rate"]))
        print(f"mode {a.mode}, {a.workers} worker(s)/server(s), {a.rounds} round(s), 4 s segments at the top rate")
        for name, segs in rows.items():
            answered, sent = sum(r[0] for r in segs), sum(r[1] for r in segs)
            worst = min(r[0] / r[1] for r in segs if r[1])
            print(f"{name:5} pooled share {answered / sent:.4f} ({answered}/{sent}), worst segment {worst:.3f}; "
                  f"flood {round(sum(r[2] for r in segs) / len(segs))}/s on average")
            print("      segments: " + " ".join(f"{r[0] / r[1]:.3f}" for r in segs if r[1]))
    finally:
        tf._stop_all([imrs, nsd])
    return 0


if __name__ == "__main__":
    sys.exit(main())
