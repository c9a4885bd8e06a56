"""`imrs zone ...`: offline work on zone files.  `imrs zone verify` lives here.

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
import dns.zone

from imrs.zone.parse import ZoneFileError
from imrs.zone.records import ZoneRecords, records_from_dnspython_zone

if TYPE_CHECKING:
    from imrs.zone.anchor import TrustAnchor

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def add_zone_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``imrs zone`` with its ``verify`` command; returns the group for more commands."""
    zone = sub.add_parser("zone", help="work on zone files: verify")
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


def load_records(path: str, origin: str | None = None) -> ZoneRecords:
    """The zone file's records, through the project's parser when it has a flat-record loader."""
    try:
        from imrs.zone.parse import load_zone_records
    except ImportError:  # older parse.py: dnspython directly
        try:
            zone = dns.zone.from_file(path, origin=origin, relativize=False)
        except OSError as exc:
            raise ZoneFileError(path, None, exc.strerror or str(exc)) from None
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            raise ZoneFileError(path, None, str(exc) or type(exc).__name__) from None
        return records_from_dnspython_zone(zone, path)
    return load_zone_records(path, origin)


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
        zone = load_records(args.file, args.origin)
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
