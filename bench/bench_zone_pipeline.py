"""How fast a new root zone version gets from its source to the answers.

Two figures, each against the goal the project set:

1. **Load + full verification** of the root zone (parse, ZONEMD, every RRSIG from the trust
   anchor): imrs's ``imrs zone verify`` as a whole command, and the load + verify steps timed
   inside one process, next to ``ldns-verify-zone`` on the same file and to dnspython's
   ``dns.zone.from_file`` alone.  Goal: ≤ 2 s.
2. **NOTIFY to served** (the load-time RSSAC002 counts): a real NSD primary serves the four
   test-root versions one after the other; each reload makes it send NOTIFY; the time from the
   reload to imrs answering the new serial is measured, while a client keeps asking (its
   failures are counted: there should be none).  Goal: ≤ 5 s.

A benchmark, not a test: it prints figures and never fails on them.  All traffic stays on
127.0.0.1; every wait is bounded.  Unlike the other benchmarks it needs the project's venv
(dnspython, and the tests' NSD primary helper).

    .venv/bin/python bench/bench_zone_pipeline.py [--rounds 5] [--follow-rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
from benchlib import REPO, SHARED, default_python, free_port, log

sys.path.insert(0, str(REPO / "tests"))
from peers.nsd_primary import NsdPrimary  # the tests' NSD primary helper

TESTROOT = SHARED / "zones/testroot"
AUTHENTIC = SHARED / "zones/authentic"
VERSIONS = [TESTROOT / f"root-{s}.zone" for s in ("2026082101", "2026082102", "2026082200", "2026082201")]

IN_PROCESS = """
import sys, time
t0 = time.perf_counter()
from imrs.zone.anchor import load_trust_anchor
from imrs.zone.parse import load_zone_records
from imrs.zone.verify import verify_zone
t1 = time.perf_counter()
zone = load_zone_records(sys.argv[1])
t2 = time.perf_counter()
report = verify_zone(zone, load_trust_anchor(sys.argv[2]), now=float(sys.argv[3]) if sys.argv[3] != '-' else None)
t3 = time.perf_counter()
print(f"{t2 - t1:.3f} {t3 - t2:.3f} {report.signatures}")
"""


def timed(cmd: list[str], timeout: float = 120) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return time.perf_counter() - started, done


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def verify_figures(rounds: int, python: str) -> None:
    env_python = [python]
    ldns = shutil.which("ldns-verify-zone")
    cases = [("test root 2026082201", VERSIONS[-1], TESTROOT / "root.ds", None, "-"),
             ("authentic root 2017082100", AUTHENTIC / "root-2017082100.zone", AUTHENTIC / "root.ds",
              "20170821120000", "1503316800")]
    for label, zone, anchor, at, epoch in cases:
        cli, steps, ldns_times, dnspython = [], [], [], []
        notes = set()
        for _ in range(rounds):
            cmd = [*env_python, "-m", "imrs", "zone", "verify", str(zone), "--anchor", str(anchor)]
            took, done = timed(cmd + (["--at", at] if at else []))
            if done.returncode != 0:
                log(f"imrs zone verify failed: {done.stdout}{done.stderr}")
            cli.append(took)
            _, done = timed([*env_python, "-c", IN_PROCESS, str(zone), str(anchor), epoch])
            load, verify, _sigs = done.stdout.split()
            steps.append(float(load) + float(verify))
            if ldns:
                # -ZZ: a valid ZONEMD and a valid DNSSEC signature chain are both required.
                args = [ldns, "-k", str(anchor), "-ZZ", str(zone)]
                if at:
                    # The 2017 zone has no ZONEMD, and its signatures are checked at its time (-t).
                    args = [ldns, "-k", str(anchor), "-t", at, str(zone)]
                took, done = timed(args)
                if done.returncode != 0:
                    notes.add(f"ldns-verify-zone exit {done.returncode}: {(done.stdout + done.stderr).strip()[:200]}")
                ldns_times.append(took)
            took, _ = timed([*env_python, "-c",
                             f"import dns.zone; dns.zone.from_file({str(zone)!r}, origin='.', relativize=False)"])
            dnspython.append(took)
        goal = statistics.median(steps) <= 2.0
        print(f"\n{label} ({zone.name})")
        print(f"  imrs load + verify (in process):       {summary(steps)}   goal <= 2 s: {'PASS' if goal else 'MISS'}")
        print(f"  imrs zone verify (whole command):      {summary(cli)}")
        if ldns_times:
            print(f"  ldns-verify-zone (whole command):      {summary(ldns_times)}")
        print(f"  dnspython dns.zone.from_file alone:    {summary(dnspython)}")
        for note in sorted(notes):
            print(f"  note: {note}")


class SteadyAsker(threading.Thread):
    """Asks SOA and com. NS at a steady pace; counts answers and failures."""

    def __init__(self, port: int, rate: float = 300.0):
        super().__init__(daemon=True)
        self.port, self.pause = port, 1.0 / rate
        self.stop = threading.Event()
        self.asked = self.failed = 0

    def run(self) -> None:
        queries = [dns.message.make_query(".", "SOA").to_wire(), dns.message.make_query("com.", "NS").to_wire()]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)
            while not self.stop.is_set():
                wire = queries[self.asked % 2]
                self.asked += 1
                try:
                    sock.sendto(wire, ("127.0.0.1", self.port))
                    reply, _ = sock.recvfrom(65535)
                    if reply[:2] != wire[:2] or reply[3] & 0x0F != 0:
                        self.failed += 1
                except OSError:
                    self.failed += 1
                time.sleep(self.pause)


def serial_of(port: int) -> int | None:
    query = dns.message.make_query(".", "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3)
    except (OSError, dns.exception.DNSException):
        return None
    return reply.answer[0][0].serial if reply.answer and reply.rcode() == 0 else None


def wait_serial(port: int, serial: int, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if serial_of(port) == serial:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def follow_figures(rounds: int, python: str) -> None:
    times: list[float] = []
    asked = failed = 0
    for round_ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="imrs-bench-follow-") as tmp:
            port = free_port()
            with NsdPrimary(VERSIONS[0], Path(tmp) / "nsd", notify=[("127.0.0.1", port)]) as nsd:
                err = open(Path(tmp) / "imrs.log", "w")
                imrs = subprocess.Popen(
                    [python, "-m", "imrs", "serve", "--primary", f"127.0.0.1:{nsd.port}", "--anchor",
                     str(TESTROOT / "root.ds"), "--state-dir", str(Path(tmp) / "state"), "--listen", f"127.0.0.1:{port}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
                try:
                    if wait_serial(port, 2026082101, 60) is None:
                        log(f"imrs did not serve the first version:\n{(Path(tmp) / 'imrs.log').read_text()[-2000:]}")
                        return
                    asker = SteadyAsker(port)
                    asker.start()
                    for path in VERSIONS[1:]:
                        serial = int(path.stem.split("-")[1])
                        started = time.monotonic()
                        nsd.load_version(path)  # NSD reloads and sends NOTIFY
                        took = wait_serial(port, serial, 30 - (time.monotonic() - started))
                        took = None if took is None else time.monotonic() - started
                        print(f"  round {round_ + 1}: serial {serial} served {took:.2f} s after the reload"
                              if took is not None else f"  round {round_ + 1}: serial {serial} NOT served within 30 s")
                        if took is not None:
                            times.append(took)
                    asker.stop.set()
                    asker.join(5)
                    asked += asker.asked
                    failed += asker.failed
                finally:
                    imrs.terminate()
                    try:
                        imrs.wait(15)
                    except subprocess.TimeoutExpired:
                        imrs.kill()
                        imrs.wait(5)
                    err.close()
    if times:
        goal = max(times) <= 5.0
        print(f"\nNOTIFY to served over {len(times)} new versions: {summary(times)}   goal <= 5 s: "
              f"{'PASS' if goal else 'MISS'}")
    print(f"queries during the swaps: {asked} asked, {failed} failed (timeouts or not NOERROR)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the verification figures [5]")
    parser.add_argument("--follow-rounds", type=int, default=2, help="runs through the four versions [2]")
    parser.add_argument("--python", default=default_python())
    args = parser.parse_args()
    print("== load + full verification of the root zone ==")
    verify_figures(args.rounds, args.python)
    print("\n== NOTIFY to served (real NSD primary, four consecutive versions by IXFR) ==")
    follow_figures(args.follow_rounds, args.python)


if __name__ == "__main__":
    main()
