"""Run the imrs server under test as a subprocess.

    with ImrsServer(zonefile, workdir) as srv:
        srv.host, srv.port

Runs `python -m imrs serve --zone ZONE --listen 127.0.0.1:PORT` with the
working tree's src/ first on PYTHONPATH, waits (up to 60 s) until it answers
`. SOA`, and on stop sends SIGTERM.  stop() raises ImrsServerError if the
server had exited on its own, did not stop on SIGTERM, or wrote a Python
traceback to stderr.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import proc

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


class ImrsServerError(AssertionError):
    pass


def imrs_command(zonefile: Path, host: str, port: int) -> list[str]:
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # RRL off: the differential sends thousands of queries from one address
    return [sys.executable, "-m", "imrs", "serve", "--zone", str(zonefile), "--listen", listen, "--rrl-rate", "0"]


class ImrsServer:
    def __init__(self, zonefile: str | os.PathLike, workdir: str | os.PathLike,
                 host: str = "127.0.0.1", port: int | None = None, ready_timeout: float = 60.0,
                 extra_args: list[str] | None = None):
        self.zonefile = Path(zonefile).resolve()
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.name = f"imrs({self.zonefile.name})"
        self.startup_seconds: float | None = None

    @property
    def addr(self) -> tuple[str, int]:
        assert self.port is not None
        return (self.host, self.port)

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "imrs.stderr"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "imrs.stdout"

    def start(self) -> "ImrsServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for attempt in range(3):
            if not fixed_port:
                self.port = proc.free_port(self.host)
            try:
                return self._start_once()
            except ImrsServerError as e:
                # another process may have taken the probed port in the meantime
                in_use = "Address already in use" in str(e) or "Errno 98" in str(e)
                if fixed_port or not in_use or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> "ImrsServer":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = imrs_command(self.zonefile, self.host, self.port) + self.extra_args
        t0 = time.monotonic()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.workdir, env=env, start_new_session=True)
        deadline = t0 + self.ready_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise ImrsServerError(
                    f"imrs exited with status {rc} before answering a SOA query\n"
                    f"command: {' '.join(cmd)}\n--- stderr ---\n{proc.tail(self.stderr_path)}")
            if proc.answers_soa(self.host, self.port):
                break
            if time.monotonic() > deadline:
                self._kill()
                raise ImrsServerError(
                    f"imrs did not answer `. SOA` on {self.host}:{self.port} within {self.ready_timeout}s\n"
                    f"command: {' '.join(cmd)}\n--- stderr ---\n{proc.tail(self.stderr_path)}")
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - t0
        # TCP should be up as well (give it a moment after UDP)
        tcp_deadline = time.monotonic() + 10
        while not proc.answers_soa(self.host, self.port, tcp=True):
            if time.monotonic() > tcp_deadline:
                self._kill()
                raise ImrsServerError(f"imrs answers `. SOA` over UDP but not over TCP on {self.host}:{self.port}")
            time.sleep(0.1)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Stop with SIGTERM; raise ImrsServerError on a crash or a traceback."""
        if self.proc is None:
            return
        problems = []
        rc = self.proc.poll()
        if rc is not None:
            problems.append(f"imrs exited on its own (status {rc}) while the test was running")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("imrs did not exit within 15 s of SIGTERM (killed)")
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        stderr = proc.tail(self.stderr_path, 20000)
        if "Traceback (most recent call last)" in stderr:
            problems.append("imrs wrote a Python traceback to stderr")
        m = re.search(r"'internal_errors': (\d+)", stderr)
        if m and int(m.group(1)):
            problems.append(f"imrs counted {m.group(1)} internal errors")
        if problems:
            raise ImrsServerError("; ".join(problems) + f"\n--- stderr (tail) ---\n{stderr[-4000:]}")

    def __enter__(self) -> "ImrsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ImrsServer {self.zonefile.name} {self.host}:{self.port}>"
