"""Process and socket plumbing shared by the NSD and imrs server helpers.

Only ever talks to 127.0.0.1 / ::1.  Processes are stopped by PID (never by
name).  NSD renames its processes ("nsd: xfrd", "nsd: main", "nsd: server 1"),
so the comm field of /proc/PID/stat contains spaces and parentheses can not be
split naively: the fields after comm are taken from the *last* ")".
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOCALHOSTS = ("127.0.0.1", "::1")


def _check_local(host: str) -> None:
    if host not in LOCALHOSTS:
        raise ValueError(f"refusing to send DNS traffic to non-local address {host!r}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is currently free for both UDP and TCP on `host`.

    Chosen below the ephemeral range: a client socket could otherwise be given the same
    port while the server starts (taking it from the server, or talking to itself).
    """
    _check_local(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, _high = _ephemeral_range()
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(max(1024, low - 12000), low - 1)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(family, kind) as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("could not find a free UDP+TCP port")


# --------------------------------------------------------------------------
# one-shot queries, used for readiness probes


def soa_query_wire(qid: int, qname: bytes = b"\x00") -> bytes:
    """A minimal SOA query for `qname` (wire format name), RD clear, no EDNS."""
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + qname + struct.pack("!HH", 6, 1)


def udp_once(host: str, port: int, wire: bytes, timeout: float = 0.5) -> bytes | None:
    _check_local(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            s.send(wire)
            deadline = time.monotonic() + timeout
            while True:
                data = s.recv(65535)
                # QR must be set: a socket whose ephemeral port equals the server's port is
                # connected to itself and would read back its own query
                if data[:2] == wire[:2] and len(data) > 2 and data[2] & 0x80:
                    return data
                if time.monotonic() > deadline:
                    return None
        except OSError:
            return None


def tcp_once(host: str, port: int, wire: bytes, timeout: float = 2.0) -> bytes | None:
    _check_local(host)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(wire)) + wire)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    return None
                buf += chunk
            n = struct.unpack("!H", buf[:2])[0]
            reply = buf[2 : 2 + n]
            return reply if len(reply) > 2 and reply[2] & 0x80 else None  # not our own query (self-connect)
    except OSError:
        return None


def answers_soa(host: str, port: int, tcp: bool = False) -> bool:
    """True if the server gives a NOERROR response with an answer to `. SOA`."""
    qid = int.from_bytes(os.urandom(2), "big")
    wire = soa_query_wire(qid)
    resp = (tcp_once if tcp else udp_once)(host, port, wire)
    if resp is None or len(resp) < 12 or resp[:2] != wire[:2]:
        return False
    flags, _qd, an = struct.unpack("!HHH", resp[2:8])
    return bool(flags & 0x8000) and (flags & 0x000F) == 0 and an >= 1


# --------------------------------------------------------------------------
# process tree handling by PID


@dataclass(frozen=True)
class ProcId:
    pid: int
    starttime: int  # field 22 of /proc/PID/stat: guards against PID reuse


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of `pid`, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # "pid (comm with spaces) state ppid ..." -- split after the LAST ')'
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[19])


def proc_id(pid: int) -> ProcId | None:
    st = _stat(pid)
    return None if st is None else ProcId(pid, st[2])


def _children_by_parent() -> dict[int, list[int]]:
    """{ppid: [pid, ...]} of every live process."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st is not None:
            children.setdefault(st[1], []).append(int(d))
    return children


def children(pid: int) -> list[int]:
    """The PIDs of the live children of `pid`."""
    return _children_by_parent().get(pid, [])


def descendants(pid: int) -> list[ProcId]:
    """All live descendants of `pid` (children, grandchildren, ...)."""
    children = _children_by_parent()
    out: list[ProcId] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            pi = proc_id(c)
            if pi is not None:
                out.append(pi)
                todo.append(c)
    return out


def is_running(p: ProcId) -> bool:
    st = _stat(p.pid)
    return st is not None and st[2] == p.starttime and st[0] not in ("Z", "X")


def signal_if_same(p: ProcId, sig: int) -> None:
    if is_running(p):
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(procs: list[ProcId], timeout: float) -> list[ProcId]:
    """Wait until none of `procs` runs; returns those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if is_running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def stop_tree(popen: subprocess.Popen, known: list[ProcId] = ()) -> None:
    """Stop a server by PID: SIGTERM, SIGKILL after 10 s, then whatever of its process tree
    (``known`` plus its descendants now) is still there."""
    tree = list(known)
    tree += [p for p in ([proc_id(popen.pid)] + descendants(popen.pid)) if p and p not in tree]
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=10)
    alive = wait_gone(tree, 5.0)
    for p in alive:
        signal_if_same(p, signal.SIGKILL)
    wait_gone(alive, 5.0)


def tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")
