"""Merging RSSAC002 v5 daily files: several instances' files for one day into one
service-wide set (written with :func:`imrs.telemetry.rssac002.write_day`).

:func:`merge` adds several instances' files for one day: traffic counters, size bins and RCODEs
are summed; unique sources are merged through the sketches (a missing sketch is an error); a
serial's load time is the strict 95th percentile (nearest rank) of the instances that report it,
as RSSAC002 defines the service's load time as the time until 95 % of its instances serve the new
zone. With 19 instances or fewer that is the largest of them.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imrs.telemetry.rssac002 import (
    METRICS,
    REQUEST_OPEN_BIN,
    RESPONSE_OPEN_BIN,
    TRAFFIC_SIZES_KEYS,
    TRAFFIC_VOLUME_KEYS,
    DayCounters,
    Metric,
    Report,
    Rssac002Error,
    find_reports,
    load_report,
    load_sketch,
    normalize_service,
    parse_bin_label,
    sketch_path,
)
from imrs.telemetry.unique_sources import DEFAULT_EXACT_THRESHOLD

DEFAULT_LOAD_TIME_PERCENTILE = 95.0


@dataclass
class MergedDay:
    """The service-wide counts :func:`merge` made of several instances' files."""

    service: str
    day: datetime.date
    counters: DayCounters
    metrics: tuple[Metric, ...]  # those found in the inputs, in METRICS order
    instances: int  # files per metric
    files: tuple[Path, ...]


def percentile_nearest_rank(values: Sequence[int], percentile: float) -> int:
    """The strict (nearest-rank) percentile: the smallest value that at least ``percentile`` %
    of ``values`` do not exceed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def merge(
    inputs: Iterable[str | os.PathLike[str]],
    service: str | None = None,
    *,
    day: datetime.date | None = None,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    load_time_percentile: float = DEFAULT_LOAD_TIME_PERCENTILE,
) -> MergedDay:
    """Merge several instances' RSSAC002 files (files, or directories of them) for one day.

    Counters, size bins and RCODEs are summed; unique sources are united through the ``.sketch``
    files (one missing is an error); a serial's load time is the ``load_time_percentile``
    (nearest rank, default the spec's 95) of the instances that report it. The inputs must all
    be RSSAC002 v5 files of one day (``day`` picks it from directories holding several), of one
    service unless ``service`` names the merged one, and must hold as many files of each metric.
    Raises :class:`Rssac002Error` naming the file at fault.
    """
    if not 0 < load_time_percentile <= 100:
        raise ValueError(f"load-time percentile must be in (0, 100], not {load_time_percentile}")
    out_service = None if service is None else normalize_service(service)
    paths = find_reports(inputs, day)
    if not paths:
        raise Rssac002Error("no input files")
    reports = [load_report(path) for path in paths]
    wanted_day = day
    for report in reports:
        if wanted_day is None:
            wanted_day = report.day
        elif report.day != wanted_day:
            days = sorted({str(r.day) for r in reports})
            hint = "" if day else f" (inputs cover {', '.join(days)}; choose one)"
            raise Rssac002Error(f"{report.path}: is for {report.day}, not {wanted_day}{hint}")
    assert wanted_day is not None
    if out_service is None:
        services = sorted({report.service for report in reports})
        if len(services) > 1:
            raise Rssac002Error(f"inputs are for several services ({', '.join(services)}): name the merged one")
        out_service = services[0]
    by_metric: dict[str, list[Report]] = {}
    for report in reports:
        by_metric.setdefault(report.metric, []).append(report)
    counts = {metric: len(group) for metric, group in by_metric.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{n} {metric}" for metric, n in sorted(counts.items()))
        raise Rssac002Error(f"mismatched metrics: every instance must supply the same ones, found {listing}")
    counters = DayCounters.new(exact_threshold)
    serial_times: dict[int, list[int]] = {}
    for report in reports:
        _add_report(counters, report, serial_times, exact_threshold)
    counters.load_times = {
        serial: percentile_nearest_rank(times, load_time_percentile) for serial, times in serial_times.items()
    }
    metrics = tuple(metric for metric in METRICS if metric in by_metric)
    return MergedDay(out_service, wanted_day, counters, metrics, next(iter(counts.values())), tuple(paths))


def _add_report(counters: DayCounters, report: Report, serial_times: dict[int, list[int]], exact_threshold: int) -> None:
    values = report.values
    if report.metric == "traffic-volume":
        for key, kind, transport, family in TRAFFIC_VOLUME_KEYS:
            table = counters.queries if kind == "queries" else counters.responses
            table[(transport, family)] += values[key]
    elif report.metric == "traffic-sizes":
        for key, transport, kind in TRAFFIC_SIZES_KEYS:
            bins = (counters.request_sizes if kind == "request" else counters.response_sizes)[transport]
            open_from = REQUEST_OPEN_BIN if kind == "request" else RESPONSE_OPEN_BIN
            for label, count in values[key].items():
                bins[parse_bin_label(label, open_from)] += count
    elif report.metric == "rcode-volume":
        for rcode, count in values.items():
            counters.rcodes[rcode] = counters.rcodes.get(rcode, 0) + count
    elif report.metric == "unique-sources":
        sets = load_sketch(report, exact_threshold)
        for key, sources in counters.source_sets().items():
            try:
                sources.update(sets[key])
            except ValueError as exc:
                raise Rssac002Error(f"{sketch_path(report.path)}: {key}: {exc}") from None
    elif report.metric == "load-time":
        for serial, seconds in values["time"].items():
            serial_times.setdefault(serial, []).append(seconds)
