"""Keeps one zone fresh: SOA timers, NOTIFY, expiry, and handing verified versions over.

A ZoneKeeper lives in the supervisor's event loop but does no heavy work there: each refresh
(fetch, parse, verify, save) runs in the control-plane process (see :mod:`imrs.zone.refresh`),
and only a version that passed comes back.  The keeper then asks the publisher to hand it to
the data plane, which builds its query-ready form.

Timers follow RFC 1035/1996: after a successful check the next comes after the SOA refresh
interval, after a failure after the retry interval; a zone not refreshed for the SOA expire
interval stops being served (RFC 1035 section 4.3.5 / RFC 8806 section 2) and comes back by
itself with the next good version.  Each interval is clamped to the configured floor and
ceiling.  A NOTIFY from an allowed address triggers a check at once (RFC 1996 section 3.11).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from imrs.config import ZoneConfig
from imrs.zone.records import Diff, ZoneRecords, ZoneVersion, name_to_text
from imrs.zone.refresh import (
    RefreshJob,
    RefreshOutcome,
    load_saved,
    note_refreshed,
    refresh,
)

log = logging.getLogger("imrs.keeper")

#: How many recent differences are kept for serving IXFR.
JOURNAL_LENGTH = 16


class ControlPlane:
    """The separate process where refreshes run, restarted if it dies."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the serving process has threads and a running event loop.
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def call(self, func: Callable, *args):
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                return await loop.run_in_executor(self._executor(), func, *args)
            except concurrent.futures.process.BrokenProcessPool:
                log.error("control-plane process died; starting a new one")
                self._pool = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


#: load times kept per zone (a day's worth of root zone serials many times over)
LOAD_TIMES_KEPT = 200


@dataclass
class ZoneStatus:
    """What the operator can see about a kept zone (health, logs, telemetry)."""

    origin: str
    serial: int | None = None
    state: str = "loading"  # loading, serving, expired, unavailable
    source: str = ""
    last_check: float | None = None
    last_success: float | None = None
    last_error: str = ""
    failed_check: str = ""
    checks: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    versions_published: int = 0
    expire_at: float | None = None
    #: seconds from the trigger (NOTIFY or timer) to the new version being served
    last_load_seconds: float | None = None
    #: (serial, when it was first served (UNIX time), seconds from the trigger to then) of the
    #: latest versions that came in (not the saved copy at start): RSSAC002 load-time
    load_times: list[tuple[int, float, float]] = field(default_factory=list)
    warnings: tuple[str, ...] = ()


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


class ZoneKeeper:
    """One managed zone: its current verified version and the loop that keeps it fresh."""

    def __init__(
        self,
        config: ZoneConfig,
        job: RefreshJob,
        control: ControlPlane,
        on_change: Callable[[ZoneKeeper, float], Awaitable[None]],
    ):
        self.config = config
        self.job = job
        self.control = control
        self.on_change = on_change
        self.origin = job.origin
        self.records: ZoneRecords | None = None
        self.journal: tuple[Diff, ...] = ()
        self.expired = False
        self.status = ZoneStatus(name_to_text(job.origin))
        self._timers = (config.refresh[0], config.retry[0], config.expire[1])
        self._wake = asyncio.Event()
        self._triggered_at: float | None = None
        self.first_attempt_done = asyncio.Event()

    # -- what the data plane publishes ------------------------------------------------
    @property
    def serving(self) -> bool:
        return self.records is not None and not self.expired

    def version(self) -> ZoneVersion | None:
        if self.records is None:
            return None
        return ZoneVersion(self.records, self.journal, self.status.expire_at)

    # -- triggers -----------------------------------------------------------------------
    def notify(self, serial: int | None) -> None:
        """A NOTIFY arrived: check the sources now (RFC 1996 section 3.11)."""
        if serial is not None and self.records is not None and serial == self.records.serial:
            log.info("%s: NOTIFY for serial %d, which is current", self.status.origin, serial)
        if self._triggered_at is None:
            self._triggered_at = time.monotonic()
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        outcome = await self.control.call(load_saved, self.job)
        if outcome.kind == "new":
            refreshed = outcome.saved_refreshed_at or 0.0
            log.info("%s: loaded the saved copy, serial %d (%s), last refreshed %s",
                     self.status.origin, outcome.zone.serial, outcome.summary,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(refreshed)) if refreshed else "never")
            await self._accept(outcome, refreshed, time.monotonic())
        elif self.job.state_dir is not None:
            log.info("%s: no saved copy to start from (%s)", self.status.origin, outcome.error)
        next_check = time.time()  # refresh at once after start
        while True:
            now = time.time()
            deadline = next_check
            if self.status.expire_at is not None and not self.expired:
                deadline = min(deadline, self.status.expire_at)
            if not self._wake.is_set():
                try:
                    async with asyncio.timeout(max(0.0, deadline - now)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            now = time.time()
            if self.status.expire_at is not None and now >= self.status.expire_at and not self.expired:
                await self._expire()
                await self._report()
            if self._wake.is_set() or now >= next_check:
                self._wake.clear()
                started = self._triggered_at or time.monotonic()
                self._triggered_at = None
                ok = await self._check(started)
                await self._report()
                refresh, retry, _expire = self._timers
                next_check = time.time() + (refresh if ok else retry)
                self.first_attempt_done.set()

    async def _report(self) -> None:
        """Write the status where the operator and health checks can read it."""
        if self.job.state_dir is None:
            return
        from imrs.zone.store import ZoneStore

        status = dataclasses.asdict(self.status)
        try:
            await asyncio.to_thread(ZoneStore(self.job.state_dir, self.origin).save_status, status)
        except OSError as exc:
            log.warning("%s: cannot write status: %s", self.status.origin, exc)

    async def _check(self, started: float) -> bool:
        status = self.status
        status.checks += 1
        status.last_check = time.time()
        outcome: RefreshOutcome = await self.control.call(refresh, self.job, self.records)
        status.warnings = outcome.warnings
        for warning in outcome.warnings:
            log.warning("%s: %s", status.origin, warning)
        for note in outcome.notes:
            log.info("%s: %s", status.origin, note)
        if outcome.kind == "failed":
            status.failures[outcome.failed_check] = status.failures.get(outcome.failed_check, 0) + 1
            status.last_error = outcome.error
            status.failed_check = outcome.failed_check
            kept = f"; still serving serial {self.records.serial}" if self.serving and self.records else ""
            log.error("%s: refresh failed (%s): %s%s", status.origin, outcome.failed_check, outcome.error, kept)
            return False
        status.last_error = status.failed_check = ""
        now = time.time()
        if outcome.kind == "current":
            if self.records is not None:
                await self.control.call(note_refreshed, self.job, self.records.serial, outcome.source)
                self._set_expiry(now)
                if self.expired:  # the sources are back and the copy is still current
                    self.expired = False
                    self.status.state = "serving"
                    log.info("%s: sources reachable again; serving serial %d again", self.status.origin, self.records.serial)
                    await self.on_change(self, started)
            return True
        await self._accept(outcome, now, started)
        return True

    async def _accept(self, outcome: RefreshOutcome, refreshed_at: float, started: float) -> None:
        zone = outcome.zone
        assert zone is not None
        if outcome.diffs:
            journal = self.journal + outcome.diffs
        elif self.records is not None and outcome.how != "saved":
            from imrs.zone.records import diff_records

            journal = self.journal + (await asyncio.to_thread(diff_records, self.records, zone),)
        else:
            journal = ()
        self.journal = journal[-JOURNAL_LENGTH:]
        self.records = zone
        if outcome.timers is not None:
            refresh, retry, expire = outcome.timers
            cfg = self.config
            self._timers = (_clamp(refresh, cfg.refresh), _clamp(retry, cfg.retry), _clamp(expire, cfg.expire))
        self._set_expiry(refreshed_at)
        was_expired = self.expired
        self.expired = self.status.expire_at is not None and time.time() >= self.status.expire_at
        status = self.status
        status.serial = zone.serial
        status.source = outcome.source
        status.state = "expired" if self.expired else "serving"
        await self.on_change(self, started)
        status.versions_published += 1
        status.last_load_seconds = time.monotonic() - started
        if outcome.how != "saved":
            status.load_times = [*status.load_times[-(LOAD_TIMES_KEPT - 1):],
                                 (zone.serial, time.time(), status.last_load_seconds)]
        log.info("%s: serving serial %d from %s (%s; fetch %.2f s, verify %.2f s, served %.2f s after the trigger)%s",
                 status.origin, zone.serial, outcome.source or "saved copy", outcome.how,
                 outcome.fetch_seconds, outcome.verify_seconds, status.last_load_seconds,
                 " — but it has expired: not served until refreshed" if self.expired else
                 (" — the zone is back after expiry" if was_expired else ""))

    def _set_expiry(self, refreshed_at: float) -> None:
        self.status.last_success = refreshed_at
        self.status.expire_at = refreshed_at + self._timers[2]

    async def _expire(self) -> None:
        self.expired = True
        self.status.state = "expired"
        log.error("%s: EXPIRED: no source reached for %d s; the zone is no longer served (%s)",
                  self.status.origin, self._timers[2], self.config.on_expiry)
        await self.on_change(self, time.monotonic())
