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


def cpu_list(cpus: int | str) -> list[int]:
    """0 -> [0]; "0,1" -> [0, 1]; "0-2" -> [0, 1, 2] (taskset's list syntax, without masks)."""
    out: list[int] = []
    for part in str(cpus).split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(out))


def pin_tree(root: int, cpus: int | str) -> list[ProcStat]:
    """Pin every thread of every process of the tree rooted at `root` to `cpus` (one core, or a
    list such as "0,1" within which the scheduler moves them freely)."""
    procs = process_tree(root)
    for p in procs:
        r = subprocess.run(
            ["taskset", "-a", "-pc", str(cpus), str(p.pid)], check=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if r.returncode != 0 and read_stat(p.pid) is not None:  # gone meanwhile: fine
            raise RuntimeError(f"taskset -a -pc {cpus} {p.pid} failed: {r.stderr.strip()}")
    return procs


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def proc_role(p: ProcStat, root: int) -> str:
    """What a process of a server's tree is: NSD names its processes ("nsd: server 1"); imrs's
    are all "python": the first one is the supervisor, multiprocessing's spawned children the
    workers (and possibly multiprocessing's resource tracker)."""
    if not p.comm.startswith("python"):
        return p.comm
    cl = " ".join(cmdline(p.pid))
    if "resource_tracker" in cl:
        return "resource-tracker"
    if p.pid == root:
        return "main"
    if "multiprocessing" in cl:
        return "worker"
    return p.comm


def cpu_by_process(before: CpuSnap, after: list[ProcStat], root: int) -> list[dict]:
    """Per process of the tree: pid, role, CPU seconds between the snapshot and `after`."""
    return [
        {"pid": p.pid, "role": proc_role(p, root),
         "cpu_s": (p.utime + p.stime - before.get((p.pid, p.starttime), 0)) / CLK_TCK}
        for p in sorted(after, key=lambda p: p.pid)
    ]


def udp_sockets_on(port: int) -> int:
    """How many IPv4 UDP sockets are bound to HOST:port (with SO_REUSEPORT, one per server
    process that reads its own socket)."""
    want = f":{port:04X}"
    n = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                local = line.split()[1]
                if local.endswith(want):
                    n += 1
    except OSError:
        return 0
    return n


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
            check=False, capture_output=True, text=True, timeout=timeout + 2,
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
        # own session: a Ctrl-C on the terminal reaches only the benchmark, which then stops
        # the servers itself
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True, cwd=self.workdir,
            )

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

    def pin(self, cpus: int | str) -> list[ProcStat]:
        procs = pin_tree(self.proc.pid, cpus)
        for p in procs:
            self.known[p.pid] = p.starttime
        return procs

    def describe(self) -> str:
        return ", ".join(f"{p.pid} ({proc_role(p, self.proc.pid)}, {thread_count(p.pid)} thr)"
                         for p in self.tree())

    def wait_sockets(self, count: int, timeout: float) -> int:
        """Wait until `count` UDP sockets are bound to the server's port (imrs hands a worker
        its sockets once its snapshot is built; NSD with reuseport opens one per server
        process), so that no measured run hits a pool that is still starting."""
        t0 = time.monotonic()
        n = udp_sockets_on(self.port)
        while n < count and time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"[{self.label}] exited with status {self.proc.returncode};"
                                   f" last output:\n{self.tail()}")
            time.sleep(0.2)
            n = udp_sockets_on(self.port)
        if n < count:
            log(f"WARNING: [{self.label}] {n} UDP socket(s) on port {self.port} after"
                f" {timeout:g} s, expected {count} (one per worker)")
        return n

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
    server-count: {server_count}
{reuseport}    rrl-ratelimit: 0
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


def nsd_server(label: str, zone: Path, workdir: Path, nsd: str = "nsd",
               server_count: int = 1) -> Server:
    """NSD with `server_count` server processes; with more than one, `reuseport: yes` gives
    each its own socket (the kernel spreads queries over them by the sender's address)."""
    d = workdir / label
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = d / "nsd.conf"
    conf.write_text(NSD_CONF.format(
        host=HOST, port=port, dir=d, zone=zone, server_count=server_count,
        reuseport="    reuseport: yes\n" if server_count > 1 else ""))
    subprocess.run(["nsd-checkconf", str(conf)], check=True)
    return Server(label, [nsd, "-d", "-c", str(conf)], port, workdir)


IMRS_CMD = "{python} -m imrs serve --zone {zone} --listen {listen} --workers {workers} --rrl-rate 0"


def imrs_server(label: str, zone: Path, workdir: Path, cmd: str | None, python: str,
                workers: int = 1, nsd: str = "nsd") -> Server:
    """imrs from the working tree (src/ goes first on PYTHONPATH, so the bench measures the
    checked-out code even if the venv holds no or an older install), with `workers` data-plane
    processes and response rate limiting off (all the load comes from one address). `cmd`
    overrides the command: a shell-like string with placeholders {python} {zone} {port} {host}
    {listen} {workers}; the special value "nsd" runs another NSD instead, with `workers`
    servers (to check the harness: ratio ~ 1)."""
    if cmd is not None and cmd.strip().lower() == "nsd":
        return nsd_server(label, zone, workdir, nsd, server_count=workers)
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    subst = {"python": python, "zone": str(zone), "port": str(port), "host": HOST,
             "listen": f"{HOST}:{port}", "workers": str(workers)}
    argv = [a.format(**subst) for a in shlex.split(IMRS_CMD if cmd is None else cmd)]
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
    m = re.search(pattern, text, re.MULTILINE)
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
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             check=False, capture_output=True, text=True)
        if rev.returncode == 0:
            info["imrs_git"] = rev.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"],
                               check=False, capture_output=True, text=True)
        info["imrs_src_dirty"] = bool(dirty.stdout.strip())
    except OSError:
        pass
    return info
