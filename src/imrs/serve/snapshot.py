"""The immutable thing the data plane answers from, swapped whole on every zone change.

A Snapshot bundles the zones, the reference responder and the compiled fast path built
from them.  Listeners hold a reference to the :class:`SnapshotHolder`, read
``holder.current`` once per packet and never see a half-built state: publishing a new
snapshot is one attribute assignment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from imrs.answer.compiled import CompiledAnswers
from imrs.answer.cookies import CookieJar
from imrs.answer.engine import ZoneSet
from imrs.answer.fastc import answer as fast_answer
from imrs.answer.query import read_name
from imrs.answer.respond import AnswerOptions, Responder
from imrs.zone.data import ZoneData
from imrs.zone.records import ZoneVersion, is_subdomain

log = logging.getLogger("imrs.snapshot")


_EMPTY: Mapping = MappingProxyType({})

#: What an unavailable (expired) zone answers, besides "refuse" (the default for a name in no
#: zone): SERVFAIL, or nothing at all.
_SERVFAIL = "servfail"
_DROP = "drop"


@dataclass(frozen=True)
class Snapshot:
    zones: ZoneSet
    reference: Responder
    compiled: CompiledAnswers | None
    built_at: float
    build_seconds: float
    #: Zone versions offered for transfer (AXFR/IXFR out, EDNS EXPIRE), by origin (wire, lowercased).
    versions: Mapping[bytes, ZoneVersion] = field(default_factory=dict)
    #: Zones configured but not served now (expired), by origin, with their on-expiry action.
    unavailable: Mapping[bytes, str] = field(default_factory=dict)

    def answer(self, wire: bytes, tcp: bool, ipv6: bool, peer: bytes | None = None,
               c_tried: bool = False) -> bytes | None:
        """The response bytes, or None to send nothing: fast path first, reference after.
        ``peer`` is the client's address, packed (4 or 16 octets), for DNS Cookies.
        ``c_tried``: the caller ran the C answer already and it declined (the C UDP loop):
        the Python fast path takes over at once."""
        if self.unavailable:
            action = self._unavailable_action(wire)
            if action == _DROP:
                return None
            if action == _SERVFAIL:
                return _servfail(wire)
        if self.compiled is not None:
            try:
                if c_tried:
                    out = self.compiled.answer(wire, tcp, ipv6, peer)
                else:
                    out = fast_answer(self.compiled, wire, tcp, ipv6, peer)  # C when built, else Python
            except Exception:  # noqa: BLE001 - a fast-path bug must cost speed, not answers
                _log_fast_path_failure(wire)
                out = None
            if out is not None:
                return out
        return self.reference.respond(wire, tcp, ipv6, peer)

    def _unavailable_action(self, wire: bytes) -> str | None:
        """The on-expiry action when the question is for an unavailable zone (and for no served
        zone below it); None otherwise.  Only runs while some zone is unavailable."""
        try:
            qname = wire[12 : read_name(wire, 12)].lower()
        except (ValueError, IndexError):
            return None
        best: bytes | None = None
        for origin in self.unavailable:
            if is_subdomain(qname, origin) and (best is None or len(origin) > len(best)):
                best = origin
        if best is None:
            return None
        for origin in self.zones.zones:
            served = origin.to_wire().lower()
            if len(served) > len(best) and is_subdomain(qname, served):
                return None
        return self.unavailable[best]


def _servfail(wire: bytes) -> bytes | None:
    """SERVFAIL echoing the question (header flags from the query: RD, opcode)."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    try:
        end = read_name(wire, 12) + 4
    except ValueError:
        return None
    if end > len(wire):
        return None
    flags = 0x8000 | ((wire[2] << 8) & 0x7900) | 2
    return wire[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + wire[12:end]


_last_fast_path_log = 0.0


def _log_fast_path_failure(wire: bytes) -> None:
    global _last_fast_path_log
    now = time.monotonic()
    if now - _last_fast_path_log > 10:
        _last_fast_path_log = now
        log.exception("fast path failed on query %s; answered by the reference path (logged every 10 s)", wire.hex())


def build_snapshot(
    zones: list[ZoneData],
    options: AnswerOptions,
    compile_answers: bool = True,
    *,
    versions: Mapping[bytes, ZoneVersion] | None = None,
    unavailable: Mapping[bytes, str] | None = None,
    cookies: CookieJar | None = None,
) -> Snapshot:
    """Make a ready-to-serve snapshot (the fast path is precomputed here, not per query).
    ``cookies``: the jar that makes and checks DNS Cookies (None: COOKIE options ignored)."""
    started = time.monotonic()
    zone_set = ZoneSet(zones)
    versions = MappingProxyType(dict(versions)) if versions else _EMPTY
    unavailable = MappingProxyType(dict(unavailable)) if unavailable else _EMPTY
    reference = Responder(zone_set, options, versions=versions, cookies=cookies)
    compiled = CompiledAnswers(reference) if compile_answers else None
    took = time.monotonic() - started
    if compiled is not None:
        log.info("compiled answers for %d names in %.1f s", compiled.name_count, took)
    return Snapshot(zone_set, reference, compiled, time.time(), took, versions, unavailable)


class SnapshotHolder:
    """The one mutable cell: which snapshot is being served now."""

    def __init__(self, snapshot: Snapshot):
        self.current = snapshot

    def publish(self, snapshot: Snapshot) -> None:
        self.current = snapshot  # a single reference assignment: atomic for every reader
