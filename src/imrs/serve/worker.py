"""One data-plane process: receive, answer, send, on the sockets the supervisor hands over.

A worker is started by :mod:`imrs.serve.workers` (multiprocessing, spawn) with the settings
and a pipe.  It builds its first snapshot from the publication it is sent, says ``ready``,
receives its listening sockets (SCM_RIGHTS), and serves until told to stop, or until the pipe
closes (the supervisor is gone).  Zone changes come in two phases: ``prepare`` (build the new
snapshot in a thread while still answering from the old one, then say ``prepared``) and
``commit`` (swap it in: one assignment).  The supervisor commits only when every worker is
prepared, so all workers change version within a moment of each other.

Messages, supervisor to worker: ("prepare", Publication), ("commit", generation),
("stats",), ("day", reset), ("stop",).  Worker to supervisor: ("ready", generation),
("prepared", generation), ("stats", dict), ("day", {"counters": dict, "sources": {kind: SourceSet
JSON}}), ("notify", origin, serial), ("stopped", dict).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle

from imrs.answer.cookies import COOKIE_RESULTS, CookieJar, make_cookie_jar
from imrs.answer.respond import AnswerOptions
from imrs.config import Settings
from imrs.serve.errlimit import make_error_limit
from imrs.serve.notify_in import NotifyReceiver
from imrs.serve.publish import Publication, SnapshotBuilder
from imrs.serve.rrl import RateLimiter
from imrs.serve.shed import make_shedder
from imrs.serve.snapshot import Snapshot, SnapshotHolder
from imrs.serve.tcp import TcpListener
from imrs.serve.traffic import TrafficCounters
from imrs.serve.udp import ServeStats, UdpListener
from imrs.serve.xfrout import TransferPolicy
from imrs.telemetry.dnstap import DnstapWriter

log = logging.getLogger("imrs.worker")

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def answer_options(settings: Settings) -> AnswerOptions:
    return AnswerOptions(
        edns_buffer_size=settings.edns_buffer_size,
        nsid=settings.nsid,
        identity=None if settings.hide_identity else settings.identity,
        version=None if settings.hide_version else settings.version,
        # RFC 7828: the idle timeout, in units of 100 ms
        tcp_keepalive=min(0xFFFF, round(settings.tcp_idle_timeout * 10)) if settings.tcp_keepalive else None,
    )


def tcp_listener(settings: Settings, sock: socket.socket, holder: SnapshotHolder, stats: ServeStats,
                 policy: TransferPolicy, notify: NotifyReceiver | None,
                 traffic: TrafficCounters | None = None, tap: DnstapWriter | None = None) -> TcpListener:
    return TcpListener(
        sock, holder, stats,
        idle_timeout=settings.tcp_idle_timeout,
        max_connections=settings.tcp_max_connections,
        max_connections_per_source=settings.tcp_max_connections_per_source,
        session_timeout=settings.tcp_session_timeout,
        max_queries=settings.tcp_max_queries_per_connection,
        transfer_policy=policy,
        notify=notify,
        traffic=traffic,
        tap=tap,
    )


class DataPlane:
    """The listeners of one worker and the snapshot they answer from."""

    def __init__(self, settings: Settings, snapshot: Snapshot, transfer_policy: TransferPolicy, notify: NotifyReceiver | None,
                 cookies: CookieJar | None = None, index: int = 0):
        self.settings = settings
        self.holder = SnapshotHolder(snapshot)
        self.stats = ServeStats()
        # IMRS_NO_TRAFFIC_COUNTERS=1: without them, to measure what they cost (bench/README.md)
        self.traffic = None if os.environ.get("IMRS_NO_TRAFFIC_COUNTERS") == "1" else TrafficCounters()
        self.transfer_policy = transfer_policy
        self.notify = notify
        #: the worker's cookie jar (None: cookies off): it counts the cookie results
        self.cookies = cookies
        #: rate limiting exempts queries with a valid server cookie
        self.cookie_check = cookies.valid_server_cookie if cookies is not None else None
        #: one table for all of the worker's UDP sockets (memory is fixed by its size)
        self.rrl = RateLimiter(settings.rrl) if settings.rrl.enabled else None
        #: the cap on FORMERR and NOTIMP responses, one count for all UDP sockets (None: off)
        self.error_limit = make_error_limit(settings.rrl.error_rate)
        #: dnstap, one writer per worker (a file each, or a connection each to the socket)
        self.tap = (DnstapWriter.from_config(settings.dnstap, index, settings.worker_count)
                    if settings.dnstap.enabled else None)
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpListener] = []

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        if self.tap is not None:
            self.tap.start()
        for sock in sockets:
            if sock.type == socket.SOCK_DGRAM:
                listener = UdpListener(sock, self.holder, self.stats, self.notify, self.rrl, self.cookie_check,
                                       self.traffic, self.tap, self.error_limit,
                                       make_shedder(self.settings.rrl, sock.fileno()))
                listener.start(loop)
                self.udp.append(listener)
            else:
                tlistener = tcp_listener(self.settings, sock, self.holder, self.stats, self.transfer_policy, self.notify,
                                         self.traffic, self.tap)
                await tlistener.start()
                self.tcp.append(tlistener)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.udp:
            listener.stop(loop)
        for tlistener in self.tcp:
            await tlistener.stop()
        if self.tap is not None:
            await asyncio.to_thread(self.tap.close)  # flushes, and ends the stream (STOP)

    def day(self, reset: bool = False) -> dict[str, dict]:
        """The day's traffic counters and distinct sources (SourceSet.to_json by kind), empty
        without counters; ``reset``: a new UTC day starts now."""
        if self.traffic is None:
            return {"counters": {}, "sources": {}}
        return {"counters": self.traffic.day(reset),
                "sources": {kind: sources.to_json() for kind, sources in self.traffic.sources(reset).items()}}

    def counters(self) -> dict[str, int]:
        counters = self.stats.as_dict()
        if self.traffic is not None:
            counters.update(self.traffic.as_dict())
            counters.update(self.traffic.top_tlds())
        if self.tap is not None:
            counters.update({f"dnstap_{key}": value for key, value in self.tap.counters().items()})
        if self.rrl is not None:
            counters.update({f"rrl_{key}": value for key, value in self.rrl.stats.as_dict().items()})
        if self.error_limit is not None:
            counters["errors_limited"] = self.error_limit.dropped
        if self.cookies is not None:
            counters.update({f"cookie_{name}": n for name, n in zip(COOKIE_RESULTS, self.cookies.counts) if n})
        for listener in self.udp:
            for key, value in listener.counters().items():
                counters[key] = counters.get(key, 0) + value
        return counters


def main(conn: Connection, index: int, settings: Settings, notify_networks: Mapping[bytes, Networks],
         transfer_policy: TransferPolicy, cookie_master: bytes) -> None:
    """The worker process's entry point (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the whole group: the supervisor decides
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s imrs[%(process)d] worker {index} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(_serve(conn, settings, notify_networks, transfer_policy, cookie_master, index))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the supervisor went away: nothing to answer for
    finally:
        conn.close()


async def _serve(conn: Connection, settings: Settings, notify_networks: Mapping[bytes, Networks],
                 transfer_policy: TransferPolicy, cookie_master: bytes, index: int = 0) -> None:
    loop = asyncio.get_running_loop()
    # Every worker gets the same master secret, so they all accept each other's cookies.
    cookies = make_cookie_jar(settings.cookies, cookie_master)
    builder = SnapshotBuilder(answer_options(settings), cookies=cookies)
    # Build, say ready; the supervisor answers with the number of sockets it hands over, or
    # with a newer publication that came in the meantime, to build first.
    message = conn.recv()
    while isinstance(message, tuple):
        if message[0] != "prepare":
            return  # told to stop before serving
        publication = message[1]
        snapshot = builder.build(publication)
        conn.send(("ready", publication.generation))
        message = conn.recv()
    count = message
    _settle_memory()
    notify = None
    if notify_networks:
        def forward(origin: bytes):
            return lambda serial: conn.send(("notify", origin, serial))
        notify = NotifyReceiver({origin: (nets, forward(origin)) for origin, nets in notify_networks.items()})
    plane = DataPlane(settings, snapshot, transfer_policy, notify, cookies, index)
    sockets = [socket.socket(fileno=recv_handle(conn)) for _ in range(count)]
    for sock in sockets:
        sock.setblocking(False)
    await plane.start(sockets)
    log.debug("serving generation %d on %d sockets", publication.generation, len(sockets))

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    prepared: dict[int, Snapshot] = {}
    building: set[asyncio.Task] = set()

    async def prepare(publication: Publication) -> None:
        try:
            prepared[publication.generation] = await asyncio.to_thread(builder.build, publication)
        except Exception:  # a publication this worker cannot build: keep serving the old one
            log.exception("cannot build generation %d; still serving the previous one", publication.generation)
            return
        conn.send(("prepared", publication.generation))

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            stop.set()
            return
        kind = message[0]
        if kind == "prepare":
            task = loop.create_task(prepare(message[1]))
            building.add(task)
            task.add_done_callback(building.discard)
        elif kind == "commit":
            snapshot = prepared.pop(message[1], None)
            if snapshot is not None:
                plane.holder.publish(snapshot)
                for older in [g for g in prepared if g < message[1]]:
                    del prepared[older]
                loop.call_soon(_settle_memory)
        elif kind == "stats":
            conn.send(("stats", plane.counters()))
        elif kind == "day":  # ("day", reset): the day's counts and sources, for RSSAC002
            conn.send(("day", plane.day(message[1])))
        elif kind == "stop":
            stop.set()

    loop.add_reader(conn.fileno(), on_message)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        for task in building:
            task.cancel()
        await plane.stop()
        try:
            conn.send(("stopped", plane.counters()))
        except OSError:
            pass


def _settle_memory() -> None:
    """The snapshot is millions of long-lived objects the cyclic collector need not scan again
    and again; answering makes no reference cycles.  The old snapshot's objects die here."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)

