"""The instance's RSSAC002 files, written at each UTC midnight from the workers' counts.

`DailyReports.run` sleeps until the UTC day ends, then takes the day from the workers
(`WorkerPool.day(reset=True)`: counters since the last roll and the distinct sources), adds the
zone keepers' load times of versions first served that day, and writes the day's files
(:func:`imrs.telemetry.rssac002.write_day`).  `DailyReports.flush` at a stop writes the day so far;
files of that day already in the directory (a restart earlier the same day) are merged in first
(counters summed, sources united, a serial's load time the longer), so that a restart loses only
what a worker had counted when it died.  Every `checkpoint` seconds (60) in between, the
workers' day so far is read and kept by the pool (`WorkerPool.checkpoint_day`): a worker that
dies loses only what it counted since.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from imrs.serve.traffic import day_counters
from imrs.telemetry.rssac002 import Rssac002Error, write_day
from imrs.telemetry.rssac002_merge import merge
from imrs.telemetry.unique_sources import SourceSet

log = logging.getLogger("imrs.rssac002")

#: (counters, sources) of the workers for the day; the argument says whether to start a new day
DaySource = Callable[[bool], Awaitable[tuple[dict[str, int], dict[str, SourceSet]]]]
#: (serial, first served at (UNIX time), seconds from the trigger) of every kept zone
LoadTimes = Callable[[], Iterable[tuple[int, float, float]]]
#: reads and keeps the workers' day so far
Checkpoint = Callable[[], Awaitable[None]]
#: seconds between checkpoints (and the longest sleep: a stepped clock is noticed within it)
CHECKPOINT_SECONDS = 60.0


def utc_day(t: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).date()


def day_bounds(day: datetime.date) -> tuple[float, float]:
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()
    return start, start + 86400.0


class DailyReports:
    """Writes ``service``'s RSSAC002 files into ``directory`` once a UTC day."""

    def __init__(self, directory: str | Path, service: str, day_source: DaySource, load_times: LoadTimes,
                 clock: Callable[[], float] = time.time, checkpoint: Checkpoint | None = None,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS):
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.checkpoint_seconds = checkpoint_seconds
        self.service = service
        self.day_source = day_source
        self.load_times = load_times
        self.clock = clock
        self.day = utc_day(clock())  # the day being counted

    async def run(self) -> None:
        """Until cancelled: at each UTC midnight, the day that ended."""
        while True:
            _, end = day_bounds(self.day)
            # short sleeps: a clock stepped by NTP or a suspended VM is noticed within a minute
            await asyncio.sleep(min(self.checkpoint_seconds, max(0.0, end - self.clock())))
            if self.clock() >= end:
                await self.flush(new_day=True)
            elif self.checkpoint is not None:
                try:
                    await self.checkpoint()
                except (OSError, EOFError, ValueError) as exc:  # the next one comes in a minute
                    log.warning("RSSAC002: the workers' day so far could not be read: %s", exc)

    async def flush(self, new_day: bool = False) -> list[Path]:
        """Write the day counted so far (merged with its files already there); with
        ``new_day`` the workers start the next day.  Errors are logged, not raised: the data
        plane must not stop because a report cannot be written."""
        day = self.day
        try:
            counters, sources = await self.day_source(new_day)
            if new_day:
                self.day = utc_day(self.clock())
            start, end = day_bounds(day)
            loads = {serial: seconds for serial, at, seconds in self.load_times() if start <= at < end}
            counts = day_counters(counters, sources, loads)
            if self.directory.is_dir() and any(self.directory.glob(f"*-{day:%Y%m%d}-*.yaml")):
                earlier = await asyncio.to_thread(merge, [self.directory], self.service, day=day)
                counts.merge_from(earlier.counters)
            paths = await asyncio.to_thread(write_day, self.directory, self.service, day, counts)
        except (OSError, Rssac002Error, ValueError) as exc:
            log.error("RSSAC002 files for %s not written: %s", day, exc)
            return []
        log.info("RSSAC002 files for %s written to %s (%d queries)", day, self.directory,
                 sum(counts.queries.values()))
        return paths
