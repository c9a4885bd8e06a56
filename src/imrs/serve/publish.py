"""Which zones are served, and publishing a new snapshot when one of them changes.

The zones of a server are of two kinds: static ones, loaded from a file at start (verified
once), and kept ones, each with a :class:`~imrs.zone.keeper.ZoneKeeper` that brings new
verified versions.  Whenever a kept zone changes (new version, expiry, recovery), the
Publisher builds a complete new snapshot in a worker thread, from the newest ZoneData of every
zone, and swaps it in with one assignment: a query sees the old snapshot or the new one, never
a mix.  Builds are serialised, so two zones changing at once cannot publish out of order.
Downstreams are sent a NOTIFY once the new version is being served.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence

from imrs.answer.respond import AnswerOptions
from imrs.config import parse_listen
from imrs.serve.snapshot import SnapshotHolder, build_snapshot
from imrs.zone.data import ZoneData
from imrs.zone.keeper import ZoneKeeper
from imrs.zone.records import ZoneRecords, ZoneVersion

log = logging.getLogger("imrs.publish")


class Publisher:
    """Builds and swaps snapshots from the static zones and the kept zones."""

    def __init__(
        self,
        holder: SnapshotHolder | None,
        options: AnswerOptions,
        static: Sequence[tuple[ZoneData, ZoneRecords | None]],
        keepers: Sequence[ZoneKeeper] = (),
    ):
        self.holder = holder
        self.options = options
        self.static = list(static)
        self.keepers = list(keepers)
        self._lock = asyncio.Lock()
        self.published = 0

    def build(self):
        """A snapshot of what should be served now (blocking: call it in a thread)."""
        zones = [data for data, _records in self.static]
        versions = {records.origin: ZoneVersion(records) for _data, records in self.static if records is not None}
        unavailable = {}
        for keeper in self.keepers:
            if keeper.serving:
                zones.append(keeper.zone_data)
                version = keeper.version()
                if version is not None:
                    versions[keeper.origin] = version
            else:
                unavailable[keeper.origin] = keeper.config.on_expiry
        return build_snapshot(zones, self.options, versions=versions, unavailable=unavailable)

    async def republish(self, keeper: ZoneKeeper | None = None, started: float | None = None) -> None:
        async with self._lock:
            began = time.monotonic()
            snapshot = await asyncio.to_thread(self.build)
            assert self.holder is not None
            self.holder.publish(snapshot)
            self.published += 1
            # The old snapshot's objects die here; freeze the new ones so the cyclic collector
            # does not walk millions of long-lived objects again and again.
            gc.collect()
            gc.freeze()
            log.info("published a new snapshot in %.2f s%s", time.monotonic() - began,
                     f" ({time.monotonic() - started:.2f} s after the trigger)" if started is not None else "")
        if keeper is not None and keeper.serving and keeper.config.notify and keeper.records is not None:
            asyncio.get_running_loop().create_task(self._notify(keeper))

    async def _notify(self, keeper: ZoneKeeper) -> None:
        from imrs.zone.notify import send_notify

        targets = []
        for text in keeper.config.notify:
            address = parse_listen(text)
            targets.append((address.host, address.port))
        records = keeper.records
        assert records is not None
        try:
            outcomes = await send_notify(keeper.origin, records.soa, targets)
        except Exception:
            log.exception("%s: sending NOTIFY failed", keeper.status.origin)
            return
        log.info("%s: NOTIFY for serial %d sent: %s", keeper.status.origin, records.serial,
                 ", ".join(f"{t[0]}:{t[1]} {o}" for t, o in outcomes.items()))
