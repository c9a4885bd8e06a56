"""`imrs zone ...`: work on zone files outside the server: `imrs zone verify`, `imrs zone fetch`.

:func:`add_zone_commands` registers the ``zone`` group and returns its sub-command set, so
other ``imrs zone`` commands (``fetch``) can be added next to ``verify``; each sets
``zone_handler`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time
from typing import TYPE_CHECKING

import dns.exception

from imrs.zone.parse import ZoneFileError, load_zone_records

if TYPE_CHECKING:
    from imrs.zone.anchor import TrustAnchor

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def add_zone_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``imrs zone`` with its ``verify`` command; returns the group for more commands."""
    zone = sub.add_parser("zone", help="work on zone files: verify, fetch")
    zone_sub = zone.add_subparsers(dest="zone_command", required=True, metavar="COMMAND")
    verify = zone_sub.add_parser(
        "verify",
        help="check a zone file as a new version would be checked before publication",
        description="Check a zone file: sanity (SOA, out-of-zone data), DNSSEC against a trust anchor, "
        "ZONEMD. Exit 0 if it passes, 1 if it is rejected, 2 if it cannot be read.",
    )
    verify.add_argument("file", metavar="FILE", help="master file (plain or gzip)")
    verify.add_argument(
        "--anchor", metavar="FILE", default="iana",
        help="trust anchor: DS or DNSKEY records, or root-anchors.xml; 'iana' (default) for the packaged "
        "IANA root anchor, 'none' to skip DNSSEC",
    )
    verify.add_argument("--at", metavar="YYYYMMDDHHMMSS", help="validation time, UTC (default: now)")
    verify.add_argument("--require-zonemd", action="store_true", help="reject a zone without a verifiable ZONEMD")
    verify.add_argument(
        "--margin", metavar="SECONDS", type=float, default=0.0,
        help="reject signatures that expire less than this long after the validation time",
    )
    verify.add_argument("--origin", metavar="NAME", help="the zone's name (default: the owner of its SOA)")
    verify.add_argument("--previous-serial", metavar="SERIAL", type=int, help="require a serial newer than this")
    verify.set_defaults(zone_handler=verify_main)

    fetch = zone_sub.add_parser(
        "fetch",
        help="fetch a zone from its sources, verify it, and write it as a master file",
        description="Fetch a zone (sources tried in order), verify it as `imrs zone verify` does, and only if it "
        "passes write it to FILE. Exit 0 when written, 1 when every source failed or the zone was rejected, "
        "2 for usage errors.",
    )
    fetch.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="ixfr://ADDR[:PORT], axfr://..., http(s)://..., file:///... or a path; 'rfc8806' "
                       "for the RFC 8806 root sources")
    fetch.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the zone")
    fetch.add_argument("--origin", metavar="NAME", default=".", help="the zone's name (default: the root)")
    fetch.add_argument("--anchor", metavar="FILE",
                       help="trust anchor as for verify; default 'iana' for the root, 'none' otherwise")
    fetch.add_argument("--at", metavar="YYYYMMDDHHMMSS", help="validation time, UTC (default: now)")
    fetch.add_argument("--require-zonemd", action="store_true", help="reject a zone without a verifiable ZONEMD")
    fetch.add_argument("--tsig", metavar="NAME:ALG:SECRET", help="TSIG key for the primaries (?tsig=NAME in a source)")
    fetch.add_argument("--timeout", metavar="SECONDS", type=float, default=30.0, help="per network operation [30]")
    fetch.set_defaults(zone_handler=fetch_main)
    return zone_sub


def zone_main(args: argparse.Namespace) -> int:
    """Run the ``imrs zone`` command parsed into ``args``."""
    return args.zone_handler(args)


_AT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$")


def parse_at(text: str) -> float:
    """YYYYMMDDHHMMSS (UTC, as in RRSIG presentation format) -> seconds since the epoch."""
    match = _AT_RE.match(text.strip())
    if not match:
        raise ValueError(f"--at {text!r}: expected YYYYMMDDHHMMSS (UTC)")
    try:
        when = datetime.datetime(*(int(g) for g in match.groups()), tzinfo=datetime.UTC)
    except ValueError:
        raise ValueError(f"--at {text!r}: not a valid date and time") from None
    return when.timestamp()


def _anchor(spec: str) -> TrustAnchor | None:
    from imrs.zone.anchor import default_root_anchor, load_trust_anchor

    if spec == "none":
        return None
    if spec == "iana":
        return default_root_anchor()
    return load_trust_anchor(spec)


def verify_main(args: argparse.Namespace) -> int:
    """``imrs zone verify``: one line on stdout, exit 0 (OK), 1 (REJECTED) or 2 (cannot check)."""
    # Imported here: `imrs serve` parses the same command line and has no use for them.
    from imrs.zone.anchor import AnchorError
    from imrs.zone.verify import VerificationError, verify_zone

    prog = "imrs zone verify"
    try:
        now = parse_at(args.at) if args.at else None
        if args.margin < 0:
            raise ValueError("--margin must not be negative")
        anchor = _anchor(args.anchor)
    except (ValueError, AnchorError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        zone = load_zone_records(args.file, args.origin)
    except ZoneFileError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    loaded = time.perf_counter() - started
    try:
        report = verify_zone(
            zone, anchor, now=now, require_zonemd=args.require_zonemd,
            signature_margin=args.margin, previous_serial=args.previous_serial,
        )
    except VerificationError as exc:
        print(f"{args.file}: REJECTED: {exc.check}: {exc}")
        return EXIT_REJECTED
    print(f"{os.fspath(args.file)}: OK {report.summary()} (load {loaded:.2f} s)")
    return EXIT_OK


def fetch_main(args: argparse.Namespace) -> int:
    """``imrs zone fetch``: fetch, verify, write; one line on stdout (or stderr for errors)."""
    from imrs.zone.anchor import AnchorError
    from imrs.zone.masterfile import write_master_file
    from imrs.zone.records import name_from_text
    from imrs.zone.sources import (
        RFC8806_ROOT_SOURCES,
        FetchError,
        SourceError,
        fetch_zone,
        parse_source,
    )
    from imrs.zone.transfer import TsigKey
    from imrs.zone.verify import VerificationError, verify_zone

    prog = "imrs zone fetch"
    try:
        now = parse_at(args.at) if args.at else None
        origin = name_from_text(args.origin)
        anchor = _anchor(args.anchor or ("iana" if origin == b"\x00" else "none"))
        keys = {}
        if args.tsig:
            key = TsigKey.from_text(args.tsig)
            keys[key.name] = key
        specs = [s for spec in args.sources for s in (RFC8806_ROOT_SOURCES if spec.lower() == "rfc8806" else (spec,))]
        sources = [parse_source(spec, keys) for spec in specs]
    except (ValueError, AnchorError, SourceError, dns.exception.DNSException) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = fetch_zone(sources, origin, None, timeout=args.timeout)
    except FetchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    zone = result.zone
    assert zone is not None  # with no current copy, any version is news
    try:
        report = verify_zone(zone, anchor, now=now, require_zonemd=args.require_zonemd)
    except VerificationError as exc:
        print(f"{result.source}: REJECTED: {exc.check}: {exc} ({args.output} not written)")
        return EXIT_REJECTED
    try:
        write_master_file(zone, args.output)
    except OSError as exc:
        print(f"{prog}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"{args.output}: serial {zone.serial} from {result.source} ({result.how}), {report.summary()}")
    return EXIT_OK
