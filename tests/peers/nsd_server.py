"""Run a real NSD (the reference implementation) on a zone file for tests.

    with NsdServer(zonefile, workdir) as nsd:
        nsd.host, nsd.port     # 127.0.0.1, UDP and TCP

NSD runs in the foreground (-d) with one server process, no RRL, no database,
no chroot, no privilege drop, and every file it writes inside `workdir`.
It is stopped by PID (SIGTERM to the process we started, then its
descendants are waited for, SIGKILL by PID as last resort).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from . import proc


class NsdUnavailable(RuntimeError):
    pass


SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")


def find_nsd(search_path: str | None = None) -> str:
    """Path of the nsd binary: PATH, then /usr/sbin and /usr/local/sbin (often not
    on a non-root PATH).  Raises NsdUnavailable with instructions if absent."""
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which("nsd", path=search_path)
    if not found:
        raise NsdUnavailable(
            "NSD (`nsd`) is not installed or not on PATH: the NSD differential tests need the "
            "reference server and are not skipped without it. Install it "
            "(Debian/Ubuntu: `apt-get install nsd`; the tests were written against NSD 4.6.1)."
        )
    return found


def _q(s: str | os.PathLike) -> str:
    s = str(s)
    if '"' in s:
        raise ValueError(f"path with a double quote not supported: {s!r}")
    return f'"{s}"'


def make_config(workdir: Path, zonefile: Path, host: str, port: int, zone: str = ".",
                extra: dict[str, str] | None = None) -> str:
    settings = {"round-robin": "no", "minimal-responses": "no", "refuse-any": "no"}
    settings.update(extra or {})
    extra_lines = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    return f"""\
server:
    ip-address: {host}
    port: {port}
    do-ip4: {"yes" if ":" not in host else "no"}
    do-ip6: {"yes" if ":" in host else "no"}
    server-count: 1
    reuseport: no
    database: ""
    zonelistfile: {_q(workdir / "zone.list")}
    xfrdfile: {_q(workdir / "xfrd.state")}
    xfrdir: {_q(workdir)}
    pidfile: {_q(workdir / "nsd.pid")}
    logfile: {_q(workdir / "nsd.log")}
    zonesdir: {_q(workdir)}
    username: ""
    chroot: ""
    rrl-ratelimit: 0
    verbosity: 1
    tcp-count: 200
    tcp-timeout: 120
{extra_lines}remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: {_q(zonefile)}
"""


class NsdServer:
    """A running NSD. Use as a context manager, or call start()/stop()."""

    def __init__(self, zonefile: str | os.PathLike, workdir: str | os.PathLike,
                 host: str = "127.0.0.1", port: int | None = None, ready_timeout: float = 30.0,
                 extra_conf: dict[str, str] | None = None):
        self.zonefile = Path(zonefile).resolve()
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.extra_conf = dict(extra_conf or {})
        self.proc: subprocess.Popen | None = None
        self._tree: list[proc.ProcId] = []
        self.name = f"nsd({self.zonefile.name})"

    @property
    def addr(self) -> tuple[str, int]:
        assert self.port is not None
        return (self.host, self.port)

    def start(self) -> "NsdServer":
        nsd = find_nsd()
        if not self.zonefile.is_file():
            raise FileNotFoundError(self.zonefile)
        self.workdir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port
        last_err = ""
        for attempt in range(3):  # the free port may be taken between probe and bind
            self.port = fixed_port or proc.free_port(self.host)
            conf = self.workdir / "nsd.conf"
            conf.write_text(make_config(self.workdir, self.zonefile, self.host, self.port,
                                        extra=self.extra_conf))
            chk = subprocess.run([os.path.join(os.path.dirname(nsd), "nsd-checkconf"), str(conf)],
                                 capture_output=True, text=True)
            if chk.returncode != 0:
                raise RuntimeError(f"nsd-checkconf rejected the generated config:\n{chk.stdout}{chk.stderr}")
            (self.workdir / "nsd.log").unlink(missing_ok=True)
            out = open(self.workdir / "nsd.stderr", "wb")
            self.proc = subprocess.Popen([nsd, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True)
            out.close()
            err = self._wait_ready()
            if err is None:
                me = proc.proc_id(self.proc.pid)
                self._tree = ([me] if me else []) + proc.descendants(self.proc.pid)
                return self
            last_err = err
            self.stop()
            if fixed_port:
                break
        raise RuntimeError(f"NSD did not come up on {self.host}: {last_err}")

    def _wait_ready(self) -> str | None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return (f"nsd exited with status {rc}\n--- log ---\n{proc.tail(self.workdir / 'nsd.log')}"
                        f"\n--- stderr ---\n{proc.tail(self.workdir / 'nsd.stderr')}")
            if proc.answers_soa(self.host, self.port) and proc.answers_soa(self.host, self.port, tcp=True):
                return None
            time.sleep(0.05)
        return (f"no SOA answer within {self.ready_timeout}s\n--- log ---\n"
                f"{proc.tail(self.workdir / 'nsd.log')}")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc.stop_tree(self.proc, self._tree)
        self.proc = None
        self._tree = []

    def log(self) -> str:
        return proc.tail(self.workdir / "nsd.log") + proc.tail(self.workdir / "nsd.stderr")

    def __enter__(self) -> "NsdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NsdServer {self.zonefile.name} {self.host}:{self.port}>"
