"""The junk flood over IPv6, in a network namespace of its own.

IPv6 has one loopback address, ::1, so a flood from many IPv6 prefixes needs sources no
interface has, and answers to them must not leave the machine.  This runs, as root, in a new
network namespace (unshare(2)) with nothing but its loopback, up, and fd00::1/16 on it (so the
answers to fd00:<i>::1 go to the loopback and die there instead of being refused): imrs with one
worker on [::1] pinned to --server-cpu, floodgen flood6 (500 /56s, as fast as it can) and
floodgen legit (200 q/s of real TLD questions from ::1) on --gen-cpu.  It prints one JSON
object: the flood's and the client's reports, what the server read (the namespace's own
Udp6InDatagrams), and the server's counters (udp_filtered: what its eBPF filter dropped).

    cd tests && python -m flood.ipv6 --zone ../../shared/zones/testroot/root-2026082201.zone --workdir /tmp/x
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

from flood.harness import Gen, pin_tree
from serverproc import ServerProc, query, udp_ask

CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40
NO_NAMESPACE = 77  # the exit status when the kernel refuses a network namespace (the test skips)


def enter_namespace(address: str | None = "fd00::1") -> None:
    """This process into a new network namespace: its loopback up, `address`/16 on it (None:
    none, so that only ::1 and 127/8 have a route)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        print(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        sys.exit(NO_NAMESPACE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))
    if address is None:
        return
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:  # struct in6_ifreq: address, prefix length, ifindex
        fcntl.ioctl(s, SIOCSIFADDR, socket.inet_pton(socket.AF_INET6, address)
                    + struct.pack("=Ii", 16, socket.if_nametoindex("lo")))


def udp6_in() -> int:
    """UDP datagrams over IPv6 delivered to sockets in this namespace (/proc/net/snmp6)."""
    for line in Path("/proc/net/snmp6").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "Udp6InDatagrams":
            return int(value)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flood.ipv6", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seconds", type=float, default=5.0, help="the flood's length")
    ap.add_argument("--margin", type=float, default=1.0,
                    help="the client starts this long after the flood, and stops as long before its end")
    ap.add_argument("--sources", type=int, default=500)
    ap.add_argument("--rate", type=int, default=200, help="the legitimate client's q/s")
    ap.add_argument("--source-ports", type=int, default=4)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--gen-cpu", type=int, default=1)
    a = ap.parse_args(argv)
    enter_namespace()
    srv = ServerProc(a.workdir, ["--zone", a.zone, "--workers", "1"], hosts=("::1",), name="imrs6", rrl=True)
    srv.start()
    try:
        srv.wait_ready()
        pin_tree(srv.proc.pid, {a.server_cpu})
        start_at = time.time() + 2.0  # both generators prebuild their packets meanwhile
        gens = [Gen("flood6", host="::1", port=srv.port, duration=a.seconds, sources=a.sources, pool=16384,
                    cpu=a.gen_cpu, start_at=start_at),
                Gen("legit", host="::1", source="::1", schedule=f"{srv.port}:0:{a.seconds}", rate=a.rate,
                    source_ports=a.source_ports, cpu=a.gen_cpu, start_at=start_at, margin=a.margin, deadline=1.0)]
        read0 = udp6_in()
        flood, legit = (g.result(a.seconds + 60) for g in gens)
        read = udp6_in() - read0
        after = udp_ask("::1", srv.port, query(".", "SOA", 4242), timeout=3.0)
    finally:
        srv.stop()
    print(json.dumps({"flood": flood, "legit": legit["segments"][0], "read": read,
                      "read_rate": round(read / flood["seconds"]) if flood["seconds"] else 0,
                      "answers_after": after is not None, "server": srv.stats()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
