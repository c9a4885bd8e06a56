"""TCP connection limits (RFC 7766 6.2.3, the TCP exhaustion attack): the per-source cap,
eviction of the longest idle connection when the listener is full, the shorter idle timeout
under pressure, the session timeout, a stalled half message, and the open file limit.

The real TcpListener runs in-process (on an event loop in a thread) around a socket bound to
127.0.0.1, with a snapshot of a tiny zone; clients connect from other loopback addresses
(127.0.0.2, 127.0.1.x, ...) to be distinct sources.  Timeouts are small; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from typing import Self

import dns.rcode
import pytest
from peers import proc
from serverproc import SMALL_ZONE, closed_by_peer, frame, parse, query, read_frame

from imrs.answer.respond import AnswerOptions
from imrs.serve import tcp
from imrs.serve.snapshot import SnapshotHolder, build_snapshot
from imrs.serve.tcp import TcpListener, ensure_fd_limit
from imrs.serve.udp import ServeStats
from imrs.zone.parse import load_zone_records, zone_data_from_records

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None


@pytest.fixture(scope="module", autouse=True)
def _enough_files():
    """Client and server sockets of ~150 connections share this process."""
    if resource is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "example.zone"
    path.write_text(SMALL_ZONE)
    data = zone_data_from_records(load_zone_records(path, "example."))
    return build_snapshot([data], AnswerOptions(), compile_answers=False)


class Listener:
    """A TcpListener with the given limits on 127.0.0.1, on an event loop in a thread."""

    def __init__(self, snapshot, **limits):
        self.holder = SnapshotHolder(snapshot)
        self.stats = ServeStats()
        self.limits = limits
        self.port = 0
        self.tcp: TcpListener | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self.port = proc.free_port("127.0.0.1")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.tcp = TcpListener(sock, self.holder, self.stats, **self.limits)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.tcp.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.tcp.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        assert self.stats.internal_errors == 0

    def on_loop(self, fn):
        """``fn()`` run on the listener's loop (to read its state consistently)."""
        async def call():
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def open_count(self) -> int:
        return self.on_loop(lambda: len(self.tcp.active))

    def connect(self, source: str, timeout: float = 5.0) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((source, 0))
        s.connect(("127.0.0.1", self.port))
        return s


def ask(sock: socket.socket, qid: int, name: str = "www.example.") -> int:
    """One query on an open connection; the answer's id (it must be a NOERROR answer)."""
    sock.sendall(frame(query(name, "A", qid)))
    resp = read_frame(sock)
    assert resp is not None, f"connection closed instead of answering query {qid}"
    msg = parse(resp)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    return msg.id


def served(srv: Listener, source: str, qid: int) -> bool:
    """A fresh connection from ``source`` is answered."""
    try:
        with srv.connect(source) as s:
            return ask(s, qid) == qid
    except (OSError, AssertionError):
        return False


def still_open(sock: socket.socket) -> bool:
    """Not closed by the server (nothing to read, no EOF, no reset) right now."""
    sock.setblocking(False)
    try:
        data = sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return bool(data)


def close_all(socks) -> None:
    for s in socks:
        s.close()


# -------------------------------------------------------------------------- per source


def test_per_source_cap(snapshot):
    with Listener(snapshot, idle_timeout=20, max_connections=1000, max_connections_per_source=64) as srv:
        conns = []
        try:
            for i in range(64):
                conns.append(srv.connect("127.0.0.2"))
                assert ask(conns[-1], i) == i  # accepted, served and counted
            extra = srv.connect("127.0.0.2")
            try:
                t0 = time.monotonic()
                try:
                    extra.sendall(frame(query("www.example.", "A", 999)))
                except ConnectionError:
                    pass
                took = closed_by_peer(extra, timeout=5)
                assert took is not None, "the 65th connection from one source was not closed"
                assert time.monotonic() - t0 < 2, "the 65th connection was not closed at once"
            finally:
                extra.close()
            assert srv.stats.tcp_refused == 1 and srv.tcp.refused_per_source == 1
            assert served(srv, "127.0.0.3", 1000), "another source was not served"
            for i in (0, 31, 63):  # the 64 still work
                assert ask(conns[i], 2000 + i) == 2000 + i
            assert srv.on_loop(lambda: dict(srv.tcp.per_source)) == {"127.0.0.2": 64}
            # closing one frees a slot for the source (the close is noticed asynchronously)
            conns.pop().close()
            deadline = time.monotonic() + 5
            while not served(srv, "127.0.0.2", 3000):
                assert time.monotonic() < deadline, "a slot freed by a close was not reused"
                time.sleep(0.05)
            assert srv.tcp.evictions == 0
        finally:
            close_all(conns)
        deadline = time.monotonic() + 5
        while srv.open_count():
            assert time.monotonic() < deadline, "closed connections are still counted"
            time.sleep(0.05)
        assert srv.on_loop(lambda: dict(srv.tcp.per_source)) == {}


# -------------------------------------------------------------------------- full: eviction


def test_full_listener_evicts_the_longest_idle(snapshot):
    # idle 60 s: the pressure timeout (6 s) does not close anything during the test
    with Listener(snapshot, idle_timeout=60, max_connections=50) as srv:
        conns = []
        try:
            for i in range(50):
                conns.append(srv.connect(f"127.0.{1 + i % 5}.{1 + i}"))
                assert ask(conns[-1], i) == i
            assert srv.open_count() == 50
            # a new client is answered; the connection idle the longest (the first) makes room
            assert served(srv, "127.0.9.9", 500), "a new client was not served while 50 idle connections were open"
            assert closed_by_peer(conns[0], timeout=3) is not None, "the longest idle connection was not closed"
            assert srv.tcp.evictions == 1 and srv.stats.tcp_refused == 0
            for i in range(1, 50):
                assert still_open(conns[i]), f"connection {i} was closed too"
            # the new client has gone: fill its slot again
            deadline = time.monotonic() + 5
            while srv.open_count() != 49:
                assert time.monotonic() < deadline, "a closed connection is still counted"
                time.sleep(0.02)
            conns.append(srv.connect("127.0.9.10"))
            assert ask(conns[-1], 600) == 600
            assert srv.tcp.evictions == 1
            # the longest idle is conns[1] now: a query makes it the newest, so conns[2] goes
            assert ask(conns[1], 601) == 601
            conns.append(srv.connect("127.0.9.11"))
            assert ask(conns[-1], 602) == 602
            assert closed_by_peer(conns[2], timeout=3) is not None, "the longest idle connection was not closed"
            assert still_open(conns[1]) and all(still_open(s) for s in conns[3:])
            assert srv.tcp.evictions == 2 and srv.stats.tcp_refused == 0
            assert srv.open_count() == 50
        finally:
            close_all(conns)


def test_full_listener_with_none_idle_refuses(snapshot, monkeypatch):
    """Connections with an answer in progress are never evicted: then the new one is refused."""
    release = threading.Event()

    def slow_transfer(wire, *args, **kwargs):
        release.wait(10)
        return [wire[:2] + b"\x80\x05" + wire[4:]]  # REFUSED, whatever

    monkeypatch.setattr(tcp, "answer_transfer", slow_transfer)
    axfr = struct.pack("!HHHHHH", 77, 0, 1, 0, 0, 0) + b"\x07example\x00" + struct.pack("!HH", 252, 1)
    with Listener(snapshot, idle_timeout=20, max_connections=3) as srv:
        busy = [srv.connect(f"127.0.3.{i + 1}") for i in range(3)]
        try:
            for s in busy:
                s.sendall(frame(axfr))
            deadline = time.monotonic() + 5
            while srv.on_loop(lambda: len(srv.tcp._idle)):
                assert time.monotonic() < deadline, "the transfers did not start"
                time.sleep(0.02)
            extra = srv.connect("127.0.3.9")
            try:
                assert closed_by_peer(extra, timeout=3) is not None, "a 4th connection was not refused"
            finally:
                extra.close()
            assert srv.stats.tcp_refused == 1 and srv.tcp.refused_full == 1 and srv.tcp.evictions == 0
            release.set()
            for s in busy:  # the busy ones were not harmed
                resp = read_frame(s)
                assert resp is not None and resp[:2] == b"\x00\x4d"
        finally:
            release.set()
            close_all(busy)


# -------------------------------------------------------------------------- pressure


def test_idle_timeout_is_shorter_under_pressure(snapshot):
    # idle 10 s; more than 5 of 10 open: idle ones are closed after 1 s
    with Listener(snapshot, idle_timeout=10, max_connections=10) as srv:
        assert srv.tcp.pressure_idle_timeout == pytest.approx(1.0)
        first = [srv.connect(f"127.0.4.{i + 1}") for i in range(5)]
        later = []
        try:
            for i, s in enumerate(first):
                assert ask(s, i) == i
            time.sleep(1.5)  # half full is no pressure: the 10 s timeout holds
            assert all(still_open(s) for s in first), "closed early without pressure"
            assert srv.stats.tcp_timeouts == 0
            for i, s in enumerate(first):
                assert ask(s, 10 + i) == 10 + i  # idle again from now, in this order
            t0 = time.monotonic()
            later = [srv.connect(f"127.0.5.{i + 1}") for i in range(4)]
            for i, s in enumerate(later):
                assert ask(s, 20 + i) == 20 + i
            # 9 open: the 4 longest idle are closed after ~1 s, until no more than half are open
            took = [closed_by_peer(s, timeout=5) for s in first[:4]]
            assert all(t is not None for t in took), f"not closed under pressure: {took}"
            assert time.monotonic() - t0 < 4, "the pressure timeout was not applied"
            assert srv.tcp.pressure_timeouts == 4 and srv.stats.tcp_timeouts == 4
            assert srv.open_count() == 5
            time.sleep(1.5)  # no pressure any more: the other 5 stay
            assert still_open(first[4]) and all(still_open(s) for s in later)
            assert srv.tcp.pressure_timeouts == 4
        finally:
            close_all(first + later)


# -------------------------------------------------------------------------- session


def test_session_timeout_closes_a_busy_connection(snapshot):
    with Listener(snapshot, idle_timeout=10, session_timeout=2) as srv:
        with srv.connect("127.0.0.2") as s:
            t0 = time.monotonic()
            answered = 0
            closed = None
            for i in range(40):  # a query every 0.2 s: never idle for long
                try:
                    s.sendall(frame(query("www.example.", "A", i)))
                    resp = read_frame(s)
                except ConnectionError:
                    resp = None
                if resp is None:
                    closed = time.monotonic() - t0
                    break
                assert parse(resp).id == i  # every answer comes whole, even the last one
                answered += 1
                time.sleep(0.2)
            assert closed is not None, "a busy connection outlived its 2 s session by far"
            assert 1.8 <= closed <= 3.5, closed
            assert 7 <= answered <= 12, answered
        assert srv.tcp.session_closes == 1 and srv.stats.tcp_timeouts == 0


def test_session_timeout_closes_an_idle_connection_before_the_idle_timeout(snapshot):
    with Listener(snapshot, idle_timeout=10, session_timeout=1) as srv, srv.connect("127.0.0.2") as s:
        assert ask(s, 1) == 1
        took = closed_by_peer(s, timeout=5)
        assert took is not None and took < 2.5, took
        assert srv.tcp.session_closes == 1


# -------------------------------------------------------------------------- half messages


def test_stalled_half_message_closed_after_idle_timeout(snapshot):
    with Listener(snapshot, idle_timeout=1, session_timeout=60) as srv:
        with srv.connect("127.0.0.2") as s:
            assert ask(s, 1) == 1
            s.sendall(frame(query("www.example.", "A", 2))[:9])  # the prefix and 7 of ~30 octets
            took = closed_by_peer(s, timeout=5)
            assert took is not None, "a stalled half message kept the connection open"
            assert 0.7 <= took <= 2.5, took
        assert srv.stats.tcp_timeouts == 1


def test_message_trickled_slower_than_the_idle_timeout_is_closed(snapshot):
    """The idle timeout bounds the whole message, not each octet (slowloris)."""
    with Listener(snapshot, idle_timeout=1, session_timeout=60) as srv, srv.connect("127.0.0.2") as s:
        data = frame(query("www.example.", "A", 3))
        t0 = time.monotonic()
        closed = None
        for i in range(len(data)):
            try:
                s.sendall(data[i : i + 1])
            except ConnectionError:
                closed = time.monotonic() - t0
                break
            if closed_by_peer(s, 0.25) is not None:
                closed = time.monotonic() - t0
                break
        assert closed is not None and closed <= 2.5, closed
        assert srv.stats.tcp_timeouts == 1


# -------------------------------------------------------------------------- file limit


@pytest.mark.skipif(resource is None, reason="no resource module")
def test_open_file_limit_is_raised_towards_the_hard_limit(monkeypatch, caplog):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard limit {hard} too low to try")
    monkeypatch.setattr(tcp, "_fd_warned", False)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert ensure_fd_limit(500) == 1024  # enough already: untouched
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1024
        assert ensure_fd_limit(1500) == 1500 + tcp.FD_RESERVE
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1500 + tcp.FD_RESERVE, hard)
        assert not caplog.records
        if hard != resource.RLIM_INFINITY:
            with caplog.at_level(logging.WARNING, logger="imrs.tcp"):
                assert ensure_fd_limit(hard) == hard  # as far as it goes, and a warning
                assert ensure_fd_limit(hard) == hard  # ... once
            assert len([r for r in caplog.records if "open file limit" in r.getMessage()]) == 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_listener_start_raises_the_limit(snapshot, monkeypatch):
    if resource is None:
        pytest.skip("no resource module")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000:
        pytest.skip(f"hard limit {hard} too low to try")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        with Listener(snapshot, max_connections=2000):
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2000 + tcp.FD_RESERVE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
