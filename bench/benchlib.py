"""Shared helpers for the benchmarks in bench/: start/stop servers, pin them, account their CPU.

Only the Python standard library is used, so the benchmarks run under any Python >= 3.11 (the
server under test is started as a separate process with its own interpreter).
Linux only: everything here reads /proc.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared")
DEFAULT_ZONE = SHARED / "zones/testroot/root-2026082201.zone"
DEFAULT_QUERIES = SHARED / "bench/queries-rootmix-mix.bin"
HOST = "127.0.0.1"  # all benchmark traffic stays on loopback
CLK_TCK = os.sysconf("SC_CLK_TCK")


def default_python() -> str:
    venv = REPO / ".venv/bin/python"
    return str(venv) if venv.exists() else sys.executable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc accounting


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    utime: int  # clock ticks, whole thread group (live and exited threads)
    stime: int
    starttime: int  # ticks since boot; (pid, starttime) identifies a process across PID reuse


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/PID/stat. comm may hold spaces and parentheses ("(nsd: server 1)"), so the
    fields are split after the LAST ')'. The process-level file sums utime/stime over all the
    thread group's threads, including exited ones, so threads are covered."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    lpar, rpar = raw.find("("), raw.rfind(")")
    comm = raw[lpar + 1 : rpar]
    rest = raw[rpar + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3]
    if rest[0] in ("Z", "X"):
        return None
    return ProcStat(
        pid=pid,
        comm=comm,
        ppid=int(rest[4 - 3]),
        utime=int(rest[14 - 3]),
        stime=int(rest[15 - 3]),
        starttime=int(rest[22 - 3]),
    )


def all_stats() -> dict[int, ProcStat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out[st.pid] = st
    return out


def process_tree(root: int) -> list[ProcStat]:
    """The live process `root` and all its descendants (by parent PID)."""
    stats = all_stats()
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(stats[pid])
        todo.extend(children.get(pid, ()))
    return out


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


CpuSnap = dict[tuple[int, int], int]  # (pid, starttime) -> utime + stime ticks


def cpu_snapshot(procs: list[ProcStat]) -> CpuSnap:
    return {(p.pid, p.starttime): p.utime + p.stime for p in procs}


def cpu_delta_seconds(before: CpuSnap, after: CpuSnap) -> float:
    """CPU seconds used between two snapshots, summed over processes. A process that appeared
    in between counts in full; one that exited in between is lost (servers do not fork per
    query, so that does not happen in practice)."""
    ticks = sum(v - before.get(k, 0) for k, v in after.items())
    return ticks / CLK_TCK


def core_busy_ticks(cpu: int) -> int:
    """Busy (non-idle, non-iowait) ticks of one core, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal guest guest_nice
                # (guest time is already included in user/nice)
                return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def pin_tree(root: int, cpu: int) -> list[ProcStat]:
    """Pin every thread of every process of the tree rooted at `root` to `cpu`."""
    procs = process_tree(root)
    for p in procs:
        subprocess.run(
            ["taskset", "-a", "-pc", str(cpu), str(p.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return procs


# ---------------------------------------------------------------------------------------------
# servers


def free_port() -> int:
    """A loopback port free for both UDP and TCP (the servers listen on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def soa_serial(port: int, timeout: float = 1.0) -> int | None:
    """Ask 127.0.0.1:port for `. SOA` with dig; return the serial, or None if no good answer."""
    try:
        r = subprocess.run(
            ["dig", f"@{HOST}", "-p", str(port), ".", "SOA", "+norec", "+short",
             f"+time={max(1, int(timeout))}", "+tries=1", "+notcp"],
            capture_output=True, text=True, timeout=timeout + 2,
        )
    except subprocess.TimeoutExpired:
        return None
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) == 7 and f[2].isdigit():
            return int(f[2])
    return None


@dataclass
class Server:
    label: str
    argv: list[str]
    port: int
    workdir: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = None
    known: dict[int, int] = field(default_factory=dict)  # pid -> starttime seen in its tree

    @property
    def logfile(self) -> Path:
        return self.workdir / f"{self.label}.log"

    def start(self) -> None:
        log(f"[{self.label}] starting: {shlex.join(self.argv)}")
        out = open(self.logfile, "wb")
        # own session: a Ctrl-C on the terminal reaches only the benchmark, which then stops
        # the servers itself
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True, cwd=self.workdir,
        )
        out.close()

    def wait_ready(self, timeout: float) -> int:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"[{self.label}] exited with status {self.proc.returncode} before answering;"
                    f" last output:\n{self.tail()}"
                )
            serial = soa_serial(self.port)
            if serial is not None:
                self.tree()
                log(f"[{self.label}] answers . SOA (serial {serial}) on {HOST}:{self.port}"
                    f" after {time.monotonic() - t0:.1f} s")
                return serial
            time.sleep(0.2)
        raise RuntimeError(f"[{self.label}] did not answer . SOA within {timeout} s;"
                           f" last output:\n{self.tail()}")

    def tree(self) -> list[ProcStat]:
        procs = process_tree(self.proc.pid)
        for p in procs:
            self.known[p.pid] = p.starttime
        return procs

    def pin(self, cpu: int) -> list[ProcStat]:
        procs = pin_tree(self.proc.pid, cpu)
        for p in procs:
            self.known[p.pid] = p.starttime
        return procs

    def describe(self) -> str:
        return ", ".join(f"{p.pid} ({p.comm}, {thread_count(p.pid)} thr)" for p in self.tree())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def _survivors(self) -> list[int]:
        out = []
        for pid, start in self.known.items():
            if pid != self.proc.pid:
                try:  # reap it if it is our (adopted) zombie; never waitpid(-1)
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            st = read_stat(pid)
            if st is not None and st.starttime == start:
                out.append(pid)
        return out

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server's root process, wait, then SIGKILL whatever of its tree remains —
        by PID, checking the start time so that a reused PID is never hit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.tree()
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.proc.poll()
            if self.proc.returncode is not None and not self._survivors():
                break
            time.sleep(0.1)
        for pid in self._survivors():
            log(f"[{self.label}] pid {pid} still alive after SIGTERM; sending SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        log(f"[{self.label}] stopped")
        self.proc = None


NSD_CONF = """\
server:
    ip-address: {host}@{port}
    port: {port}
    server-count: 1
    rrl-ratelimit: 0
    database: ""
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    zonelistfile: "{dir}/zone.list"
    logfile: "{dir}/nsd-internal.log"
    verbosity: 1
    do-ip6: no
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: "."
    zonefile: "{zone}"
"""


def nsd_server(label: str, zone: Path, workdir: Path, nsd: str = "nsd") -> Server:
    d = workdir / label
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = d / "nsd.conf"
    conf.write_text(NSD_CONF.format(host=HOST, port=port, dir=d, zone=zone))
    subprocess.run(["nsd-checkconf", str(conf)], check=True)
    return Server(label, [nsd, "-d", "-c", str(conf)], port, workdir)


def imrs_server(label: str, zone: Path, workdir: Path, cmd: str | None, python: str) -> Server:
    """imrs from the working tree (src/ goes first on PYTHONPATH, so the bench measures the
    checked-out code even if the venv holds no or an older install). `cmd` overrides the
    command: a shell-like string with placeholders {python} {zone} {port} {host} {listen};
    the special value "nsd" runs a second NSD instead (to check the harness: ratio ~ 1)."""
    if cmd is not None and cmd.strip().lower() == "nsd":
        return nsd_server(label, zone, workdir)
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cmd is None:
        argv = [python, "-m", "imrs", "serve", "--zone", str(zone), "--listen", f"{HOST}:{port}"]
    else:
        subst = dict(python=python, zone=str(zone), port=str(port), host=HOST,
                     listen=f"{HOST}:{port}")
        argv = [a.format(**subst) for a in shlex.split(cmd)]
    return Server(label, argv, port, workdir, env=env)


class Workdir:
    """A temporary directory, removed at exit unless keep=True."""

    def __init__(self, keep: bool = False):
        self.path = Path(tempfile.mkdtemp(prefix="imrs-bench-"))
        self.keep = keep

    def cleanup(self) -> None:
        if self.keep:
            log(f"kept work directory {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def become_subreaper() -> None:
    """Make orphaned server processes (NSD's children when its first process exits) our
    children rather than PID 1's, so that stop() can reap them instead of leaving zombies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def install_sigterm_handler() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally:` blocks stop the servers."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # KeyboardInterrupt on SIGINT even when started in the background (where it is ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------------------------------------
# output parsing helpers

_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def grab(pattern: str, text: str, conv=float, default=None):
    m = re.search(pattern, text, re.M)
    return conv(m.group(1)) if m else default


def machine_info() -> dict:
    info = {"nproc": os.cpu_count(), "kernel": os.uname().release}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True)
        if rev.returncode == 0:
            info["imrs_git"] = rev.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"],
                               capture_output=True, text=True)
        info["imrs_src_dirty"] = bool(dirty.stdout.strip())
    except OSError:
        pass
    return info
