"""A real unbound takes its root zone from imrs: ``auth-zone`` for "." with imrs as primary
(AXFR), ZONEMD and DNSSEC checked against the test trust anchor.

The good zone must load and be answered from (the referral for com., the apex SOA with the
served serial); the same zone with its ZONEMD removed (imrs itself refuses a zone whose ZONEMD
does not match, so it cannot be made to serve one) must be rejected by an unbound told to
require ZONEMD, which shows the check is really on.  unbound's outgoing queries
are bound to 127.0.0.1, so nothing leaves the machine.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from serverproc import ServerProc, start_all, udp_ask

from .unbound_server import UnboundServer, UnboundUnavailable, find_unbound

TESTROOT = Path(__file__).resolve().parents[2].parent / "shared" / "zones" / "testroot"
ZONE = TESTROOT / "root-2026082201.zone"
SERIAL = 2026082201


@pytest.fixture(scope="module")
def primaries(tmp_path_factory):
    try:
        find_unbound()
    except UnboundUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    d = tmp_path_factory.mktemp("authzone")
    lines = ZONE.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not (line.split()[3:4] == ["ZONEMD"] or line.split()[3:5] == ["RRSIG", "ZONEMD"])]
    assert len(lines) - len(kept) == 2
    tampered = d / "tampered.zone"
    tampered.write_text("".join(kept))
    def config(zone):
        return f'[[zone]]\nfile = "{zone}"\nallow-transfer = ["127.0.0.1/32"]\n'

    servers = {
        "good": ServerProc(d, [], config=config(ZONE), name="good"),
        "tampered": ServerProc(d, [], config=config(tampered), name="tampered"),
    }
    start_all(list(servers.values()))
    yield servers
    for srv in servers.values():
        srv.stop()


def _ask(addr: tuple[str, int], name: str, rdtype: str) -> dns.message.Message | None:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    query.flags = 0  # RD clear: an authoritative answer from the auth-zone, no recursion
    wire = udp_ask(addr[0], addr[1], query.to_wire(), timeout=2.0)
    return dns.message.from_wire(wire) if wire else None


def _wait_answer(addr: tuple[str, int], name: str, rdtype: str, timeout: float) -> dns.message.Message | None:
    """The first NOERROR answer within ``timeout`` (unbound answers SERVFAIL until the zone is in)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = _ask(addr, name, rdtype)
        if last is not None and last.rcode() == dns.rcode.NOERROR:
            return last
        time.sleep(0.2)
    return last


def test_unbound_loads_root_from_imrs_with_zonemd(primaries, tmp_path):
    imrs = primaries["good"]
    with UnboundServer(tmp_path / "unbound", zone=".", primary=imrs.addr, trust_anchor=TESTROOT / "root.ds") as ub:
        soa = _wait_answer(ub.addr, ".", "SOA", timeout=30)
        assert soa is not None and soa.rcode() == dns.rcode.NOERROR, ub.log()[-3000:]
        assert soa.answer[0][0].serial == SERIAL
        referral = _wait_answer(ub.addr, "com.", "NS", timeout=5)
        assert referral is not None and referral.rcode() == dns.rcode.NOERROR
        ns = {rd.target.to_text() for rrset in referral.authority if rrset.rdtype == dns.rdatatype.NS for rd in rrset}
        assert "a.gtld-servers.net." in ns and len(ns) == 13
        glue = {(rrset.name.to_text(), rd.address) for rrset in referral.additional
                if rrset.rdtype == dns.rdatatype.A for rd in rrset}
        assert ("a.gtld-servers.net.", "192.5.6.30") in glue
        log = ub.log()
        assert "ZONEMD verification failed" not in log and "error" not in log.lower(), log[-3000:]
    assert "AXFR of . serial 2026082201 to 127.0.0.1" in imrs.stderr()


def test_unbound_rejects_zone_without_zonemd(primaries, tmp_path):
    imrs = primaries["tampered"]
    with UnboundServer(tmp_path / "unbound", zone=".", primary=imrs.addr, trust_anchor=TESTROOT / "root.ds",
                       zonemd_reject_absence=True) as ub:
        assert ub.wait_for_log(r"auth zone \.: ZONEMD verification failed", timeout=30), ub.log()[-3000:]
        answer = _ask(ub.addr, "com.", "NS")
        assert answer is not None and answer.rcode() == dns.rcode.SERVFAIL
    assert "AXFR of . serial 2026082201 to 127.0.0.1" in imrs.stderr()


def test_dig_axfr_verifies_with_ldns(primaries, tmp_path):
    """`dig AXFR` from imrs, piped into ldns-verify-zone with the test trust anchor: DNSSEC and
    ZONEMD (-Z) both check out; the tampered zone's transfer fails ZONEMD."""
    results = {}
    for which in ("good", "tampered"):
        srv = primaries[which]
        dig = subprocess.run(["dig", "AXFR", ".", "@127.0.0.1", "-p", str(srv.port), "+nocmd", "+nostats",
                              "+time=10", "+tries=1"], capture_output=True, text=True, timeout=60, check=False)
        assert dig.returncode == 0 and "Transfer failed" not in dig.stdout, dig.stdout[-2000:]
        verify = subprocess.run(["ldns-verify-zone", "-k", str(TESTROOT / "root.ds"), "-Z"], input=dig.stdout,
                                capture_output=True, text=True, timeout=60, check=False)
        results[which] = verify
    good, bad = results["good"], results["tampered"]
    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode != 0, bad.stdout + bad.stderr
