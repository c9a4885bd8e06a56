"""AXFR/IXFR client against a real NSD primary, and against servers that misbehave."""

from __future__ import annotations

import itertools
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from peers.nsd_primary import NsdPrimary

from imrs.zone.parse import load_zone_records
from imrs.zone.records import ZoneRecords, apply_diff, canonical_rdata, name_from_text
from imrs.zone.sources import FetchError, fetch_zone, parse_source
from imrs.zone.transfer import (
    IxfrUnavailable,
    TransferError,
    TsigKey,
    axfr,
    ixfr,
    query_soa,
)

TESTROOT = Path(os.environ.get("IMRS_TESTROOT", "/work/shared/zones/testroot"))
VERSIONS = ("2026082101", "2026082102", "2026082200", "2026082201")
ROOT = b"\x00"


def zone_file(version: str) -> Path:
    return TESTROOT / f"root-{version}.zone"


_loaded: dict[str, ZoneRecords] = {}


def file_records(version: str) -> ZoneRecords:
    if version not in _loaded:
        _loaded[version] = load_zone_records(zone_file(version))
    return _loaded[version]


def record_set(zone: ZoneRecords) -> list[tuple]:
    """Records comparable across sources: owner, type, class, TTL, canonical RDATA."""
    return sorted((r.owner, r.rdtype, r.rdclass, r.ttl, canonical_rdata(r.rdtype, r.rdata)) for r in zone.records)


# --- real NSD -----------------------------------------------------------------------------------


def test_axfr_and_ixfr_follow_four_versions(tmp_path):
    with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd") as primary:
        first = axfr(primary.address, primary.port, ROOT)
        assert first.serial == int(VERSIONS[0])
        assert record_set(first) == record_set(file_records(VERSIONS[0]))
        current = first
        for version in VERSIONS[1:]:
            primary.load_version(zone_file(version))
            result = ixfr(primary.address, primary.port, ROOT, current)
            assert result.serial == int(version)
            assert result.zone is None and len(result.diffs) == 1, "NSD should serve the difference"
            diff = result.diffs[0]
            assert (diff.old_serial, diff.new_serial) == (current.serial, int(version))
            for diff in result.diffs:
                current = apply_diff(current, diff)
            assert record_set(current) == record_set(file_records(version))
            assert record_set(axfr(primary.address, primary.port, ROOT)) == record_set(file_records(version))
        # From the first version: the chain of three differences.
        chained = ixfr(primary.address, primary.port, ROOT, first)
        assert [(d.old_serial, d.new_serial) for d in chained.diffs] == [
            (int(a), int(b)) for a, b in itertools.pairwise(VERSIONS)
        ]
        zone = first
        for diff in chained.diffs:
            zone = apply_diff(zone, diff)
        assert record_set(zone) == record_set(file_records(VERSIONS[-1]))
        # Up to date: the SOA alone.
        same = ixfr(primary.address, primary.port, ROOT, current)
        assert same.up_to_date and same.serial == int(VERSIONS[-1])
        serial, soa, zonemd = query_soa(primary.address, primary.port, ROOT)
        assert serial == int(VERSIONS[-1]) and soa == current.soa
        assert len(zonemd) == 1 and zonemd[0].rdata[:4] == serial.to_bytes(4, "big")


def test_axfr_equals_dnspython_and_is_faster(tmp_path, capsys):
    with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd") as primary:
        started = time.perf_counter()
        ours = axfr(primary.address, primary.port, ROOT)
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        reference = dns.zone.Zone(dns.name.root, relativize=False)
        dns.query.inbound_xfr(primary.address, reference, port=primary.port, timeout=30, lifetime=60)
        dnspython_seconds = time.perf_counter() - started
    theirs = sorted(
        (name.to_wire().lower(), rds.rdtype, rds.rdclass, rds.ttl, rd.to_wire())
        for name, node in reference.nodes.items() for rds in node.rdatasets for rd in rds
    )
    # Exact RDATA bytes (letter case as received), not only canonical form.
    assert sorted((r.owner, r.rdtype, r.rdclass, r.ttl, r.rdata) for r in ours.records) == theirs
    with capsys.disabled():
        print(f"\nroot AXFR ({len(ours.records)} records) from NSD: imrs parser {ours_seconds:.3f}s, "
              f"dnspython inbound_xfr {dnspython_seconds:.3f}s")
    assert ours_seconds < dnspython_seconds


def test_ixfr_without_stored_diffs_gives_whole_zone_and_fetch_uses_it(tmp_path):
    # NSD with store-ixfr off answers IXFR with the whole zone, AXFR-style (RFC 1995 section 4).
    with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd", ixfr=False) as primary:
        primary.load_version(zone_file(VERSIONS[1]))
        result = ixfr(primary.address, primary.port, ROOT, file_records(VERSIONS[0]))
        assert result.zone is not None and not result.diffs
        assert record_set(result.zone) == record_set(file_records(VERSIONS[1]))
        source = parse_source(f"ixfr://127.0.0.1:{primary.port}", {})
        fetched = fetch_zone([source], ROOT, file_records(VERSIONS[0]), timeout=10)
        assert fetched.how == "axfr" and fetched.serial == int(VERSIONS[1])
        assert record_set(fetched.zone) == record_set(file_records(VERSIONS[1]))


class RefusingProxy:
    """Forwards TCP DNS to NSD but answers every IXFR query itself with ``rcode``: a
    primary that cannot serve IXFR (NSD has no setting for refusing IXFR alone)."""

    def __init__(self, upstream_port: int, rcode: int):
        self.upstream_port = upstream_port
        self.rcode = rcode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.ixfr_queries = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    length = struct.unpack("!H", _recv_exact(conn, 2))[0]
                    wire = _recv_exact(conn, length)
                    query = dns.message.from_wire(wire)
                    if query.question[0].rdtype == dns.rdatatype.IXFR:
                        self.ixfr_queries += 1
                        reply = dns.message.make_response(query)
                        reply.set_rcode(self.rcode)
                        out = reply.to_wire()
                        conn.sendall(struct.pack("!H", len(out)) + out)
                        continue
                    with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5) as up:
                        up.sendall(struct.pack("!H", length) + wire)
                        _relay(up, conn)
                except (OSError, EOFError, dns.exception.DNSException):
                    continue

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()


def _relay(upstream: socket.socket, client: socket.socket) -> None:
    """Copy the upstream's answer to the client until the client hangs up (it does once the
    transfer is complete) or either side goes quiet for 5 s."""
    while True:
        ready, _, _ = select.select([upstream, client], [], [], 5)
        if not ready:
            return
        if client in ready and not client.recv(65536):
            return
        if upstream in ready:
            chunk = upstream.recv(65536)
            if not chunk:
                return
            client.sendall(chunk)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


@pytest.mark.parametrize("rcode", [dns.rcode.REFUSED, dns.rcode.NOTIMP])
def test_refused_ixfr_falls_back_to_axfr(tmp_path, rcode):
    with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd") as primary:
        primary.load_version(zone_file(VERSIONS[1]))
        proxy = RefusingProxy(primary.port, rcode)
        try:
            with pytest.raises(IxfrUnavailable, match=dns.rcode.to_text(rcode)):
                ixfr("127.0.0.1", proxy.port, ROOT, file_records(VERSIONS[0]), timeout=5)
            source = parse_source(f"ixfr://127.0.0.1:{proxy.port}", {})
            fetched = fetch_zone([source], ROOT, file_records(VERSIONS[0]), timeout=10)
        finally:
            proxy.close()
    assert proxy.ixfr_queries == 2
    assert fetched.how == "axfr" and not fetched.errors
    assert any("fell back to AXFR" in note for note in fetched.notes)
    assert record_set(fetched.zone) == record_set(file_records(VERSIONS[1]))


def test_diff_that_does_not_apply_falls_back_to_axfr(tmp_path):
    old = file_records(VERSIONS[0])
    with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd") as primary:
        primary.load_version(zone_file(VERSIONS[1]))
        diff = ixfr(primary.address, primary.port, ROOT, old).diffs[0]
        # Our copy claims the same serial but lacks a record the difference deletes.
        victim = diff.deleted[1]
        damaged = ZoneRecords(old.origin, tuple(r for r in old.records if r != victim), "damaged")
        with pytest.raises(ValueError):
            apply_diff(damaged, diff)
        fetched = fetch_zone([parse_source(f"ixfr://127.0.0.1:{primary.port}", {})], ROOT, damaged, timeout=10)
    assert fetched.how == "axfr"
    assert any("does not apply" in note for note in fetched.notes)
    assert record_set(fetched.zone) == record_set(file_records(VERSIONS[1]))


ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha1")


def test_tsig_transfers(tmp_path):
    keys = [TsigKey(f"key-{alg}.", alg, os.urandom(32)) for alg in ALGORITHMS]
    nsd_keys = [(k.name, k.algorithm, k.secret) for k in keys]
    with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd", tsig=nsd_keys, tsig_only=True) as primary:
        for key in keys:
            zone = axfr(primary.address, primary.port, ROOT, tsig=key, timeout=10)
            assert zone.serial == int(VERSIONS[0]), key.algorithm
        assert query_soa(primary.address, primary.port, ROOT, tsig=keys[0])[0] == int(VERSIONS[0])
        primary.load_version(zone_file(VERSIONS[1]))
        result = ixfr(primary.address, primary.port, ROOT, zone, tsig=keys[0], timeout=10)
        assert len(result.diffs) == 1
        assert record_set(apply_diff(zone, result.diffs[0])) == record_set(file_records(VERSIONS[1]))

        wrong_secret = TsigKey(keys[0].name, keys[0].algorithm, b"not the secret")
        with pytest.raises(TransferError, match="BADSIG"):
            axfr(primary.address, primary.port, ROOT, tsig=wrong_secret, timeout=10)
        with pytest.raises(TransferError, match="BADKEY"):
            axfr(primary.address, primary.port, ROOT, tsig=TsigKey("unknown.", "hmac-sha256", b"x" * 32), timeout=10)
        with pytest.raises(TransferError, match="REFUSED"):
            axfr(primary.address, primary.port, ROOT, timeout=10)
        # Via the sources: without the key, IXFR is refused, AXFR too: a clear failure.
        spec = f"ixfr://127.0.0.1:{primary.port}?tsig=KEY-HMAC-SHA256"
        good = fetch_zone([parse_source(spec, {k.name: k for k in keys})], ROOT, zone, timeout=10)
        assert good.how == "ixfr" and good.serial == int(VERSIONS[1])
        with pytest.raises(FetchError, match="REFUSED"):
            fetch_zone([parse_source(f"ixfr://127.0.0.1:{primary.port}", {})], ROOT, zone, timeout=10)


def test_tsig_key_text():
    key = TsigKey.from_text("xfr.example.:hmac-sha512:" + "c2VjcmV0")
    assert (key.name, key.algorithm, key.secret) == ("xfr.example.", "hmac-sha512", b"secret")
    assert TsigKey.from_text("k:c2VjcmV0").algorithm == "hmac-sha256"
    assert TsigKey.from_text("hmac-sha1:k:c2VjcmV0") == TsigKey("k", "hmac-sha1", b"secret")
    for bad, message in [("k:hmac-md4:c2VjcmV0", "unknown TSIG algorithm"), ("k:hmac-sha256:!!!", "base64"),
                         ("k", "expected"), (":hmac-sha256:c2VjcmV0", "name is empty"), ("k:hmac-sha256:", "empty")]:
        with pytest.raises(ValueError, match=message):
            TsigKey.from_text(bad)


# --- misbehaving servers ----------------------------------------------------------------------------


class JunkServer:
    """A TCP server that reads one query per connection and answers ``respond(query)``."""

    def __init__(self, respond: Callable[[bytes], bytes | None], host: str = "127.0.0.1"):
        self.respond = respond
        self.listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    length = struct.unpack("!H", _recv_exact(conn, 2))[0]
                    out = self.respond(_recv_exact(conn, length))
                    if out is None:  # say nothing until the client gives up
                        conn.recv(1)
                        continue
                    conn.sendall(out)
                except (OSError, EOFError):
                    continue

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def _question(query: bytes) -> bytes:
    end = 12
    while query[end]:
        end += 1 + query[end]
    return query[12 : end + 5]


def _response(query: bytes, answers: bytes, ancount: int, *, flags: int = 0x8400, qd: bool = True) -> bytes:
    question = _question(query) if qd else b""
    return query[:2] + struct.pack("!HHHHH", flags, 1 if qd else 0, ancount, 0, 0) + question + answers


SOA_RDATA = (name_from_text("a.example.") + name_from_text("b.example.")
             + struct.pack("!IIIII", 7, 1800, 900, 604800, 86400))


def rr(owner: bytes, rdtype: int, rdata: bytes, ttl: int = 3600) -> bytes:
    return owner + struct.pack("!HHIH", rdtype, 1, ttl, len(rdata)) + rdata


def small_axfr(query: bytes) -> list[bytes]:
    """A valid three-message AXFR of "." with compressed names, as a server would send it."""
    soa = rr(b"\x00", 6, SOA_RDATA)
    ns = rr(b"\x00", 2, name_from_text("a.root-servers.net."))
    # b.example. A, with the owner a pointer back into the SOA RDATA ("b.example." there).
    offset = 12 + len(_question(query)) + 11 + len(name_from_text("a.example."))
    a = rr(bytes([0xC0 | offset >> 8, offset & 0xFF]), 1, b"\x7f\x00\x00\x01")
    return [_response(query, soa + ns + a, 3), _response(query, rr(b"\x00", 2, name_from_text("b.root-servers.net.")), 1),
            _response(query, soa, 1)]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(
    not _ipv6_loopback(), reason="no IPv6 loopback here"))])
def test_small_axfr_with_compression_parses(host):
    server = JunkServer(lambda q: framed(*small_axfr(q)), host)
    try:
        zone = axfr(host, server.port, ROOT, timeout=2)
    finally:
        server.close()
    assert [r.rdtype for r in zone.records] == [6, 2, 1, 2]
    assert zone.records[2].owner == name_from_text("b.example.")
    assert zone.serial == 7


JUNK: dict[str, tuple[Callable[[bytes], bytes | None], str]] = {
    "closed at once": (lambda q: b"", "connection closed before the response"),
    "short length": (lambda q: b"\x00", "connection closed in the middle"),
    "cut message": (lambda q: framed(small_axfr(q)[0])[:-7], "connection closed in the middle"),
    "tiny message": (lambda q: framed(b"\x01\x02\x03"), "shorter than a DNS header"),
    "random bytes": (lambda q: framed(q[:2] + bytes(random.Random(1).randrange(256) for _ in range(300))),
                     "malformed|answered"),
    "wrong id": (lambda q: framed(bytes([q[0] ^ 1, q[1]]) + small_axfr(q)[0][2:]), "does not match query ID"),
    "not a response": (lambda q: framed(q), "not a response"),
    "refused": (lambda q: framed(_response(q, b"", 0, flags=0x8005)), "REFUSED"),
    "no question": (lambda q: framed(_response(q, rr(b"\x00", 6, SOA_RDATA), 1, qd=False)), "no question"),
    "no end soa": (lambda q: framed(*small_axfr(q)[:2]), "connection closed before message 3"),
    "not soa first": (lambda q: framed(*small_axfr(q)[1:]), "does not start with the SOA"),
    "pointer loop": (lambda q: framed(_response(q, b"\xc0" + bytes([12 + len(_question(q))]) + b"\x00" * 10, 1)),
                     "does not point backwards"),
    "rdata past end": (lambda q: framed(_response(q, b"\x00" + struct.pack("!HHIH", 6, 1, 0, 500), 1)), "runs past the end"),
    "bad soa end": (lambda q: framed(_response(q, rr(b"\x00", 6, SOA_RDATA) + rr(b"\x00", 6, soa_rdata(9)), 2)),
                    "ends with SOA serial 9"),
    "records after end": (lambda q: framed(_response(q, rr(b"\x00", 6, SOA_RDATA) * 2 + rr(b"\x00", 2, b"\x00"), 3)),
                          "after its closing SOA"),
    "garbage after records": (lambda q: framed(small_axfr(q)[2] + b"xyz"), "garbage after the last record"),
    "bad soa rdata": (lambda q: framed(_response(q, rr(b"\x00", 6, b"\x00\x00\x01"), 1)), "RDATA"),
    "other class": (lambda q: framed(_response(q, rr(b"\x00", 6, SOA_RDATA).replace(b"\x00\x06\x00\x01", b"\x00\x06\x00\x03", 1), 1)),
                    "class CH"),
    "silence": (lambda q: None, "timed out"),
}


@pytest.mark.parametrize("case", sorted(JUNK))
def test_misbehaving_server_gives_transfer_error(case):
    respond, message = JUNK[case]
    server = JunkServer(respond)
    try:
        with pytest.raises(TransferError, match=message):
            axfr("127.0.0.1", server.port, ROOT, timeout=0.5)
    finally:
        server.close()


def test_zone_membership_is_checked():
    origin = name_from_text("example.")

    def respond(q: bytes) -> bytes:
        soa = rr(origin, 6, SOA_RDATA)
        return framed(_response(q, soa + rr(name_from_text("other.test."), 1, b"\x01\x02\x03\x04") + soa, 3))

    server = JunkServer(respond)
    try:
        with pytest.raises(TransferError, match="outside the zone: other.test."):
            axfr("127.0.0.1", server.port, origin, timeout=1)
    finally:
        server.close()


def test_mutated_responses_never_raise_anything_else():
    rng = random.Random(8945)
    seen: dict[str, int] = {}

    def respond(q: bytes) -> bytes:
        messages = small_axfr(q)
        blob = bytearray(framed(*messages))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(2, len(blob))
            blob[i] = rng.randrange(256)
        if rng.random() < 0.3:
            del blob[rng.randrange(2, len(blob)):]
        return bytes(blob)

    server = JunkServer(respond)
    try:
        for _ in range(120):
            try:
                axfr("127.0.0.1", server.port, ROOT, timeout=0.3)
                seen["ok"] = seen.get("ok", 0) + 1
            except TransferError:
                seen["error"] = seen.get("error", 0) + 1
    finally:
        server.close()
    assert seen.get("error", 0) > 50


def test_dead_port_is_a_clear_error():
    from peers.proc import free_port

    with pytest.raises(TransferError, match="connection refused"):
        axfr("127.0.0.1", free_port(), ROOT, timeout=1)


def test_serial_queries_need_authority():
    def respond(q: bytes) -> bytes:
        return framed(_response(q, rr(b"\x00", 6, SOA_RDATA), 1, flags=0x8000))

    server = JunkServer(respond)
    try:
        with pytest.raises(TransferError, match="not authoritative"):
            query_soa("127.0.0.1", server.port, ROOT, timeout=1)
    finally:
        server.close()


def test_ixfr_of_wrong_start_serial_is_rejected():
    current = ZoneRecords(ROOT, (dns_soa(5),), "test")

    def respond(q: bytes) -> bytes:
        new, old = rr(b"\x00", 6, soa_rdata(7)), rr(b"\x00", 6, soa_rdata(6))
        return framed(_response(q, new + old + new + new, 4))

    server = JunkServer(respond)
    try:
        with pytest.raises(TransferError, match="IXFR starts at serial 6, ours is 5"):
            ixfr("127.0.0.1", server.port, ROOT, current, timeout=1)
    finally:
        server.close()


def soa_rdata(serial: int) -> bytes:
    return SOA_RDATA[:-20] + struct.pack("!IIIII", serial, 1800, 900, 604800, 86400)


def dns_soa(serial: int):
    from imrs.zone.records import Record

    return Record(ROOT, 6, 1, 3600, soa_rdata(serial))


def _signed_stream(query_wire: bytes, key: TsigKey, unsigned: set[int]) -> bytes:
    """A three-message AXFR of "." signed with ``key`` except the messages in ``unsigned``
    (RFC 8945 section 5.3.1 lets intermediate messages go unsigned)."""
    dkey = key.to_dnspython()
    # The server signs with its key whatever the query was signed with: the client's check
    # of the responses is what is tested.
    query = dns.message.from_wire(query_wire, keyring=lambda message, name: False)
    soa = dns.rrset.from_text(".", 3600, "IN", "SOA", "a.example. b.example. 7 1800 900 604800 86400")
    parts = [[soa, dns.rrset.from_text(".", 3600, "IN", "NS", "a.root-servers.net.")],
             [dns.rrset.from_text(".", 3600, "IN", "NS", "b.root-servers.net.")], [soa]]
    out = []
    ctx = None
    for number, part in enumerate(parts):
        response = dns.message.make_response(query)
        response.answer = part
        response.use_tsig(dkey)
        response.request_mac = query.tsig[0].mac if query.tsig else b""
        if number in unsigned:
            response.tsig = None
            wire = response.to_wire()
            if ctx is not None:
                ctx.update(wire)
        else:
            wire = response.to_wire(multi=True, tsig_ctx=ctx)
            ctx = response.tsig_ctx
        out.append(wire)
    return framed(*out)


@pytest.mark.parametrize(("unsigned", "error"), [
    (set(), None),
    ({1}, None),
    ({0}, "not TSIG-signed"),
    ({2}, "last message of the transfer is not TSIG-signed"),
])
def test_tsig_on_every_message(unsigned, error):
    key = TsigKey("k.", "hmac-sha256", b"s" * 32)
    server = JunkServer(lambda q: _signed_stream(q, key, unsigned))
    try:
        if error is None:
            assert axfr("127.0.0.1", server.port, ROOT, tsig=key, timeout=2).serial == 7
        else:
            with pytest.raises(TransferError, match=error):
                axfr("127.0.0.1", server.port, ROOT, tsig=key, timeout=2)
        if 0 not in unsigned:
            with pytest.raises(TransferError, match="does not verify"):
                axfr("127.0.0.1", server.port, ROOT, tsig=TsigKey("k.", "hmac-sha256", b"t" * 32), timeout=2)
            with pytest.raises(TransferError, match="no key is configured"):
                axfr("127.0.0.1", server.port, ROOT, timeout=2)
    finally:
        server.close()


def test_nsd_primary_sends_notify(tmp_path):
    """The helper's notify: NSD sends NOTIFY for "." to the given port after a reload."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    serials: list[int | None] = []
    try:
        with NsdPrimary(zone_file(VERSIONS[0]), tmp_path / "nsd", notify=[("127.0.0.1", port)]) as primary:
            primary.load_version(zone_file(VERSIONS[1]))
            deadline = time.monotonic() + 15
            while int(VERSIONS[1]) not in serials and time.monotonic() < deadline:
                try:
                    wire, peer = listener.recvfrom(65535)
                except TimeoutError:
                    continue
                message = dns.message.from_wire(wire)
                assert message.opcode() == dns.opcode.NOTIFY and message.question[0].name == dns.name.root
                soa = [rrset for rrset in message.answer if rrset.rdtype == dns.rdatatype.SOA]
                serials.append(soa[0][0].serial if soa else None)
                reply = dns.message.make_response(message)
                listener.sendto(reply.to_wire(), peer)
    finally:
        listener.close()
    assert int(VERSIONS[1]) in serials, serials
