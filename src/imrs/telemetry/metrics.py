"""A :class:`~imrs.telemetry.snapshot.Telemetry` as Prometheus metric families.

Conventions of prometheus-client: the ``imrs_`` prefix, ``_total`` counters, base units in
the names (``_seconds``, ``_bytes``), labels instead of one name per value.  The workers'
counters are a flat ``dict[str, int]`` (see :mod:`imrs.serve.traffic` for the traffic keys);
they are mapped by key prefix, so a family appears as soon as its keys do, a key missing is
zero, and a key that no rule knows is still exported (``imrs_<key>_total``) rather than lost.

:func:`render` gives the text exposition format for one snapshot; nothing is kept between
scrapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

import dns.rcode
import dns.rdatatype
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from imrs.answer.cookies import COOKIE_RESULTS
from imrs.telemetry.snapshot import Telemetry

__all__ = ["CONTENT_TYPE", "TelemetryCollector", "qtype_name", "rcode_name", "render"]

#: What :func:`render` makes: the Prometheus text format 0.0.4 (what generate_latest writes,
#: whatever prometheus-client's newest default content type is).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TRANSPORTS = ("udp", "tcp")
FAMILIES = ("ipv4", "ipv6")
EDNS_KINDS = ("none", "plain", "do")
#: Rcodes exported even while zero: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED.
ALWAYS_RCODES = range(6)
#: Upper bounds (microseconds) of the workers' non-cumulative latency buckets.
LATENCY_BOUNDS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000)
#: Size bins of 16 octets; the last bin (this lower bound and over) is open.
REQUEST_SIZE_OPEN = 288
RESPONSE_SIZE_OPEN = 4096

#: Plain counters of the workers and their metric names (``_total`` is added).
_SIMPLE_COUNTERS: dict[str, tuple[str, str]] = {
    "udp_received": ("imrs_udp_received", "UDP datagrams received"),
    "udp_sent": ("imrs_udp_sent", "UDP datagrams sent"),
    "tcp_connections": ("imrs_tcp_connections", "TCP connections accepted"),
    "tcp_queries": ("imrs_tcp_queries", "DNS messages received over TCP"),
    "tcp_refused": ("imrs_tcp_refused", "TCP connections closed at once by the connection caps"),
    "tcp_timeouts": ("imrs_tcp_timeouts", "TCP connections closed by the idle or session timeout"),
    "internal_errors": ("imrs_internal_errors", "queries that hit an internal error"),
    "send_errors": ("imrs_send_errors", "responses the kernel did not take"),
    "errors_limited": ("imrs_error_responses_limited", "FORMERR and NOTIMP responses not sent: over [rrl] error-rate"),
    "udp_shed": ("imrs_udp_shed", "UDP queries read and dropped unanswered: their prefix over its share of a worker behind"),
    "udp_filtered": ("imrs_udp_filtered", "UDP datagrams the kernel filter dropped: their prefix over its share"),
    "udp_overflow": ("imrs_udp_overflow", "UDP datagrams the kernel dropped for a full receive queue while shedding"),
    "truncated": ("imrs_responses_truncated", "responses sent with TC set"),
    "workers_restarted": ("imrs_worker_restarts", "workers restarted after dying"),
}

#: Key prefixes handled by a family of their own.
_FAMILY_PREFIXES = ("queries_", "responses_", "rcode_", "qtype_", "edns_", "request_size_", "response_size_",
                    "latency_", "rrl_", "cookie_", "tld_", "request_octets_", "response_octets_")

_RRL_HELP = {
    "responses": "responses seen by the rate limiter (exempt ones included)",
    "classified": "responses counted in a bucket (their prefix over the gate)",
    "limited": "responses limited (dropped or slipped)",
    "dropped": "responses dropped by the rate limiter",
    "slipped": "responses sent truncated (TC) instead of dropped",
    "exempt": "responses to exempt sources",
    "exempt_cookie": "responses exempt for a valid server cookie",
    "log_only_would_limit": "responses that would have been limited (log-only mode)",
    "blocks": "buckets that started being limited",
    "unblocks": "buckets that stopped being limited",
    "collisions": "bucket slots taken over by another bucket",
    "log_suppressed": "rate limiter log lines suppressed",
}

_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_]")


def rcode_name(key: str) -> str:
    """``rcode_3`` -> ``NXDOMAIN``; rcodes without a name keep their number; ``other``."""
    text = key.removeprefix("rcode_")
    if not text.isdigit():
        return text
    return dns.rcode.to_text(int(text))


def qtype_name(key: str) -> str:
    """``qtype_28`` -> ``AAAA``; unknown types as ``TYPE<N>``; ``other`` (256 and above)."""
    text = key.removeprefix("qtype_")
    return dns.rdatatype.to_text(int(text)) if text.isdigit() else text


def _bins(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    """The keys under ``prefix`` by what follows it (``latency_udp_`` -> {"50": 3, "inf": 1})."""
    return {key[len(prefix):]: value for key, value in counters.items() if key.startswith(prefix)}


def _cumulative(buckets: Iterable[tuple[float, int]], open_count: int) -> list[tuple[str, float]]:
    """Non-cumulative (upper bound, count) bins plus the open bin -> Prometheus buckets."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in buckets:
        running += count
        out.append((repr(float(bound)), float(running)))
    out.append(("+Inf", float(running + open_count)))
    return out


def _size_buckets(bins: Mapping[str, int], open_at: int) -> list[tuple[str, float]]:
    """16-octet bins keyed by their lower bound -> buckets ``le`` = 15, 31, ... (inclusive)."""
    closed = [(lo + 15, bins.get(str(lo), 0)) for lo in range(0, open_at, 16)]
    return _cumulative(closed, sum(v for k, v in bins.items() if k.isdigit() and int(k) >= open_at))


class TelemetryCollector(Collector):
    """A prometheus-client collector over one snapshot (a fresh one per scrape)."""

    def __init__(self, telemetry: Telemetry):
        self.t = telemetry

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._traffic()
        yield from self._simple()
        yield from self._rrl()
        yield from self._cookies()
        yield from self._tlds()
        yield from self._zones()

    # -- the server -----------------------------------------------------------------------
    def _server(self) -> Iterator[Metric]:
        t = self.t
        info = GaugeMetricFamily("imrs_build_info", "imrs version (always 1)", labels=["version"])
        info.add_metric([t.version], 1)
        yield info
        yield GaugeMetricFamily("imrs_start_time_seconds", "when the server started (seconds since the epoch)",
                                value=t.started)
        yield GaugeMetricFamily("imrs_ready", "1 when every zone is served, a worker serves and not draining",
                                value=1 if t.ready else 0)
        yield GaugeMetricFamily("imrs_draining", "1 while drained (imrs drain): /ready fails, queries are answered",
                                value=1 if t.draining else 0)
        yield GaugeMetricFamily("imrs_workers", "workers serving now", value=t.workers_live)
        yield GaugeMetricFamily("imrs_workers_configured", "workers the server runs when all are up",
                                value=t.workers_configured)

    # -- traffic (keys of imrs.serve.traffic) ----------------------------------------------
    def _traffic(self) -> Iterator[Metric]:
        c = self.t.counters
        for what, help_text in (("queries", "DNS messages received"), ("responses", "DNS responses sent")):
            family = CounterMetricFamily(f"imrs_{what}", help_text, labels=["transport", "family"])
            for transport in TRANSPORTS:
                for fam in FAMILIES:
                    family.add_metric([transport, fam], c.get(f"{what}_{transport}_{fam}", 0))
            yield family

        rcodes = CounterMetricFamily("imrs_responses_by_rcode", "responses sent by (extended) rcode", labels=["rcode"])
        # the usual rcodes from the start, so rate() and increase() see their first responses
        seen = dict.fromkeys(map(str, ALWAYS_RCODES), 0) | _bins(c, "rcode_")
        for key, value in sorted(seen.items(), key=lambda kv: _number_first(kv[0])):
            rcodes.add_metric([rcode_name(key)], value)
        yield rcodes

        qtypes = CounterMetricFamily("imrs_queries_by_qtype", "queries whose question parsed, by type", labels=["qtype"])
        for key, value in sorted(_bins(c, "qtype_").items(), key=lambda kv: _number_first(kv[0])):
            qtypes.add_metric([qtype_name(key)], value)
        yield qtypes

        edns = CounterMetricFamily("imrs_queries_by_edns", "queries whose question parsed: no OPT, OPT, OPT with DO",
                                   labels=["edns"])
        for kind in EDNS_KINDS:
            edns.add_metric([kind], c.get(f"edns_{kind}", 0))
        yield edns

        for what, open_at, help_text in (
            ("request", REQUEST_SIZE_OPEN, "size of the DNS messages received"),
            ("response", RESPONSE_SIZE_OPEN, "size of the DNS responses sent"),
        ):
            sizes = HistogramMetricFamily(f"imrs_{what}_size_bytes", f"{help_text} (16-octet bins)",
                                          labels=["transport"])
            for transport in TRANSPORTS:
                sizes.add_metric([transport], _size_buckets(_bins(c, f"{what}_size_{transport}_"), open_at),
                                 float(c.get(f"{what}_octets_{transport}", 0)))
            yield sizes

        latency = HistogramMetricFamily(
            "imrs_processing_latency_seconds",
            "time from receiving to sending, per query (a UDP query counts its receive batch's time)",
            labels=["transport"])
        for transport in TRANSPORTS:
            bins = _bins(c, f"latency_{transport}_")
            buckets = [(bound / 1e6, bins.get(str(bound), 0)) for bound in LATENCY_BOUNDS_US]
            latency.add_metric([transport], _cumulative(buckets, bins.get("inf", 0)),
                               c.get(f"latency_sum_us_{transport}", 0) / 1e6)
        yield latency

    # -- plain counters, and any key no rule knows -----------------------------------------
    def _simple(self) -> Iterator[Metric]:
        c = self.t.counters
        for key, (name, help_text) in _SIMPLE_COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=c.get(key, 0))
        for key in sorted(c):
            if key in _SIMPLE_COUNTERS or key.startswith(_FAMILY_PREFIXES):
                continue
            yield CounterMetricFamily(f"imrs_{_NOT_A_NAME.sub('_', key)}", f"worker counter {key}", value=c[key])

    def _rrl(self) -> Iterator[Metric]:
        for key, value in sorted(_bins(self.t.counters, "rrl_").items()):
            name = _NOT_A_NAME.sub("_", key)
            yield CounterMetricFamily(f"imrs_rrl_{name}", f"response rate limiting: {_RRL_HELP.get(key, key)}",
                                      value=value)

    def _tlds(self) -> Iterator[Metric]:
        tlds = GaugeMetricFamily(
            "imrs_top_tld_queries", "queries for the most queried top-level labels since the workers started "
            "(Space-Saving estimates, each worker's top 50 summed; the root is \".\")", labels=["tld"])
        for label, count in sorted(_bins(self.t.counters, "tld_").items(), key=lambda kv: (-kv[1], kv[0])):
            tlds.add_metric([label], count)
        yield tlds

    def _cookies(self) -> Iterator[Metric]:
        c = self.t.counters
        results = CounterMetricFamily(
            "imrs_cookie_queries", "queries with a DNS COOKIE option, by result (badcookie: BADCOOKIE sent, of the "
            "client_only and invalid ones)", labels=["result"])
        for result in COOKIE_RESULTS:
            results.add_metric([result], c.get(f"cookie_{result}", 0))
        yield results

    # -- zones -----------------------------------------------------------------------------
    def _zones(self) -> Iterator[Metric]:
        now = self.t.time
        labels = ["zone"]
        served = GaugeMetricFamily("imrs_zone_served", "1 when the zone is served (verified, not expired)", labels=labels)
        serial = GaugeMetricFamily("imrs_zone_serial", "SOA serial of the version served", labels=labels)
        age = GaugeMetricFamily("imrs_zone_age_seconds", "seconds since the version served was published",
                                labels=labels)
        signatures = GaugeMetricFamily("imrs_zone_signature_expiry_seconds",
                                       "seconds until the earliest RRSIG of the version served expires", labels=labels)
        expiry = GaugeMetricFamily("imrs_zone_expiry_seconds",
                                   "kept zones: seconds until the SOA expire timer runs out", labels=labels)
        transfer_ok = GaugeMetricFamily("imrs_zone_last_transfer_success",
                                        "kept zones: 1 when the last refresh (transfer or SOA check) succeeded",
                                        labels=labels)
        transfer_at = GaugeMetricFamily("imrs_zone_last_transfer_timestamp_seconds",
                                        "kept zones: when the last refresh started (seconds since the epoch)",
                                        labels=labels)
        success_at = GaugeMetricFamily("imrs_zone_last_success_timestamp_seconds",
                                       "kept zones: when a source was last reached (seconds since the epoch)",
                                       labels=labels)
        checks = CounterMetricFamily("imrs_zone_refresh_checks", "kept zones: refreshes tried", labels=labels)
        failures = CounterMetricFamily("imrs_zone_refresh_failures", "kept zones: refreshes failed, by failed check",
                                       labels=["zone", "check"])
        published = CounterMetricFamily("imrs_zone_versions_published", "kept zones: new versions published",
                                        labels=labels)
        load = GaugeMetricFamily("imrs_zone_last_load_seconds",
                                 "kept zones: seconds from the trigger (NOTIFY or timer) to the last new version served",
                                 labels=labels)
        for zone in self.t.zones:
            name = [zone.name]
            served.add_metric(name, 1 if zone.served else 0)
            if zone.serial is not None:
                serial.add_metric(name, zone.serial)
            facts = zone.facts
            if facts is not None:
                age.add_metric(name, now - facts.published_at)
                if facts.signature_expiration is not None:
                    signatures.add_metric(name, facts.signature_expiration - now)
            if zone.kind != "kept":
                continue
            if zone.expire_at is not None:
                expiry.add_metric(name, zone.expire_at - now)
            if zone.last_transfer_ok is not None:
                transfer_ok.add_metric(name, 1 if zone.last_transfer_ok else 0)
            if zone.last_check is not None:
                transfer_at.add_metric(name, zone.last_check)
            if zone.last_success is not None:
                success_at.add_metric(name, zone.last_success)
            checks.add_metric(name, zone.checks)
            for check, count in sorted(zone.failures.items()):
                failures.add_metric([zone.name, check], count)
            published.add_metric(name, zone.versions_published)
            if zone.last_load_seconds is not None:
                load.add_metric(name, zone.last_load_seconds)
        yield from (served, serial, age, signatures, expiry, transfer_ok, transfer_at, success_at, checks, failures,
                    published, load)


def _number_first(key: str) -> tuple[int, str]:
    """Sort ``3`` before ``12`` before ``other``."""
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def render(telemetry: Telemetry) -> bytes:
    """The Prometheus text exposition format (:data:`CONTENT_TYPE`) of one snapshot."""
    return generate_latest(TelemetryCollector(telemetry))
