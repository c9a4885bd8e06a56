"""The dashboard (``GET /``) of a real `imrs serve --http`, opened in headless Chromium.

The server samples its counters every second (IMRS_DASHBOARD_INTERVAL=1) instead of 10; the
test sends a few hundred queries (answers, referrals, NXDOMAIN, some over TCP, enough from one
address for the rate limiter to act), waits for a few samples, then has Chromium load the page
and dump the DOM once the script has drawn: every chart must say it drew data points, and the
zone's serial and a non-zero q/s must show.  A screenshot is taken too (set IMRS_DASHBOARD_SHOT
to keep it somewhere, e.g. docs/dashboard.png).  Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from peers import proc
from serverproc import ServerProc, query, root_subset, tcp_ask

ROOT_SERIAL = 2026082201
CHARTS = ("chart-rcode", "chart-junk", "chart-rrl", "chart-tlds", "chart-qtypes", "chart-transport", "chart-sizes")


def chromium() -> str:
    """The Chromium binary; installed from Debian when missing.  Under CI, failing to get one
    fails the test rather than skipping it."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed and cannot be installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


def run_chromium(binary: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url``; virtual time lets the page's script run before the dump."""
    command = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", "--virtual-time-budget=5000", *extra, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 and os.environ.get("CI") != "true":
        pytest.skip(f"chromium does not run here: {result.stderr[-500:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def get_history(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /history HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def traffic(host: str, port: int, stop: threading.Event) -> None:
    """Until ``stop``: a mix of queries every 0.25 s (answers, referrals, NXDOMAIN, DO set on a
    third, a few over TCP), growing, and a burst of one name from one address (over the rate limit)."""
    names = [("com.", "NS"), ("net.", "NS"), ("www.example.com.", "A"), ("org.", "DS"), (".", "SOA"),
             (".", "DNSKEY"), ("nope.", "A"), ("junk-%d.", "AAAA"), ("wpad.localdomain.", "A"), ("example.org.", "MX")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        r = 0
        while not stop.is_set():
            for i in range(40 + 4 * r):
                name, rdtype = names[(i * 7 + r) % len(names)]
                s.sendto(query(name.replace("%d", str(i)), rdtype, qid=i & 0xFFFF, do=i % 3 == 0), (host, port))
            for i in range(100 if r % 8 < 3 else 0):
                s.sendto(query("com.", "NS", qid=i), (host, port))
            if r % 4 == 0:
                tcp_ask(host, port, query(f"tcp-{r}.", "A", qid=r & 0xFFFF))
            try:
                while s.recv(65536):
                    pass
            except BlockingIOError:
                pass
            r += 1
            stop.wait(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("dashboard")
    (d / "root.zone").write_text(root_subset({"com", "net", "org"}))
    http_port = proc.free_port()
    srv = ServerProc(d, ["--workers", "2", "--http", f"127.0.0.1:{http_port}", "--rrl-rate", "50"],
                     config='[[zone]]\nfile = "root.zone"\n', env={"IMRS_DASHBOARD_INTERVAL": "1"}, rrl=True)
    srv.http_port = http_port  # type: ignore[attr-defined]
    srv.start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()  # raises on a traceback or internal errors in its log


def test_dashboard_renders_live_data(server: ServerProc, tmp_path: Path) -> None:
    binary = chromium()
    port = server.http_port
    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(server.host, server.port, stop), daemon=True)
    sender.start()
    try:
        check_page(binary, port, tmp_path, int(os.environ.get("IMRS_DASHBOARD_TRAFFIC", "4")))
    finally:
        stop.set()
        sender.join(10)


def check_page(binary: str, port: int, tmp_path: Path, seconds: int) -> None:
    """After ``seconds`` of traffic (and at least 3 samples), the page draws every chart."""
    time.sleep(seconds)
    deadline = time.monotonic() + 10
    while True:
        history = get_history(port)
        if len(history["series"]) >= 3 and history["series"][-1]["qps"] > 0:
            break
        assert time.monotonic() < deadline, history
        time.sleep(0.3)
    assert history["zones"][0]["serial"] == ROOT_SERIAL
    assert history["totals"]["rcode_NXDOMAIN"] > 0 and 0 < history["junk"] < 1
    assert history["transport"]["tcp_ipv4"] >= 2
    assert history["rrl"]["limited"] > 0, history["rrl"]  # one address over 50/s: the rate limiter acted
    tlds = dict(history["tlds"])
    assert history["tlds"][0][0] == "com", history["tlds"]  # the bursts of com. NS
    assert {"net", "org", ".", "nope", "localdomain"} <= tlds.keys(), tlds
    assert sum(tlds.values()) <= history["tld_queries"]

    url = f"http://127.0.0.1:{port}/"
    dom = run_chromium(binary, url, "--dump-dom").stdout
    for chart in CHARTS:
        match = re.search(rf'<svg id="{chart}"[^>]*data-points="(\d+)"', dom)
        assert match is not None, (chart, dom[:3000])
        assert int(match[1]) > 0, (chart, match[0])
    assert re.search(rf'class="serial">{ROOT_SERIAL}<', dom), dom[:3000]
    qps = re.search(r'id="qps">([\d.]+)k? q/s<', dom)
    assert qps is not None and float(qps[1]) > 0, dom[:3000]
    assert "<polygon" in dom and "<rect" in dom  # areas and bars were drawn
    tld_chart = re.search(r'<svg id="chart-tlds".*?</svg>', dom, re.DOTALL)
    assert tld_chart is not None and ">com</text>" in tld_chart[0], dom[:3000]

    shot = tmp_path / "dashboard.png"
    run_chromium(binary, url, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
    if keep := os.environ.get("IMRS_DASHBOARD_SHOT"):
        shutil.copyfile(shot, keep)
