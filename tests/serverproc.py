"""Start `python -m imrs serve ...` as a subprocess for a test module, and talk DNS to it.

    srv = ServerProc(tmp_path, ["--zone", str(zone)], hosts=("127.0.0.1", "::1"), config="...")
    srv.start()          # returns at once (start several, then wait for each: they load in parallel)
    srv.wait_ready()     # until it answers a SOA query for `probe` over UDP and TCP
    ...
    srv.stop()           # SIGTERM by PID; raises if it crashed, wrote a traceback or counted internal errors

Only 127.0.0.1 / ::1 are ever used.  Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.name
import dns.rdatatype
import dns.zone
from peers import proc

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ROOT_ZONE = REPO.parent / "shared" / "zones" / "testroot" / "root-2026082201.zone"


class ServerError(AssertionError):
    pass


def imrs_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("IMRS_NO_BATCHIO", None)
    env.update(extra or {})
    return env


def imrs_run(args: list[str], cwd: str | os.PathLike, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m imrs ARGS` to completion (for commands that exit on their own)."""
    return subprocess.run([sys.executable, "-m", "imrs", *args], cwd=cwd, env=imrs_env(env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def listen_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerProc:
    def __init__(self, workdir: str | os.PathLike, args: list[str], *, hosts: tuple[str, ...] = ("127.0.0.1",),
                 port: int | None = None, config: str | None = None, env: dict[str, str] | None = None,
                 probe: str = ".", name: str = "imrs", cli_listen: bool = True, rrl: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.hosts = hosts
        self.fixed_port = port
        self.port = port
        self.config = config
        self.env = env
        self.probe = probe
        self.name = name
        self.cli_listen = cli_listen  # False: no --listen (the config file or the default decides)
        # Tests of answers send thousands of queries from one address: response rate limiting
        # (on by default) is turned off unless the test is about it.
        self.rrl = rrl
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def host(self) -> str:
        return self.hosts[0]

    @property
    def addr(self) -> tuple[str, int]:
        return (self.hosts[0], self.port)

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.stderr"

    def stderr(self) -> str:
        return proc.tail(self.stderr_path, 200_000)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "imrs", "serve", *self.args]
        if not self.rrl and "--rrl-rate" not in self.args:
            cmd += ["--rrl-rate", "0"]
        if self.config is not None:
            cfg = self.workdir / f"{self.name}.toml"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        for host in self.hosts if self.cli_listen else ():
            cmd += ["--listen", listen_text(host, self.port)]
        return cmd

    def start(self) -> ServerProc:
        if self.fixed_port is None:
            self.port = proc.free_port(self.hosts[0])
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, cwd=self.workdir, env=imrs_env(self.env),
                                         start_new_session=True)
        return self

    def _probe_wire(self) -> bytes:
        qid = int.from_bytes(os.urandom(2), "big")
        return proc.soa_query_wire(qid, dns.name.from_text(self.probe).to_wire())

    def _answers(self, tcp: bool) -> bool:
        wire = self._probe_wire()
        for host in self.hosts:
            resp = (proc.tcp_once if tcp else proc.udp_once)(host, self.port, wire)
            if resp is None or resp[:2] != wire[:2] or not resp[2] & 0x80:
                return False
        return True

    def wait_ready(self, timeout: float = 90.0) -> ServerProc:
        for attempt in range(3):
            deadline = time.monotonic() + timeout
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    err = self.stderr()
                    self.proc = None
                    if self.fixed_port is None and attempt < 2 and "in use" in err:
                        break  # the probed port was taken meanwhile: try another one
                    raise ServerError(f"{self.name} exited with {rc} before answering\n{self.command()}\n{err[-4000:]}")
                if self._answers(tcp=False) and self._answers(tcp=True):
                    return self
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerError(f"{self.name} not ready within {timeout}s\n{self.stderr()[-4000:]}")
                time.sleep(0.05)
            self.start()
        raise ServerError("unreachable")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig`; return (exit status, seconds it took).  Kills and raises if it does not exit."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"{self.name} did not exit within {timeout}s of signal {sig}") from None
        self.proc = None
        self.returncode = rc
        return rc, time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM; raise ServerError on a crash, a non-zero exit, a traceback or internal errors."""
        if self.proc is None:
            return
        problems = []
        rc = self.proc.poll()
        if rc is not None:
            self.proc = None
            problems.append(f"exited on its own with status {rc}")
        else:
            try:
                rc, _ = self.terminate(timeout=15)
            except ServerError as exc:
                problems.append(str(exc))
                rc = None
            if rc not in (0, None):
                problems.append(f"exit status {rc} after SIGTERM")
        err = self.stderr()
        if "Traceback (most recent call last)" in err:
            problems.append("Python traceback on stderr")
        m = re.search(r"'internal_errors': (\d+)", err)
        if m and int(m.group(1)):
            problems.append(f"{m.group(1)} internal errors counted")
        if problems:
            raise ServerError(f"{self.name}: " + "; ".join(problems) + f"\n--- stderr ---\n{err[-4000:]}")

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes: its children running the multiprocessing spawn
        entry point (the control plane is one too, but only once a zone is kept)."""
        pids = []
        for pid in proc.children(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                pids.append(pid)
        return pids

    def stats(self) -> dict[str, int]:
        """The counters from the 'stopped: {...}' log line (after stop())."""
        m = re.search(r"stopped: (\{.*\})", self.stderr())
        if not m:
            return {}
        return {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", m.group(1))}


def start_all(servers: list[ServerProc], timeout: float = 90.0) -> None:
    """Start all, then wait for each (they load in parallel); stop them all if one fails."""
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready(timeout)
    except BaseException:
        for s in servers:
            s.kill()
        raise


# --------------------------------------------------------------------------
# DNS helpers


def query(name: str, rdtype: str | int = "A", qid: int = 1, *, do: bool = False, payload: int | None = None,
          edns: bool | None = None) -> bytes:
    """Wire form of a query (RD clear).  EDNS when `do`, `payload` or `edns` say so."""
    use_edns = edns if edns is not None else (do or payload is not None)
    msg = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0 if use_edns else None,
                                 payload=payload or 1232)
    msg.flags = 0
    msg.id = qid
    return msg.to_wire()


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Exactly n octets, or None if the peer closes (or resets) first."""
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(sock: socket.socket) -> bytes | None:
    """One two-octet-framed message, or None at end of stream."""
    prefix = recv_exact(sock, 2)
    if prefix is None:
        return None
    length = struct.unpack("!H", prefix)[0]
    body = recv_exact(sock, length)
    if body is None:
        raise AssertionError(f"stream ended inside a {length}-octet message")
    return body


def closed_by_peer(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closes the connection (EOF or reset), reading and discarding any
    data meanwhile; None if it is still open after `timeout`."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
        except TimeoutError:
            return None
        if not data:
            return time.monotonic() - t0


def tcp_connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))
    return s


def tcp_ask(host: str, port: int, wire: bytes, timeout: float = 5.0) -> bytes | None:
    with tcp_connect(host, port, timeout) as s:
        s.sendall(frame(wire))
        return read_frame(s)


def udp_ask(host: str, port: int, wire: bytes, timeout: float = 2.0) -> bytes | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(wire)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            if data[:2] == wire[:2] and len(data) > 2 and data[2] & 0x80:  # QR: not our own query
                return data
        return None


def parse(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire)


def root_subset(tlds: set[str]) -> str:
    """The test root zone cut down to the apex and the named TLDs (with everything under them).

    One record per line in the source file, so a line filter is enough.  The apex (SOA, NS,
    DNSKEY, ZONEMD, NSEC, RRSIGs) is the real root's, except that the ZONEMD digest is computed
    anew for the subset (imrs refuses a zone whose ZONEMD does not match; the RRSIG over the
    ZONEMD no longer verifies, which matters only when a trust anchor is given); loads in well
    under a second.
    """
    out = []
    for line in ROOT_ZONE.read_text().splitlines():
        owner = line.split(None, 1)[0] if line.strip() else ""
        if not owner or owner.startswith(";"):
            continue
        tld = owner.rstrip(".").rsplit(".", 1)[-1].lower()
        if tld in tlds or owner == ".":
            out.append(line)
    zone = dns.zone.from_text("\n".join(out) + "\n", origin=".", relativize=False)
    digest = zone.compute_digest(dns.zone.DigestHashAlgorithm.SHA384)
    for i, line in enumerate(out):
        fields = line.split()
        if fields[3:4] == ["ZONEMD"]:
            out[i] = " ".join(fields[:4]) + " " + digest.to_text()
    return "\n".join(out) + "\n"


SMALL_ZONE = """$ORIGIN example.
$TTL 3600
@       IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 300
@       IN NS  ns1
ns1     IN A   127.0.0.1
www     IN A   192.0.2.1
www     IN AAAA 2001:db8::1
"""
