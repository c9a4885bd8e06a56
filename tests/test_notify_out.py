"""NOTIFY out (RFC 1996): the packet on a local UDP socket, retransmission, outcomes per target,
and a real NSD secondary that takes the root zone from imrs, is told of a new version by
NOTIFY, fetches it by IXFR and serves the new serial.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest
from peers import proc
from peers.nsd_server import NsdUnavailable, find_nsd
from serverproc import udp_ask
from test_xfrout import NEW, OLD, InProcessServer, _snapshot

from imrs.serve.xfrout import make_policy, parse_rule
from imrs.zone.notify import send_notify
from imrs.zone.parse import load_zone_records
from imrs.zone.records import ZoneVersion, diff_records


class FakeSecondary:
    """A UDP socket on 127.0.0.1 that records NOTIFYs and answers from the (n+1)th on with
    ``rcode`` (None: never answers); a wrong-ID reply goes out first when ``decoy``."""

    def __init__(self, ignore: int = 0, rcode: int | None = dns.rcode.NOERROR, decoy: bool = False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.ignore, self.rcode, self.decoy = ignore, rcode, decoy
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(wire)
            if len(self.received) <= self.ignore or self.rcode is None:
                continue
            query = dns.message.from_wire(wire)
            if self.decoy:
                wrong = dns.message.make_response(query)
                wrong.id ^= 1
                self.sock.sendto(wrong.to_wire(), peer)
            reply = dns.message.make_response(query)
            reply.set_rcode(self.rcode)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_notify_packet_retries_and_outcomes():
    zone = load_zone_records(NEW)
    slow = FakeSecondary(ignore=1)  # answers the retransmission
    refusing = FakeSecondary(rcode=dns.rcode.NOTAUTH, decoy=True)
    silent = FakeSecondary(rcode=None)
    try:
        targets = [slow.addr, refusing.addr, silent.addr]
        t0 = time.monotonic()
        outcomes = asyncio.run(send_notify(zone.origin, zone.soa, targets, timeout=0.3, retries=2))
        took = time.monotonic() - t0
    finally:
        for s in (slow, refusing, silent):
            s.close()
    assert outcomes == {slow.addr: "ok", refusing.addr: "NOTAUTH", silent.addr: "timeout"}
    assert len(slow.received) == 2 and len(refusing.received) == 1 and len(silent.received) == 3
    assert took < 2.0  # targets are notified at once, not one after the other
    msg = dns.message.from_wire(slow.received[0])
    assert msg.opcode() == dns.opcode.NOTIFY and msg.flags & dns.flags.AA and not msg.flags & dns.flags.QR
    assert msg.question[0].name.to_text() == "." and msg.question[0].rdtype == dns.rdatatype.SOA
    assert msg.answer[0].rdtype == dns.rdatatype.SOA and msg.answer[0][0].serial == zone.serial
    assert slow.received[0] == slow.received[1]  # the retransmission is the same message


def test_notify_with_tsig_is_signed():
    zone = load_zone_records(NEW)
    key = dns.tsig.Key("nkey.", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "hmac-sha256")
    secondary = FakeSecondary(rcode=None)
    try:
        asyncio.run(send_notify(zone.origin, zone.soa, [secondary.addr], tsig=key,
                                timeout=0.2, retries=0))
    finally:
        secondary.close()
    msg = dns.message.from_wire(secondary.received[0], keyring={key.name: key})  # raises unless the signature holds
    assert msg.had_tsig and msg.opcode() == dns.opcode.NOTIFY


def test_notify_to_a_closed_port_times_out_quietly():
    zone = load_zone_records(NEW)
    port = proc.free_port()
    outcomes = asyncio.run(send_notify(zone.origin, zone.soa, [("127.0.0.1", port)], timeout=0.1, retries=1))
    assert outcomes == {("127.0.0.1", port): "timeout"}


def _nsd_secondary_config(workdir: Path, port: int, primary_port: int) -> str:
    return f"""\
server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    server-count: 1
    reuseport: no
    database: ""
    zonelistfile: "{workdir}/zone.list"
    xfrdfile: "{workdir}/xfrd.state"
    xfrdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    logfile: "{workdir}/nsd.log"
    zonesdir: "{workdir}"
    username: ""
    chroot: ""
    verbosity: 2
remote-control:
    control-enable: no
zone:
    name: "."
    zonefile: "{workdir}/root.secondary"
    request-xfr: 127.0.0.1@{primary_port} NOKEY
    allow-notify: 127.0.0.1 NOKEY
"""


def _serial(port: int) -> int | None:
    wire = udp_ask("127.0.0.1", port, dns.message.make_query(".", "SOA").to_wire(), timeout=0.5)
    if wire is None:
        return None
    msg = dns.message.from_wire(wire)
    return msg.answer[0][0].serial if msg.rcode() == dns.rcode.NOERROR and msg.answer else None


def _wait_serial(port: int, serial: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _serial(port)
        if seen == serial:
            return seen
        time.sleep(0.1)
    return seen


def test_nsd_secondary_follows_notify(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="imrs.xfrout")
    try:
        nsd = find_nsd()
    except NsdUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    old, new = load_zone_records(OLD), load_zone_records(NEW)
    policy = make_policy([parse_rule("127.0.0.1/32")], [])
    first = ZoneVersion(old)
    second = ZoneVersion(new, (diff_records(old, new),))
    second_snapshot = _snapshot(second)
    with InProcessServer(_snapshot(first), policy) as primary:
        port = proc.free_port()
        conf = tmp_path / "nsd.conf"
        conf.write_text(_nsd_secondary_config(tmp_path, port, primary.port))
        with open(tmp_path / "nsd.stderr", "wb") as err:
            nsd_proc = subprocess.Popen([nsd, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=err,
                                        stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
        tree = []
        try:
            # NSD fetches the first version by AXFR on its own at start
            got = _wait_serial(port, old.serial, 30)
            tree = [p for p in [proc.proc_id(nsd_proc.pid), *proc.descendants(nsd_proc.pid)] if p]
            assert got == old.serial, proc.tail(tmp_path / "nsd.log")
            # a new version is published; the NOTIFY brings NSD to it (its SOA refresh is 30 minutes)
            primary.holder.publish(second_snapshot)
            t0 = time.monotonic()
            outcomes = asyncio.run(send_notify(new.origin, new.soa, [("127.0.0.1", port)], timeout=1.0, retries=3))
            assert outcomes == {("127.0.0.1", port): "ok"}
            assert _wait_serial(port, new.serial, 20) == new.serial, proc.tail(tmp_path / "nsd.log")
            took = time.monotonic() - t0
            print(f"NSD served the new serial {took:.2f} s after the NOTIFY")
            # a record that changed between the versions is served as in the new one
            wire = udp_ask("127.0.0.1", port, dns.message.make_query(".", "ZONEMD").to_wire(), timeout=2)
            zonemd = dns.message.from_wire(wire).answer[0][0].to_wire()
            assert zonemd == next(r.rdata for r in new.records if r.rdtype == 63)
            assert zonemd != next(r.rdata for r in old.records if r.rdtype == 63)
        finally:
            if nsd_proc.poll() is None:
                nsd_proc.terminate()
                try:
                    nsd_proc.wait(10)
                except subprocess.TimeoutExpired:
                    nsd_proc.kill()
                    nsd_proc.wait(10)
            for p in proc.wait_gone(tree, 5):
                proc.signal_if_same(p, 9)
    # NSD took the first version whole and the second as an increment (from the journal)
    assert "AXFR of . serial 2026082200 to 127.0.0.1" in caplog.text
    assert "IXFR from 2026082200 (1 differences) of . serial 2026082201 to 127.0.0.1" in caplog.text
