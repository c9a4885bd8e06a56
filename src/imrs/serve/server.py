"""Run the data plane: load the zones, build a snapshot, bind the listeners, serve until told to stop."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ipaddress
import logging
import signal
import socket
from dataclasses import dataclass, field

import dns.tsig

from imrs.answer.respond import AnswerOptions
from imrs.config import RFC8806, ListenAddress, Settings, ZoneConfig, parse_listen
from imrs.serve.notify_in import NotifyReceiver
from imrs.serve.publish import Publisher
from imrs.serve.snapshot import Snapshot, SnapshotHolder
from imrs.serve.tcp import TcpListener
from imrs.serve.udp import ServeStats, UdpListener
from imrs.serve.xfrout import TransferPolicy, make_policy, parse_rule
from imrs.zone.data import ZoneData
from imrs.zone.keeper import ControlPlane, ZoneKeeper
from imrs.zone.parse import EMBEDDED_ROOT, load_zone_records, zone_data_from_records
from imrs.zone.records import ZoneRecords, name_from_text
from imrs.zone.refresh import RefreshJob, verify
from imrs.zone.sources import RFC8806_ROOT_SOURCES
from imrs.zone.verify import VerificationError

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


def anchor_spec(zone: ZoneConfig) -> str:
    """The trust anchor a zone is checked against: the configured one, else the IANA root
    anchor for a root zone kept from sources, else none (ZONEMD is still checked)."""
    if zone.anchor is not None:
        return zone.anchor
    return "iana" if zone.managed and (zone.name or ".") == "." else "none"


def zone_sources(zone: ZoneConfig) -> tuple[str, ...]:
    """The zone's sources in order, the ``rfc8806`` keyword expanded into the list of RFC 8806
    root zone sources; a configured file is the last source (a starting copy when no saved one
    exists, a fallback when the network sources fail)."""
    sources: list[str] = []
    for spec in zone.sources:
        sources.extend(RFC8806_ROOT_SOURCES if spec.lower() == RFC8806 else (spec,))
    if zone.file and zone.managed:
        sources.append(zone.file)
    return tuple(sources)


def refresh_job(settings: Settings, zone: ZoneConfig) -> RefreshJob:
    """How the control plane fetches and checks ``zone``."""
    return RefreshJob(
        origin=name_from_text(zone.name or "."),
        sources=zone_sources(zone),
        tsig_keys=settings.tsig_keys,
        anchor=anchor_spec(zone),
        require_zonemd=zone.require_zonemd,
        signature_margin=zone.signature_margin,
        validation_time=settings.validation_time,
        state_dir=settings.state_dir,
        check_sources=zone.check_sources,
    )


def load_static_zones(settings: Settings) -> list[tuple[ZoneData, ZoneRecords]]:
    """The zones served from a file alone (or the embedded root zone when no zone is
    configured), each verified before it is served, with the records transfers are made of."""
    configs = [z for z in settings.zones if not z.managed]
    if not settings.zones:
        configs = [ZoneConfig(file=EMBEDDED_ROOT)]
    pairs = []
    for config in configs:
        assert config.file is not None
        records = load_zone_records(config.file, config.name)
        job = refresh_job(settings, dataclasses.replace(config, name=records.origin_text))
        try:
            summary = verify(job, records, None)
        except VerificationError as exc:
            raise StartupError(f"zone {records.origin_text} from {config.file} failed verification "
                               f"({exc.check}): {exc}") from None
        zone = zone_data_from_records(records)
        log.info("loaded zone %s serial %d from %s: %d names, %d delegations, %s; %s",
                 zone.origin.to_text(), zone.serial, zone.source, zone.stats["names"],
                 zone.stats["delegations"], "DNSSEC-signed" if zone.secure else "unsigned", summary)
        pairs.append((zone, records))
    return pairs


def transfer_policy(settings: Settings) -> TransferPolicy:
    """Who may transfer each zone (``allow-transfer``), and the TSIG keys queries may use."""
    keys = [dns.tsig.Key(key.name, key.secret, key.algorithm) for key in settings.tsig_keys]
    zone_allow = {}
    for zone in settings.zones:
        if zone.allow_transfer:
            origin = name_from_text(zone.name or ".")
            zone_allow[origin] = [parse_rule(rule) for rule in zone.allow_transfer]
    try:
        return make_policy((), keys, zone_allow)
    except ValueError as exc:
        raise StartupError(f"transfer settings: {exc}") from None


def _primary_networks(zone: ZoneConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Where NOTIFY is accepted from: ``allow-notify``, else the primaries' addresses."""
    if zone.allow_notify:
        return [ipaddress.ip_network(text, strict=False) for text in zone.allow_notify]
    networks = []
    for spec in zone_sources(zone):
        scheme, sep, rest = spec.partition("://")
        if sep and scheme.lower() in ("ixfr", "axfr"):
            networks.append(ipaddress.ip_network(parse_listen(rest.split("?")[0]).host))
    return networks


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
    transfer_policy: TransferPolicy = field(default_factory=TransferPolicy)
    publisher: Publisher | None = None
    control: ControlPlane = field(default_factory=ControlPlane)

    def _keepers(self) -> list[ZoneKeeper]:
        assert self.publisher is not None
        for zone in self.settings.zones:
            if zone.managed:
                keeper = ZoneKeeper(zone, refresh_job(self.settings, zone), self.control,
                                    zone_data_from_records, self.publisher.republish)
                self.publisher.keepers.append(keeper)
        return self.publisher.keepers

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        keepers = self._keepers() if self.publisher is not None else []
        notify = NotifyReceiver({k.origin: (_primary_networks(k.config), k.notify) for k in keepers}) if keepers else None
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
            listener = UdpListener(usock, self.holder, self.stats, notify)
            listener.start(loop)
            udp.append(listener)
            tlistener = TcpListener(
                tsock, self.holder, self.stats,
                idle_timeout=self.settings.tcp_idle_timeout,
                max_connections=self.settings.tcp_max_connections,
                max_queries=self.settings.tcp_max_queries_per_connection,
                transfer_policy=self.transfer_policy,
                notify=notify,
            )
            await tlistener.start()
            tcp.append(tlistener)
            bound += 1
            log.info("listening on %s (UDP and TCP)", address)
        if not bound:
            raise StartupError("no address to listen on")
        snapshot = self.holder.current
        if snapshot.zones.zones:
            log.info("serving %s", ", ".join(f"{z.origin.to_text()} (serial {z.serial})" for z in snapshot.zones))
        if keepers:
            await self.publisher.republish()  # kept zones not loaded yet answer per on-expiry
        tasks = [loop.create_task(keeper.run(), name=f"keeper {keeper.status.origin}") for keeper in keepers]
        try:
            await _wait_for_stop(stop, tasks)
        finally:
            log.info("stopping")
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.control.shutdown()
            for listener in udp:
                listener.stop(loop)
            for tlistener in tcp:
                await tlistener.stop()
            log.info("stopped: %s", self.stats.as_dict())


async def _wait_for_stop(stop: asyncio.Event, tasks: list[asyncio.Task]) -> None:
    """Until told to stop; a keeper that dies of a bug stops the server rather than leave a
    zone silently unrefreshed."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                return
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise StartupError(f"{task.get_name()} failed: {task.exception()!r}")
                tasks.remove(task)
    finally:
        stopper.cancel()


def prepare(settings: Settings) -> Server:
    pairs = load_static_zones(settings)
    policy = transfer_policy(settings)
    publisher = Publisher(None, answer_options(settings), pairs)
    snapshot: Snapshot = publisher.build()
    publisher.holder = SnapshotHolder(snapshot)
    # The snapshot is millions of long-lived objects the cyclic collector need not scan again
    # and again (full collections would grow with it); answering makes no reference cycles.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    return Server(settings, publisher.holder, ServeStats(), policy, publisher)


def serve(settings: Settings) -> None:
    """Load, bind and serve until SIGINT/SIGTERM."""
    server = prepare(settings)
    asyncio.run(server.run())



