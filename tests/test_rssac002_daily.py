"""RSSAC002 files written once a UTC day from the workers' counts (DailyReports)."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import time

from serverproc import ROOT_ZONE, ServerProc, query, tcp_ask, udp_ask

from imrs.telemetry.rssac002 import load_report
from imrs.telemetry.rssac002_daily import DailyReports, day_bounds
from imrs.telemetry.unique_sources import SourceSet

DAY = datetime.date(2026, 11, 30)
START, END = day_bounds(DAY)


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def counts() -> dict[str, int]:
    return {"queries_udp_ipv4": 1000, "queries_tcp_ipv6": 7, "responses_udp_ipv4": 990, "responses_tcp_ipv6": 7,
            "rcode_0": 600, "rcode_3": 397, "request_size_udp_32": 1000, "request_size_tcp_16": 7,
            "response_size_udp_400": 990, "response_size_tcp_4096": 7}


def sources(n: int) -> dict[str, SourceSet]:
    v4 = SourceSet()
    for i in range(n):
        v4.add(bytes([192, 0, 2, i]))
    return {"ipv4": v4, "ipv6": SourceSet(), "ipv6_aggregate": SourceSet()}


def reports(directory) -> dict:
    return {(r := load_report(p)).metric: r.values for p in directory.glob("*-20261130-*.yaml")}


def test_flush_writes_the_day_and_a_restart_adds_to_it(tmp_path):
    asked = []

    async def day_source(reset: bool):
        asked.append(reset)
        return counts(), sources(10)

    loads = [(2026082201, START + 3600, 1.4), (2026082200, START - 10, 99.0)]  # the second: the day before
    reports_ = DailyReports(tmp_path, "x.root-servers.net", day_source, lambda: loads, clock=Clock(START + 7200))
    paths = asyncio.run(reports_.flush())
    assert len([p for p in paths if p.suffix == ".yaml"]) == 5
    got = reports(tmp_path)
    assert got["traffic-volume"]["dns-udp-queries-received-ipv4"] == 1000
    assert got["traffic-volume"]["dns-tcp-responses-sent-ipv6"] == 7
    assert got["rcode-volume"] == {0: 600, 3: 397}
    assert got["traffic-sizes"]["udp-request-sizes"] == {"32-47": 1000}
    assert got["traffic-sizes"]["tcp-response-sizes"] == {"4096-": 7}
    assert got["unique-sources"]["num-sources-ipv4"] == 10
    assert got["load-time"]["time"] == {2026082201: 1}
    # the process restarts the same day: the new counts are added, the sources united
    asyncio.run(DailyReports(tmp_path, "x.root-servers.net", day_source, lambda: loads,
                             clock=Clock(START + 9000)).flush())
    got = reports(tmp_path)
    assert got["traffic-volume"]["dns-udp-queries-received-ipv4"] == 2000
    assert got["unique-sources"]["num-sources-ipv4"] == 10
    assert asked == [False, False]


def test_midnight_rolls_the_day(tmp_path):
    clock = Clock(END - 0.05)
    asked = []

    async def day_source(reset: bool):
        asked.append(reset)
        return counts(), sources(3)

    reports_ = DailyReports(tmp_path, "x.root-servers.net", day_source, lambda: (), clock=clock)

    async def one_roll():
        task = asyncio.create_task(reports_.run())
        await asyncio.sleep(0)
        clock.t = END + 0.5  # midnight passes while it sleeps
        for _ in range(100):
            await asyncio.sleep(0.02)
            if asked:
                break
        task.cancel()

    asyncio.run(one_roll())
    assert asked == [True]
    assert reports_.day == datetime.date(2026, 12, 1)
    assert reports(tmp_path)["unique-sources"]["num-sources-ipv4"] == 3


def test_an_unwritable_directory_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def day_source(reset: bool):
        return counts(), sources(1)

    assert asyncio.run(DailyReports(blocker / "sub", "x.root-servers.net", day_source, lambda: (),
                                    clock=Clock(START)).flush()) == []
    assert "not written" in caplog.text


def test_a_server_writes_the_day_so_far_when_it_stops(tmp_path):
    """imrs with [rssac002] configured: after 30 UDP and 5 TCP queries from 127.0.0.1 and a
    stop, today's five files are there with at least those queries, and one IPv4 source."""
    out = tmp_path / "rssac002"
    srv = ServerProc(tmp_path, ["--zone", str(ROOT_ZONE), "--workers", "2"],
                     config=f'[rssac002]\ndirectory = "{out}"\nservice = "x.root-servers.net"\n')
    srv.start().wait_ready()
    try:
        for n in range(30):
            assert udp_ask(srv.host, srv.port, query("com.", "NS", n)) is not None
        for n in range(5):
            assert tcp_ask(srv.host, srv.port, query("org.", "NS", 100 + n)) is not None
    finally:
        srv.stop()
    today = datetime.datetime.now(datetime.UTC).date()
    got = {(r := load_report(p)).metric: r for p in out.glob(f"x-root-{today:%Y%m%d}-*.yaml")}
    assert set(got) == {"traffic-volume", "traffic-sizes", "rcode-volume", "unique-sources", "load-time"}
    volume = got["traffic-volume"].values
    assert volume["dns-udp-queries-received-ipv4"] >= 30 and volume["dns-tcp-queries-received-ipv4"] >= 5
    assert volume["dns-udp-responses-sent-ipv4"] >= 30
    assert got["unique-sources"].values["num-sources-ipv4"] == 1
    assert got["traffic-volume"].service == "x.root-servers.net"
    assert "RSSAC002 files for" in srv.stderr()


def test_a_worker_that_dies_keeps_its_day_until_its_last_checkpoint(tmp_path):
    """Two workers, the day read every 0.5 s (IMRS_RSSAC002_CHECKPOINT): 60 queries from 60
    source ports (spread over both workers), a checkpoint, then one worker is killed and
    replaced.  The day written at the stop still has every query: the dead worker's count
    comes from its last checkpoint (without it, its share of the day would be lost)."""
    out = tmp_path / "rssac002"
    srv = ServerProc(tmp_path, ["--zone", str(ROOT_ZONE), "--workers", "2", "--rrl-rate", "0"],
                     config=f'[rssac002]\ndirectory = "{out}"\nservice = "x.root-servers.net"\n',
                     env={"IMRS_RSSAC002_CHECKPOINT": "0.5"})
    srv.start().wait_ready()

    try:
        deadline = time.monotonic() + 30
        while len(srv.worker_pids()) < 2:
            assert time.monotonic() < deadline, srv.stderr()[-2000:]
            time.sleep(0.1)
        time.sleep(1.0)  # both workers serve
        answered = 0
        for n in range(60):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a new source port each
                s.settimeout(2)
                s.sendto(query("com.", "NS", n), (srv.host, srv.port))
                answered += len(s.recv(4096)) > 0
        assert answered == 60
        time.sleep(1.5)  # a checkpoint or two
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while f"(pid {victim}) died" not in srv.stderr() or len(srv.worker_pids()) < 2:
            assert time.monotonic() < deadline, srv.stderr()[-2000:]
            time.sleep(0.1)
    finally:
        srv.stop()
    today = datetime.datetime.now(datetime.UTC).date()
    got = {(r := load_report(p)).metric: r for p in out.glob(f"x-root-{today:%Y%m%d}-*.yaml")}
    volume = got["traffic-volume"].values
    assert volume["dns-udp-queries-received-ipv4"] >= 60, volume
    assert volume["dns-udp-responses-sent-ipv4"] >= 60, volume
    assert got["unique-sources"].values["num-sources-ipv4"] == 1
