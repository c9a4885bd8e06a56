"""Serving zone transfers: AXFR and IXFR out, the transfer ACL, TSIG, EDNS EXPIRE.

Against a running `imrs serve` (the full test root zone, transfers allowed from 127.0.0.1 and,
with a TSIG key, from 127.0.0.2): `dig AXFR` gives exactly the file's records; IXFR at the
current serial gives one SOA, from an unknown serial the whole zone, over UDP REFUSED; clients
outside the ACL get REFUSED, a missing key REFUSED, a wrong key or secret NOTAUTH with the
TSIG error, the right key a signed transfer that dig and dnspython verify; `dig +expire`.

In-process (the real TCP listener on a snapshot built here): IXFR from a serial in the
journal gives the incremental form, which applied to the old version yields the new one;
a client that does not read its transfer holds up nobody else.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest
from peers import proc
from serverproc import (
    SMALL_ZONE,
    ServerProc,
    frame,
    imrs_run,
    read_frame,
    tcp_connect,
    udp_ask,
)

from imrs.answer.respond import AnswerOptions
from imrs.serve.snapshot import Snapshot, SnapshotHolder, build_snapshot
from imrs.serve.tcp import TcpListener
from imrs.serve.udp import ServeStats, UdpListener
from imrs.serve.xfrout import (
    TransferPolicy,
    make_policy,
    parse_rule,
    parse_tsig_key,
    render_records,
    serial_newer_or_same,
)
from imrs.zone.parse import load_zone_records, zone_data_from_records
from imrs.zone.records import ZoneVersion, diff_records, records_to_dnspython_zone

TESTROOT = Path(__file__).resolve().parents[1].parent / "shared" / "zones" / "testroot"
NEW = TESTROOT / "root-2026082201.zone"
OLD = TESTROOT / "root-2026082200.zone"
OLDER = TESTROOT / "root-2026082102.zone"
SERIAL = 2026082201
KEY_NAME = "xfrkey."
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"  # base64 of "secretsecretsecretsecret"
WRONG_SECRET = "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZw=="
CONFIG = f"""
[[tsig-key]]
name = "xfrkey"
algorithm = "hmac-sha256"
secret = "{SECRET}"

[[zone]]
file = "{NEW}"
allow-transfer = ["127.0.0.1/32", "127.0.0.2/32 key xfrkey"]
"""


@functools.cache
def _zone_file_records(path: Path) -> set[tuple]:
    zone = dns.zone.from_file(str(path), origin=".", relativize=False)
    return {(name, rdataset.ttl, rd.to_digestable()) + (rdataset.rdtype,)
            for name, rdataset in zone.iterate_rdatasets() for rd in rdataset}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProc(tmp_path_factory.mktemp("xfrout"), [], config=CONFIG, name="xfrout")
    srv.start()
    srv.wait_ready()
    yield srv
    srv.stop()


def _dig(*args: str, timeout: float = 60) -> str:
    out = subprocess.run(["dig", *args, "+time=10", "+tries=1"], capture_output=True, text=True, timeout=timeout,
                         check=False)
    return out.stdout + out.stderr


def _records(dig_output: str) -> list[str]:
    return [line for line in dig_output.splitlines() if line.strip() and not line.startswith(";")]


def _xfr_messages(port: int, query: dns.message.Message, source: str = "127.0.0.1", timeout: float = 10) -> list[bytes]:
    """Every message the server sends for one transfer query (until the closing SOA or a
    single error response), from a socket bound to ``source``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(frame(query.to_wire()))
        out: list[bytes] = []
        soas = 0
        while True:
            wire = read_frame(s)
            assert wire is not None, "connection closed mid-transfer"
            out.append(wire)
            msg = dns.message.from_wire(wire, keyring=False, one_rr_per_rrset=True, xfr=True)
            soas += sum(1 for rr in msg.answer if rr.rdtype == dns.rdatatype.SOA)
            if msg.rcode() != dns.rcode.NOERROR or (soas == 1 and len(out) == 1 and len(msg.answer) == 1) or soas >= 2:
                return out
    finally:
        s.close()


def _signed(query: dns.message.Message, secret: str = SECRET, name: str = KEY_NAME) -> dns.message.Message:
    query.use_tsig(dns.tsigkeyring.from_text({name: secret}), keyname=name, algorithm="hmac-sha256")
    return query


# --- against `imrs serve` -------------------------------------------------------------------

def test_dig_axfr_gives_the_file(server):
    out = _dig("AXFR", ".", "@127.0.0.1", "-p", str(server.port), "+nocmd", "+nostats", "+nocomments")
    lines = _records(out)
    assert "Transfer failed" not in out
    assert lines[0].split()[3] == "SOA" and lines[-1] == lines[0]
    got = dns.zone.from_text("\n".join(lines[:-1]) + "\n", origin=".", relativize=False)
    got_set = {(name, rdataset.ttl, rd.to_digestable(), rdataset.rdtype)
               for name, rdataset in got.iterate_rdatasets() for rd in rdataset}
    assert got_set == _zone_file_records(NEW)
    assert len(lines) == len(_zone_file_records(NEW)) + 1


def test_ixfr_current_serial_is_one_soa(server):
    msgs = _xfr_messages(server.port, dns.xfr.make_query(dns.zone.Zone("."), serial=SERIAL)[0])
    assert len(msgs) == 1
    msg = dns.message.from_wire(msgs[0])
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert len(msg.answer) == 1 and msg.answer[0].rdtype == dns.rdatatype.SOA and msg.answer[0][0].serial == SERIAL
    out = _dig("IXFR=2026082201", ".", "@127.0.0.1", "-p", str(server.port), "+nocmd", "+nostats", "+nocomments")
    assert len(_records(out)) == 1


def test_ixfr_unknown_serial_gives_full_zone(server):
    out = _dig("IXFR=2026082200", ".", "@127.0.0.1", "-p", str(server.port), "+nocmd", "+nostats", "+nocomments")
    lines = _records(out)
    assert len(lines) == len(_zone_file_records(NEW)) + 1
    assert lines[0] == lines[-1] and f" {SERIAL} " in lines[0]


def test_ixfr_over_udp_is_refused_as_nsd_does(server):
    query = dns.xfr.make_query(dns.zone.Zone("."), serial=2026082200)[0]
    wire = udp_ask("127.0.0.1", server.port, query.to_wire())
    msg = dns.message.from_wire(wire)
    assert msg.rcode() == dns.rcode.REFUSED and not msg.answer


def test_acl_refuses_others(server):
    for source in ("127.0.0.3", "127.0.0.2"):  # not listed; listed only with a TSIG key
        msgs = _xfr_messages(server.port, dns.message.make_query(".", "AXFR"), source=source)
        assert len(msgs) == 1 and dns.message.from_wire(msgs[0]).rcode() == dns.rcode.REFUSED
    out = _dig("AXFR", ".", "@127.0.0.1", "-p", str(server.port), "-b", "127.0.0.3")
    assert "Transfer failed" in out
    assert "refused (no transfer rule matches)" in server.stderr()


def test_axfr_of_a_zone_we_lack_is_notauth(server):
    msgs = _xfr_messages(server.port, dns.message.make_query("com.", "AXFR"))
    assert dns.message.from_wire(msgs[0]).rcode() == dns.rcode.NOTAUTH


def test_tsig_right_key_works_with_dig_and_dnspython(server):
    out = _dig("AXFR", ".", "@127.0.0.1", "-p", str(server.port), "-b", "127.0.0.2", "-y",
               f"hmac-sha256:xfrkey:{SECRET}", "+nocmd", "+nocomments")
    assert "Transfer failed" not in out and "verify" not in out.lower(), out[-2000:]
    assert "TSIG" in out and len(_records(out)) > len(_zone_file_records(NEW)) + 1  # and a TSIG per message
    # dnspython checks every message's signature (RFC 8945 5.3.1)
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    records = messages = 0
    for msg in dns.query.xfr("127.0.0.1", ".", port=server.port, source="127.0.0.2", keyring=keyring,
                             keyname=KEY_NAME, keyalgorithm="hmac-sha256", lifetime=30, relativize=False):
        assert msg.tsig is not None and msg.had_tsig
        records += sum(len(rrset) for rrset in msg.answer)
        messages += 1
    assert records == len(_zone_file_records(NEW)) + 1 and messages > 50


def test_tsig_wrong_key_is_notauth(server):
    for secret, name, error in ((WRONG_SECRET, KEY_NAME, dns.rcode.BADSIG), (SECRET, "otherkey.", dns.rcode.BADKEY)):
        msgs = _xfr_messages(server.port, _signed(dns.message.make_query(".", "AXFR"), secret, name), source="127.0.0.2")
        assert len(msgs) == 1
        msg = dns.message.from_wire(msgs[0], keyring=False)
        assert msg.rcode() == dns.rcode.NOTAUTH and not msg.answer
        assert msg.tsig is not None and msg.tsig[0].error == error and msg.tsig[0].mac == b""
    out = _dig("AXFR", ".", "@127.0.0.1", "-p", str(server.port), "-b", "127.0.0.2", "-y",
               f"hmac-sha256:xfrkey:{WRONG_SECRET}")
    assert "BADSIG" in out and "Transfer failed" in out


def test_signed_refusal_is_signed(server):
    """A correctly signed query from outside the ACL gets a signed REFUSED."""
    query = _signed(dns.message.make_query(".", "AXFR"))
    msgs = _xfr_messages(server.port, query, source="127.0.0.3")
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    msg = dns.message.from_wire(msgs[0], keyring=keyring, request_mac=query.mac)  # verifies the signature
    assert msg.rcode() == dns.rcode.REFUSED and msg.tsig is not None


def test_edns_expire(server):
    out = _dig("SOA", ".", "@127.0.0.1", "-p", str(server.port), "+expire", "+norec")
    assert "EXPIRE: 604800" in out
    out = _dig("NS", ".", "@127.0.0.1", "-p", str(server.port), "+expire", "+norec")
    assert "EXPIRE" not in out and "status: NOERROR" in out  # only SOA, AXFR and IXFR carry it
    query = dns.message.make_query(".", "AXFR", use_edns=0, options=[dns.edns.GenericOption(9, b"")])
    msgs = _xfr_messages(server.port, query)
    first = dns.message.from_wire(msgs[0], one_rr_per_rrset=True, xfr=True)
    assert [o.data for o in first.options if o.otype == 9] == [struct.pack("!I", 604800)]
    assert all(dns.message.from_wire(m, one_rr_per_rrset=True, xfr=True).edns < 0 for m in msgs[1:])


def test_bad_transfer_settings_are_a_clear_error(tmp_path):
    zone = tmp_path / "example.zone"
    zone.write_text(SMALL_ZONE)
    for extra, words in (('allow-transfer = ["not-a-net"]', "is not an IP address or network"),
                         ('allow-transfer = ["127.0.0.1 key nokey"]', "not defined"),
                         ('allow-transfer = ["127.0.0.1 nokey"]', "CIDR key NAME")):
        config = tmp_path / "imrs.toml"
        config.write_text(f'[[zone]]\nfile = "{zone}"\n{extra}\n')
        done = imrs_run(["serve", "--config", str(config), "--listen", "127.0.0.1:1"], tmp_path)
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


# --- policy pieces --------------------------------------------------------------------------

def test_policy_parsing_and_matching():
    rule = parse_rule("10.0.0.0/8 key k1")
    assert str(rule.network) == "10.0.0.0/8" and rule.key == dns.name.from_text("k1")
    assert parse_rule("10.1.2.3/32/k1") == TransferRule_like("10.1.2.3/32", "k1")
    assert parse_rule("::1").key is None
    with pytest.raises(ValueError, match="expected"):
        parse_rule("10.0.0.0/8 k1")
    with pytest.raises(ValueError, match="base64"):
        parse_tsig_key("k1:hmac-sha256:not base64!")
    key = parse_tsig_key(f"k1:hmac-sha256:{SECRET}")
    policy = make_policy([parse_rule("127.0.0.0/8"), rule], [key])
    assert policy.permits(b"\x00", "127.0.0.9", None)
    assert policy.permits(b"\x00", "::ffff:127.0.0.9", None)
    assert not policy.permits(b"\x00", "10.0.0.1", None)
    assert policy.permits(b"\x00", "10.0.0.1", dns.name.from_text("k1"))
    assert not policy.permits(b"\x00", "192.0.2.1", dns.name.from_text("k1"))
    assert not TransferPolicy().permits(b"\x00", "127.0.0.1", None)  # default: nobody
    assert serial_newer_or_same(5, 5) and serial_newer_or_same(1, 0xFFFFFFF0) and not serial_newer_or_same(4, 5)


def TransferRule_like(cidr: str, key: str):
    return parse_rule(f"{cidr} key {key}")


def test_render_splits_messages_and_compresses():
    zone = load_zone_records(OLD)
    rendered = render_records(zone.records, 5, limit=16384)
    assert rendered.record_count == len(zone.records)
    assert all(12 + len(body) <= 16384 for body, _ in rendered.messages)
    assert rendered.size < sum(len(r.owner) + 10 + len(r.rdata) for r in zone.records) * 0.9


# --- in-process: the real TCP listener on a snapshot with a journal ---------------------------

class InProcessServer:
    """UDP and TCP listeners for one snapshot on 127.0.0.1, on an event loop in a thread."""

    def __init__(self, snapshot: Snapshot, policy: TransferPolicy, idle_timeout: float = 5.0):
        self.holder = SnapshotHolder(snapshot)
        self.policy = policy
        self.idle_timeout = idle_timeout
        self.stats = ServeStats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tcp: TcpListener | None = None
        self._udp: UdpListener | None = None

    def __enter__(self):  # -> InProcessServer
        self.port = proc.free_port("127.0.0.1")
        tsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tsock.bind(("127.0.0.1", self.port))
        tsock.listen(64)
        tsock.setblocking(False)
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        usock.bind(("127.0.0.1", self.port))
        usock.setblocking(False)
        self._thread.start()
        self._tcp = TcpListener(tsock, self.holder, self.stats, idle_timeout=self.idle_timeout,
                                transfer_policy=self.policy)
        self._udp = UdpListener(usock, self.holder, self.stats)

        async def start() -> None:
            await self._tcp.start()
            self._udp.start(asyncio.get_running_loop())

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._udp.stop(asyncio.get_running_loop())
            await self._tcp.stop()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        assert self.stats.internal_errors == 0


@pytest.fixture(scope="module")
def versions():
    """Three consecutive test root versions, the newest with a journal from the other two."""
    older, old, new = (load_zone_records(p) for p in (OLDER, OLD, NEW))
    journal = (diff_records(older, old), diff_records(old, new))
    return older, old, new, ZoneVersion(new, journal)


def _snapshot(version: ZoneVersion) -> Snapshot:
    data = zone_data_from_records(version.records)
    return build_snapshot([data], AnswerOptions(), compile_answers=False, versions={version.records.origin: version})


def test_ixfr_from_journal_is_incremental(versions):
    older, old, new, version = versions
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    policy = make_policy([parse_rule("127.0.0.1/32 key xfrkey")], [parse_tsig_key(f"xfrkey:hmac-sha256:{SECRET}")])
    with InProcessServer(_snapshot(version), policy) as srv:
        for start in (old, older):
            base = records_to_dnspython_zone(start) if start is old else dns.zone.Zone(".")
            base_serial = start.serial
            query, _ = dns.xfr.make_query(base, serial=base_serial, keyring=keyring, keyname=KEY_NAME,
                                          keyalgorithm="hmac-sha256")
            msgs = _xfr_messages(srv.port, query)
            first = dns.message.from_wire(msgs[0], keyring=False, one_rr_per_rrset=True, xfr=True)
            soas = [rr[0].serial for rr in first.answer if rr.rdtype == dns.rdatatype.SOA]
            chain = [d for d in version.journal if d.old_serial >= start.serial]
            expect = [SERIAL] + [s for d in chain for s in (d.old_serial, d.new_serial)] + [SERIAL]
            assert soas == expect  # the incremental form, not the whole zone
            count = sum(len(d.deleted) + len(d.added) for d in chain) + 2
            assert sum(len(rr) for rr in first.answer) == count
            if start is old:
                # dnspython applies it (checking every TSIG) to the old version: the result is the new one
                dns.query.inbound_xfr("127.0.0.1", base, query, port=srv.port, lifetime=10)
                assert base == records_to_dnspython_zone(new)


def test_slow_reader_does_not_block_others(versions):
    """A client that asks for the zone and does not read holds up no one else; when it reads at
    last, its transfer is whole."""
    *_, version = versions
    with InProcessServer(_snapshot(version), make_policy([parse_rule("127.0.0.1/32")], [])) as srv:
        stuck = tcp_connect("127.0.0.1", srv.port, timeout=10)
        try:
            stuck.sendall(frame(dns.message.make_query(".", "AXFR").to_wire()))
            time.sleep(0.3)
            for _ in range(3):
                t0 = time.monotonic()
                other = tcp_connect("127.0.0.1", srv.port)
                try:
                    other.sendall(frame(dns.message.make_query(".", "SOA").to_wire()))
                    answer = dns.message.from_wire(read_frame(other))
                finally:
                    other.close()
                assert answer.answer[0][0].serial == SERIAL and time.monotonic() - t0 < 1.0
            records = 0
            while True:
                msg = dns.message.from_wire(read_frame(stuck), one_rr_per_rrset=True, xfr=True)
                records += len(msg.answer)
                if msg.answer[-1].rdtype == dns.rdatatype.SOA and records > 1:
                    break
            assert records == len(version.records.records) + 1
        finally:
            stuck.close()


def test_unavailable_zones_answer_as_configured():
    """A zone the publisher marks unavailable (expired) gets its on-expiry answer; others are untouched."""
    from imrs.zone.parse import parse_zone_text

    data = parse_zone_text(SMALL_ZONE, "<small>")
    for action, rcode in (("servfail", dns.rcode.SERVFAIL), ("drop", None), ("refuse", dns.rcode.REFUSED)):
        snap = build_snapshot([data], AnswerOptions(), compile_answers=False, unavailable={b"\x04test\x00": action})
        out = snap.answer(dns.message.make_query("www.test.", "A").to_wire(), False, False)
        if rcode is None:
            assert out is None
        else:
            assert dns.message.from_wire(out).rcode() == rcode
        ok = dns.message.from_wire(snap.answer(dns.message.make_query("www.example.", "A").to_wire(), False, False))
        assert ok.rcode() == dns.rcode.NOERROR and ok.answer
