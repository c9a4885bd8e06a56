"""Which zones are served, and handing every change of them to the data plane.

The zones of a server are of two kinds: static ones, loaded from a file at start (verified
once), and kept ones, each with a :class:`~imrs.zone.keeper.ZoneKeeper` that brings new
verified versions.  Whenever a kept zone changes (new version, expiry, recovery), the
:class:`Publisher` makes a :class:`Publication`: the verified records of every zone served now,
with their IXFR journals, and the zones not served (expired) with their on-expiry action.  A
sink hands it to the data plane: the worker pool (:mod:`imrs.serve.workers`) sends it to every
worker, which builds a snapshot from it with a :class:`SnapshotBuilder` and swaps it in when
all are ready.  Publications are serialised, so two zones changing at once cannot publish out
of order.  Downstreams are sent a NOTIFY once the new version is being served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from imrs.answer.respond import AnswerOptions
from imrs.config import parse_listen
from imrs.serve.snapshot import Snapshot, build_snapshot
from imrs.zone.data import ZoneData
from imrs.zone.keeper import ZoneKeeper
from imrs.zone.parse import zone_data_from_records
from imrs.zone.records import ZoneRecords, ZoneVersion

log = logging.getLogger("imrs.publish")


@dataclass(frozen=True)
class Publication:
    """Everything a data-plane process needs to answer for one state of the zones (picklable)."""

    generation: int
    #: (token, version) per served zone; the same token means the same records, so a builder
    #: may reuse what it built from them before.
    zones: tuple[tuple[int, ZoneVersion], ...]
    #: Zones configured but not served now (expired), by origin, with their on-expiry action.
    unavailable: Mapping[bytes, str] = field(default_factory=dict)

    def describe(self) -> str:
        served = ", ".join(f"{v.records.origin_text} (serial {v.records.serial})" for _, v in self.zones)
        return served or "no zone"


class SnapshotBuilder:
    """Builds snapshots from publications in one data-plane process, reusing the query-ready
    form of zones whose records did not change (static zones beside a kept one)."""

    def __init__(self, options: AnswerOptions, **snapshot_options):
        self.options = options
        self.snapshot_options = snapshot_options
        self._built: dict[int, ZoneData] = {}

    def build(self, publication: Publication) -> Snapshot:
        """Blocking (about a second for the root zone): call it in a thread when serving."""
        built: dict[int, ZoneData] = {}
        for token, version in publication.zones:
            data = self._built.get(token)
            built[token] = data if data is not None else zone_data_from_records(version.records)
        self._built = built
        versions = {version.records.origin: version for _, version in publication.zones}
        return build_snapshot([built[token] for token, _ in publication.zones], self.options,
                              versions=versions, unavailable=publication.unavailable, **self.snapshot_options)


class Publisher:
    """Makes publications from the static zones and the kept zones and hands them to a sink."""

    def __init__(
        self,
        static: Sequence[ZoneRecords],
        keepers: Sequence[ZoneKeeper] = (),
        sink: Callable[[Publication], Awaitable[None]] | None = None,
    ):
        self.static = list(static)
        self.keepers = list(keepers)
        self.sink = sink
        self._lock = asyncio.Lock()
        self._tokens: dict[int, tuple[ZoneRecords, int]] = {}
        self._next_token = 0
        self.generation = 0
        self.latest: Publication | None = None

    def _token(self, records: ZoneRecords) -> int:
        known = self._tokens.get(id(records))
        if known is not None and known[0] is records:
            return known[1]
        self._next_token += 1
        self._tokens[id(records)] = (records, self._next_token)
        return self._next_token

    def publication(self) -> Publication:
        """What should be served now."""
        zones = [(self._token(records), ZoneVersion(records)) for records in self.static]
        unavailable = {}
        for keeper in self.keepers:
            version = keeper.version()
            if keeper.serving and version is not None:
                zones.append((self._token(version.records), version))
            else:
                unavailable[keeper.origin] = keeper.config.on_expiry
        live = {id(version.records) for _, version in zones}
        self._tokens = {key: value for key, value in self._tokens.items() if key in live}
        self.generation += 1
        self.latest = Publication(self.generation, tuple(zones), unavailable)
        return self.latest

    async def republish(self, keeper: ZoneKeeper | None = None, started: float | None = None) -> None:
        async with self._lock:
            began = time.monotonic()
            publication = self.publication()
            if self.sink is not None:
                await self.sink(publication)
            log.info("published generation %d (%s) in %.2f s%s", publication.generation, publication.describe(),
                     time.monotonic() - began,
                     f", {time.monotonic() - started:.2f} s after the trigger" if started is not None else "")
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
