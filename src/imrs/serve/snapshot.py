"""The immutable thing the data plane answers from, swapped whole on every zone change.

A Snapshot bundles the zones, the reference responder and the compiled fast path built
from them.  Listeners hold a reference to the :class:`SnapshotHolder`, read
``holder.current`` once per packet and never see a half-built state: publishing a new
snapshot is one attribute assignment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from imrs.answer.compiled import CompiledAnswers
from imrs.answer.engine import ZoneSet
from imrs.answer.respond import AnswerOptions, Responder
from imrs.zone.data import ZoneData

log = logging.getLogger("imrs.snapshot")


@dataclass(frozen=True)
class Snapshot:
    zones: ZoneSet
    reference: Responder
    compiled: CompiledAnswers | None
    built_at: float
    build_seconds: float

    def answer(self, wire: bytes, tcp: bool, ipv6: bool) -> bytes | None:
        """The response bytes, or None to send nothing: fast path first, reference after."""
        if self.compiled is not None:
            try:
                out = self.compiled.answer(wire, tcp, ipv6)
            except Exception:  # a fast-path bug must cost speed, not answers
                _log_fast_path_failure(wire)
                out = None
            if out is not None:
                return out
        return self.reference.respond(wire, tcp, ipv6)


_last_fast_path_log = 0.0


def _log_fast_path_failure(wire: bytes) -> None:
    global _last_fast_path_log
    now = time.monotonic()
    if now - _last_fast_path_log > 10:
        _last_fast_path_log = now
        log.exception("fast path failed on query %s; answered by the reference path (logged every 10 s)", wire.hex())


def build_snapshot(zones: list[ZoneData], options: AnswerOptions, compile_answers: bool = True) -> Snapshot:
    """Make a ready-to-serve snapshot (the fast path is precomputed here, not per query)."""
    started = time.monotonic()
    zone_set = ZoneSet(zones)
    reference = Responder(zone_set, options)
    compiled = CompiledAnswers(reference) if compile_answers else None
    took = time.monotonic() - started
    if compiled is not None:
        log.info("compiled answers for %d names in %.1f s", compiled.name_count, took)
    return Snapshot(zone_set, reference, compiled, time.time(), took)


class SnapshotHolder:
    """The one mutable cell: which snapshot is being served now."""

    def __init__(self, snapshot: Snapshot):
        self.current = snapshot

    def publish(self, snapshot: Snapshot) -> None:
        self.current = snapshot  # a single reference assignment: atomic for every reader
