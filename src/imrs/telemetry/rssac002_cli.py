"""The command line of RSSAC002 reports: ``imrs rssac002 merge`` (several instances' files into
the service's, :func:`imrs.telemetry.rssac002_merge.merge`) and ``imrs rssac002 check`` (one line
per file: OK, or why it is rejected)."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from imrs.telemetry.rssac002 import (
    _PREFIX_RE,
    Rssac002Error,
    default_prefix,
    find_reports,
    load_report,
    load_sketch,
    normalize_service,
    report_name,
    sketch_path,
    write_day,
)
from imrs.telemetry.rssac002_merge import DEFAULT_LOAD_TIME_PERCENTILE, merge
from imrs.telemetry.unique_sources import DEFAULT_EXACT_THRESHOLD

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def add_rssac002_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``imrs rssac002`` with ``merge`` and ``check``; returns the group for more commands.
    Each command sets ``rssac002_handler``, which :func:`rssac002_main` runs."""
    group = sub.add_parser("rssac002", help="RSSAC002 daily reports: merge instances' files, check files")
    group_sub = group.add_subparsers(dest="rssac002_command", required=True, metavar="COMMAND")
    merge_cmd = group_sub.add_parser(
        "merge",
        help="merge several instances' RSSAC002 files for one day into the service's",
        description="Merge several instances' RSSAC002 v5 files for one UTC day (files, or directories "
        "holding <prefix>-YYYYMMDD-<metric>.yaml files) into one service-wide set written to --out: counts "
        "summed, unique sources united through the .sketch files, load time the 95th percentile over "
        "instances. Exit 0 when written, 1 when an input is rejected, 2 for usage errors.",
    )
    merge_cmd.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="instance files or directories")
    merge_cmd.add_argument("--out", required=True, metavar="DIR", help="where to write the merged files")
    merge_cmd.add_argument("--service", metavar="NAME", help="service of the merged files (default: the inputs')")
    merge_cmd.add_argument("--prefix", metavar="PREFIX", help="file name prefix (default: from the service, l-root)")
    merge_cmd.add_argument("--day", metavar="YYYY-MM-DD", help="the day to merge, when directories hold several")
    merge_cmd.add_argument(
        "--load-time-percentile", metavar="P", type=float, default=DEFAULT_LOAD_TIME_PERCENTILE,
        help="a serial's merged load time: this percentile (nearest rank) over instances [95]",
    )
    merge_cmd.add_argument(
        "--exact-threshold", metavar="N", type=int, default=DEFAULT_EXACT_THRESHOLD,
        help=f"count sources exactly up to N per family, then by HyperLogLog [{DEFAULT_EXACT_THRESHOLD}]",
    )
    merge_cmd.set_defaults(rssac002_handler=merge_main)
    check = group_sub.add_parser(
        "check",
        help="check RSSAC002 v5 files: header, keys, bins, counts, sketches",
        description="Check RSSAC002 v5 files (or directories of them): one line each. Exit 0 if all "
        "pass, 1 if any is rejected, 2 for usage errors.",
    )
    check.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    check.set_defaults(rssac002_handler=check_main)
    return group_sub


def rssac002_main(args: argparse.Namespace) -> int:
    """Run the ``imrs rssac002`` command parsed into ``args``; returns the exit status."""
    return args.rssac002_handler(args)


def merge_main(args: argparse.Namespace) -> int:
    """``imrs rssac002 merge``: one line on stdout when written, errors on stderr."""
    prog = "imrs rssac002 merge"
    try:
        day = datetime.date.fromisoformat(args.day) if args.day else None
        service = normalize_service(args.service) if args.service else None
        if args.prefix is not None and not _PREFIX_RE.match(args.prefix):
            raise ValueError(f"--prefix {args.prefix!r}: letters, digits, '.', '_' and '-' only")
        if not 0 < args.load_time_percentile <= 100:
            raise ValueError("--load-time-percentile must be in (0, 100]")
        if args.exact_threshold < 0:
            raise ValueError("--exact-threshold must not be negative")
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        merged = merge(args.inputs, service, day=day, exact_threshold=args.exact_threshold,
                       load_time_percentile=args.load_time_percentile)
        out = Path(args.out)
        prefix = args.prefix or default_prefix(merged.service)
        for metric in merged.metrics:  # instance files of one service share names: keep them whole
            target = (out / report_name(prefix, merged.day, metric)).resolve()
            if any(target == path.resolve() for path in merged.files):
                raise Rssac002Error(f"{target}: is an input; choose another --out or --prefix")
        written = write_day(out, merged.service, merged.day, merged.counters, prefix=prefix, metrics=merged.metrics)
    except Rssac002Error as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:
        print(f"{prog}: cannot write {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REJECTED
    names = ", ".join(path.name for path in written)
    print(f"{args.out}: {merged.service} {merged.day}: merged {merged.instances} instance(s): {names}")
    return EXIT_OK


def check_main(args: argparse.Namespace) -> int:
    """``imrs rssac002 check``: one line per file, ``OK`` or the reason it is rejected."""
    try:
        paths = find_reports(args.inputs)
    except Rssac002Error as exc:
        print(f"imrs rssac002 check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for path in paths:
        try:
            report = load_report(path)
            note = ""
            if report.metric == "unique-sources":
                if sketch_path(path).exists():
                    load_sketch(report)
                    note = ", sketch OK"
                else:
                    note = ", no sketch (cannot be merged)"
        except Rssac002Error as exc:
            print(exc)  # every message names the file
            status = EXIT_REJECTED
            continue
        print(f"{path}: OK {report.metric} {report.day} {report.service}{note}")
    return status
