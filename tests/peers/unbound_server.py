"""Run a real unbound with an ``auth-zone`` that takes its copy from a primary, for tests.

    with UnboundServer(workdir, zone=".", primary=("127.0.0.1", port), trust_anchor=ds) as ub:
        ub.wait_for_log("auth zone . ...", timeout=20)

unbound runs in the foreground (``-d``) on 127.0.0.1 at a free port, without chroot, remote
control or privilege drop, with every file in ``workdir``.  Its outgoing queries are bound to
127.0.0.1 (``outgoing-interface``), so nothing it sends can leave the machine; it is stopped by
PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import proc

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")


class UnboundUnavailable(RuntimeError):
    pass


def find_unbound() -> str:
    found = shutil.which("unbound", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS]))
    if not found:
        raise UnboundUnavailable("unbound is not installed (Debian/Ubuntu: `apt-get install unbound`); "
                                 "the auth-zone tests need it and are not skipped without it")
    return found


def _q(path: str | os.PathLike) -> str:
    text = str(path)
    if '"' in text:
        raise ValueError(f"path with a double quote not supported: {text!r}")
    return f'"{text}"'


def make_config(workdir: Path, port: int, zone: str, primary: tuple[str, int], trust_anchor: Path | None,
                zonemd_check: bool = True, zonemd_reject_absence: bool = False) -> str:
    anchor = f"    trust-anchor-file: {_q(trust_anchor)}\n" if trust_anchor else ""
    return f"""\
server:
    interface: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    outgoing-interface: 127.0.0.1
    do-not-query-localhost: no
    chroot: ""
    username: ""
    directory: {_q(workdir)}
    pidfile: {_q(workdir / "unbound.pid")}
    logfile: {_q(workdir / "unbound.log")}
    use-syslog: no
    verbosity: 2
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "validator iterator"
{anchor}remote-control:
    control-enable: no
auth-zone:
    name: "{zone}"
    primary: {primary[0]}@{primary[1]}
    fallback-enabled: no
    for-downstream: yes
    for-upstream: yes
    zonemd-check: {"yes" if zonemd_check else "no"}
    zonemd-reject-absence: {"yes" if zonemd_reject_absence else "no"}
"""


class UnboundServer:
    """A running unbound; use as a context manager or call start()/stop()."""

    def __init__(self, workdir: str | os.PathLike, *, zone: str, primary: tuple[str, int],
                 trust_anchor: str | os.PathLike | None = None, zonemd_check: bool = True,
                 zonemd_reject_absence: bool = False,
                 ready_timeout: float = 20.0):
        self.workdir = Path(workdir).resolve()
        self.zone = zone
        self.primary = primary
        self.trust_anchor = Path(trust_anchor).resolve() if trust_anchor else None
        self.zonemd_check = zonemd_check
        self.zonemd_reject_absence = zonemd_reject_absence
        self.ready_timeout = ready_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> tuple[str, int]:
        assert self.port is not None
        return (self.host, self.port)

    @property
    def log_path(self) -> Path:
        return self.workdir / "unbound.log"

    def log(self) -> str:
        return proc.tail(self.log_path, 200_000) + proc.tail(self.workdir / "unbound.stderr", 20_000)

    def start(self) -> UnboundServer:
        unbound = find_unbound()
        self.workdir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _attempt in range(3):  # the probed port may be taken before unbound binds it
            self.port = proc.free_port(self.host)
            conf = self.workdir / "unbound.conf"
            conf.write_text(make_config(self.workdir, self.port, self.zone, self.primary, self.trust_anchor,
                                        self.zonemd_check, self.zonemd_reject_absence))
            check = subprocess.run([unbound + "-checkconf", str(conf)], capture_output=True, text=True, timeout=30, check=False)
            if check.returncode != 0:
                raise RuntimeError(f"unbound-checkconf rejected the config:\n{check.stdout}{check.stderr}")
            self.log_path.unlink(missing_ok=True)
            with open(self.workdir / "unbound.stderr", "wb") as err:
                self.proc = subprocess.Popen([unbound, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=subprocess.STDOUT, cwd=self.workdir,
                                             start_new_session=True)
            deadline = time.monotonic() + self.ready_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if "start of service" in self.log():
                    return self
                time.sleep(0.05)
            last = self.log()
            self.stop()
            if "bind" not in last and "in use" not in last:
                break
        raise RuntimeError(f"unbound did not start:\n{last[-4000:]}")

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match | None:
        """The first match of regex ``pattern`` in the log within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log())
            if match or time.monotonic() > deadline:
                return match
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc.stop_tree(self.proc)
        self.proc = None

    def __enter__(self):  # -> UnboundServer
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
