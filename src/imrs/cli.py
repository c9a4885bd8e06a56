"""The `imrs` command: `imrs serve`, `imrs check-config`, `imrs zone ...`, `imrs selftest`,
`imrs rssac002 merge|check`, `imrs drain`, `imrs stats`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from imrs import __version__
from imrs.config import (
    ConfigError,
    check_config_main,
    default_settings,
    load_config,
    with_overrides,
)
from imrs.zone.parse import ZoneFileError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imrs", description="A DNS root server instance.")
    parser.add_argument("--version", action="version", version=f"imrs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the root zone (the embedded copy unless --zone or --config say otherwise)")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--zone", metavar="FILE", action="append", help="master file to serve (repeatable; replaces configured zones)")
    serve.add_argument(
        "--listen", metavar="ADDR:PORT", action="append",
        help="address to listen on, e.g. 127.0.0.1:5300 or [::1]:5300 (repeatable; replaces the default listeners)",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override the configured log level")
    serve.add_argument(
        "--primary", metavar="ADDR:PORT", action="append",
        help="follow this primary for the root zone: IXFR (AXFR fallback), NOTIFY accepted from it (repeatable; "
             "replaces the configured zones)",
    )
    serve.add_argument("--anchor", metavar="FILE",
                       help="trust anchor (DS/DNSKEY file or root-anchors.xml) every zone is verified against; "
                            "default for --primary: the packaged IANA root anchor")
    serve.add_argument("--state-dir", metavar="DIR", help="keep the last verified version of kept zones here")
    serve.add_argument("--at", metavar="YYYYMMDDHHMMSS",
                       help="validate signatures as if it were this time (UTC), e.g. for old zones in tests")

    serve.add_argument("--workers", metavar="N", type=int,
                       help="data-plane processes sharing the listeners (default: one per core; 0 = one per core)")
    serve.add_argument("--rrl-rate", metavar="N", type=int,
                       help="response rate limit: responses per second per client prefix and category (0 = off; default 200)")
    serve.add_argument("--http", metavar="ADDR:PORT",
                       help="serve /metrics (Prometheus), /health, /ready and /stats here, e.g. 127.0.0.1:8053 "
                            "(off by default; 'off' disables a configured one)")

    check = sub.add_parser("check-config", help="check a configuration file and report every error with file, line and key")
    check.add_argument("file")

    from imrs.zone.zone_cli import add_zone_commands

    add_zone_commands(sub)  # `imrs zone verify ...`; returns the group for more `imrs zone` commands

    from imrs.selftest import add_selftest_command
    from imrs.telemetry.rssac002_cli import add_rssac002_commands

    add_selftest_command(sub)  # `imrs selftest ADDR[:PORT] ...`
    add_rssac002_commands(sub)  # `imrs rssac002 merge|check ...`

    from imrs.telemetry.stats_cli import add_telemetry_commands

    add_telemetry_commands(sub)  # `imrs drain`, `imrs stats`
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s imrs[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> int:
    from imrs.serve.server import StartupError, serve

    try:
        settings = load_config(args.config) if args.config else default_settings()
        settings = with_overrides(settings, listen=args.listen, zones=args.zone, primaries=args.primary,
                                  anchor=args.anchor, state_dir=args.state_dir, at=args.at,
                                  workers=args.workers, rrl_rate=args.rrl_rate, http=args.http)
    except ConfigError as exc:
        print(f"imrs: {exc}", file=sys.stderr)
        return 2
    if args.log_level:  # the workers log at the settings' level too
        settings = dataclasses.replace(settings, log_level=args.log_level)
    _setup_logging(settings.log_level)
    try:
        serve(settings)
    except ZoneFileError as exc:
        print(f"imrs: zone error: {exc}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"imrs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check-config":
        return check_config_main(args.file)
    if args.command == "zone":
        from imrs.zone.zone_cli import zone_main

        return zone_main(args)
    if args.command == "selftest":
        from imrs.selftest import selftest_main

        return selftest_main(args)
    if args.command == "rssac002":
        from imrs.telemetry.rssac002_cli import rssac002_main

        return rssac002_main(args)
    if args.command in ("drain", "stats"):
        from imrs.telemetry.stats_cli import telemetry_main

        return telemetry_main(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
