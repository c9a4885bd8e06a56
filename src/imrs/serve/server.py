"""Run a server: load and verify the zones, bind the listeners, start the workers, keep the zones
fresh, until told to stop.

The main process is the supervisor: it owns the configuration, the kept zones (timers,
NOTIFY, refreshes in the control-plane process) and the worker pool; it answers no query.
The workers (:mod:`imrs.serve.worker`) answer, each from its own snapshot of the same
publication.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import time

import dns.tsig

from imrs import __version__
from imrs.config import RFC8806, ListenAddress, Settings, ZoneConfig, parse_listen
from imrs.serve.publish import Publication, Publisher
from imrs.serve.workers import WorkerPool
from imrs.serve.xfrout import TransferPolicy, make_policy, parse_rule
from imrs.telemetry.history import DEFAULT_INTERVAL, History
from imrs.telemetry.http import TelemetryServer
from imrs.telemetry.rssac002_daily import CHECKPOINT_SECONDS, DailyReports
from imrs.telemetry.snapshot import (
    Telemetry,
    TelemetryUnavailable,
    VersionFacts,
    ZoneTelemetry,
    version_facts,
)
from imrs.zone.keeper import ControlPlane, ZoneKeeper
from imrs.zone.parse import EMBEDDED_ROOT, load_zone_records
from imrs.zone.records import ZoneRecords, name_from_text
from imrs.zone.refresh import RefreshJob, verify
from imrs.zone.sources import RFC8806_ROOT_SOURCES
from imrs.zone.verify import VerificationError

log = logging.getLogger("imrs.server")


class StartupError(Exception):
    """The server cannot start (zone unreadable, address in use, ...); the message says why."""


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


def load_static_zones(settings: Settings) -> list[ZoneRecords]:
    """The zones served from a file alone (or the embedded root zone when no zone is
    configured), each verified before it is served."""
    configs = [z for z in settings.zones if not z.managed]
    if not settings.zones:
        configs = [ZoneConfig(file=EMBEDDED_ROOT)]
    loaded = []
    for config in configs:
        assert config.file is not None
        records = load_zone_records(config.file, config.name)
        job = refresh_job(settings, dataclasses.replace(config, name=records.origin_text))
        try:
            summary = verify(job, records, None)
        except VerificationError as exc:
            raise StartupError(f"zone {records.origin_text} from {config.file} failed verification "
                               f"({exc.check}): {exc}") from None
        log.info("loaded zone %s serial %d from %s: %d records; %s", records.origin_text, records.serial,
                 config.file, len(records.records), summary)
        loaded.append(records)
    return loaded


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


#: A UDP socket's receive buffer, as NSD sets it (1 MB, which the kernel doubles): enough for
#: bursts, and under a flood that outruns the server a deeper queue only delays every answer
#: (4 MB made the answers to a real client 60-100 ms late where NSD's were 15-25 ms).
UDP_RECEIVE_BUFFER = 1 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _set_receive_buffer(sock: socket.socket) -> None:
    """UDP_RECEIVE_BUFFER, past net.core.rmem_max where allowed (SO_RCVBUFFORCE needs
    CAP_NET_ADMIN), as NSD does; else as much as rmem_max allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


def bind_sockets(address: ListenAddress, reuseport: bool = False) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on ``address``; with ``reuseport``, sockets that share the address
    with the other workers' (SO_REUSEPORT: the kernel spreads queries over them)."""
    made = []
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(address.family, kind)
            made.append(sock)
            if kind == socket.SOCK_STREAM:
                # restart without waiting out TIME_WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_DGRAM:
                _set_receive_buffer(sock)
            sock.bind((address.host, address.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(1024)
            sock.setblocking(False)
    except OSError as exc:
        for sock in made:
            sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return made[0], made[1]


def usable_addresses(settings: Settings) -> list[ListenAddress]:
    """The listen addresses, checked free by binding them without SO_REUSEPORT (so another
    server already on the port is an error, not a silent sharing of its queries); a port 0 is
    replaced by the one the kernel picks.  IPv6 loopback is skipped, with a warning, where the
    host has none and other addresses are configured."""
    usable = []
    for address in settings.listen:
        try:
            udp, tcp = bind_sockets(address)
        except StartupError as exc:
            if address.family == socket.AF_INET6 and address.host == "::1" and len(settings.listen) > 1:
                log.warning("%s (no IPv6 loopback here?); going on without it", exc)
                continue
            raise
        if address.port == 0:
            address = dataclasses.replace(address, port=udp.getsockname()[1])
        udp.close()
        tcp.close()
        usable.append(address)
    if not usable:
        raise StartupError("no address to listen on")
    return usable


class Supervisor:
    """The main process: the control plane (kept zones, publication) and the worker pool."""

    def __init__(self, settings: Settings, static: list[ZoneRecords], policy: TransferPolicy):
        self.settings = settings
        self.control = ControlPlane()
        self.publisher = Publisher(static)
        for zone in settings.zones:
            if zone.managed:
                keeper = ZoneKeeper(zone, refresh_job(settings, zone), self.control, self.publisher.republish)
                self.publisher.keepers.append(keeper)
        self.policy = policy
        self.addresses: list[ListenAddress] = []
        self.pool: WorkerPool | None = None
        #: Drained (imrs drain): /ready fails so traffic is steered away; queries are still answered.
        self.draining = False
        self.started = time.time()
        self._started_mono = time.monotonic()
        #: origin -> (records, facts) of what the workers serve now (facts computed once per version)
        self._served: dict[bytes, tuple[ZoneRecords, VersionFacts]] = {}
        #: one counters request to the workers at a time: concurrent ones would steal each other's answers
        self._counters: asyncio.Future[dict[str, int]] | None = None
        self._http: TelemetryServer | None = None
        #: the dashboard's sampler, running while the HTTP endpoint does
        self._history_task: asyncio.Task | None = None

    def _sockets(self) -> list[socket.socket]:
        made: list[socket.socket] = []
        try:
            for address in self.addresses:
                made.extend(bind_sockets(address, reuseport=True))
        except StartupError:
            for sock in made:
                sock.close()
            raise OSError(f"cannot bind {self.addresses}") from None
        return made

    # -- telemetry ------------------------------------------------------------------------
    def set_draining(self, draining: bool) -> None:
        """Drain (or stop draining): only readiness changes, answering goes on."""
        if draining and not self.draining:
            log.warning("draining: /ready fails from now on; queries are still answered")
        elif self.draining and not draining:
            log.warning("drain ended: /ready follows the zones and workers again")
        self.draining = draining

    async def _note_published(self, publication: Publication) -> None:
        """The workers serve ``publication`` now: remember which versions, since when, and
        what their records say (once per version)."""
        now = time.time()
        served = {}
        for _token, version in publication.zones:
            records = version.records
            known = self._served.get(records.origin)
            if known is not None and known[0] is records:
                served[records.origin] = known
            else:
                served[records.origin] = (records, await asyncio.to_thread(version_facts, records, now))
        self._served = served

    async def _publish(self, publication: Publication) -> None:
        """The publisher's sink: the workers switch, then the versions are noted as served."""
        assert self.pool is not None
        await self.pool.publish(publication)
        await self._note_published(publication)

    async def counters(self) -> dict[str, int]:
        """The workers' counters summed; callers at the same moment share one request.
        TelemetryUnavailable when a worker's pipe fails twice (it is dying: asked again once
        the pool has noticed)."""
        if self.pool is None:
            return {}
        for attempt in (1, 2):
            if self._counters is None or self._counters.done():
                self._counters = asyncio.ensure_future(self.pool.counters())
            try:
                return dict(await asyncio.shield(self._counters))
            except (OSError, EOFError, ValueError) as exc:
                if attempt == 2:
                    raise TelemetryUnavailable(f"cannot read the workers' counters: {exc!r}") from None
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    def _zones(self) -> list[ZoneTelemetry]:
        """Every configured zone as the workers serve it now (a kept zone's newer version counts
        once the workers have switched to it)."""
        zones = []
        configs = [z for z in self.settings.zones if not z.managed] or [ZoneConfig()]
        for records, config in zip(self.publisher.static, configs, strict=False):
            served = self._served.get(records.origin)
            zones.append(ZoneTelemetry(
                name=records.origin_text, kind="static", served=served is not None, state="static",
                serial=records.serial, facts=served[1] if served else None, dnssec=anchor_spec(config) != "none"))
        for keeper in self.publisher.keepers:
            status = keeper.status
            served = self._served.get(keeper.origin)
            zones.append(ZoneTelemetry(
                name=status.origin, kind="kept", served=served is not None, state=status.state,
                serial=served[0].serial if served else status.serial, facts=served[1] if served else None,
                dnssec=keeper.job.anchor != "none",
                expire_at=status.expire_at, last_check=status.last_check, last_success=status.last_success,
                last_error=status.last_error, failed_check=status.failed_check, source=status.source,
                checks=status.checks, failures=dict(status.failures), versions_published=status.versions_published,
                last_load_seconds=status.last_load_seconds))
        return zones

    async def telemetry(self, counters: bool = True) -> Telemetry:
        """What /metrics, /health, /ready and /stats show; ``counters`` asks the workers too."""
        pool = self.pool
        summed = await self.counters() if counters else {}
        live = sum(1 for slot in pool.slots.values() if slot.state == "serving") if pool is not None else 0
        return Telemetry(
            time=time.time(), pid=os.getpid(), version=__version__, started=self.started,
            uptime=time.monotonic() - self._started_mono, draining=self.draining,
            listeners=tuple(str(a) for a in self.addresses), workers_configured=self.settings.worker_count,
            workers_live=live, worker_restarts=pool.restarts if pool is not None else 0,
            zones=tuple(self._zones()), counters=summed)

    def _daily_reports(self) -> DailyReports | None:
        """The RSSAC002 writer, when a directory is configured."""
        config = self.settings.rssac002
        if config.directory is None or self.pool is None:
            return None
        keepers = self.publisher.keepers
        return DailyReports(config.directory, config.service or self.settings.identity, self.pool.day,
                            lambda: [entry for keeper in keepers for entry in keeper.status.load_times],
                            checkpoint=self.pool.checkpoint_day,
                            checkpoint_seconds=_seconds_from_env("IMRS_RSSAC002_CHECKPOINT", CHECKPOINT_SECONDS))

    async def _start_http(self) -> TelemetryServer | None:
        address = self.settings.http
        if address is None:
            return None
        history = History(self.telemetry, _seconds_from_env("IMRS_DASHBOARD_INTERVAL", DEFAULT_INTERVAL))
        server = TelemetryServer(address, self.telemetry, self.set_draining, history, self.settings.identity)
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(f"cannot listen for HTTP on {address}: {exc.strerror or exc}") from None
        self._history_task = asyncio.get_running_loop().create_task(history.run(), name="dashboard history")
        log.info("telemetry on http://%s/ (dashboard; /metrics, /health, /ready, /stats)", address)
        return server

    async def _stop_http(self) -> None:
        if self._history_task is not None:
            self._history_task.cancel()
            await asyncio.gather(self._history_task, return_exceptions=True)
            self._history_task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _notify(self, origin: bytes, serial: int | None) -> None:
        for keeper in self.publisher.keepers:
            if keeper.origin == origin:
                keeper.notify(serial)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        self.addresses = usable_addresses(self.settings)
        self._http = await self._start_http()  # early: /health answers, /ready says why not yet
        try:
            await self._serve(loop, stop)
        finally:
            await self._stop_http()

    async def _serve(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        keepers = self.publisher.keepers
        networks = {k.origin: _primary_networks(k.config) for k in keepers}
        count = self.settings.worker_count
        # one master for every worker (and their replacements): cookies made by one are valid at all
        cookie_master = os.urandom(32)
        self.pool = WorkerPool(count, self._sockets, (self.settings, networks, self.policy, cookie_master), self._notify)
        self.publisher.sink = self._publish
        first = self.publisher.publication()
        try:
            await self.pool.start(first)
        except RuntimeError as exc:
            await self.pool.stop()
            raise StartupError(str(exc)) from None
        await self._note_published(first)
        for address in self.addresses:
            log.info("listening on %s (UDP and TCP) with %d worker(s)", address, count)
        log.info("serving %s", self.publisher.latest.describe() if self.publisher.latest else "no zone")
        if keepers:
            await self.publisher.republish()  # kept zones not loaded yet answer per on-expiry
        tasks = [loop.create_task(keeper.run(), name=f"keeper {keeper.status.origin}") for keeper in keepers]
        reports = self._daily_reports()
        reporting = loop.create_task(reports.run(), name="rssac002") if reports is not None else None
        try:
            await _wait_for_stop(stop, tasks)
        finally:
            log.info("stopping")
            await self._stop_http()  # no scrape may ask workers that are stopping
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if reporting is not None and reports is not None:
                reporting.cancel()
                await asyncio.gather(reporting, return_exceptions=True)
                await reports.flush()  # the day so far: the next start adds to it
            self.control.shutdown()
            counters = await self.pool.stop()
            log.info("stopped: %s", counters)


def _seconds_from_env(name: str, default: float) -> float:
    """Seconds from the environment variable ``name`` (0.1 to 3600; meant for tests, which
    cannot wait a minute for the RSSAC002 checkpoint or 10 s per dashboard sample), else
    ``default``."""
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = default
    return value if 0.1 <= value <= 3600 else default


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


def serve(settings: Settings) -> None:
    """Load, bind and serve until SIGINT/SIGTERM."""
    static = load_static_zones(settings)
    supervisor = Supervisor(settings, static, transfer_policy(settings))
    asyncio.run(supervisor.run())
