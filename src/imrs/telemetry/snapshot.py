"""What the supervisor knows at one moment, for /metrics, /health, /ready, /stats and `imrs stats`.

The supervisor (:meth:`imrs.serve.server.Supervisor.telemetry`) fills a :class:`Telemetry` per
request from its keepers, its publications and the worker pool; everything here only reads it.
Readiness is decided here, once, so the HTTP endpoint and the metrics cannot disagree on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from imrs.zone.records import TYPE_RRSIG, TYPE_ZONEMD, ZoneRecords

#: ZONEMD scheme SIMPLE and the hashes verify.py checks (SHA-384, SHA-512): a ZONEMD like this
#: in a served version means its digest was checked before the version was served.
_ZONEMD_SIMPLE = 1
_ZONEMD_HASHES = (1, 2)


class TelemetryUnavailable(Exception):
    """The snapshot cannot be taken now (the workers' counters cannot be read); try again."""


@dataclass(frozen=True)
class VersionFacts:
    """What is worth knowing about one version of a zone, computed once when it is published."""

    #: Wall-clock time (seconds since the epoch) the version was first handed to the workers.
    published_at: float
    #: The earliest RRSIG expiration in the version (seconds since the epoch); None if unsigned.
    signature_expiration: float | None
    #: Whether it carries a ZONEMD that verification checks (SIMPLE, SHA-384/512, its serial).
    zonemd: bool


def _rrsig_time(value: int, now: int) -> int:
    """An RRSIG time field as seconds since the epoch: the value closest to ``now`` congruent to
    it modulo 2**32 (RFC 4034 section 3.1.5 serial arithmetic)."""
    return now + (value - now + 0x80000000) % 0x100000000 - 0x80000000


def version_facts(records: ZoneRecords, published_at: float) -> VersionFacts:
    """Scan a version once (a root zone takes milliseconds): earliest RRSIG expiration, ZONEMD."""
    now = int(time.time())
    earliest: int | None = None
    zonemd = False
    origin = records.origin
    serial = records.serial
    for record in records.records:
        if record.rdtype == TYPE_RRSIG and len(record.rdata) >= 12:
            expiration = _rrsig_time(int.from_bytes(record.rdata[8:12], "big"), now)
            if earliest is None or expiration < earliest:
                earliest = expiration
        elif record.rdtype == TYPE_ZONEMD and record.owner == origin and len(record.rdata) >= 6:
            zonemd = zonemd or (record.rdata[4] == _ZONEMD_SIMPLE and record.rdata[5] in _ZONEMD_HASHES
                                and int.from_bytes(record.rdata[:4], "big") == serial)
    return VersionFacts(published_at, float(earliest) if earliest is not None else None, zonemd)


@dataclass(frozen=True)
class ZoneTelemetry:
    """One configured zone."""

    name: str
    #: "kept" (refreshed from sources) or "static" (loaded from a file at start)
    kind: str
    #: the workers serve it now (kept zones: a verified version that has not expired)
    served: bool
    #: the keeper's state (loading, serving, expired) or "static"
    state: str
    serial: int | None
    facts: VersionFacts | None
    #: DNSSEC checked from a trust anchor before the version was served
    dnssec: bool
    #: kept zones: when the SOA expire timer runs out (seconds since the epoch)
    expire_at: float | None = None
    last_check: float | None = None
    last_success: float | None = None
    last_error: str = ""
    failed_check: str = ""
    source: str = ""
    checks: int = 0
    failures: Mapping[str, int] = field(default_factory=dict)
    versions_published: int = 0
    #: kept zones: seconds from the trigger (NOTIFY or timer) to the last new version being served
    last_load_seconds: float | None = None

    @property
    def validation(self) -> str:
        """``static`` for a file loaded at start, ``verified`` for a kept zone served from a
        version that passed every check, else the keeper's state (loading, expired)."""
        if self.kind == "static":
            return "static"
        return "verified" if self.served else self.state

    @property
    def last_transfer_ok(self) -> bool | None:
        """Whether the last refresh (transfer or SOA check) succeeded; None before the first."""
        if self.kind != "kept" or self.last_check is None:
            return None
        return not self.last_error

    def as_json(self, now: float) -> dict[str, object]:
        facts = self.facts
        return {
            "zone": self.name,
            "kind": self.kind,
            "served": self.served,
            "state": self.state,
            "serial": self.serial,
            "validation": self.validation,
            "zonemd": facts.zonemd if facts else None,
            "dnssec": self.dnssec,
            "age_seconds": _round(now - facts.published_at) if facts else None,
            "signature_expiry_seconds": _round(facts.signature_expiration - now)
            if facts and facts.signature_expiration is not None else None,
            "expiry_seconds": _round(self.expire_at - now) if self.expire_at is not None else None,
            "last_check": self.last_check,
            "last_success": self.last_success,
            "last_transfer_ok": self.last_transfer_ok,
            "last_load_seconds": self.last_load_seconds,
            "last_error": self.last_error or None,
            "failed_check": self.failed_check or None,
            "source": self.source or None,
        }


def _round(seconds: float) -> float:
    return round(seconds, 3)


@dataclass(frozen=True)
class Telemetry:
    """The whole server at one moment."""

    time: float
    pid: int
    version: str
    started: float
    uptime: float
    draining: bool
    listeners: tuple[str, ...]
    workers_configured: int
    workers_live: int
    worker_restarts: int
    zones: tuple[ZoneTelemetry, ...]
    #: the workers' counters summed (empty when not asked for)
    counters: Mapping[str, int] = field(default_factory=dict)

    def not_ready(self) -> list[str]:
        """Why the server is not ready (empty: ready)."""
        reasons = []
        if self.draining:
            reasons.append("draining")
        if self.workers_live == 0:
            reasons.append("no worker is serving")
        for zone in self.zones:
            if not zone.served:
                why = "being published" if zone.state in ("serving", "static") else zone.state
                reasons.append(f"zone {zone.name} is not served ({why})")
        return reasons

    @property
    def ready(self) -> bool:
        return not self.not_ready()

    def health_json(self) -> dict[str, object]:
        """/health: the supervisor is alive."""
        return {"status": "alive", "pid": self.pid, "uptime": _round(self.uptime), "version": self.version}

    def ready_json(self) -> dict[str, object]:
        """/ready: whether to send this server queries, and why not."""
        reasons = self.not_ready()
        return {
            "status": "ready" if not reasons else "not ready",
            "ready": not reasons,
            "reasons": reasons,
            "draining": self.draining,
            "zones": [zone.as_json(self.time) for zone in self.zones],
            "listeners": list(self.listeners),
            "workers": self.workers_json(),
        }

    def workers_json(self) -> dict[str, int]:
        return {"count": self.workers_configured, "live": self.workers_live, "restarts": self.worker_restarts}

    def stats_json(self) -> dict[str, object]:
        """/stats: everything, counters included."""
        return {
            "time": self.time,
            "pid": self.pid,
            "version": self.version,
            "uptime": _round(self.uptime),
            "ready": self.ready,
            "reasons": self.not_ready(),
            "draining": self.draining,
            "listeners": list(self.listeners),
            "workers": self.workers_json(),
            "zones": [zone.as_json(self.time) for zone in self.zones],
            "counters": dict(sorted(self.counters.items())),
        }
