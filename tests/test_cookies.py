"""DNS Cookies (RFC 7873, RFC 9018 server cookies) and EDNS TCP keepalive (RFC 7828).

The cookie jar against the RFC 9018 Appendix A examples, its time window, secret rotation
(derived, configured, from a file) and the cluster case (several jars accepting each other's
cookies); then the answers: FORMERR for malformed options, the COOKIE option in responses,
BADCOOKIE when cookies are required (UDP only), keepalive over TCP only, the order of the
options and the room they take in a UDP response.  (tests/test_compiled.py proves the fast
path gives the same bytes as the reference path for all of this.)
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from imrs.answer.cookies import (
    COOKIE_ECHO,
    COOKIE_INVALID,
    COOKIE_RESULTS,
    COOKIE_VALID,
    CookieJar,
    find_edns_option,
    make_cookie_jar,
)
from imrs.answer.respond import AnswerOptions
from imrs.config import CookieConfig
from imrs.serve.snapshot import build_snapshot
from imrs.zone.parse import load_zone_file, load_zone_records, zone_data_from_records
from imrs.zone.records import ZoneVersion

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"

COOKIE = 10
KEEPALIVE = 11


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- RFC 9018 Appendix A ------------------------------------------------------------------

SECRET_A = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
SECRET_OLD = bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715")
SECRET_NEW = bytes.fromhex("445536bcd2513298075a5d379663c962")
CLIENT_1 = ip("198.51.100.100")
CLIENT_3 = ip("203.0.113.203")
CLIENT_4 = ip("2001:db8:220:1:59de:d0f4:8769:82b8")


@pytest.mark.parametrize(
    ("secret", "client_cookie", "peer", "timestamp", "server_cookie"),
    [
        # A.1: learning a new server cookie
        (SECRET_A, "2464c4abcf10c957", CLIENT_1, 1559731985, "010000005cf79f111f8130c3eee29480"),
        # A.2: the same client, a renewed server cookie
        (SECRET_A, "2464c4abcf10c957", CLIENT_1, 1559734385, "010000005cf7a871d4a564a1442aca77"),
        # A.3: another resolver
        (SECRET_A, "fc93fc62807ddb86", CLIENT_3, 1559734700, "010000005cf7a9acf73a7810aca2381e"),
        # A.4: IPv6, after the secret rolled over
        (SECRET_NEW, "22681ab97d52c298", CLIENT_4, 1559741961, "010000005cf7c609a6bb79d16625507a"),
    ],
)
def test_rfc9018_appendix_a_server_cookies(secret, client_cookie, peer, timestamp, server_cookie):
    client = bytes.fromhex(client_cookie)
    assert CookieJar.make_server_cookie(client, peer, timestamp, secret).hex() == server_cookie
    jar = CookieJar(CookieConfig(secret=secret), os.urandom(16), clock=Clock(timestamp))
    assert jar.server_cookie(client, peer).hex() == server_cookie
    # A query with only the client cookie gets that cookie back, then ours.
    option, valid = jar.response_option(client, peer)
    assert not valid
    assert option == b"\x00\x0a\x00\x18" + client + bytes.fromhex(server_cookie)


def test_rfc9018_appendix_a_received_cookies():
    # A.2: the cookie of A.1, 40 minutes later: valid, but older than half an hour: renewed.
    jar = CookieJar(CookieConfig(secret=SECRET_A), os.urandom(16), clock=Clock(1559734385))
    a1 = bytes.fromhex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    assert jar.check(a1, CLIENT_1) == COOKIE_VALID
    option, valid = jar.response_option(a1, CLIENT_1)
    assert valid and option[4:].hex() == "2464c4abcf10c957010000005cf7a871d4a564a1442aca77"
    # A.3: Reserved octets set by another implementation, hashed as received: valid when
    # made (and echoed as it is), too old by the time of the example's query.
    a3 = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    assert jar.check(a3, CLIENT_3, now=1559727985) == COOKIE_ECHO
    assert jar.check(a3, CLIENT_3, now=1559734700) == COOKIE_INVALID
    # A.4: made with the previous secret, still accepted; the response has a new one.
    jar4 = CookieJar(CookieConfig(secret=SECRET_NEW, previous_secrets=(SECRET_OLD,)), os.urandom(16), clock=Clock(1559741961))
    a4 = bytes.fromhex("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    assert jar4.check(a4, CLIENT_4) == COOKIE_VALID
    option, valid = jar4.response_option(a4, CLIENT_4)
    assert valid and option[4:].hex() == "22681ab97d52c298010000005cf7c609a6bb79d16625507a"
    # ... and without the previous secret it is not ours.
    jar_new = CookieJar(CookieConfig(secret=SECRET_NEW), os.urandom(16), clock=Clock(1559741961))
    assert jar_new.check(a4, CLIENT_4) == COOKIE_INVALID


# -- the jar ------------------------------------------------------------------------------

T0 = 1_800_000_000.0
PEER = ip("192.0.2.7")
CLIENT = bytes.fromhex("0102030405060708")


def _issued(jar: CookieJar, at: float, peer: bytes = PEER) -> bytes:
    return CLIENT + jar.server_cookie(CLIENT, peer, at)


def test_timestamp_window_and_renewal():
    clock = Clock(T0)
    jar = CookieJar(CookieConfig(secret=SECRET_A), os.urandom(16), clock=clock)
    cookie = _issued(jar, T0)
    expected = [
        (0, COOKIE_ECHO), (1799.9, COOKIE_ECHO), (1800, COOKIE_VALID), (3600.5, COOKIE_VALID),
        (3601, COOKIE_INVALID), (-300, COOKIE_ECHO), (-301, COOKIE_INVALID), (-0.5, COOKIE_ECHO),
    ]
    for offset, status in expected:
        assert jar.check(cookie, PEER, T0 + offset) == status, offset
    # What the answer paths use, with its cache of cookies to echo, agrees at the edges
    # (asked in time order, the way the cache fills).
    for offset, status in sorted(expected):
        clock.now = T0 + offset
        option, valid = jar.response_option(cookie, PEER)
        assert valid == (status != COOKIE_INVALID), offset
        assert (option[4:] == cookie) == (status == COOKIE_ECHO), offset
        if status != COOKIE_ECHO:  # a fresh cookie, timestamped now
            assert int.from_bytes(option[16:20], "big") == int(clock.now)
    # Bound to the client cookie, the address, the secret.
    clock.now = T0
    for i in range(24):
        broken = bytearray(cookie)
        broken[i] ^= 0x40
        assert jar.check(bytes(broken), PEER) == COOKIE_INVALID, i
    assert jar.check(cookie, ip("192.0.2.8")) == COOKIE_INVALID
    other = CookieJar(CookieConfig(secret=SECRET_NEW), os.urandom(16), clock=clock)
    assert other.check(cookie, PEER) == COOKIE_INVALID
    # An IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address.
    mapped = bytes(10) + b"\xff\xff" + PEER
    assert jar.check(cookie, mapped) == COOKIE_ECHO
    assert jar.response_option(CLIENT, mapped) == jar.response_option(CLIENT, PEER)


def test_timestamps_wrap_around_32_bits():
    before_wrap = float(0x1_0000_0000 - 100)  # 2106, seconds before the 32-bit timestamp wraps
    jar = CookieJar(CookieConfig(secret=SECRET_A), os.urandom(16), clock=Clock(before_wrap))
    cookie = _issued(jar, before_wrap)
    assert cookie[12:16] == (0xFFFFFF9C).to_bytes(4, "big")
    assert jar.check(cookie, PEER, before_wrap + 500) == COOKIE_ECHO
    assert jar.check(cookie, PEER, before_wrap + 3601) == COOKIE_INVALID
    assert jar.check(_issued(jar, before_wrap + 200), PEER, before_wrap) == COOKIE_ECHO  # 200 s ahead


def test_derived_secrets_rotate_without_messages():
    clock = Clock(T0 + 10)  # T0 is a multiple of the interval: epoch n starts at T0
    master = os.urandom(16)
    config = CookieConfig(rotate_interval=600.0)
    jar = CookieJar(config, master, clock=clock)
    cookie = _issued(jar, clock.now)
    assert jar.check(cookie, PEER) == COOKIE_ECHO
    clock.now = T0 + 610  # epoch n + 1: made with the previous secret, still valid, renewed
    assert jar.check(cookie, PEER) == COOKIE_VALID
    option, valid = jar.response_option(cookie, PEER)
    assert valid and option[4:] != cookie
    renewed = option[4:]
    clock.now = T0 + 1210  # epoch n + 2: within the hour, but its secret is retired
    assert jar.check(cookie, PEER) == COOKIE_INVALID
    assert jar.check(renewed, PEER) == COOKIE_VALID
    # Another process given the same master agrees at every step; another master does not.
    twin = CookieJar(config, master, clock=Clock(T0 + 1210))
    assert twin.check(renewed, PEER) == COOKIE_VALID
    assert twin.check(cookie, PEER) == COOKIE_INVALID
    assert CookieJar(config, os.urandom(16), clock=Clock(T0 + 1210)).check(renewed, PEER) == COOKIE_INVALID
    assert jar.derive_secret(5) == twin.derive_secret(5) != jar.derive_secret(6)


def test_a_cluster_accepts_its_nodes_cookies():
    """Nodes configured with the same secret (or the same master) accept each other's
    cookies, and a rolling change (new secret, old one previous) keeps them valid."""
    clock = Clock(T0)
    node_a = CookieJar(CookieConfig(secret=SECRET_OLD), os.urandom(16), clock=clock)
    node_b = CookieJar(CookieConfig(secret=SECRET_OLD), os.urandom(16), clock=clock)
    from_a = CLIENT + node_a.server_cookie(CLIENT, PEER)
    assert node_b.check(from_a, PEER) == COOKIE_ECHO
    rolled = CookieJar(CookieConfig(secret=SECRET_NEW, previous_secrets=(SECRET_OLD,)), os.urandom(16), clock=clock)
    assert rolled.check(from_a, PEER) == COOKIE_VALID  # accepted, and renewed with the new secret
    from_rolled = CLIENT + rolled.server_cookie(CLIENT, PEER)
    assert node_a.check(from_rolled, PEER) == COOKIE_INVALID  # not rolled yet: a fresh one, no harm
    master = os.urandom(16)
    worker_1 = CookieJar(CookieConfig(), master, clock=clock)
    worker_2 = CookieJar(CookieConfig(), master, clock=clock)
    assert worker_2.check(CLIENT + worker_1.server_cookie(CLIENT, PEER), PEER) == COOKIE_ECHO


def test_secret_file_is_reread_when_it_changes(tmp_path, caplog):
    path = tmp_path / "cookie-secrets"

    def write(text: str, mtime: int) -> None:
        path.write_text(text)
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))

    write(SECRET_OLD.hex() + "\n", 1000)
    clock = Clock(T0)
    jar = CookieJar(CookieConfig(secret_file=str(path)), os.urandom(16), clock=clock)
    old = CLIENT + jar.server_cookie(CLIENT, PEER)
    assert jar.current_secret == SECRET_OLD
    # A new current secret, the old one kept: looked at no more than once a second.
    write(f"# rolled\n{SECRET_NEW.hex()}\n{SECRET_OLD.hex()}\n", 2000)
    clock.now = T0 + 0.5
    assert jar.current_secret == SECRET_OLD
    clock.now = T0 + 1.0
    assert jar.current_secret == SECRET_NEW
    assert jar.check(old, PEER) == COOKIE_VALID
    new = CLIENT + jar.server_cookie(CLIENT, PEER)
    assert jar.check(new, PEER) == COOKIE_ECHO
    # A broken file: the last good secrets stay, with a warning.
    write("not hex\n", 3000)
    clock.now = T0 + 2.5
    with caplog.at_level(logging.WARNING, logger="imrs.cookies"):
        assert jar.current_secret == SECRET_NEW
    assert "last good" in caplog.text
    assert jar.check(old, PEER) == COOKIE_VALID
    # The old secret retired.
    write(SECRET_NEW.hex() + "\n", 4000)
    clock.now = T0 + 4
    assert jar.check(old, PEER) == COOKIE_INVALID
    assert jar.check(new, PEER) == COOKIE_ECHO
    # A file that went away changes nothing either.
    path.unlink()
    clock.now = T0 + 6
    assert jar.check(new, PEER) == COOKIE_ECHO
    with pytest.raises(ValueError):
        CookieJar(CookieConfig(secret_file=str(path)), os.urandom(16))


def test_jar_setup():
    assert make_cookie_jar(CookieConfig(enabled=False), os.urandom(16)) is None
    assert isinstance(make_cookie_jar(CookieConfig(), os.urandom(16)), CookieJar)
    with pytest.raises(ValueError):
        CookieJar(CookieConfig(), b"short")


def test_valid_server_cookie_of_a_query():
    clock = Clock(T0)
    jar = CookieJar(CookieConfig(secret=SECRET_A), os.urandom(16), clock=clock)
    good = _issued(jar, T0)

    def query(*options) -> bytes:
        return dns.message.make_query("example.", "A", use_edns=0, options=list(options)).to_wire()

    assert jar.valid_server_cookie(query(dns.edns.GenericOption(COOKIE, good)), PEER)
    assert jar.valid_server_cookie(query(dns.edns.GenericOption(65001, b"x"), dns.edns.GenericOption(COOKIE, good)), PEER)
    assert not jar.valid_server_cookie(query(dns.edns.GenericOption(COOKIE, good)), ip("192.0.2.99"))
    assert not jar.valid_server_cookie(query(dns.edns.GenericOption(COOKIE, CLIENT)), PEER)
    assert not jar.valid_server_cookie(query(), PEER)
    assert not jar.valid_server_cookie(dns.message.make_query("example.", "A").to_wire(), PEER)
    assert not jar.valid_server_cookie(b"\x00" * 5, PEER)
    assert not jar.valid_server_cookie(query(dns.edns.GenericOption(COOKIE, good)), PEER, now=T0 + 4000)
    wire = query(dns.edns.GenericOption(COOKIE, good))
    assert find_edns_option(wire, COOKIE) == good
    assert find_edns_option(wire[:-3], COOKIE) is None  # truncated


# -- answers ----------------------------------------------------------------------------

PEER6 = ip("2001:db8::77")


@pytest.fixture(scope="module")
def zone():
    return load_zone_file(ZONE)


@pytest.fixture(scope="module")
def jar():
    return CookieJar(CookieConfig(secret=SECRET_A), os.urandom(16), clock=Clock(T0))


@pytest.fixture(scope="module")
def snap(zone, jar):
    return build_snapshot([zone], AnswerOptions(nsid=b"node-1", tcp_keepalive=100), cookies=jar)


def _query(name="com.", rdtype="NS", options=(), payload=1232, do=False, **kwargs) -> bytes:
    return dns.message.make_query(name, rdtype, use_edns=0, payload=payload, want_dnssec=do, options=list(options), **kwargs).to_wire()


def _cookie(data: bytes) -> dns.edns.Option:
    return dns.edns.GenericOption(COOKIE, data)


def _answers(snap, wire: bytes, tcp: bool, peer: bytes = PEER) -> dns.message.Message:
    """The response, the same from the snapshot (fast path first) and the reference path."""
    out = snap.answer(wire, tcp, len(peer) == 16, peer)
    assert out == snap.reference.respond(wire, tcp, len(peer) == 16, peer)
    return dns.message.from_wire(out)


def _option(response: dns.message.Message, code: int) -> bytes | None:
    for option in response.options:
        if option.otype == code:
            return option.to_wire()
    return None


@pytest.mark.parametrize("length", [0, 1, 7, 9, 12, 15, 41, 64])
@pytest.mark.parametrize("tcp", [False, True])
def test_malformed_cookie_option_is_formerr(snap, length, tcp):
    response = _answers(snap, _query(options=[_cookie(bytes(range(length)))]), tcp)
    assert response.rcode() == dns.rcode.FORMERR
    assert response.edns == 0  # with our OPT record (RFC 7873 5.2.2)
    assert _option(response, COOKIE) is None
    assert not response.answer and not response.authority


@pytest.mark.parametrize("length", [8, 16, 24, 33, 40])
def test_well_formed_cookie_lengths_are_answered(snap, jar, length):
    client = bytes(range(1, 9))
    response = _answers(snap, _query(options=[_cookie(client + bytes(length - 8))]), False)
    assert response.rcode() == dns.rcode.NOERROR and response.authority
    data = _option(response, COOKIE)
    assert data is not None and len(data) == 24 and data[:8] == client
    assert data[8:12] == b"\x01\x00\x00\x00" and int.from_bytes(data[12:16], "big") == int(T0)
    assert jar.check(data, PEER) == COOKIE_ECHO


def test_a_valid_cookie_is_echoed_and_others_renewed(snap, jar):
    valid = _issued(jar, T0 - 60)
    response = _answers(snap, _query(options=[_cookie(valid)]), False)
    assert _option(response, COOKIE) == valid
    old = _issued(jar, T0 - 2000)
    renewed = _option(_answers(snap, _query(options=[_cookie(old)]), False), COOKIE)
    assert renewed != old and renewed[:8] == CLIENT and jar.check(renewed, PEER) == COOKIE_ECHO
    # The same cookie from IPv6: not ours for that address, a fresh one for it.
    fresh = _option(_answers(snap, _query(options=[_cookie(valid)]), False, PEER6), COOKIE)
    assert fresh != valid and jar.check(fresh, PEER6) == COOKIE_ECHO


def test_cookies_off_or_no_address_ignore_the_option(zone, snap):
    plain = build_snapshot([zone], AnswerOptions())
    for bad in (CLIENT, CLIENT[:5], bytes(41)):
        wire = _query(options=[_cookie(bad)])
        for snapshot, peer in ((plain, PEER), (snap, None)):
            out = snapshot.answer(wire, False, False, peer)
            assert out == snapshot.reference.respond(wire, False, False, peer)
            response = dns.message.from_wire(out)
            assert response.rcode() == dns.rcode.NOERROR and _option(response, COOKIE) is None


def test_badcookie_when_required_over_udp_only(snap, jar, monkeypatch):
    monkeypatch.setattr(jar, "require", True)
    invalid = bytearray(_issued(jar, T0))
    invalid[-1] ^= 1
    for cookie in (CLIENT, bytes(invalid), _issued(jar, T0 - 4000), CLIENT + bytes(8)):
        wire = _query(options=[_cookie(cookie)], do=True)
        response = _answers(snap, wire, False)
        assert response.rcode() == dns.rcode.BADCOOKIE
        assert response.flags & dns.flags.QR and not response.flags & dns.flags.AA
        assert response.question[0].name == dns.name.from_text("com.")
        assert not response.answer and not response.authority and not response.additional
        assert response.ednsflags & dns.flags.DO
        fresh = _option(response, COOKIE)
        assert fresh[:8] == cookie[:8] and jar.check(fresh, PEER) == COOKIE_ECHO
        # Retrying with the cookie just learned works; over TCP it is never required.
        retry = _answers(snap, _query(options=[_cookie(fresh)], do=True), False)
        assert retry.rcode() == dns.rcode.NOERROR and retry.authority
        over_tcp = _answers(snap, wire, True)
        assert over_tcp.rcode() == dns.rcode.NOERROR and over_tcp.authority
        assert _option(over_tcp, COOKIE) is not None
    # A query without a cookie is not affected; nor one from outside the zones (REFUSED).
    assert _answers(snap, _query(), False).rcode() == dns.rcode.NOERROR
    assert _answers(snap, _query(options=[_cookie(_issued(jar, T0))]), False).rcode() == dns.rcode.NOERROR


def test_keepalive_over_tcp_only(snap):
    asks = dns.edns.GenericOption(KEEPALIVE, b"")
    over_tcp = _answers(snap, _query(options=[asks]), True)
    assert _option(over_tcp, KEEPALIVE) == (100).to_bytes(2, "big")  # 10 s in units of 100 ms
    assert _option(_answers(snap, _query(options=[asks]), False), KEEPALIVE) is None
    assert _option(_answers(snap, _query(), True), KEEPALIVE) is None
    # A TIMEOUT in a query: FORMERR over TCP, ignored over UDP (RFC 7828 3.2.1, 3.3.1).
    with_timeout = _query(options=[dns.edns.GenericOption(KEEPALIVE, b"\x00\x05")])
    assert _answers(snap, with_timeout, True).rcode() == dns.rcode.FORMERR
    assert _answers(snap, with_timeout, False).rcode() == dns.rcode.NOERROR
    off = build_snapshot([load_zone_file(ZONE)], AnswerOptions())
    response = dns.message.from_wire(off.answer(_query(options=[asks]), True, False, PEER))
    assert _option(response, KEEPALIVE) is None


def test_option_order(snap):
    """NSID, COOKIE, keepalive (then EDE): the order of our OPT record's options."""
    nsid = dns.edns.GenericOption(3, b"")
    asks = dns.edns.GenericOption(KEEPALIVE, b"")
    response = _answers(snap, _query(options=[asks, _cookie(CLIENT), nsid]), True)
    assert [option.otype for option in response.options] == [3, COOKIE, KEEPALIVE]
    assert _option(response, 3) == b"node-1"
    refused = _answers(snap, _query("example.", "TXT", options=[asks, _cookie(CLIENT)], rdclass="CH"), True)
    assert refused.rcode() == dns.rcode.REFUSED
    assert [option.otype for option in refused.options] == [COOKIE, KEEPALIVE, 15]


def test_option_order_with_expire(jar):
    """NSID, COOKIE, EXPIRE, keepalive: EDNS EXPIRE (RFC 7314) in a SOA answer at the apex."""
    version = ZoneVersion(load_zone_records(ZONE))
    data = zone_data_from_records(version.records)
    snap = build_snapshot([data], AnswerOptions(nsid=b"n", tcp_keepalive=50), cookies=jar,
                          versions={version.records.origin: version})
    options = [dns.edns.GenericOption(9, b""), dns.edns.GenericOption(KEEPALIVE, b""), _cookie(CLIENT), dns.edns.GenericOption(3, b"")]
    response = _answers(snap, _query(".", "SOA", options=options), True)
    assert response.rcode() == dns.rcode.NOERROR and response.answer
    assert [option.otype for option in response.options] == [3, COOKIE, 9, KEEPALIVE]
    assert _option(response, KEEPALIVE) == (50).to_bytes(2, "big")


def test_cookie_takes_its_room_in_udp_responses(snap, jar):
    """The longer OPT record counts against the size limit as the other options do: with a
    cookie, a response that filled the limit loses records rather than passing the limit."""
    for name, rdtype in (("com.", "NS"), ("aaa.", "NS"), (".", "DNSKEY"), ("nosuchtld.", "A"), (".", "NS")):
        for payload in (512, 700, 1232):
            plain = snap.answer(_query(name, rdtype, payload=payload, do=True), False, False, PEER)
            for options in ([_cookie(CLIENT)], [_cookie(_issued(jar, T0)), dns.edns.GenericOption(KEEPALIVE, b"")]):
                wire = _query(name, rdtype, payload=payload, do=True, options=options)
                out = snap.answer(wire, False, False, PEER)
                assert out == snap.reference.respond(wire, False, False, PEER)
                assert len(out) <= max(payload, 512)
                assert len(out) <= len(plain) + 28
                response = dns.message.from_wire(out)
                assert _option(response, COOKIE) is not None
                if len(plain) + 28 <= payload:  # room for it all: the same records
                    assert dns.message.from_wire(plain).sections[1:3] == response.sections[1:3]
                    assert len(out) == len(plain) + 28


@pytest.mark.parametrize("answer", ["snapshot", "reference"])
def test_each_cookie_query_is_counted_once_by_its_result(zone, answer):
    """The jar counts what became of each query with a COOKIE option, once, whichever path
    answers it (the fast path asks the jar only once it answers, never before falling back)."""
    jar = CookieJar(CookieConfig(secret=SECRET_A), os.urandom(16), clock=Clock(T0))
    snap = build_snapshot([zone], AnswerOptions(tcp_keepalive=100), cookies=jar)
    respond = snap.answer if answer == "snapshot" else snap.reference.respond
    invalid = bytearray(_issued(jar, T0))
    invalid[-1] ^= 1

    def counted(options, tcp=False, name="com.", rdtype="NS") -> dict[str, int]:
        before = list(jar.counts)
        out = respond(_query(name, rdtype, options=options), tcp, False, PEER)
        assert out is not None
        return {result: after - was for result, was, after in zip(COOKIE_RESULTS, before, jar.counts) if after != was}

    assert counted([_cookie(CLIENT)]) == {"client_only": 1}
    assert counted([_cookie(CLIENT)], name="nosuchtld.", rdtype="A") == {"client_only": 1}
    assert counted([_cookie(_issued(jar, T0 - 60))]) == {"valid": 1}
    assert counted([_cookie(_issued(jar, T0 - 60))], tcp=True) == {"valid": 1}  # echoed from the jar's memory
    assert counted([_cookie(_issued(jar, T0 - 2000))], name=".", rdtype="DNSKEY") == {"valid": 1}  # renewed
    assert counted([_cookie(bytes(invalid))]) == {"invalid": 1}
    assert counted([_cookie(_issued(jar, T0 - 4000))]) == {"invalid": 1}  # too old
    assert counted([_cookie(CLIENT + bytes(9))]) == {"invalid": 1}  # not our shape
    assert counted([_cookie(CLIENT[:5])]) == {"malformed": 1}
    assert counted([_cookie(bytes(41))], tcp=True) == {"malformed": 1}
    assert counted([]) == {}
    # FORMERR for a keepalive TIMEOUT: the cookie is not looked at
    assert counted([_cookie(CLIENT), dns.edns.GenericOption(KEEPALIVE, b"\x00\x05")], tcp=True) == {}
    jar.require = True
    assert counted([_cookie(CLIENT)]) == {"client_only": 1, "badcookie": 1}
    assert counted([_cookie(bytes(invalid))]) == {"invalid": 1, "badcookie": 1}
    assert counted([_cookie(CLIENT)], tcp=True) == {"client_only": 1}  # never required over TCP
    assert counted([_cookie(_issued(jar, T0))]) == {"valid": 1}
