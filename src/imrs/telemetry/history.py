"""The last hour of traffic, for the dashboard (``GET /`` and ``GET /history``).

The supervisor samples its workers' cumulative counters every ``interval`` seconds (10 by
default) into a ring buffer of an hour's samples; rates are the differences between
consecutive samples.  Nothing here touches the data plane: a sample is the same counters
request a ``/metrics`` scrape makes.  :func:`dashboard_json` adds what the page shows of the
latest snapshot (zones, qtypes, top TLDs, transport and size mix, rate limiting).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from imrs.telemetry.metrics import qtype_name
from imrs.telemetry.snapshot import Telemetry, TelemetryUnavailable

log = logging.getLogger("imrs.history")

#: Seconds between samples unless told otherwise.
DEFAULT_INTERVAL = 10.0
#: Seconds of history kept.
KEEP_SECONDS = 3600.0

#: The rcodes the page shows by name (everything else is "other").
RCODES = {"NOERROR": "rcode_0", "NXDOMAIN": "rcode_3", "REFUSED": "rcode_5", "FORMERR": "rcode_1"}
#: Coarse response-size bins for the page: (label, lowest octet count), each up to the next.
SIZE_BINS = (("<64", 0), ("64-127", 64), ("128-255", 128), ("256-511", 256), ("512-1023", 512),
             ("1024-1231", 1024), ("1232-2047", 1232), ("2048-4095", 2048), ("4096+", 4096))
#: How many qtypes and TLDs the page lists.
TOP_QTYPES = 10
TOP_TLDS = 10


def selected(counters: Mapping[str, int]) -> dict[str, int]:
    """The cumulative counters a sample keeps, summed the way the page shows them."""
    rcodes = {name: counters.get(key, 0) for name, key in RCODES.items()}
    every_rcode = sum(v for k, v in counters.items() if k.startswith("rcode_"))
    out = {f"rcode_{name}": value for name, value in rcodes.items()}
    out["rcode_other"] = max(0, every_rcode - sum(rcodes.values()))
    out["responses"] = every_rcode
    out["queries"] = sum(v for k, v in counters.items() if k.startswith("queries_"))
    for part in ("udp", "tcp", "ipv4", "ipv6"):
        out[part] = sum(v for k, v in counters.items() if k.startswith("queries_") and part in k.split("_")[1:])
    for key in ("rrl_dropped", "rrl_slipped"):
        out[key] = counters.get(key, 0)
    return out


@dataclass(frozen=True)
class Sample:
    """One reading: wall-clock time and the selected cumulative counters."""

    time: float
    values: Mapping[str, int]


def rate(earlier: Sample, later: Sample) -> dict[str, object]:
    """Per-second rates between two samples (a counter that went down, a restarted worker's,
    counts as 0), and the share of NXDOMAIN among the responses (None without responses)."""
    span = max(later.time - earlier.time, 1e-3)
    delta = {k: max(0, v - earlier.values.get(k, 0)) for k, v in later.values.items()}
    per_second = {k: round(v / span, 3) for k, v in delta.items()}
    responses = delta.get("responses", 0)
    return {
        "t": round(later.time, 3),
        "seconds": round(span, 3),
        "qps": per_second.get("queries", 0.0),
        "rps": per_second.get("responses", 0.0),
        "rcode": {name: per_second.get(f"rcode_{name}", 0.0) for name in (*RCODES, "other")},
        "transport": {part: per_second.get(part, 0.0) for part in ("udp", "tcp", "ipv4", "ipv6")},
        "rrl": {"dropped": per_second.get("rrl_dropped", 0.0), "slipped": per_second.get("rrl_slipped", 0.0)},
        "junk": round(delta.get("rcode_NXDOMAIN", 0) / responses, 4) if responses else None,
    }


class History:
    """A ring buffer of samples taken every ``interval`` seconds from ``snapshot``."""

    def __init__(self, snapshot: Callable[[bool], Awaitable[Telemetry]], interval: float = DEFAULT_INTERVAL,
                 keep_seconds: float = KEEP_SECONDS):
        self.snapshot = snapshot
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=max(2, int(keep_seconds / interval) + 1))

    def add(self, telemetry: Telemetry) -> None:
        """Keep one reading (skipped while no worker has counted anything yet)."""
        if telemetry.counters:
            self.samples.append(Sample(telemetry.time, selected(telemetry.counters)))

    async def sample(self) -> None:
        """Take one reading now; a failed one is skipped (the next comes in ``interval``)."""
        try:
            self.add(await self.snapshot(True))
        except TelemetryUnavailable as exc:
            log.debug("history: sample skipped: %s", exc)
        except Exception:  # a bug here must not stop the sampling, nor the supervisor
            log.exception("history: sample failed")

    async def run(self) -> None:
        """Sample at once, then every ``interval`` seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.sample()
            next_at = max(next_at + self.interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def rates(self) -> list[dict[str, object]]:
        """The rates over each interval kept, oldest first."""
        samples = list(self.samples)
        return [rate(a, b) for a, b in itertools.pairwise(samples)]


def _size_mix(counters: Mapping[str, int], what: str) -> list[list[object]]:
    """``{what}_size_*`` counters (16-octet bins, both transports) in the coarse bins above."""
    counts = [0] * len(SIZE_BINS)
    for key, value in counters.items():
        if not key.startswith(f"{what}_size_"):
            continue
        low = key.rsplit("_", 1)[1]
        if not low.isdigit():
            continue
        index = max(i for i, (_label, start) in enumerate(SIZE_BINS) if int(low) >= start)
        counts[index] += value
    return [[label, count] for (label, _start), count in zip(SIZE_BINS, counts, strict=True)]


def dashboard_json(telemetry: Telemetry, history: History | None, instance: str) -> dict[str, object]:
    """What the dashboard draws: the rates kept, and the latest snapshot (with counters)."""
    c = telemetry.counters
    qtypes = sorted(((qtype_name(k), v) for k, v in c.items() if k.startswith("qtype_") and v), key=lambda kv: -kv[1])
    tlds = sorted(((k.removeprefix("tld_"), v) for k, v in c.items() if k.startswith("tld_")), key=lambda kv: (-kv[1], kv[0]))
    totals = selected(c)
    zones = []
    for zone in telemetry.zones:
        data = zone.as_json(telemetry.time)
        zones.append({key: data[key] for key in ("zone", "kind", "serial", "validation", "served", "age_seconds",
                                                 "signature_expiry_seconds", "expiry_seconds")})
    return {
        "instance": instance,
        "version": telemetry.version,
        "time": telemetry.time,
        "uptime": round(telemetry.uptime, 1),
        "interval": history.interval if history is not None else None,
        "ready": telemetry.ready,
        "reasons": telemetry.not_ready(),
        "draining": telemetry.draining,
        "workers": telemetry.workers_json(),
        "zones": zones,
        "series": history.rates() if history is not None else [],
        "totals": totals,
        "junk": round(totals["rcode_NXDOMAIN"] / totals["responses"], 4) if totals["responses"] else None,
        "qtypes": [[name, count] for name, count in qtypes[:TOP_QTYPES]],
        "tlds": [[name, count] for name, count in tlds[:TOP_TLDS]],
        "tld_queries": sum(v for k, v in c.items() if k.startswith("qtype_")),
        "transport": {f"{t}_{f}": c.get(f"queries_{t}_{f}", 0) for t in ("udp", "tcp") for f in ("ipv4", "ipv6")},
        "sizes": {"response": _size_mix(c, "response"), "request": _size_mix(c, "request")},
        "truncated": c.get("truncated", 0),
        "rrl": {key: c.get(f"rrl_{key}", 0) for key in ("responses", "limited", "dropped", "slipped")},
    }
