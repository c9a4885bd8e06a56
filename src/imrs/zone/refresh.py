"""One refresh of one zone: fetch, verify, save.  Runs in the control-plane process.

Everything slow and untrusted happens here, away from the process that answers queries (as
NSD keeps zone transfers in its xfrd process): talking to sources, parsing what they send,
checking ZONEMD and every signature, and writing the last known good copy.  The functions take
and return plain picklable values, so the data plane only ever receives a version that has
passed every check.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from imrs.config import TsigKeyConfig
from imrs.zone.records import Diff, ZoneRecords

log = logging.getLogger("imrs.refresh")


@dataclass(frozen=True)
class RefreshJob:
    """What the control plane needs to know to refresh one zone."""

    origin: bytes
    sources: tuple[str, ...]
    tsig_keys: tuple[TsigKeyConfig, ...] = ()
    #: "iana", "none" or a path to a DS/DNSKEY file or root-anchors.xml
    anchor: str = "none"
    require_zonemd: bool = False
    signature_margin: float = 0.0
    #: clock for signature validity; None = now
    validation_time: float | None = None
    state_dir: str | None = None
    check_sources: bool = False
    timeout: float = 30.0


@dataclass(frozen=True)
class RefreshOutcome:
    """What came of a refresh (or of loading the saved copy)."""

    #: "new" (a verified new version), "current" (sources have nothing newer), "failed"
    kind: str
    zone: ZoneRecords | None = None
    diffs: tuple[Diff, ...] = ()
    #: which source answered, and how ("ixfr", "axfr", "http", "file", "saved")
    source: str = ""
    how: str = ""
    #: "fetch", "zonemd", "dnssec", "sanity", "store": which step failed
    failed_check: str = ""
    error: str = ""
    summary: str = ""
    #: problems of sources passed over before one answered, and source disagreements
    warnings: tuple[str, ...] = ()
    #: fallbacks taken (IXFR unavailable or not applicable, so AXFR)
    notes: tuple[str, ...] = ()
    fetch_seconds: float = 0.0
    verify_seconds: float = 0.0
    #: SOA timers of the zone now current (refresh, retry, expire)
    timers: tuple[int, int, int] | None = None
    saved_refreshed_at: float | None = None


_anchor_cache: dict[str, object] = {}


def _anchor(spec: str):
    from imrs.zone.anchor import default_root_anchor, load_trust_anchor

    if spec == "none":
        return None
    if spec not in _anchor_cache:
        _anchor_cache[spec] = default_root_anchor() if spec == "iana" else load_trust_anchor(spec)
    return _anchor_cache[spec]


def verify(job: RefreshJob, zone: ZoneRecords, previous_serial: int | None) -> str:
    """Check a version; returns the one-line summary or raises VerificationError."""
    from imrs.zone.anchor import AnchorError
    from imrs.zone.verify import VerificationError, verify_zone

    try:
        anchor = _anchor(job.anchor)
    except (AnchorError, OSError) as exc:
        raise VerificationError("dnssec", f"trust anchor {job.anchor} unusable: {exc}") from None
    report = verify_zone(
        zone,
        anchor,
        now=job.validation_time,
        require_zonemd=job.require_zonemd,
        signature_margin=job.signature_margin,
        previous_serial=previous_serial,
    )
    return report.summary()


def _timers(zone: ZoneRecords) -> tuple[int, int, int]:
    from imrs.zone.records import soa_timers

    _serial, refresh, retry, expire, _minimum = soa_timers(zone.soa.rdata)
    return refresh, retry, expire


def _tsig_keys(job: RefreshJob) -> dict:
    from imrs.zone.transfer import TsigKey

    return {k.name: TsigKey(k.name, k.algorithm, k.secret) for k in job.tsig_keys}


def _failed(check: str, error: str, **kw) -> RefreshOutcome:
    return RefreshOutcome("failed", failed_check=check, error=error, **kw)


def load_saved(job: RefreshJob) -> RefreshOutcome:
    """Load the last known good copy from the state directory and verify it again."""
    from imrs.zone.store import StoreError, ZoneStore
    from imrs.zone.verify import VerificationError

    if job.state_dir is None:
        return _failed("store", "no state directory")
    started = time.monotonic()
    try:
        loaded = ZoneStore(job.state_dir, job.origin).load()
    except StoreError as exc:
        return _failed("store", str(exc))
    if loaded is None:
        return _failed("store", "nothing saved yet")
    zone, state = loaded
    try:
        summary = verify(job, zone, None)
    except VerificationError as exc:
        return _failed(exc.check, f"saved copy no longer passes: {exc}")
    return RefreshOutcome(
        "new", zone, source=zone.source, how="saved", summary=summary, timers=_timers(zone),
        verify_seconds=time.monotonic() - started,
        saved_refreshed_at=state.refreshed_at if state is not None else None,
    )


def refresh(job: RefreshJob, current: ZoneRecords | None) -> RefreshOutcome:
    """Ask the sources for a newer version; fetch, verify and save it if there is one."""
    from imrs.zone.sources import (
        FetchError,
        check_sources,
        disagreements,
        fetch_zone,
        parse_source,
    )
    from imrs.zone.store import ZoneState, ZoneStore
    from imrs.zone.verify import VerificationError

    try:
        keys = _tsig_keys(job)
        sources = [parse_source(spec, keys) for spec in job.sources]
    except Exception as exc:  # noqa: BLE001 - a bad source spec is reported, not raised
        return _failed("fetch", f"bad source: {exc}")
    started = time.monotonic()
    try:
        result = fetch_zone(sources, job.origin, current, timeout=job.timeout)
    except FetchError as exc:
        return _failed("fetch", str(exc), fetch_seconds=time.monotonic() - started)
    fetched = time.monotonic()
    warnings = result.errors
    if job.check_sources:
        try:
            warnings += tuple(disagreements(check_sources(sources, job.origin)))
        except Exception as exc:  # noqa: BLE001 - the check is advisory
            warnings += (f"multi-source check failed: {exc}",)
    source = str(result.source)
    if result.zone is None:  # nothing newer
        return RefreshOutcome("current", source=source, how=result.how, warnings=warnings, notes=result.notes,
                              fetch_seconds=fetched - started)
    zone: ZoneRecords = result.zone
    try:
        summary = verify(job, zone, current.serial if current is not None else None)
    except VerificationError as exc:
        return _failed(exc.check, str(exc), source=source, how=result.how, warnings=warnings, notes=result.notes,
                       fetch_seconds=fetched - started, verify_seconds=time.monotonic() - fetched)
    verified = time.monotonic()
    if job.state_dir is not None:
        try:
            ZoneStore(job.state_dir, job.origin).save(zone, ZoneState(zone.serial, time.time(), source))
        except OSError as exc:
            # Serving the verified version matters more than keeping a copy: warn, go on.
            warnings += (f"could not save the zone: {exc}",)
    return RefreshOutcome(
        "new", zone, diffs=result.diffs, source=source, how=result.how,
        summary=summary, warnings=warnings, notes=result.notes, fetch_seconds=fetched - started,
        verify_seconds=verified - fetched, timers=_timers(zone),
    )


def note_refreshed(job: RefreshJob, serial: int, source: str) -> None:
    """Remember that the sources were reached and the saved copy is still current."""
    from imrs.zone.store import ZoneState, ZoneStore

    if job.state_dir is not None:
        try:
            ZoneStore(job.state_dir, job.origin).save_state(ZoneState(serial, time.time(), source))
        except OSError as exc:
            log.warning("could not save the refresh time: %s", exc)


