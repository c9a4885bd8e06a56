"""Workers: several data-plane processes share the listeners, a dead one is restarted and
counted, and a zone change reaches every worker at once.

Each test starts the real server (`python -m imrs serve --workers N`) and talks DNS to it over
loopback; the queries come from many source ports, so SO_REUSEPORT spreads them over all
the workers.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Self

import dns.message
import pytest
from peers import proc
from serverproc import ServerProc

SHARED = Path(__file__).resolve().parents[2] / "shared" / "zones" / "testroot"
OLD, NEW = SHARED / "root-2026082200.zone", SHARED / "root-2026082201.zone"


def _wait_all_serving(srv: ServerProc, timeout: float = 60.0) -> None:
    """Until the supervisor logs that every worker serves."""
    deadline = time.monotonic() + timeout
    while "listening on" not in srv.stderr():
        assert time.monotonic() < deadline, f"the workers never all served\n{srv.stderr()[-3000:]}"
        time.sleep(0.05)


def test_a_worker_that_dies_while_starting_is_started_again(tmp_path):
    """Killed before it serves, a worker is replaced, and the server starts all the same."""
    srv = ServerProc(tmp_path, ["--zone", str(NEW), "--workers", "2", "--rrl-rate", "0"])
    srv.start()
    try:
        deadline = time.monotonic() + 30
        while len(srv.worker_pids()) < 2:
            assert time.monotonic() < deadline, srv.stderr()[-3000:]
            time.sleep(0.01)
        first = srv.worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        srv.wait_ready()
        _wait_all_serving(srv)
        assert first not in srv.worker_pids() and len(srv.worker_pids()) == 2
        assert "died (exit code -9) while starting; restarting it" in srv.stderr()
    finally:
        srv.stop()
    assert srv.stats()["workers_restarted"] == 1


def _soa_query(qid: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + b"\x00\x00\x06\x00\x01"


def _serial(response: bytes) -> int:
    """The SOA serial answered, or -1 for an answer without one (REFUSED before the zone loads)."""
    answer = dns.message.from_wire(response).answer
    return answer[0][0].serial if answer else -1


class Prober:
    """Many UDP sockets (so many source ports) asking for the SOA serial, recording
    (time sent, serial or None) for every query."""

    def __init__(self, addr: tuple[str, int], sockets: int = 24, interval: float = 0.01):
        self.addr = addr
        self.socks = []
        for _ in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(1.0)
            self.socks.append(sock)
        self.interval = interval
        self.results: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        qid = 0
        while not self._stop.is_set():
            for sock in self.socks:
                qid = (qid + 1) & 0xFFFF
                sent = time.monotonic()
                sock.sendto(_soa_query(qid), self.addr)
                try:
                    while True:
                        data = sock.recv(4096)
                        if data[:2] == struct.pack("!H", qid):
                            break
                    self.results.append((sent, _serial(data)))
                except OSError:
                    self.results.append((sent, None))
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def _counters(http_port: int) -> dict[str, int]:
    """The summed counters from /stats."""
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    try:
        connection.request("GET", "/stats")
        return json.loads(connection.getresponse().read())["counters"]
    finally:
        connection.close()


def test_workers_share_the_port_and_a_dead_one_is_restarted(tmp_path):
    http_port = proc.free_port()
    srv = ServerProc(tmp_path, ["--zone", str(NEW), "--workers", "2", "--rrl-rate", "0",
                                "--http", f"127.0.0.1:{http_port}"])
    srv.start().wait_ready()  # the first worker answers; wait for the other one too
    try:
        _wait_all_serving(srv)
        workers = srv.worker_pids()
        assert len(workers) == 2, f"expected 2 workers, found {workers}"
        with Prober(srv.addr) as prober:
            time.sleep(0.5)
            before = _counters(http_port)  # the last report of the worker about to die
            os.kill(workers[0], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = srv.worker_pids()
                if len(now) == 2 and workers[0] not in now:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"no replacement worker within 60 s: {srv.worker_pids()}\n{srv.stderr()[-3000:]}")
            time.sleep(6)  # the replacement builds its snapshot, then takes its share
        replacement = next(pid for pid in srv.worker_pids() if pid != workers[1])
        answered = [serial for _, serial in prober.results if serial is not None]
        lost = len(prober.results) - len(answered)
        assert set(answered) == {2026082201}
        # queries hashed to the dead worker's socket in flight when it died are lost; after
        # that the kernel sends its share to the live one
        assert lost <= 3 * len(prober.socks), f"{lost} of {len(prober.results)} queries lost"
        assert f"worker 0 (pid {workers[0]}) died" in srv.stderr()
        assert f"worker 0 started (pid {replacement})" in srv.stderr()
        # The sums do not go back: what the dead worker had reported stays counted.  Every
        # query answered is counted, but for those the dead worker took between its last
        # report and its death (a few milliseconds of the prober's ~2,000 q/s).
        after = _counters(http_port)
        for key in ("udp_received", "queries_udp_ipv4", "responses_udp_ipv4", "qtype_6"):
            assert after[key] >= before[key] > 0, (key, before, after)
        assert after["qtype_6"] >= len(answered) - 50, (after, len(answered))
    finally:
        srv.stop()
    assert srv.stats()["workers_restarted"] == 1
    assert srv.stats()["udp_received"] >= after["udp_received"]


def test_zone_change_reaches_every_worker_at_once(tmp_path):
    """A kept zone (file source, refreshed every second) changes on disk; once one query sees
    the new serial, queries sent a moment later never see the old one, whichever worker
    answers them."""
    live = tmp_path / "root.zone"
    shutil.copy(OLD, live)
    config = f"""
[server]
workers = 2
[rrl]
rate = 0
[[zone]]
name = "."
sources = ["file://{live}"]
anchor = "none"
refresh-min = 1
refresh-max = 1
"""
    srv = ServerProc(tmp_path, [], config=config)
    srv.start().wait_ready()
    try:
        assert len(srv.worker_pids()) >= 2
        with Prober(srv.addr, interval=0.005) as prober:
            deadline = time.monotonic() + 60
            while not any(serial == 2026082200 for _, serial in prober.results[-50:]):
                assert time.monotonic() < deadline, f"the zone was never served\n{srv.stderr()[-3000:]}"
                time.sleep(0.1)
            time.sleep(1.0)
            tmp = tmp_path / "next.zone"
            shutil.copy(NEW, tmp)
            os.replace(tmp, live)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(serial == 2026082201 for _, serial in prober.results[-50:]):
                    break
                time.sleep(0.1)
            time.sleep(2.0)
        results = prober.results
        first_new = min((t for t, serial in results if serial == 2026082201), default=None)
        assert first_new is not None, f"the new serial was never served\n{srv.stderr()[-3000:]}"
        old_after = [t - first_new for t, serial in results if serial == 2026082200 and t > first_new]
        # the swap itself: the commit message reaches the other worker within a batch
        assert not [d for d in old_after if d > 0.25], (
            f"old serial served {max(old_after):.3f} s after the new one was first seen")
        started = min(t for t, serial in results if serial == 2026082200)
        assert sum(1 for t, serial in results if serial is None and t > started) <= 5
        assert "switched within" in srv.stderr()
    finally:
        srv.stop()


def test_udp_sockets_get_nsds_receive_buffer():
    """1 MB asked (the kernel doubles it), as NSD asks, past net.core.rmem_max where the process
    may (root); a deeper queue would only delay every answer under a flood."""
    from imrs.config import parse_listen
    from imrs.serve.server import UDP_RECEIVE_BUFFER, bind_sockets

    udp, tcp = bind_sockets(parse_listen(f"127.0.0.1:{proc.free_port('127.0.0.1')}"))
    try:
        got = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        udp.close()
        tcp.close()
    if os.geteuid() == 0:
        assert got == 2 * UDP_RECEIVE_BUFFER
    else:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert got == 2 * min(UDP_RECEIVE_BUFFER, rmem_max)
