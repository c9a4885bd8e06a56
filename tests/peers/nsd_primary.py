"""Run a real NSD as the primary of the root zone, for transfer and NOTIFY tests.

    with NsdPrimary(first_version, notify=[("127.0.0.1", 5301)]) as primary:
        axfr(primary.address, primary.port, b"\\x00")
        primary.load_version(next_version)   # new file + `nsd-control reload .` (sends NOTIFY)
        primary.serial()                     # what NSD serves now

NSD serves a copy of the zone file from its own directory, with ``provide-xfr`` for
127.0.0.1 and ::1 (optionally only with a TSIG key), ``notify:`` to the given targets and,
unless ``ixfr=False``, ``store-ixfr``/``create-ixfr`` so that every reload of a changed
file gives it an IXFR diff to serve.  With ``ixfr=False`` NSD stores no diffs and answers an
IXFR query with the whole zone in AXFR form (RFC 1995 section 4), which is the closest NSD
comes to "cannot serve the diff": NSD 4.6 has no setting that REFUSEs IXFR but allows AXFR.

It runs in the foreground (-d), one server process, no chroot, no privilege drop (works as
root in CI), ``nsd-control`` on a free loopback port with keys made by ``nsd-control-setup``.
It is stopped by PID only.  Failures raise :class:`NsdPrimaryError` with NSD's log.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from . import proc
from .nsd_server import find_nsd


class NsdPrimaryError(RuntimeError):
    """NSD could not be started, reloaded or queried; the message carries its log."""


def _q(s: str | os.PathLike) -> str:
    s = str(s)
    if '"' in s:
        raise ValueError(f"path with a double quote not supported: {s!r}")
    return f'"{s}"'


def _target(addr: tuple[str, int] | str) -> str:
    """("127.0.0.1", 5300) or "127.0.0.1@5300" -> NSD's ip@port form (loopback only)."""
    if isinstance(addr, str):
        host, _, port = addr.partition("@")
        addr = (host, int(port or 53))
    host, port = addr
    if host not in proc.LOCALHOSTS:
        raise ValueError(f"refusing to notify non-local address {host!r}")
    return f"{host}@{port}"


class NsdPrimary:
    """A running NSD primary for "." (context manager, or start()/stop())."""

    ZONE_FILE = "root.zone"

    def __init__(
        self,
        zonefile: str | os.PathLike,
        workdir: str | os.PathLike | None = None,
        *,
        notify: Iterable[tuple[str, int] | str] = (),
        also_notify: Iterable[tuple[str, int] | str] = (),
        tsig: tuple[str, str, bytes] | Sequence[tuple[str, str, bytes]] | None = None,
        tsig_only: bool = False,
        ixfr: bool = True,
        ready_timeout: float = 30.0,
        verbosity: int = 2,
    ):
        """``tsig`` is (name, algorithm, secret), or a list of them: the keys NSD knows; with
        ``tsig_only`` a transfer signed with none of them is refused.  ``notify`` and
        ``also_notify`` both become NSD ``notify:`` lines (NSD has one list)."""
        self.source = Path(zonefile).resolve()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self.notify = [_target(a) for a in (*notify, *also_notify)]
        if tsig is None:
            self.tsig: list[tuple[str, str, bytes]] = []
        elif isinstance(tsig, tuple) and len(tsig) == 3 and isinstance(tsig[0], str):
            self.tsig = [tsig]  # type: ignore[list-item]
        else:
            self.tsig = list(tsig)  # type: ignore[arg-type]
        self.tsig_only = tsig_only
        self.ixfr = ixfr
        self.ready_timeout = ready_timeout
        self.verbosity = verbosity
        self.address = "127.0.0.1"
        self.port = 0
        self.control_port = 0
        self.proc: subprocess.Popen | None = None
        self._tree: list[proc.ProcId] = []
        if tsig_only and not self.tsig:
            raise ValueError("tsig_only needs a tsig key")

    # --- files ------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "nsd.conf"

    @property
    def zone_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / self.ZONE_FILE

    def _config(self) -> str:
        w = self.workdir
        assert w is not None
        key_block = "".join(
            f"key:\n    name: \"{name}\"\n    algorithm: {algorithm}\n"
            f"    secret: \"{base64.b64encode(secret).decode()}\"\n"
            for name, algorithm, secret in self.tsig
        )
        acl_keys = [name for name, _, _ in self.tsig] if self.tsig_only else ["NOKEY"]
        lines = [f"    provide-xfr: {host} {key}" for key in acl_keys for host in ("127.0.0.1", "::1")]
        lines += [f"    notify: {t} NOKEY" for t in self.notify]
        if self.ixfr:
            lines += ["    store-ixfr: yes", "    create-ixfr: yes", "    ixfr-number: 10", "    ixfr-size: 0"]
        else:
            lines += ["    store-ixfr: no", "    create-ixfr: no"]
        return f"""\
server:
    ip-address: {self.address}
    port: {self.port}
    do-ip4: yes
    do-ip6: no
    server-count: 1
    reuseport: no
    database: ""
    zonelistfile: {_q(w / "zone.list")}
    xfrdfile: {_q(w / "xfrd.state")}
    xfrdir: {_q(w)}
    pidfile: {_q(w / "nsd.pid")}
    logfile: {_q(w / "nsd.log")}
    zonesdir: {_q(w)}
    username: ""
    chroot: ""
    rrl-ratelimit: 0
    verbosity: {self.verbosity}
    tcp-count: 100
    tcp-timeout: 30
    xfrd-reload-timeout: 0
remote-control:
    control-enable: yes
    control-interface: 127.0.0.1
    control-port: {self.control_port}
    server-key-file: {_q(w / "nsd_server.key")}
    server-cert-file: {_q(w / "nsd_server.pem")}
    control-key-file: {_q(w / "nsd_control.key")}
    control-cert-file: {_q(w / "nsd_control.pem")}
{key_block}zone:
    name: "."
    zonefile: {_q(self.zone_path)}
""" + "\n".join(lines) + "\n"

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> NsdPrimary:
        nsd = find_nsd()
        sbin = os.path.dirname(nsd)
        if not self.source.is_file():
            raise FileNotFoundError(self.source)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="nsd-primary-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            setup = subprocess.run([os.path.join(sbin, "nsd-control-setup"), "-d", str(self.workdir)],
                                   check=False, capture_output=True, text=True, timeout=60)
            if setup.returncode != 0:
                raise NsdPrimaryError(f"nsd-control-setup failed:\n{setup.stdout}{setup.stderr}")
            self._install(self.source)
            last_err = ""
            for _attempt in range(3):  # a free port may be taken between probe and bind
                self.port = proc.free_port(self.address)
                self.control_port = proc.free_port(self.address)
                self.conf_path.write_text(self._config())
                chk = subprocess.run([os.path.join(sbin, "nsd-checkconf"), str(self.conf_path)],
                                     check=False, capture_output=True, text=True, timeout=30)
                if chk.returncode != 0:
                    raise NsdPrimaryError(f"nsd-checkconf rejected the config:\n{chk.stdout}{chk.stderr}")
                (self.workdir / "nsd.log").unlink(missing_ok=True)
                with open(self.workdir / "nsd.stderr", "wb") as out:
                    self.proc = subprocess.Popen([nsd, "-d", "-c", str(self.conf_path)], stdin=subprocess.DEVNULL,
                                                 stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                                 start_new_session=True)
                err = self._wait_ready()
                if err is None:
                    me = proc.proc_id(self.proc.pid)
                    self._tree = ([me] if me else []) + proc.descendants(self.proc.pid)
                    return self
                last_err = err
                self._stop_process()
            raise NsdPrimaryError(f"NSD primary did not come up: {last_err}")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> str | None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return f"nsd exited with status {rc}\n{self.log()}"
            if proc.answers_soa(self.address, self.port, tcp=True) and self._control_ok():
                return None
            time.sleep(0.05)
        return f"no SOA answer and no nsd-control within {self.ready_timeout}s\n{self.log()}"

    def _control(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        control = os.path.join(os.path.dirname(find_nsd()), "nsd-control")
        return subprocess.run([control, "-c", str(self.conf_path), *args], check=False, capture_output=True, text=True,
                              timeout=timeout)

    def _control_ok(self) -> bool:
        try:
            return self._control("status", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _stop_process(self) -> None:
        if self.proc is None:
            return
        proc.stop_tree(self.proc, self._tree)
        self.proc = None
        self._tree = []

    def stop(self) -> None:
        """Stop NSD (by PID) and remove the directory if this object made it."""
        self._stop_process()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- versions ---------------------------------------------------------------------------

    def _install(self, path: Path) -> None:
        """Copy a zone file over NSD's copy, with an mtime NSD sees as changed."""
        old = self.zone_path.stat().st_mtime if self.zone_path.exists() else 0.0
        tmp = self.zone_path.with_suffix(".new")
        shutil.copyfile(path, tmp)
        os.replace(tmp, self.zone_path)
        stamp = max(time.time(), old + 1.0)
        os.utime(self.zone_path, (stamp, stamp))

    def load_version(self, path: str | os.PathLike, timeout: float = 30.0) -> int:
        """Serve the zone in ``path``: copy it in, ``nsd-control reload .`` (NSD then builds
        the IXFR diff and sends NOTIFY), and wait until NSD answers with its serial."""
        if self.proc is None:
            raise NsdPrimaryError("NSD primary is not running")
        path = Path(path)
        want = _file_serial(path)
        self._install(path)
        result = self._control("reload", ".", timeout=timeout)
        if result.returncode != 0:
            raise NsdPrimaryError(f"nsd-control reload failed:\n{result.stdout}{result.stderr}\n{self.log()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NsdPrimaryError(f"NSD exited during reload\n{self.log()}")
            try:
                if self.serial(timeout=2.0) == want:
                    return want
            except NsdPrimaryError:
                pass
            time.sleep(0.05)
        raise NsdPrimaryError(f"NSD did not serve serial {want} within {timeout}s\n{self.log()}")

    def serial(self, timeout: float = 5.0) -> int:
        """The SOA serial NSD answers with now (over TCP)."""
        query = dns.message.make_query(".", dns.rdatatype.SOA)
        try:
            response = dns.query.tcp(query, self.address, port=self.port, timeout=timeout)
        except (OSError, dns.exception.DNSException) as exc:
            raise NsdPrimaryError(f"SOA query to NSD failed: {exc}\n{self.log()}") from None
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset[0].serial
        raise NsdPrimaryError(f"NSD gave no SOA: {response}")

    def log(self) -> str:
        if self.workdir is None:
            return ""
        return (f"--- nsd.log ---\n{proc.tail(self.workdir / 'nsd.log')}"
                f"\n--- nsd stderr ---\n{proc.tail(self.workdir / 'nsd.stderr')}")

    def __repr__(self) -> str:
        return f"<NsdPrimary {self.address}:{self.port} from {self.source.name}>"


def _file_serial(path: Path) -> int:
    """The serial of the first SOA in a master file (the testroot files start with it)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.split(";", 1)[0].split()
            if "SOA" in fields:
                return int(fields[fields.index("SOA") + 3])
    raise NsdPrimaryError(f"{path}: no SOA line")


def versions(directory: str | os.PathLike) -> Sequence[Path]:
    """The testroot zone files, oldest first."""
    return sorted(Path(directory).glob("root-*.zone"))
