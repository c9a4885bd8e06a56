"""Run the NSD differential by hand and print the report.

    cd tests && ../.venv/bin/python -m peers [--zone FILE] [--seed N]
        [--imrs 127.0.0.1:5391]   # use a running imrs instead of starting one
        [--category tld/]         # only corpus entries whose category starts so
        [--per-category] [--transport udp|tcp]

Exit status 1 if there are unlisted differences.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .compare import differential
from .corpus import build_corpus
from .imrs_server import ImrsServer
from .known_differences import KNOWN_DIFFERENCES
from .nsd_server import NsdServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zone", default="/work/shared/zones/testroot/root-2026082201.zone")
    ap.add_argument("--seed", type=int, default=20260822)
    ap.add_argument("--imrs", help="HOST:PORT of a running imrs (default: start one)")
    ap.add_argument("--category", action="append", default=[], help="category prefix filter (repeatable)")
    ap.add_argument("--transport", action="append", choices=["udp", "tcp"])
    ap.add_argument("--per-category", action="store_true")
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args(argv)

    zone = Path(args.zone).resolve()
    t0 = time.monotonic()
    corpus = build_corpus(zone, args.seed)
    if args.category:
        corpus = [e for e in corpus if any(e.category.startswith(c) for c in args.category)]
    print(f"corpus: {len(corpus)} queries ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="imrs-peers-"))
    imrs = None
    with NsdServer(zone, work / "nsd") as nsd:
        try:
            if args.imrs:
                host, _, port = args.imrs.rpartition(":")
                imrs_addr = (host.strip("[]"), int(port))
            else:
                imrs = ImrsServer(zone, work / "imrs").start()
                imrs_addr = imrs.addr
                print(f"imrs up in {imrs.startup_seconds:.1f}s", file=sys.stderr)
            rep = differential(corpus, ("nsd", nsd.addr), ("imrs", imrs_addr), known=KNOWN_DIFFERENCES, zone=zone,
                               transports=args.transport or ("udp", "tcp"), max_examples=args.examples)
        finally:
            if imrs is not None:
                imrs.stop()
    print(rep.format(per_category=args.per_category))
    return 1 if rep.n_unlisted else 0


if __name__ == "__main__":
    raise SystemExit(main())
