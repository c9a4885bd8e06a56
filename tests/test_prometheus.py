"""A real Prometheus (Debian's package) scrapes a real imrs, and its query API shows exactly the
queries sent.

Prometheus scrapes `imrs serve --http` every second.  Once it has seen the counters as imrs
reports them (the readiness probes included), N queries go out over UDP and TCP, IPv4 and
IPv6; then `sum(imrs_queries_total)` in Prometheus must reach the old value plus N exactly,
with the right split by transport and family.  Everything listens on loopback, on free ports.

Prometheus is installed with apt-get when missing (as root); under CI=true a Prometheus that
cannot be installed or started fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from peers import proc
from serverproc import ServerProc, parse, query, root_subset, tcp_ask, udp_ask

ROOT_SERIAL = 2026082201
#: Bound on every wait for Prometheus (start, first scrape, the queries showing up).
WAIT = 30.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Prometheus is required under CI: {reason}")
    pytest.skip(reason)


def prometheus_binary() -> str:
    """The prometheus binary, installed from Debian's package when missing and we are root."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0:
        _unavailable("prometheus is not installed (apt-get install prometheus) and we are not root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "install", "-y", "-qq", "prometheus"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "prometheus"]):
        try:
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"{' '.join(command)} failed: {exc}")
        found = shutil.which("prometheus")
        if found:
            return found
    _unavailable("apt-get install prometheus did not install a prometheus binary")
    raise AssertionError("unreachable")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Prometheus:
    """A Prometheus server scraping one target every second, data and log in ``workdir``."""

    def __init__(self, workdir: Path, binary: str, target: str):
        self.workdir = workdir
        self.port = proc.free_port()
        (workdir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: imrs
    static_configs:
      - targets: ["{target}"]
""")
        self.command = [binary, f"--config.file={workdir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self.log_path = workdir / "prometheus.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(self.command, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + WAIT
        while True:
            if self.popen.poll() is not None:
                _unavailable(f"prometheus exited with {self.popen.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                _unavailable(f"prometheus not ready within {WAIT} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return proc.tail(self.log_path, 4000)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.popen = None

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            data = json.load(response)
        assert data["status"] == "success", data
        return data["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: labels (sorted pairs) -> value."""
        return {tuple(sorted(r["metric"].items())): float(r["value"][1])
                for r in self.api("query", query=expr)["result"]}

    def scalar(self, expr: str) -> float | None:
        """The value of a query with one result (None when it has none yet)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def targets(self) -> str:
        return json.dumps(self.api("targets")["activeTargets"], indent=1)


def wait_for(what: str, check, prometheus: Prometheus, timeout: float = WAIT):
    """Poll ``check()`` until it returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})\ntargets: {prometheus.targets()}\n"
                         f"{prometheus.log()[-2000:]}")


def imrs_queries(port: int) -> dict[str, int]:
    """The query counters as imrs itself reports them now (GET /stats)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        counters = json.load(response)["counters"]
    return {key: value for key, value in counters.items() if key.startswith("queries_")}


@pytest.fixture(scope="module")
def binary() -> str:
    return prometheus_binary()


def test_prometheus_scrapes_the_queries_sent(tmp_path: Path, binary: str) -> None:
    hosts = ("127.0.0.1", "::1") if ipv6_loopback() else ("127.0.0.1",)
    (tmp_path / "root.zone").write_text(root_subset({"com", "net", "org"}))
    http_port = proc.free_port()
    srv = ServerProc(tmp_path / "imrs", ["--zone", str(tmp_path / "root.zone"), "--workers", "2",
                                         "--http", f"127.0.0.1:{http_port}"], hosts=hosts)
    prometheus = Prometheus(tmp_path, binary, f"127.0.0.1:{http_port}")
    srv.start()
    try:
        srv.wait_ready()
        prometheus.start()
        wait_for("imrs scraped", lambda: prometheus.scalar('up{job="imrs"}') == 1, prometheus)
        assert prometheus.scalar('imrs_zone_serial{zone="."}') == ROOT_SERIAL
        assert prometheus.scalar("imrs_ready") == 1
        assert prometheus.scalar("imrs_workers") == 2

        # the baseline: Prometheus has scraped the counters as they are now (probes included)
        before = sum(imrs_queries(http_port).values())
        assert before > 0, "the readiness probes should have been counted"
        wait_for(f"sum(imrs_queries_total) == {before} before sending",
                 lambda: prometheus.scalar("sum(imrs_queries_total)") == before, prometheus)
        split_before = prometheus.query("sum by (transport, family) (imrs_queries_total)")
        do_before = prometheus.scalar('sum(imrs_queries_by_edns_total{edns="do"})')

        sent: dict[tuple[str, str], int] = {}
        plan = {("udp", "127.0.0.1"): 23, ("tcp", "127.0.0.1"): 7, ("udp", "::1"): 11, ("tcp", "::1"): 5}
        for (transport, host), count in plan.items():
            if host not in hosts:
                continue
            ask = tcp_ask if transport == "tcp" else udp_ask
            for i in range(count):
                response = ask(host, srv.port, query("com.", "NS", qid=i + 1, do=i % 2 == 0))
                assert response is not None and parse(response).id == i + 1
            family = "ipv6" if ":" in host else "ipv4"
            sent[(transport, family)] = count
        n = sum(sent.values())

        wait_for(f"sum(imrs_queries_total) == {before} + {n}",
                 lambda: prometheus.scalar("sum(imrs_queries_total)") == before + n, prometheus)
        split_after = prometheus.query("sum by (transport, family) (imrs_queries_total)")
        for (transport, family), count in sent.items():
            key = (("family", family), ("transport", transport))
            assert split_after[key] - split_before.get(key, 0.0) == count, (key, split_before, split_after)
        assert sum(imrs_queries(http_port).values()) == before + n  # and imrs agrees
        # every other query had DO set: the EDNS family counted them too
        do_sent = sum((count + 1) // 2 for count in sent.values())
        assert prometheus.scalar('sum(imrs_queries_by_edns_total{edns="do"})') - do_before == do_sent
    finally:
        prometheus.stop()
        srv.stop()
