"""Run the data plane: load the zones, build a snapshot, bind the listeners, serve until told to stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from dataclasses import dataclass

from imrs.answer.respond import AnswerOptions
from imrs.config import ListenAddress, Settings
from imrs.serve.snapshot import Snapshot, SnapshotHolder, build_snapshot
from imrs.serve.tcp import TcpListener
from imrs.serve.udp import ServeStats, UdpListener
from imrs.zone.data import ZoneData
from imrs.zone.parse import EMBEDDED_ROOT, load_zone_file

log = logging.getLogger("imrs.server")


class StartupError(Exception):
    """The server cannot start (zone unreadable, address in use, ...); the message says why."""


def answer_options(settings: Settings) -> AnswerOptions:
    return AnswerOptions(
        edns_buffer_size=settings.edns_buffer_size,
        nsid=settings.nsid,
        identity=None if settings.hide_identity else settings.identity,
        version=None if settings.hide_version else settings.version,
    )


def load_zones(settings: Settings) -> list[ZoneData]:
    """The configured zones, or the embedded root zone when none is configured."""
    if not settings.zones:
        zones = [load_zone_file(EMBEDDED_ROOT)]
    else:
        zones = [load_zone_file(z.file, z.name) for z in settings.zones]
    for zone in zones:
        log.info(
            "loaded zone %s serial %d from %s: %d names, %d delegations, %s",
            zone.origin.to_text(), zone.serial, zone.source, zone.stats["names"], zone.stats["delegations"],
            "DNSSEC-signed" if zone.secure else "unsigned",
        )
    return zones


def bind_sockets(address: ListenAddress) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on ``address``."""
    made = []
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(address.family, kind)
            made.append(sock)
            if kind == socket.SOCK_STREAM:
                # restart without waiting out TIME_WAIT; not for UDP, where it would let two
                # servers share the port unnoticed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((address.host, address.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(1024)
            sock.setblocking(False)
    except OSError as exc:
        for sock in made:
            sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return made[0], made[1]


@dataclass
class Server:
    settings: Settings
    holder: SnapshotHolder
    stats: ServeStats

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        udp: list[UdpListener] = []
        tcp: list[TcpListener] = []
        bound = 0
        for address in self.settings.listen:
            try:
                usock, tsock = bind_sockets(address)
            except StartupError as exc:
                if address.family == socket.AF_INET6 and address.host == "::1" and len(self.settings.listen) > 1:
                    log.warning("%s (no IPv6 loopback here?); going on without it", exc)
                    continue
                raise
            listener = UdpListener(usock, self.holder, self.stats)
            listener.start(loop)
            udp.append(listener)
            tlistener = TcpListener(
                tsock, self.holder, self.stats,
                idle_timeout=self.settings.tcp_idle_timeout,
                max_connections=self.settings.tcp_max_connections,
                max_queries=self.settings.tcp_max_queries_per_connection,
            )
            await tlistener.start()
            tcp.append(tlistener)
            bound += 1
            log.info("listening on %s (UDP and TCP)", address)
        if not bound:
            raise StartupError("no address to listen on")
        snapshot = self.holder.current
        log.info("serving %s", ", ".join(f"{z.origin.to_text()} (serial {z.serial})" for z in snapshot.zones))
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            for listener in udp:
                listener.stop(loop)
            for tlistener in tcp:
                await tlistener.stop()
            log.info("stopped: %s", self.stats.as_dict())


def prepare(settings: Settings) -> Server:
    zones = load_zones(settings)
    snapshot: Snapshot = build_snapshot(zones, answer_options(settings))
    # The snapshot is millions of long-lived objects the cyclic collector need not scan again
    # and again (full collections would grow with it); answering makes no reference cycles.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    return Server(settings, SnapshotHolder(snapshot), ServeStats())


def serve(settings: Settings) -> None:
    """Load, bind and serve until SIGINT/SIGTERM."""
    server = prepare(settings)
    asyncio.run(server.run())



