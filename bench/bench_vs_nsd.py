#!/usr/bin/env python3
"""imrs against NSD: server CPU per 100,000 answered queries, and QPS, under the same dnsperf load.

For each N of --workers (default 1,2) starts imrs with N workers (`--workers N --rrl-rate 0`)
and NSD with N servers (`server-count: N`, `reuseport: yes` for N > 1) on the same zone, each on
its own loopback port, all at once. With N = 1 every thread of the server's process tree is
pinned to one core (default 0) and dnsperf to another (default 1); with N > 1 the server's tree
may use both cores and dnsperf, still pinned to its core, competes with it. Runs dnsperf
against the configurations in turn (imrs-1w, nsd-1, imrs-2w, nsd-2, imrs-1w, ...); prints
per-run figures, a per-configuration summary (mean over rounds), the imrs/NSD ratios of CPU
seconds per 100k answered queries and of QPS at each N, and the QPS gained with N workers over
the fewest. --profile adds a py-spy profile of the 1-worker imrs under the same load.
See bench/README.md.

    .venv/bin/python bench/bench_vs_nsd.py              # 3 rounds x 10 s per configuration
    .venv/bin/python bench/bench_vs_nsd.py --quick      # 1 round x 2 s, smoke check
    .venv/bin/python bench/bench_vs_nsd.py --workers 1  # imrs 1 worker vs NSD 1 server only
    .venv/bin/python bench/bench_vs_nsd.py --profile    # and where imrs's time goes
    .venv/bin/python bench/bench_vs_nsd.py --imrs-cmd nsd   # harness check: NSD vs NSD
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl

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
    ("load_cpu_util", "load %", "{:>6.1%}"),
    ("resp_size", "resp B", "{:>6.0f}"),
]

#: the issue's goal for one worker: imrs's CPU per answered query at most this times NSD's
GOAL_CPU_RATIO = 0.8
#: dnsperf -c when the run has a configuration with several workers (see auto_clients)
MULTI_CLIENTS = 32


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


class LoadHung(RuntimeError):
    """The load generator did not finish in time and was killed (its figures are lost)."""


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
        # dnsperf 2.10 sometimes never ends on this VM (its receiving thread keeps polling,
        # a SIGINT is ignored): give it the run, the query timeout and a margin, then kill it
        limit = seconds + self.a.timeout + 15
        try:
            r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as e:
            raise LoadHung(f"dnsperf did not finish within {limit:g} s (a {seconds:g} s run);"
                           f" killed") from e
        if r.returncode != 0:
            raise RuntimeError(f"dnsperf failed ({r.returncode}): {shlex.join(argv)}\n"
                               f"{r.stdout}\n{r.stderr}")
        return parse_dnsperf(r.stdout)


def run_load(a, load, port: int, seconds: float, what: str) -> dict:
    """load.run, retried (up to --load-retries times) when the load generator hangs."""
    for attempt in range(a.load_retries + 1):
        try:
            return load.run(port, seconds)
        except LoadHung as e:
            if attempt == a.load_retries:
                raise
            bl.log(f"WARNING: {what}: {e}; running it again")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# configurations


@dataclass
class Config:
    """One server configuration of the run: imrs with N workers or NSD with N servers."""

    name: str  # "imrs-1w", "nsd-2"
    kind: str  # "imrs" or "nsd"
    workers: int
    cpus: str  # taskset list for the server's tree: "0" or "0,1"
    shared: bool  # the load generator's core is one of the server's cores
    measured: bool = True  # False: started only for --profile
    server: bl.Server | None = None
    expect_sockets: int = 0  # UDP sockets the server opens on its port once ready; 0: unknown
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_list(self) -> list[int]:
        return bl.cpu_list(self.cpus)


def parse_workers(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        n = int(part)
        if n < 1:
            raise ValueError(f"worker counts must be >= 1, got {n}")
        if n not in out:
            out.append(n)
    return out


def make_configs(a) -> list[Config]:
    both = f"{a.server_cpu},{a.client_cpu}"
    custom = a.imrs_cmd is not None and a.imrs_cmd.strip().lower() != "nsd"
    configs = []
    for n in a.workers:
        cpus, shared = (str(a.server_cpu), False) if n == 1 else (both, True)
        pair = [
            Config(f"imrs-{n}w", "imrs", n, cpus, shared,
                   expect_sockets=0 if custom and "{workers}" not in a.imrs_cmd else n),
            Config(f"nsd-{n}", "nsd", n, cpus, shared, expect_sockets=n),
        ]
        configs += pair[::-1] if a.nsd_first else pair
    if a.profile and not any(c.kind == "imrs" and c.workers == 1 for c in configs):
        configs.append(Config("imrs-1w", "imrs", 1, str(a.server_cpu), False, measured=False,
                              expect_sockets=1))
    return configs


def start_server(a, c: Config, workdir: Path) -> bl.Server:
    if c.kind == "nsd":
        return bl.nsd_server(c.name, a.zone, workdir, a.nsd, server_count=c.workers)
    return bl.imrs_server(c.name, a.zone, workdir, a.imrs_cmd, a.python, workers=c.workers,
                          nsd=a.nsd)


# ---------------------------------------------------------------------------------------------
# measuring


def measure(a, load, c: Config, rnd: int) -> dict:
    srv = c.server
    for attempt in range(a.load_retries + 1):
        if not srv.alive():
            raise RuntimeError(f"[{srv.label}] is no longer running; last output:\n{srv.tail()}")
        procs = srv.pin(c.cpus)  # again each run: catches threads/processes started late
        before = bl.cpu_snapshot(procs)
        core0 = sum(bl.core_busy_ticks(i) for i in c.cpu_list)
        lcore0 = bl.core_busy_ticks(a.client_cpu)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        try:
            r = load.run(srv.port, a.duration)
        except LoadHung as e:
            if attempt == a.load_retries:
                raise
            bl.log(f"WARNING: [{srv.label}] round {rnd}: {e}; measuring again")
            time.sleep(a.settle)
            continue
        lwall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        lcore1 = bl.core_busy_ticks(a.client_cpu)
        time.sleep(a.settle)  # let the server finish what is still queued: its CPU counts too
        after_procs = srv.tree()
        after = bl.cpu_snapshot(after_procs)
        wall = time.monotonic() - t0
        core1 = sum(bl.core_busy_ticks(i) for i in c.cpu_list)
        break
    cpu = bl.cpu_delta_seconds(before, after)
    load_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    # busy time on the server's core(s) that was neither the server nor (if it shares them)
    # the load generator: other load on the box
    other = (core1 - core0) / bl.CLK_TCK - cpu - (load_cpu if c.shared else 0.0)
    r.update(
        server=c.name,
        config=c.name,
        round=rnd,
        retries=attempt,
        cpu_s=cpu,
        wall_s=wall,
        # CPU seconds per second of load (100 % = one core's worth; with 2 cores up to 200 %)
        cpu_util=cpu / r["runtime_s"] if r["runtime_s"] else None,
        cpu_per_100k=cpu * 1e5 / r["completed"] if r["completed"] else float("nan"),
        # as a share of the server cores' capacity (per core: with 2 cores, 100 % = both)
        core_other=max(0.0, other) / (wall * len(c.cpu_list)),
        processes=len(after),
        proc_cpu=bl.cpu_by_process(before, after_procs, srv.proc.pid),
        # the load generator: its CPU share, and other busy time on its core (for a server
        # that shares that core, the server's own use of it is in there: not computed)
        load_cpu_util=load_cpu / lwall,
        load_core_other=None if c.shared else
        max(0.0, (lcore1 - lcore0) / bl.CLK_TCK - load_cpu) / lwall,
    )
    return r


def count_queries(path: Path) -> int:
    data = path.read_bytes()
    n = o = 0
    while o + 2 <= len(data):
        o += 2 + int.from_bytes(data[o : o + 2], "big")
        n += 1
    return n


def warm_up(a, load, c: Config) -> list[dict]:
    """Unmeasured load in 2 s chunks until the server answered a.warmup passes over the query
    file (or a.warmup_max seconds passed). Returns the chunks' figures (the warm-up curve)."""
    srv = c.server
    target = a.warmup * count_queries(a.queries)
    done, chunks, t0 = 0, [], time.monotonic()
    srv.pin(c.cpus)
    while done < target and time.monotonic() - t0 < a.warmup_max:
        if not srv.alive():
            raise RuntimeError(f"[{srv.label}] exited during warm-up:\n{srv.tail()}")
        r = run_load(a, load, srv.port, 2, f"[{srv.label}] warm-up")
        if r["completed"] == 0:
            raise RuntimeError(f"[{srv.label}] answered no query in 2 s of load; its log:\n"
                               f"{srv.tail()}")
        done += r["completed"]
        chunks.append({"completed": r["completed"], "qps": r["qps"]})
    bl.log(f"[{srv.label}] warm-up: {done} answered in {time.monotonic() - t0:.0f} s; q/s per"
           f" 2 s chunk: {' '.join(str(round(c['qps'])) for c in chunks)}")
    return chunks


# ---------------------------------------------------------------------------------------------
# output


def fmt_row(label: str, rnd, r: dict, width: int = 7) -> str:
    cells = [f"{label:<{width}}", f"{rnd!s:>5}"]
    for key, _, f in FIGURES:
        v = r.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            cells.append("-".rjust(len(f.format(0))))
        else:
            cells.append(f.format(v))
    return "  ".join(cells)


def header(width: int = 7) -> str:
    cells = [f"{'config':<{width}}", f"{'round':>5}"]
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
    # CPU by process of the tree, mean seconds per run (a restarted worker is a new pid)
    per: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        for p in r.get("proc_cpu", ()):
            per.setdefault((p["role"], p["pid"]), []).append(p["cpu_s"])
    s["proc_cpu"] = [{"role": role, "pid": pid, "cpu_s": sum(v) / len(runs)}
                     for (role, pid), v in sorted(per.items(), key=lambda kv: kv[0][1])]
    tot = sum(p["cpu_s"] for p in s["proc_cpu"])
    s["busiest_process_share"] = max((p["cpu_s"] for p in s["proc_cpu"]), default=0.0) / tot \
        if tot > 0 else None
    return s


def proc_split(s: dict) -> str:
    parts = [f"{p['role']} {p['cpu_s']:.2f}" for p in s["proc_cpu"] if p["cpu_s"] >= 0.005]
    quiet = sum(1 for p in s["proc_cpu"] if p["cpu_s"] < 0.005)
    if quiet:
        parts.append(f"{quiet} other{'s' if quiet > 1 else ''} < 0.01")
    return ", ".join(parts)


def answers_check(ni: str, si: dict, nn: str, sn: dict) -> list[str]:
    """Warnings if two configurations did not answer alike (a server that answers everything
    with REFUSED or truncated would look cheap)."""
    warn = []
    keys = set(si["rcode_share"]) | set(sn["rcode_share"])
    for k in sorted(keys):
        a, b = si["rcode_share"].get(k, 0.0), sn["rcode_share"].get(k, 0.0)
        if abs(a - b) > 0.01:
            warn.append(f"servers answer differently: rcode {k}: {ni} {a:.2%} vs {nn} {b:.2%}")
    ri, rn = si.get("resp_size"), sn.get("resp_size")
    if ri and rn and abs(ri - rn) / rn > 0.10:
        warn.append(f"servers answer differently: mean response size: {ni} {ri:.0f} B"
                    f" vs {nn} {rn:.0f} B")
    return warn


def ratios(a, summary: dict[str, dict]) -> dict:
    """imrs/NSD at each N (CPU per 100k, QPS), and each kind's QPS with N workers over its QPS
    with the fewest."""
    out: dict = {"cpu_per_100k_imrs_over_nsd": {}, "qps_imrs_over_nsd": {},
                 "qps_over_fewest": {}}
    for n in a.workers:
        si, sn = summary.get(f"imrs-{n}w"), summary.get(f"nsd-{n}")
        if si and sn and sn.get("cpu_per_100k") and sn.get("qps"):
            out["cpu_per_100k_imrs_over_nsd"][str(n)] = si["cpu_per_100k"] / sn["cpu_per_100k"]
            out["qps_imrs_over_nsd"][str(n)] = si["qps"] / sn["qps"]
    base = min(a.workers)
    for n in a.workers:
        if n == base:
            continue
        for hi, lo in ((f"imrs-{n}w", f"imrs-{base}w"), (f"nsd-{n}", f"nsd-{base}")):
            if summary.get(hi) and summary.get(lo) and summary[lo].get("qps"):
                out["qps_over_fewest"][f"{hi}/{lo}"] = summary[hi]["qps"] / summary[lo]["qps"]
    goals = {}
    if a.imrs_cmd is not None and a.imrs_cmd.strip().lower() == "nsd":
        pass  # harness check: no imrs in the run
    elif "1" in out["cpu_per_100k_imrs_over_nsd"]:
        r = out["cpu_per_100k_imrs_over_nsd"]["1"]
        goals[f"imrs-1w CPU per answered query <= {GOAL_CPU_RATIO:g} x nsd-1's"] = {
            "value": r, "met": r <= GOAL_CPU_RATIO}
    if "imrs-2w/imrs-1w" in out["qps_over_fewest"]:
        r = out["qps_over_fewest"]["imrs-2w/imrs-1w"]
        goals["imrs-2w answers more queries per second than imrs-1w"] = {
            "value": r, "met": r > 1.0}
    out["goals"] = goals
    return out


def print_ratios(a, rt: dict, load_name: str) -> None:
    print()
    ns = [n for n in a.workers if str(n) in rt["cpu_per_100k_imrs_over_nsd"]]
    if ns:
        w = 38
        print(f"{'ratio imrs/NSD, CPU per 100k answered:':<{w}}  " + "   ".join(
            f"N={n} {rt['cpu_per_100k_imrs_over_nsd'][str(n)]:.2f}x" for n in ns))
        print(f"{'ratio imrs/NSD, QPS under ' + load_name + ':':<{w}}  " + "   ".join(
            f"N={n} {rt['qps_imrs_over_nsd'][str(n)]:.3f}" for n in ns))
    for k, v in rt["qps_over_fewest"].items():
        print(f"QPS {k}: {v:.3f}")
    for k, g in rt["goals"].items():
        print(f"goal: {k}: {g['value']:.3f} -> {'met' if g['met'] else 'MISSED'}")


# ---------------------------------------------------------------------------------------------
# profile


def py_spy_path(a) -> str:
    if a.py_spy:
        return a.py_spy
    venv = bl.REPO / ".venv/bin/py-spy"
    return str(venv) if venv.exists() else "py-spy"


def profile_target(srv: bl.Server) -> tuple[int, str]:
    """The imrs process that answers: the supervisor's worker (the busiest one if several);
    the server's own process if it has no worker (one-process imrs)."""
    procs = srv.tree()
    roles = {p.pid: bl.proc_role(p, srv.proc.pid) for p in procs}
    workers = [p for p in procs if roles[p.pid] == "worker"]
    if workers:
        p = max(workers, key=lambda p: p.utime + p.stime)
        return p.pid, "worker"
    return srv.proc.pid, roles.get(srv.proc.pid, "main")


def func_of(frame: str) -> str:
    """`answer (imrs/answer/compiled.py:301)` -> `answer (imrs/answer/compiled.py)`."""
    return re.sub(r":\d+\)$", ")", frame)


def parse_collapsed(text: str) -> dict:
    """py-spy's raw output: one line per distinct stack, `frame;frame;...;leaf COUNT`, the
    outermost frame first, each frame `function (file:line)` (the line being run; for a caller
    the line of the call). Returns the number of samples and Counters: self samples per function
    (innermost frame), total samples per function (anywhere on the stack, once per sample),
    self samples per line and per file, and the functions of the first stack."""
    r = {"samples": 0, "self": Counter(), "total": Counter(), "lines": Counter(),
         "files": Counter(), "first_stack": []}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";")
                  if f and not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        funcs = [func_of(f) for f in frames]
        if not r["first_stack"]:
            r["first_stack"] = funcs
        r["samples"] += n
        r["self"][funcs[-1]] += n
        r["lines"][frames[-1]] += n
        for f in set(funcs):
            r["total"][f] += n
        i = funcs[-1].rfind(" (")
        r["files"][funcs[-1][i + 2 : -1] if i >= 0 else funcs[-1]] += n
    return r


def short(frame: str, width: int = 88) -> str:
    return frame if len(frame) <= width else frame[: width - 3] + "..."


def profile_imrs(a, load, c: Config, workdir: Path) -> dict:
    """py-spy on the 1-worker imrs's worker during one more run of the load (not measured)."""
    srv = c.server
    srv.pin(c.cpus)
    pid, role = profile_target(srv)
    raw = a.profile_raw or (workdir / f"profile-{c.name}.raw")
    raw.parent.mkdir(parents=True, exist_ok=True)
    d = max(1, round(a.duration))
    argv = ["taskset", "-c", str(a.client_cpu), py_spy_path(a), "record", "--pid", str(pid),
            "--duration", str(d), "--rate", str(a.profile_rate), "--format", "raw",
            "--output", str(raw), "--nonblocking"]
    bl.log(f"[{c.name}] profiling {role} pid {pid}: {shlex.join(argv)}")
    for attempt in range(a.load_retries + 1):
        spy = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        time.sleep(0.5)  # py-spy attaches; idle samples before the load starts are not kept
        lr: dict | None = None
        try:
            # the load outlasts py-spy's d seconds; the worker's CPU is read around the load
            st0, t0 = bl.read_stat(pid), time.monotonic()
            lr = load.run(srv.port, d + 1.0)
            st1, t1 = bl.read_stat(pid), time.monotonic()
        except LoadHung as e:
            if attempt == a.load_retries:
                raise
            bl.log(f"WARNING: [{c.name}] profile run: {e}; profiling again")
        finally:
            try:
                out, _ = spy.communicate(timeout=d + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                out, _ = spy.communicate()
        if lr is not None:
            break
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {shlex.join(argv)}\n{out}")
    pc = parse_collapsed(raw.read_text(errors="replace"))
    samples, self_c, incl = pc["samples"], pc["self"], pc["total"]
    cpu = ((st1.utime + st1.stime) - (st0.utime + st0.stime)) / bl.CLK_TCK \
        if st0 and st1 and st0.starttime == st1.starttime else None
    top = a.profile_top
    # the frames on every stack (process start-up, the event loop: the main loop's callers)
    # would fill the inclusive table at 100 %; they are listed apart
    common = [f for f, n in incl.items() if n >= 0.995 * samples and self_c[f] < 0.005 * samples]
    ranked = Counter({f: n for f, n in incl.items() if f not in set(common)})
    innermost_common = next((f for f in reversed(pc["first_stack"]) if f in set(common)), None)

    def rows(counter: Counter) -> list[dict]:
        return [{"function": f, "self_pct": 100 * self_c[f] / samples,
                 "total_pct": 100 * incl[f] / samples} for f, _ in counter.most_common(top)]

    return {
        "config": c.name, "pid": pid, "role": role, "argv": argv, "duration_s": d,
        "rate": a.profile_rate, "samples": samples, "py_spy_output": out.strip(),
        "raw_file": str(raw), "raw_kept": bool(a.profile_raw or a.keep),
        "process_cpu_s": cpu, "process_wall_s": t1 - t0,
        "errors": bl.grab(r"Errors:\s*(\d+)", out, int),
        "load": {k: lr.get(k) for k in ("qps", "completed", "lost")} if lr else None,
        "by_self": rows(self_c), "by_total": rows(ranked),
        "on_every_stack": sorted(common, key=lambda f: -incl[f]),
        "innermost_on_every_stack": innermost_common,
        "by_line": [{"line": f, "self_pct": 100 * n / samples}
                    for f, n in pc["lines"].most_common(top)] if samples else [],
        "by_file": [{"file": f, "self_pct": 100 * n / samples}
                    for f, n in pc["files"].most_common(10)] if samples else [],
    }


def print_profile(p: dict) -> None:
    print(f"\nprofile: py-spy on {p['config']} ({p['role']} pid {p['pid']}), {p['duration_s']} s"
          f" at {p['rate']}/s during one more (unmeasured) run of the same load")
    cpu = p["process_cpu_s"]
    load = p["load"] or {}
    print(f"  {p['samples']} samples (idle ones, blocked in a system call such as epoll_wait,"
          f" are not kept);"
          + (f" the process used {cpu:.2f} CPU s in the {p['process_wall_s']:.1f} s of load"
             f" ({cpu / p['process_wall_s']:.0%});" if cpu else "")
          + (f" {load['qps']:.0f} q/s answered while sampled" if load.get("qps") else ""))
    print("  time in a system call that runs (sendmsg, recvmsg...) counts for the Python"
          " function that made it" + (f"; py-spy errors: {p['errors']}" if p["errors"] else ""))
    if not p["samples"]:
        print("  no samples")
        return
    w = 90
    for title, key in (("exclusive (self) time", "by_self"), ("inclusive (total) time", "by_total")):
        print(f"\n  top {len(p[key])} functions by {title}")
        print(f"  {'self %':>7}  {'total %':>7}  function (file)")
        for r in p[key]:
            print(f"  {r['self_pct']:>7.1f}  {r['total_pct']:>7.1f}  {short(r['function'], w)}")
    if p["on_every_stack"]:
        print(f"  (not listed: {len(p['on_every_stack'])} functions on every stack, the"
              f" process's start-up and event loop, down to {p['innermost_on_every_stack']})")
    print(f"\n  top {len(p['by_line'])} lines by self time")
    for r in p["by_line"]:
        print(f"  {r['self_pct']:>7.1f}  {short(r['line'], w)}")
    print("\n  self time by file")
    for r in p["by_file"]:
        print(f"  {r['self_pct']:>7.1f}  {short(r['file'], w)}")
    if p["raw_kept"]:
        print(f"  raw collapsed stacks (flamegraph.pl, speedscope): {p['raw_file']}")


# ---------------------------------------------------------------------------------------------
# the run


def common_args(p: argparse.ArgumentParser, workers: str = "1") -> None:
    p.add_argument("--zone", type=Path, default=bl.DEFAULT_ZONE)
    p.add_argument("--queries", type=Path, default=bl.DEFAULT_QUERIES,
                   help="query file, dnsperf -B format")
    p.add_argument("--workers", default=workers,
                   help="comma-separated worker counts N: for each, imrs with N workers and NSD"
                        " with server-count N (+ reuseport); N=1 is pinned to --server-cpu,"
                        " N>1 may use --server-cpu and --client-cpu")
    p.add_argument("--imrs-cmd", default=None,
                   help="command for imrs instead of the default '" + bl.IMRS_CMD + "';"
                        " placeholders {python} {zone} {port} {host} {listen} {workers};"
                        " 'nsd' runs NSD (server-count N) in imrs's place (harness check)")
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
    p.add_argument("--load-retries", type=int, default=2,
                   help="times a run is repeated when the load generator hangs and is killed")
    p.add_argument("--quick", action="store_true", help="smoke check: 2 s runs, 1 round")
    p.add_argument("--nsd-first", action="store_true",
                   help="alternate NSD, imrs, ... (at each N)")
    p.add_argument("--profile", action="store_true",
                   help="after the measured rounds, one more run of the load against imrs-1w"
                        " with py-spy on its worker; prints where the time goes")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--profile-top", type=int, default=15, help="functions per profile table")
    p.add_argument("--profile-raw", type=Path,
                   help="keep py-spy's raw collapsed stacks here (default: the work directory)")
    p.add_argument("--py-spy", default=None, help="py-spy binary (default: the venv's)")
    p.add_argument("--json", type=Path, help="write config, runs and summary here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, conf)")


def check_args(p: argparse.ArgumentParser, a) -> None:
    if a.quick:
        a.duration, a.rounds, a.warmup = 2.0, 1, min(a.warmup, 1.0)
    if a.server_cpu == a.client_cpu:
        p.error("--server-cpu and --client-cpu must differ")
    try:
        a.workers = parse_workers(a.workers)
    except ValueError as e:
        p.error(f"--workers: {e}")
    for f in (a.zone, a.queries):
        if not f.exists():
            p.error(f"{f} not found")
    if a.profile and a.imrs_cmd is not None and a.imrs_cmd.strip().lower() == "nsd":
        p.error("--profile needs imrs (py-spy profiles Python), not --imrs-cmd nsd")
    if (a.imrs_cmd is not None and a.imrs_cmd.strip().lower() != "nsd"
            and "{workers}" not in a.imrs_cmd and len(a.workers) > 1):
        bl.log("WARNING: --imrs-cmd has no {workers}: every imrs configuration runs the same"
               " command")


def run_benchmark(a, load, name: str, setup=None) -> int:
    """Start all configurations' servers, warm up, alternate measured runs, print and optionally
    save. `setup(workdir)` runs first (e.g. to build the load generator)."""
    bl.install_sigterm_handler()
    bl.become_subreaper()
    wd = bl.Workdir(keep=a.keep)
    configs = make_configs(a)
    runs: list[dict] = []
    serials = {}
    try:
        if setup is not None:
            setup(wd.path)
        for c in configs:
            c.server = start_server(a, c, wd.path)
        for c in configs:  # start all, then wait: loading overlaps
            c.server.start()
        for c in configs:
            serials[c.name] = c.server.wait_ready(a.startup_timeout)
        for c in configs:
            if c.expect_sockets:
                c.server.wait_sockets(c.expect_sockets, a.startup_timeout)
            c.server.pin(c.cpus)
            bl.log(f"[{c.name}] pinned to cpu {c.cpus}: {c.server.describe()}")
        if len(set(serials.values())) != 1:
            bl.log(f"WARNING: servers report different SOA serials: {serials}")

        measured = [c for c in configs if c.measured]
        warmups = {}
        if a.warmup > 0:
            for c in configs:
                warmups[c.name] = warm_up(a, load, c)

        cmd = shlex.join(load.argv(0, a.duration)).replace(" -p 0 ", " -p PORT ")
        width = max(7, *(len(c.name) for c in measured))
        print(f"load: {cmd}")
        one = [c.name for c in measured if not c.shared]
        many = [c for c in measured if c.shared]
        if one:
            print(f"{', '.join(one)}: server tree pinned to cpu {a.server_cpu},"
                  f" load to cpu {a.client_cpu}")
        if many:
            print(f"{', '.join(c.name for c in many)}: server tree on cpus {many[0].cpus}, load"
                  f" pinned to cpu {a.client_cpu}: the load generator competes with the server"
                  f" for cpu {a.client_cpu}, so QPS is what both together reach; CPU % is of"
                  f" one core (up to {100 * len(many[0].cpu_list)} %); other % is of all"
                  f" {len(many[0].cpu_list)} cores and excludes the load generator")
        print(f"{a.rounds} round(s) of {a.duration:g} s; zone {a.zone.name}\n")
        print(header(width), flush=True)
        for rnd in range(1, a.rounds + 1):
            for c in measured:
                r = measure(a, load, c, rnd)
                runs.append(r)
                print(fmt_row(c.name, rnd, r, width), flush=True)

        summary = {c.name: summarize([r for r in runs if r["config"] == c.name])
                   for c in measured}
        print("\nsummary (mean over rounds)")
        print(header(width))
        for c in measured:
            print(fmt_row(c.name, "mean", summary[c.name], width))
        print()
        for c in measured:
            s = summary[c.name]
            rc = ", ".join(f"{k} {v:.1%}" for k, v in s["rcode_share"].items())
            print(f"{c.name:<{width}} CPU s per 100k answered: {s['cpu_per_100k']:.4f}"
                  f" (min {s['cpu_per_100k_min']:.4f}, max {s['cpu_per_100k_max']:.4f});"
                  f" rcodes: {rc}")
        print("\nCPU s per run by process (mean)")
        for c in measured:
            s = summary[c.name]
            bal = ""
            if c.workers > 1 and s.get("busiest_process_share") is not None:
                bal = f"  [busiest process: {s['busiest_process_share']:.0%} of the tree's CPU]"
            print(f"{c.name:<{width}} {proc_split(s)}{bal}")
        rt = ratios(a, summary)
        print_ratios(a, rt, load.name)

        warn = []
        for n in a.workers:
            ni, nn = f"imrs-{n}w", f"nsd-{n}"
            if ni in summary and nn in summary:
                warn += answers_check(ni, summary[ni], nn, summary[nn])
        for c in measured:
            s = summary[c.name]
            cores = f"cpu {c.cpus}" if not c.shared else f"cpus {c.cpus}"
            if s.get("core_other", 0) > 0.10:
                warn.append(f"other processes used {s['core_other']:.0%} of {cores} during the"
                            f" {c.name} runs: QPS and latency are disturbed, CPU per query"
                            f" less so")
            lo = [r["load_core_other"] for r in runs
                  if r["config"] == c.name and r.get("load_core_other") is not None]
            if lo and statistics.fmean(lo) > 0.10:
                warn.append(f"other processes used {statistics.fmean(lo):.0%} of cpu"
                            f" {a.client_cpu} (the load generator's) during the {c.name} runs:"
                            f" the offered load was lower")
            if c.workers > 1 and c.expect_sockets:
                share = s.get("busiest_process_share")
                if share is not None and share > 0.5 + 0.5 / c.workers:
                    warn.append(f"{c.name}: one process did {share:.0%} of the work: the"
                                f" kernel spread the load's {a_clients(a)} source socket(s)"
                                f" unevenly over the workers")
        retried = sum(r.get("retries", 0) for r in runs)
        if retried:
            warn.append(f"{retried} run(s) were repeated because the load generator hung")
        for w in warn:
            print(f"WARNING: {w}")

        prof = None
        if a.profile:
            c1 = next(c for c in configs if c.kind == "imrs" and c.workers == 1)
            try:
                prof = profile_imrs(a, load, c1, wd.path)
                print_profile(prof)
            except (RuntimeError, OSError) as e:
                print(f"\nprofile failed: {e}")
                prof = {"error": str(e)}

        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            first = str(min(a.workers))
            doc = {
                "benchmark": name,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                "machine": bl.machine_info(),
                "configurations": {
                    c.name: {"kind": c.kind, "workers": c.workers, "cpus": c.cpus,
                             "shares_load_cpu": c.shared, "measured": c.measured,
                             "argv": c.server.argv, "port": c.server.port,
                             "soa_serial": serials.get(c.name)}
                    for c in configs},
                "load_argv": load.argv(0, a.duration),
                "warmup": warmups,
                "runs": runs,
                "summary": summary,
                "ratios": rt,
                # the fewest-workers pair, under the names of the one-worker-only script
                "ratio_cpu_per_100k_imrs_over_nsd":
                    rt["cpu_per_100k_imrs_over_nsd"].get(first),
                "ratio_qps_imrs_over_nsd": rt["qps_imrs_over_nsd"].get(first),
                "profile": prof,
                "warnings": warn,
            }
            a.json.write_text(json.dumps(doc, indent=2) + "\n")
            bl.log(f"wrote {a.json}")
        return 0
    except KeyboardInterrupt:
        bl.log("interrupted")
        return 130
    finally:
        for c in configs:
            if c.server is not None:
                c.server.stop()
        wd.cleanup()


def a_clients(a) -> str:
    return str(getattr(a, "clients", getattr(a, "sockets", "?")))


def auto_clients(a) -> int:
    """dnsperf -c: 1 (as the one-worker benchmark always had) when every configuration has one
    worker; else MULTI_CLIENTS for all configurations alike. The kernel hands each source
    socket's queries to one of the SO_REUSEPORT sockets by a hash of the addresses and ports,
    so one client socket would keep all but one worker idle; with 32, each of 2 workers gets
    half the sockets give or take 4 (one standard deviation)."""
    return 1 if max(a.workers) == 1 else MULTI_CLIENTS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common_args(p, workers="1,2")
    p.add_argument("--dnsperf", default="dnsperf")
    p.add_argument("-q", "--outstanding", type=int, default=500,
                   help="dnsperf -q: queries in flight")
    p.add_argument("-c", "--clients", type=int, default=0,
                   help="dnsperf -c: client sockets; 0: 1 if all --workers are 1, else"
                        f" {MULTI_CLIENTS} (for every configuration, so that the kernel spreads"
                        " them over the SO_REUSEPORT workers)")
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
    if a.clients <= 0:
        a.clients = auto_clients(a)
    return run_benchmark(a, Dnsperf(a), "bench_vs_nsd")


if __name__ == "__main__":
    sys.exit(main())
