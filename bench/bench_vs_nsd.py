#!/usr/bin/env python3
"""imrs against NSD: server CPU per 100,000 answered queries under the same dnsperf load.

Starts imrs (one worker) and NSD (server-count 1) on the same zone, each on its own loopback
port; pins every thread of each server's process tree to one core (default 0) and dnsperf to
another (default 1); runs dnsperf against the servers alternately (imrs, NSD, imrs, NSD, ...);
prints per-run figures, a per-server summary (mean over rounds) and the imrs/NSD ratio of CPU
seconds per 100k answered queries. See bench/README.md.

    .venv/bin/python bench/bench_vs_nsd.py              # 3 rounds x 10 s per server
    .venv/bin/python bench/bench_vs_nsd.py --quick      # 1 round x 2 s, smoke check
    .venv/bin/python bench/bench_vs_nsd.py --imrs-cmd nsd   # harness check: NSD vs NSD
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

FIGURES = [
    # key, column header, format
    ("qps", "QPS", "{:>9.0f}"),
    ("latency_ms", "lat ms", "{:>7.3f}"),
    ("completed", "answered", "{:>9.0f}"),
    ("lost", "lost", "{:>6.0f}"),
    ("cpu_s", "CPU s", "{:>6.2f}"),
    ("cpu_util", "CPU %", "{:>6.1%}"),
    ("cpu_per_100k", "CPU s/100k", "{:>10.4f}"),
    ("core_other", "other %", "{:>7.1%}"),
    ("resp_size", "resp B", "{:>6.0f}"),
]


def parse_dnsperf(out: str) -> dict:
    g = bl.grab
    r = {
        "sent": g(r"Queries sent:\s+(\d+)", out, int),
        "completed": g(r"Queries completed:\s+(\d+)", out, int),
        "lost": g(r"Queries lost:\s+(\d+)", out, int),
        "runtime_s": g(r"Run time \(s\):\s+" + bl._NUM, out),
        "qps": g(r"Queries per second:\s+" + bl._NUM, out),
        "latency_ms": g(r"Average Latency \(s\):\s+" + bl._NUM, out),
        "latency_min_ms": g(r"Average Latency \(s\):.*\(min\s+" + bl._NUM, out),
        "latency_max_ms": g(r"Average Latency \(s\):.*max\s+" + bl._NUM, out),
        "latency_sd_ms": g(r"Latency StdDev \(s\):\s+" + bl._NUM, out),
        "resp_size": g(r"Average packet size:.*response\s+(\d+)", out, int),
    }
    for k in ("latency_ms", "latency_min_ms", "latency_max_ms", "latency_sd_ms"):
        if r[k] is not None:
            r[k] *= 1000.0
    rc = {}
    m = bl.grab(r"Response codes:[ \t]+([^\n]*)$", out, str, "")
    for part in m.split(","):
        f = part.split()
        if len(f) >= 2 and f[1].isdigit():
            rc[f[0]] = int(f[1])
    r["rcodes"] = rc
    missing = [k for k in ("sent", "completed", "lost", "qps", "latency_ms") if r[k] is None]
    if missing:
        raise RuntimeError(f"could not parse dnsperf output ({missing}):\n{out}")
    return r


class Dnsperf:
    """dnsperf pinned to the client core: one thread, one query per system call."""

    name = "dnsperf"

    def __init__(self, a):
        self.a = a

    def argv(self, port: int, seconds: float) -> list[str]:
        a = self.a
        return [
            "taskset", "-c", str(a.client_cpu),
            a.dnsperf, "-s", bl.HOST, "-p", str(port), "-B", "-d", str(a.queries),
            "-l", f"{seconds:g}", "-q", str(a.outstanding), "-c", str(a.clients),
            "-t", f"{a.timeout:g}", "-O", "suppress=timeout,unexpected",
        ] + (["-b", str(a.bufsize)] if a.bufsize else []) + (
            ["-Q", str(a.rate)] if a.rate else []) + shlex.split(a.dnsperf_args)

    def run(self, port: int, seconds: float) -> dict:
        argv = self.argv(port, seconds)
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=seconds + self.a.timeout + 60)
        if r.returncode != 0:
            raise RuntimeError(f"dnsperf failed ({r.returncode}): {shlex.join(argv)}\n"
                               f"{r.stdout}\n{r.stderr}")
        return parse_dnsperf(r.stdout)


def measure(a, load, srv: bl.Server, rnd: int) -> dict:
    if not srv.alive():
        raise RuntimeError(f"[{srv.label}] is no longer running; last output:\n{srv.tail()}")
    procs = srv.pin(a.server_cpu)  # again each run: catches threads/processes started late
    before = bl.cpu_snapshot(procs)
    core0 = bl.core_busy_ticks(a.server_cpu)
    lcore0 = bl.core_busy_ticks(a.client_cpu)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = load.run(srv.port, a.duration)
    lwall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lcore1 = bl.core_busy_ticks(a.client_cpu)
    time.sleep(a.settle)  # let the server finish what is still queued: its CPU counts too
    after = bl.cpu_snapshot(srv.tree())
    wall = time.monotonic() - t0
    core1 = bl.core_busy_ticks(a.server_cpu)
    cpu = bl.cpu_delta_seconds(before, after)
    load_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r.update(
        server=srv.label,
        round=rnd,
        cpu_s=cpu,
        wall_s=wall,
        # share of the load run time the server was on a CPU (100 % = its core saturated)
        cpu_util=cpu / r["runtime_s"] if r["runtime_s"] else None,
        cpu_per_100k=cpu * 1e5 / r["completed"] if r["completed"] else float("nan"),
        # busy time on the server core that was not the server (other load on the box)
        core_other=max(0.0, (core1 - core0) / bl.CLK_TCK - cpu) / wall,
        processes=len(after),
        # the load generator: its CPU share, and other busy time on its core
        load_cpu_util=load_cpu / lwall,
        load_core_other=max(0.0, (lcore1 - lcore0) / bl.CLK_TCK - load_cpu) / lwall,
    )
    return r


def count_queries(path: Path) -> int:
    data = path.read_bytes()
    n = o = 0
    while o + 2 <= len(data):
        o += 2 + int.from_bytes(data[o : o + 2], "big")
        n += 1
    return n


def warm_up(a, load, srv: bl.Server) -> list[dict]:
    """Unmeasured load in 2 s chunks until the server answered a.warmup passes over the query
    file (or a.warmup_max seconds passed). Returns the chunks' figures (the warm-up curve)."""
    target = a.warmup * count_queries(a.queries)
    done, chunks, t0 = 0, [], time.monotonic()
    srv.pin(a.server_cpu)
    while done < target and time.monotonic() - t0 < a.warmup_max:
        if not srv.alive():
            raise RuntimeError(f"[{srv.label}] exited during warm-up:\n{srv.tail()}")
        r = load.run(srv.port, 2)
        if r["completed"] == 0:
            raise RuntimeError(f"[{srv.label}] answered no query in 2 s of load; its log:\n"
                               f"{srv.tail()}")
        done += r["completed"]
        chunks.append({"completed": r["completed"], "qps": r["qps"]})
    bl.log(f"[{srv.label}] warm-up: {done} answered in {time.monotonic() - t0:.0f} s; q/s per"
           f" 2 s chunk: {' '.join(str(round(c['qps'])) for c in chunks)}")
    return chunks


def fmt_row(label: str, rnd, r: dict) -> str:
    cells = [f"{label:<6}", f"{rnd!s:>5}"]
    for key, _, f in FIGURES:
        v = r.get(key)
        if v is None or (isinstance(v, float) and v != v):
            cells.append("-".rjust(len(f.format(0))))
        else:
            cells.append(f.format(v))
    return "  ".join(cells)


def header() -> str:
    cells = [f"{'server':<6}", f"{'round':>5}"]
    for key, h, f in FIGURES:
        w = len(f.format(0))
        cells.append(f"{h:>{w}}")
    line = "  ".join(cells)
    return line + "\n" + "-" * len(line)


def summarize(runs: list[dict]) -> dict:
    s = {"rounds": len(runs)}
    for key, _, _ in FIGURES:
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            s[key] = statistics.fmean(vals)
            s[key + "_min"] = min(vals)
            s[key + "_max"] = max(vals)
    rc_tot: dict[str, int] = {}
    for r in runs:
        for k, v in r["rcodes"].items():
            rc_tot[k] = rc_tot.get(k, 0) + v
    n = sum(rc_tot.values()) or 1
    s["rcode_share"] = {k: v / n for k, v in sorted(rc_tot.items())}
    return s


def answers_check(si: dict, sn: dict) -> list[str]:
    """Warnings if the two servers did not answer alike (a server that answers everything with
    REFUSED or truncated would look cheap)."""
    warn = []
    keys = set(si["rcode_share"]) | set(sn["rcode_share"])
    for k in sorted(keys):
        a, b = si["rcode_share"].get(k, 0.0), sn["rcode_share"].get(k, 0.0)
        if abs(a - b) > 0.01:
            warn.append(f"servers answer differently: rcode {k}: imrs {a:.2%} vs NSD {b:.2%}")
    ri, rn = si.get("resp_size"), sn.get("resp_size")
    if ri and rn and abs(ri - rn) / rn > 0.10:
        warn.append(f"servers answer differently: mean response size: imrs {ri:.0f} B"
                    f" vs NSD {rn:.0f} B")
    return warn


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zone", type=Path, default=bl.DEFAULT_ZONE)
    p.add_argument("--queries", type=Path, default=bl.DEFAULT_QUERIES,
                   help="query file, dnsperf -B format")
    p.add_argument("--imrs-cmd", default=None,
                   help="command for imrs instead of the default '{python} -m imrs serve --zone"
                        " {zone} --listen {listen}'; placeholders {python} {zone} {port} {host}"
                        " {listen}; 'nsd' runs a second NSD in imrs's place (harness check)")
    p.add_argument("--python", default=bl.default_python(), help="interpreter for imrs")
    p.add_argument("--nsd", default="/usr/sbin/nsd")
    p.add_argument("-l", "--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("-r", "--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=5.0,
                   help="before round 1, load each server (unmeasured, in 2 s chunks) until it"
                        " has answered this many passes over the query file; imrs renders and"
                        " keeps answer shapes on first use and needs ~5 passes to get steady")
    p.add_argument("--warmup-max", type=float, default=120.0,
                   help="seconds of warm-up at most, per server")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds after the load ends before server CPU is read")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--quick", action="store_true", help="smoke check: 2 s runs, 1 round")
    p.add_argument("--nsd-first", action="store_true", help="alternate NSD, imrs, ...")
    p.add_argument("--json", type=Path, help="write config, runs and summary here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, conf)")


def check_args(p: argparse.ArgumentParser, a) -> None:
    if a.quick:
        a.duration, a.rounds, a.warmup = 2.0, 1, min(a.warmup, 1.0)
    if a.server_cpu == a.client_cpu:
        p.error("--server-cpu and --client-cpu must differ")
    for f in (a.zone, a.queries):
        if not f.exists():
            p.error(f"{f} not found")


def run_benchmark(a, load, name: str, setup=None) -> int:
    """Start both servers, warm up, alternate measured runs, print and optionally save.
    `setup(workdir)` runs first (e.g. to build the load generator)."""
    bl.install_sigterm_handler()
    bl.become_subreaper()
    wd = bl.Workdir(keep=a.keep)
    servers: dict[str, bl.Server] = {}
    runs: list[dict] = []
    serials = {}
    try:
        if setup is not None:
            setup(wd.path)
        servers["imrs"] = bl.imrs_server("imrs", a.zone, wd.path, a.imrs_cmd, a.python)
        servers["nsd"] = bl.nsd_server("nsd", a.zone, wd.path, a.nsd)
        for s in servers.values():  # start both, then wait: loading overlaps
            s.start()
        for s in servers.values():
            serials[s.label] = s.wait_ready(a.startup_timeout)
            s.pin(a.server_cpu)
            bl.log(f"[{s.label}] pinned to cpu {a.server_cpu}: {s.describe()}")
        if len(set(serials.values())) != 1:
            bl.log(f"WARNING: servers report different SOA serials: {serials}")

        order = ["nsd", "imrs"] if a.nsd_first else ["imrs", "nsd"]
        warmups = {}
        if a.warmup > 0:
            for n in order:
                warmups[n] = warm_up(a, load, servers[n])

        cmd = shlex.join(load.argv(0, a.duration)).replace(" -p 0 ", " -p PORT ")
        print(f"load: {cmd}")
        print(f"servers pinned to cpu {a.server_cpu}, load to cpu {a.client_cpu};"
              f" {a.rounds} round(s) of {a.duration:g} s; zone {a.zone.name}\n")
        print(header(), flush=True)
        for rnd in range(1, a.rounds + 1):
            for n in order:
                r = measure(a, load, servers[n], rnd)
                runs.append(r)
                print(fmt_row(n, rnd, r), flush=True)

        summary = {n: summarize([r for r in runs if r["server"] == n]) for n in order}
        print("\nsummary (mean over rounds)")
        print(header())
        for n in order:
            print(fmt_row(n, "mean", summary[n]))
        si, sn = summary["imrs"], summary["nsd"]
        ratio = si["cpu_per_100k"] / sn["cpu_per_100k"]
        qps_ratio = si["qps"] / sn["qps"]
        print()
        for n in order:
            s = summary[n]
            rc = ", ".join(f"{k} {v:.1%}" for k, v in s["rcode_share"].items())
            print(f"{n:<5} CPU s per 100k answered: {s['cpu_per_100k']:.4f}"
                  f" (min {s['cpu_per_100k_min']:.4f}, max {s['cpu_per_100k_max']:.4f});"
                  f" rcodes: {rc}")
        print(f"\nratio imrs/NSD, CPU per 100k answered queries: {ratio:.2f}x")
        print(f"ratio imrs/NSD, QPS under {load.name}:{' ' * max(0, 15 - len(load.name))}"
              f"  {qps_ratio:.3f}")
        warn = answers_check(si, sn)
        for n in order:
            if summary[n].get("core_other", 0) > 0.10:
                warn.append(f"other processes used {summary[n]['core_other']:.0%} of cpu"
                            f" {a.server_cpu} during the {n} runs: QPS and latency are"
                            f" disturbed, CPU per query less so")
            lo = statistics.fmean(r["load_core_other"] for r in runs if r["server"] == n)
            if lo > 0.10:
                warn.append(f"other processes used {lo:.0%} of cpu {a.client_cpu} (the load"
                            f" generator's) during the {n} runs: the offered load was lower")
        for w in warn:
            print(f"WARNING: {w}")
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            doc = {
                "benchmark": name,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                "machine": bl.machine_info(),
                "servers": {n: {"argv": s.argv, "port": s.port, "soa_serial": serials.get(n)}
                            for n, s in servers.items()},
                "load_argv": load.argv(0, a.duration),
                "warmup": warmups,
                "runs": runs,
                "summary": summary,
                "ratio_cpu_per_100k_imrs_over_nsd": ratio,
                "ratio_qps_imrs_over_nsd": qps_ratio,
                "warnings": warn,
            }
            a.json.write_text(json.dumps(doc, indent=2) + "\n")
            bl.log(f"wrote {a.json}")
        return 0
    except KeyboardInterrupt:
        bl.log("interrupted")
        return 130
    finally:
        for s in servers.values():
            s.stop()
        wd.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_args(p)
    p.add_argument("--dnsperf", default="dnsperf")
    p.add_argument("-q", "--outstanding", type=int, default=500,
                   help="dnsperf -q: queries in flight")
    p.add_argument("-c", "--clients", type=int, default=1, help="dnsperf -c: client sockets")
    p.add_argument("-t", "--timeout", type=float, default=2.0, help="dnsperf -t")
    p.add_argument("-b", "--bufsize", type=int, default=1024,
                   help="dnsperf -b: its socket buffers in KB, big enough that dnsperf itself"
                        " drops no answers (0: dnsperf's default)")
    p.add_argument("-Q", "--rate", type=int, default=0,
                   help="dnsperf -Q: cap the offered rate (q/s) to compare both servers at the"
                        " same load; 0: no cap")
    p.add_argument("--dnsperf-args", default="", help="extra dnsperf arguments")
    a = p.parse_args(argv)
    check_args(p, a)
    return run_benchmark(a, Dnsperf(a), "bench_vs_nsd")


if __name__ == "__main__":
    sys.exit(main())
