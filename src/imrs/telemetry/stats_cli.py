"""`imrs drain [--undo]` and `imrs stats [--json]`: talk to a running server's telemetry endpoint.

Both take ``--http ADDR:PORT``, the address given to `imrs serve --http` (or the ``http`` key
of ``[server]``).  Exit status 0 when the server did what was asked, 1 otherwise (unreachable
included, with a one-line reason), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from imrs.answer.cookies import COOKIE_RESULTS
from imrs.config import ListenAddress, parse_http
from imrs.telemetry.metrics import FAMILIES, TRANSPORTS, qtype_name, rcode_name

#: Seconds to wait for the server.
TIMEOUT = 10.0
#: How many query types `imrs stats` lists.
TOP_QTYPES = 10


class ClientError(Exception):
    """The server could not be asked, or did not answer sensibly; the message says why."""


def add_telemetry_commands(sub: argparse._SubParsersAction) -> None:
    """Add `imrs drain` and `imrs stats` to the `imrs` parser."""
    drain = sub.add_parser("drain", help="make /ready fail (queries are still answered), e.g. before maintenance "
                                         "or an anycast withdrawal; --undo ends it")
    drain.add_argument("--http", metavar="ADDR:PORT", required=True, help="the server's telemetry address")
    drain.add_argument("--undo", action="store_true", help="stop draining: /ready follows the zones again")
    stats = sub.add_parser("stats", help="print a running server's counters")
    stats.add_argument("--http", metavar="ADDR:PORT", required=True, help="the server's telemetry address")
    stats.add_argument("--json", action="store_true", help="print the JSON of /stats as it comes")


def request(address: ListenAddress, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, decoded JSON body) of one request; ClientError when that fails."""
    conn = http.client.HTTPConnection(address.host, address.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
        response = conn.getresponse()
        body = response.read(1 << 24)
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ClientError(f"cannot reach the imrs telemetry endpoint at {address}: {reason}") from None
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        raise ClientError(f"{address}{path}: HTTP {response.status}, not JSON (is this imrs?)") from None
    if not isinstance(data, dict):
        raise ClientError(f"{address}{path}: HTTP {response.status}, unexpected JSON")
    return response.status, data


def telemetry_main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `imrs drain` or `imrs stats`."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        address = parse_http(args.http)
    except ValueError as exc:
        print(f"imrs {args.command}: --http: {exc}", file=err)
        return 2
    try:
        if args.command == "drain":
            return _drain(address, args.undo, out)
        return _stats(address, args.json, out)
    except ClientError as exc:
        print(f"imrs {args.command}: {exc}", file=err)
        return 1


def _drain(address: ListenAddress, undo: bool, out: TextIO) -> int:
    path = "/undrain" if undo else "/drain"
    status, data = request(address, "POST", path)
    if status != 200:
        raise ClientError(f"{path} refused (HTTP {status}): {data.get('error', data)}")
    draining = bool(data.get("draining"))
    if draining != (not undo):
        raise ClientError(f"{path}: the server says draining={draining}")
    reasons = data.get("reasons") or []
    if draining:
        print(f"draining: /ready now fails; queries are still answered (undo: imrs drain --undo --http {address})",
              file=out)
    else:
        state = "ready" if data.get("ready") else f"not ready: {', '.join(map(str, reasons))}"
        print(f"drain ended: {state}", file=out)
    return 0


def _stats(address: ListenAddress, as_json: bool, out: TextIO) -> int:
    status, data = request(address, "GET", "/stats")
    if status != 200:
        raise ClientError(f"/stats: HTTP {status}: {data.get('error', data)}")
    if as_json:
        print(json.dumps(data, indent=1), file=out)
    else:
        out.write(format_stats(data))
    return 0


# -- the terminal view ---------------------------------------------------------------------

def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    left = int(abs(seconds))
    days, left = divmod(left, 86400)
    hours, left = divmod(left, 3600)
    minutes, secs = divmod(left, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m{secs:02d}s"
    return f"{sign}{secs}s"


def _pairs(items: list[tuple[str, int]]) -> str:
    return "  ".join(f"{name} {value:,}" for name, value in items) or "-"


def _prefixed(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {key[len(prefix):]: value for key, value in counters.items() if key.startswith(prefix)}


def format_stats(data: Mapping[str, Any]) -> str:
    """The /stats JSON as a few readable lines per group."""
    c: Mapping[str, int] = data.get("counters") or {}
    lines: list[str] = []

    def row(title: str, text: str) -> None:
        lines.append(f"{title:<12} {text}")

    state = "ready" if data.get("ready") else "NOT READY: " + ", ".join(map(str, data.get("reasons") or []))
    lines.append(f"imrs {data.get('version', '?')}, pid {data.get('pid', '?')}, up {_duration(data.get('uptime'))}"
                 f", {state}  ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data.get('time', time.time())))})")
    for what in ("queries", "responses"):
        cells = [(f"{t.upper()}/{f.replace('ip', 'IP')}", c.get(f"{what}_{t}_{f}", 0)) for t in TRANSPORTS for f in FAMILIES]
        row(what.capitalize(), f"{_pairs(cells)}   total {sum(v for _, v in cells):,}")
    rcodes = sorted(_prefixed(c, "rcode_").items(), key=lambda kv: -kv[1])
    row("Rcodes", _pairs([(rcode_name(key), value) for key, value in rcodes]))
    qtypes = sorted(_prefixed(c, "qtype_").items(), key=lambda kv: -kv[1])
    shown = [(qtype_name(key), value) for key, value in qtypes[:TOP_QTYPES]]
    rest = sum(value for _, value in qtypes[TOP_QTYPES:])
    row("Top qtypes", _pairs(shown) + (f"  (others {rest:,})" if rest else ""))
    tlds = sorted(_prefixed(c, "tld_").items(), key=lambda kv: (-kv[1], kv[0]))
    row("Top TLDs", _pairs(tlds[:TOP_QTYPES]))
    row("EDNS", _pairs([("none", c.get("edns_none", 0)), ("plain", c.get("edns_plain", 0)), ("DO", c.get("edns_do", 0))]))
    row("Truncated", f"{c.get('truncated', 0):,}")
    row("UDP", _pairs([("received", c.get("udp_received", 0)), ("sent", c.get("udp_sent", 0)),
                       ("send errors", c.get("send_errors", 0)), ("errors limited", c.get("errors_limited", 0))]))
    row("Shedding", _pairs([("shed", c.get("udp_shed", 0)), ("filtered", c.get("udp_filtered", 0)),
                            ("overflow", c.get("udp_overflow", 0))]))
    row("TCP", _pairs([("connections", c.get("tcp_connections", 0)), ("queries", c.get("tcp_queries", 0)),
                       ("refused", c.get("tcp_refused", 0)), ("timeouts", c.get("tcp_timeouts", 0))]))
    rrl = _prefixed(c, "rrl_")
    order = ("responses", "limited", "dropped", "slipped", "exempt", "exempt_cookie", "log_only_would_limit", "blocks")
    row("RRL", _pairs([(key, rrl[key]) for key in order if key in rrl]))
    cookies = _prefixed(c, "cookie_")
    row("Cookies", _pairs([(key.replace("_", " "), cookies[key]) for key in COOKIE_RESULTS if key in cookies]))
    workers = data.get("workers") or {}
    row("Workers", f"{workers.get('live', 0)} live of {workers.get('count', 0)}, {workers.get('restarts', 0)} restarts"
                   f", internal errors {c.get('internal_errors', 0):,}")
    if data.get("draining"):
        row("Draining", "yes: /ready fails, queries are answered")
    row("Listeners", ", ".join(data.get("listeners") or []) or "-")
    for zone in data.get("zones") or []:
        parts = [f"serial {zone.get('serial')}", str(zone.get("state")), f"validation {zone.get('validation')}"]
        parts.append(f"age {_duration(zone.get('age_seconds'))}")
        if zone.get("signature_expiry_seconds") is not None:
            parts.append(f"signatures expire in {_duration(zone['signature_expiry_seconds'])}")
        if zone.get("expiry_seconds") is not None:
            parts.append(f"zone expires in {_duration(zone['expiry_seconds'])}")
        if zone.get("last_transfer_ok") is not None:
            parts.append("last refresh ok" if zone["last_transfer_ok"] else f"last refresh FAILED: {zone.get('last_error')}")
        row(f"Zone {zone.get('zone')}", ", ".join(parts))
    return "\n".join(lines) + "\n"
