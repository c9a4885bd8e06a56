"""Plumbing for the flood tests: start floodgen processes, pin server processes to cores, read
memory and UDP drop counts from /proc.  Loopback only; processes are handled by PID."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import proc

from flood.floodgen import port_drops as udp_port_drops  # noqa: F401 - the tests read it from here

TESTS = Path(__file__).resolve().parents[1]


class Gen:
    """``python -m flood.floodgen MODE ...`` as a subprocess (cwd tests/); ``result()`` is the JSON
    it prints last, ``line(prefix)`` an earlier line (e.g. ``READY``) while it keeps running."""

    def __init__(self, mode: str, **opts):
        self.cmd = [sys.executable, "-m", "flood.floodgen", mode]
        for key, value in opts.items():
            if value is None or value is False:
                continue
            flag = "--" + key.replace("_", "-")
            self.cmd += [flag] if value is True else [flag, str(value)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.cmd, cwd=TESTS, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._err, start_new_session=True)
        self._buf = b""

    def _read(self, deadline: float) -> bool:
        """Read what is there (waiting until deadline); False at end of output."""
        fd = self.proc.stdout.fileno()
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return True
        chunk = os.read(fd, 65536)
        self._buf += chunk
        return bool(chunk)

    def _fail(self, what: str) -> AssertionError:
        self._err.seek(0)
        err = self._err.read().decode("utf-8", "replace")[-3000:]
        return AssertionError(f"floodgen {what}: {' '.join(self.cmd)}\n{err}")

    def line(self, prefix: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            lines = self._buf.split(b"\n")
            for i, raw in enumerate(lines[:-1]):
                if raw.startswith(prefix.encode() + b" "):
                    self._buf = b"\n".join(lines[i + 1:])
                    return json.loads(raw[len(prefix) + 1:])
            if time.monotonic() >= deadline:
                self.kill()
                raise self._fail(f"printed no {prefix} line within {timeout}s")
            if not self._read(deadline):
                self.proc.wait(timeout=10)
                raise self._fail(f"ended ({self.proc.returncode}) without a {prefix} line")

    def result(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            if time.monotonic() >= deadline:
                self.kill()
                raise self._fail(f"did not finish within {timeout}s")
        try:
            self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise self._fail(f"did not exit within {timeout}s") from None
        if self.proc.returncode != 0:
            raise self._fail(f"failed with status {self.proc.returncode}")
        lines = [ln for ln in self._buf.decode().splitlines() if ln.startswith("{")]
        if not lines:
            raise self._fail("printed no result")
        return json.loads(lines[-1])

    def stop(self, timeout: float = 15.0) -> dict:
        """SIGTERM (a tcphold generator then reports), and its result."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.result(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    return [pid] + [p.pid for p in proc.descendants(pid)]


def pin_tree(pid: int, cpus: set[int]) -> list[int]:
    """Pin the process and all its descendants (and their threads) to ``cpus``."""
    pinned = []
    for p in tree(pid):
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                os.sched_setaffinity(int(tid), cpus)
            pinned.append(p)
        except (OSError, ValueError):
            pass
    return pinned


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_kb(pid: int) -> dict:
    """Summed VmRSS and Pss (shared pages split between the sharers) of pid and its descendants."""
    pids = tree(pid)
    return {"rss_kb": sum(_status_kb(p, "VmRSS") for p in pids), "pss_kb": sum(_pss_kb(p) for p in pids),
            "processes": len(pids)}











def zone_tlds(zonefile: Path) -> list[str]:
    """The delegated TLDs of a root zone file (owners of NS records below the apex)."""
    tlds = set()
    with open(zonefile) as fh:
        for line in fh:
            f = line.split(None, 4)
            if len(f) >= 4 and f[3] == "NS" and f[0] != ".":
                tlds.add(f[0].rstrip(".").lower())
    return sorted(tlds)
