#!/usr/bin/env python3
"""imrs against NSD at maximum throughput: udpblast (sendmmsg/recvmmsg batching) as the load.

Same harness as bench_vs_nsd.py (servers pinned to one core, the load to another, alternating
rounds, server CPU per 100k answered queries), but the load generator is
/work/shared/bench/udpblast.c, compiled with gcc into a temporary directory at run time. Unlike
one dnsperf thread (~130k q/s), udpblast can saturate NSD, so the QPS column here is each
server's single-core capacity. See bench/README.md.

    .venv/bin/python bench/bench_udpblast.py            # 3 rounds x 10 s per server
    .venv/bin/python bench/bench_udpblast.py --quick
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402
import bench_vs_nsd as bvn  # noqa: E402

UDPBLAST_SRC = bl.SHARED / "bench/udpblast.c"


def parse_udpblast(out: str, seconds: float) -> dict:
    g = bl.grab
    r = {
        "sent": g(r"Queries sent:\s+(\d+)", out, int),
        "completed": g(r"Queries completed:\s+(\d+)", out, int),
        "lost": g(r"Queries lost:\s+(\d+)", out, int),
        "unexpected": g(r"Unexpected:\s+(\d+)", out, int),
        "runtime_s": seconds,
        "qps": g(r"Queries per second:\s+" + bl._NUM, out),
        "latency_ms": g(r"Average Latency \(s\):\s+" + bl._NUM, out),
        "resp_size": g(r"Average packet size:.*response\s+(\d+)", out, int),
    }
    missing = [k for k in ("sent", "completed", "lost", "qps", "latency_ms") if r[k] is None]
    if missing:
        raise RuntimeError(f"could not parse udpblast output ({missing}):\n{out}")
    r["latency_ms"] *= 1000.0
    m = re.search(r"Percentiles \(ms\):\s+p50 (\S+) p90 (\S+) p99 (\S+) p99\.9 (\S+)", out)
    if m:
        r.update(p50_ms=float(m[1]), p90_ms=float(m[2]), p99_ms=float(m[3]),
                 p999_ms=float(m[4]))
    rc = {}
    m = re.search(r"Response codes:\s+NOERROR (\d+), NXDOMAIN (\d+), other (\d+)", out)
    if m:
        rc = {"NOERROR": int(m[1]), "NXDOMAIN": int(m[2]), "other": int(m[3])}
    r["rcodes"] = {k: v for k, v in rc.items() if v}
    return r


class Udpblast:
    name = "udpblast"

    def __init__(self, a):
        self.a = a
        self.binary: Path | None = None

    def build(self, workdir: Path) -> None:
        self.binary = workdir / "udpblast"
        subprocess.run([self.a.cc, "-O2", "-o", str(self.binary), str(self.a.udpblast_src)],
                       check=True)
        bl.log(f"built {self.binary}")

    def argv(self, port: int, seconds: float) -> list[str]:
        a = self.a
        return [
            "taskset", "-c", str(a.client_cpu),
            str(self.binary or "udpblast"), "-s", bl.HOST, "-p", str(port),
            "-f", str(a.queries), "-l", str(int(round(seconds))),
            "-w", str(a.window), "-b", str(a.batch), "-n", str(a.sockets),
        ]

    def run(self, port: int, seconds: float) -> dict:
        seconds = max(1, int(round(seconds)))  # udpblast takes whole seconds
        argv = self.argv(port, seconds)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        if r.returncode != 0:
            raise RuntimeError(f"udpblast failed ({r.returncode}): {shlex.join(argv)}\n"
                               f"{r.stdout}\n{r.stderr}")
        return parse_udpblast(r.stdout, seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bvn.common_args(p)
    p.add_argument("--udpblast-src", type=Path, default=UDPBLAST_SRC)
    p.add_argument("--cc", default="gcc")
    p.add_argument("-w", "--window", type=int, default=200, help="queries in flight")
    p.add_argument("-b", "--batch", type=int, default=32, help="sendmmsg batch")
    p.add_argument("-n", "--sockets", type=int, default=8, help="client sockets")
    a = p.parse_args(argv)
    bvn.check_args(p, a)
    a.duration = max(1, int(round(a.duration)))
    load = Udpblast(a)
    return bvn.run_benchmark(a, load, "bench_udpblast", setup=load.build)


if __name__ == "__main__":
    sys.exit(main())
