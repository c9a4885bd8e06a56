"""The supervisor's pool of data-plane processes: start, feed, watch, restart, stop.

Each worker (:mod:`imrs.serve.worker`) is a process of its own with its own listening sockets,
bound by the supervisor with SO_REUSEPORT so the kernel spreads the queries over the workers
(as NSD does with ``reuseport``).  A worker gets its sockets only once its first snapshot is
built, so no query waits on a worker that cannot answer yet; when a worker dies its sockets
close with it and the kernel sends their share to the others until the replacement is ready.

Zone changes reach the workers in two phases (prepare, then commit when every worker has
built the new snapshot), so the workers change version together.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import send_handle

from imrs.serve import worker
from imrs.serve.publish import Publication
from imrs.telemetry.unique_sources import SourceSet

log = logging.getLogger("imrs.workers")

#: How long a worker may take to build a snapshot (start, or a new publication).
BUILD_TIMEOUT = 300.0
#: How long a worker may take to stop before it is killed.
STOP_TIMEOUT = 10.0
#: Restart delays for a worker that keeps dying soon after start (seconds, doubled each time).
RESTART_DELAY = (0.0, 30.0)


@dataclass(eq=False)
class _Slot:
    index: int
    process: BaseProcess
    conn: Connection
    started: float
    state: str = "starting"  # starting, serving, gone
    generation: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiters: dict[str, asyncio.Future] = field(default_factory=dict)
    #: its counters as it last reported them (kept for the pool when it dies)
    last_counters: dict[str, int] = field(default_factory=dict)
    #: its UTC day so far as it last reported it (`WorkerPool.checkpoint_day`), likewise
    last_day: dict | None = None

    async def send(self, message: object) -> None:
        """Send in a thread: a publication is megabytes and the pipe only holds kilobytes."""
        async with self.lock:
            await asyncio.to_thread(self.conn.send, message)


class WorkerPool:
    """``count`` workers serving the latest publication on sockets from ``make_sockets``."""

    def __init__(
        self,
        count: int,
        make_sockets: Callable[[], list[socket.socket]],
        worker_args: tuple,
        on_notify: Callable[[bytes, int | None], None] = lambda origin, serial: None,
    ):
        self.count = count
        self.make_sockets = make_sockets
        self.worker_args = worker_args
        self.on_notify = on_notify
        self.latest: Publication | None = None
        self.slots: dict[int, _Slot] = {}
        self.restarts = 0
        self._stopping = False
        self._failures: dict[int, int] = {}  # index -> quick deaths in a row
        self._context = multiprocessing.get_context("spawn")  # the supervisor has threads: never fork
        self._pending: tuple[int, set[_Slot], asyncio.Future] | None = None
        self._final: dict[str, int] = {}
        #: the counters dead workers last reported, so that the sums do not go back when one dies
        #: (what a worker counted after its last report is lost with it)
        self._departed: dict[str, int] = {}
        #: and the day so far that dead workers last reported (until the day is rolled)
        self._departed_day: dict[str, int] = {}
        self._departed_sources: dict[str, SourceSet] = {}

    # -- starting ---------------------------------------------------------------------------
    async def start(self, publication: Publication) -> None:
        """Start every worker and wait until all serve.  A worker that dies while starting is
        started again (as later on); RuntimeError when one keeps dying (three times in a row
        within seconds of its start: a bug or a lack of memory, not bad luck) or when not all
        serve within BUILD_TIMEOUT."""
        self.latest = publication
        for index in range(self.count):
            self._spawn(index)
        deadline = time.monotonic() + BUILD_TIMEOUT
        while True:
            serving = [slot for slot in self.slots.values() if slot.state == "serving"]
            if len(serving) == self.count:
                return
            failing = [index for index, count in self._failures.items() if count >= 3]
            if failing:
                raise RuntimeError(f"worker(s) {', '.join(map(str, failing))} died three times while starting; "
                                   "see the log above")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every worker was ready within {BUILD_TIMEOUT:.0f} s; see the log above")
            await asyncio.sleep(0.05)

    def _spawn(self, index: int) -> _Slot:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=worker.main, args=(child, index, *self.worker_args),
                                        name=f"imrs-worker-{index}")
        process.start()
        child.close()
        slot = _Slot(index, process, parent, time.monotonic())
        self.slots[index] = slot
        loop = asyncio.get_running_loop()
        loop.add_reader(parent.fileno(), self._on_message, slot)
        loop.add_reader(process.sentinel, self._on_exit, slot)
        assert self.latest is not None
        self._send_soon(slot, ("prepare", self.latest))
        log.info("worker %d started (pid %d)", index, process.pid)
        return slot

    @staticmethod
    def _send_soon(slot: _Slot, message: tuple) -> None:
        """Send without waiting; a worker gone meanwhile is the exit handler's business."""
        async def send() -> None:
            try:
                await slot.send(message)
            except Exception:
                if slot.state != "gone" and slot.process.is_alive():
                    log.exception("worker %d: cannot send to it", slot.index)
        asyncio.get_running_loop().create_task(send())

    def _expect(self, slot: _Slot, what: str, timeout: float) -> asyncio.Task:
        """The worker's next ``what`` message (False if none within ``timeout``), waited for
        from now on: call it before sending the request, or a quick reply could come first."""
        future = asyncio.get_running_loop().create_future()
        slot.waiters[what] = future

        async def wait() -> object:
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                log.error("worker %d: no %r within %.0f s", slot.index, what, timeout)
                return False
            finally:
                if slot.waiters.get(what) is future:
                    del slot.waiters[what]

        return asyncio.get_running_loop().create_task(wait())

    @staticmethod
    def _resolve(slot: _Slot, what: str, value: object) -> None:
        future = slot.waiters.get(what)
        if future is not None and not future.done():
            future.set_result(value)

    async def _hand_sockets(self, slot: _Slot) -> None:
        try:
            sockets = self.make_sockets()
        except OSError as exc:
            log.error("worker %d: cannot open its sockets: %s; stopping it", slot.index, exc)
            slot.process.terminate()
            return
        try:
            async with slot.lock:
                slot.conn.send(len(sockets))
                for sock in sockets:
                    send_handle(slot.conn, sock.fileno(), slot.process.pid)
        except OSError as exc:
            log.error("worker %d: cannot hand over its sockets: %s", slot.index, exc)
            return
        finally:
            for sock in sockets:
                sock.close()  # the worker holds them now: they must die with it
        slot.state = "serving"
        self._resolve(slot, "serving", True)

    # -- messages and deaths ----------------------------------------------------------------
    def _on_message(self, slot: _Slot) -> None:
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(slot.conn.fileno())
            return
        self._handle(slot, message)

    def _handle(self, slot: _Slot, message: tuple) -> None:
        kind = message[0]
        loop = asyncio.get_running_loop()
        if kind == "ready":
            slot.generation = message[1]
            assert self.latest is not None
            if message[1] < self.latest.generation:  # a publication came while it was starting
                self._send_soon(slot, ("prepare", self.latest))
            else:
                loop.create_task(self._hand_sockets(slot))
        elif kind == "prepared":
            pending = self._pending
            if pending is not None and pending[0] == message[1] and slot in pending[1]:
                pending[1].discard(slot)
                if not pending[1] and not pending[2].done():
                    pending[2].set_result(True)
        elif kind == "notify":
            self.on_notify(message[1], message[2])
        elif kind in ("stats", "stopped", "day"):
            if kind == "stats" and isinstance(message[1], dict):
                slot.last_counters = message[1]
            self._resolve(slot, kind, message[1])

    def _on_exit(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(slot.process.sentinel)
        try:
            loop.remove_reader(slot.conn.fileno())
            while slot.conn.poll():  # what it said before it went (its last counters)
                self._handle(slot, slot.conn.recv())
        except (ValueError, OSError, EOFError):
            pass
        slot.process.join(1.0)  # the sentinel fires at exit; reaping follows at once
        was = slot.state
        slot.state = "gone"
        slot.conn.close()
        for future in slot.waiters.values():
            if not future.done():
                future.set_result(False)
        pending = self._pending
        if pending is not None and slot in pending[1]:
            pending[1].discard(slot)
            if not pending[1] and not pending[2].done():
                pending[2].set_result(True)
        if self.slots.get(slot.index) is slot:
            del self.slots[slot.index]
        if self._stopping:
            return
        for key, value in slot.last_counters.items():
            self._departed[key] = self._departed.get(key, 0) + value
        if slot.last_day is not None:
            _add_day(self._departed_day, self._departed_sources, slot.last_day)
        self.restarts += 1
        quick = time.monotonic() - slot.started < 10
        failures = self._failures.get(slot.index, 0) + 1 if quick else 0
        self._failures[slot.index] = failures
        delay = 0.0 if failures <= 1 else min(RESTART_DELAY[1], 2.0 ** (failures - 1))
        log.error("worker %d (pid %d) died (exit code %s) while %s; restarting it%s", slot.index, slot.process.pid,
                  slot.process.exitcode, was, f" in {delay:.0f} s" if delay else "")
        loop.call_later(delay, self._restart, slot.index)

    def _restart(self, index: int) -> None:
        if not self._stopping and index not in self.slots:
            self._spawn(index)

    # -- publishing -------------------------------------------------------------------------
    async def publish(self, publication: Publication) -> None:
        """Have every serving worker build ``publication``, then switch them all to it."""
        self.latest = publication
        targets = {slot for slot in self.slots.values() if slot.state == "serving"}
        if not targets:
            return
        done = asyncio.get_running_loop().create_future()
        self._pending = (publication.generation, set(targets), done)
        began = time.monotonic()
        try:
            await asyncio.gather(*(slot.send(("prepare", publication)) for slot in targets), return_exceptions=True)
            try:
                async with asyncio.timeout(BUILD_TIMEOUT):
                    await done
            except TimeoutError:
                log.error("generation %d: not every worker built it within %.0f s; switching those that did",
                          publication.generation, BUILD_TIMEOUT)
            laggards = self._pending[1]
            built = time.monotonic()
            for slot in targets - laggards:
                if slot.state == "serving":
                    try:
                        slot.conn.send(("commit", publication.generation))
                        slot.generation = publication.generation
                    except OSError:
                        pass
            log.info("generation %d: built by %d worker(s) in %.2f s, switched within %.1f ms", publication.generation,
                     len(targets - laggards), built - began, (time.monotonic() - built) * 1000)
        finally:
            self._pending = None

    # -- counters and stopping --------------------------------------------------------------
    async def counters(self, timeout: float = 2.0) -> dict[str, int]:
        """The workers' counters summed (those that answer within ``timeout``), with what dead
        workers had last reported."""
        live = [slot for slot in self.slots.values() if slot.state == "serving"]
        waits = []
        for slot in live:
            waits.append(self._expect(slot, "stats", timeout))
            await slot.send(("stats",))
        replies = [r for r in await asyncio.gather(*waits) if isinstance(r, dict)]
        return _sum([*replies, self._departed], self.restarts)

    async def day(self, reset: bool = False, timeout: float = 5.0) -> tuple[dict[str, int], dict[str, SourceSet]]:
        """The UTC day's traffic counters (summed) and distinct query sources (merged by kind:
        RSSAC002's IPv4, IPv6 and IPv6 /64) of the workers that answer within ``timeout``;
        ``reset``: the next day starts now in each.  A worker that died during the day counts
        with what it reported at the last `checkpoint_day`."""
        live = [slot for slot in self.slots.values() if slot.state == "serving"]
        waits = []
        for slot in live:
            waits.append(self._expect(slot, "day", timeout))
            await slot.send(("day", reset))
        counters = dict(self._departed_day)
        sources: dict[str, SourceSet] = {}
        for kind, departed in self._departed_sources.items():
            sources[kind] = SourceSet()
            sources[kind].update(departed)
        for slot, reply in zip(live, await asyncio.gather(*waits), strict=True):
            if reset:
                # its last reading is of the day that ends now, whether it answered or not: one
                # that dies later must not bring it into the next day
                slot.last_day = None
            if not isinstance(reply, dict):
                continue
            if not reset:
                slot.last_day = reply
            _add_day(counters, sources, reply)
        if reset:
            self._departed_day = {}
            self._departed_sources = {}
        return counters, sources

    async def checkpoint_day(self) -> None:
        """Read every worker's day so far, and keep it: a worker that dies later in the day
        then loses only what it counted since (`day` adds what dead workers last reported)."""
        await self.day(False)

    @staticmethod
    async def _send_stop(slot: _Slot) -> None:
        """Tell one worker to stop; one that does not take it in time is killed by `stop`."""
        try:
            await asyncio.wait_for(slot.send(("stop",)), STOP_TIMEOUT)
        except (OSError, TimeoutError):
            pass

    async def stop(self) -> dict[str, int]:
        """Stop every worker (killing those that do not stop in time); their final counters."""
        self._stopping = True
        slots = list(self.slots.values())
        waits = []
        for slot in slots:
            waits.append(self._expect(slot, "stopped", STOP_TIMEOUT))
        # Under each slot's lock: a worker still starting may be taking a publication from the
        # pipe, and a message written in the middle of it would corrupt both.
        await asyncio.gather(*(self._send_stop(slot) for slot in slots))
        results = await asyncio.gather(*waits) if waits else []
        for slot in slots:
            await asyncio.to_thread(slot.process.join, 2.0)
            if slot.process.is_alive():
                log.error("worker %d did not stop; killing it", slot.index)
                slot.process.kill()
                await asyncio.to_thread(slot.process.join, 2.0)
        return _sum([*(r for r in results if isinstance(r, dict)), self._departed], self.restarts)


def _add_day(counters: dict[str, int], sources: dict[str, SourceSet], reply: dict) -> None:
    """Add one worker's day (its "day" reply: counters, and sources as SourceSet.to_json)."""
    for key, value in reply["counters"].items():
        counters[key] = counters.get(key, 0) + value
    for kind, state in reply["sources"].items():
        sources.setdefault(kind, SourceSet()).update(SourceSet.from_json(state))


def _sum(counters: Sequence[dict[str, int]], restarts: int) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counters:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    total["workers_restarted"] = restarts
    return total
