"""DNS over TCP (RFC 7766) against a running `imrs serve`: framing, pipelining, split writes,
idle timeout, half frames, the connection cap, the per-connection query limit, clients that
never read, garbage frames, and the root zone's biggest answers (never truncated on TCP).

Four servers start together once for the module: the root (cut down to a few TLDs; the apex is
the real one) with the default settings, the same with `tcp-idle-timeout = 1`, and a tiny zone
with `tcp-max-connections = 5`, and one with `tcp-max-queries-per-connection = 3`.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import dns.flags
import dns.name
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from serverproc import (
    SMALL_ZONE,
    ServerProc,
    closed_by_peer,
    frame,
    parse,
    query,
    read_frame,
    root_subset,
    start_all,
    tcp_ask,
    tcp_connect,
    udp_ask,
)

TLDS = {"net", "org", "com", "arpa", "de", "nl"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("tcp")
    root = d / "root.zone"
    root.write_text(root_subset(TLDS))
    small = d / "example.zone"
    small.write_text(SMALL_ZONE)
    made = {
        "root": ServerProc(d, ["--zone", str(root)], hosts=("127.0.0.1", "::1"), name="root"),
        "idle": ServerProc(d, ["--zone", str(root)], config="[server]\ntcp-idle-timeout = 1\n", name="idle"),
        "cap": ServerProc(d, ["--zone", str(small)], probe="example.",
                          config="[server]\nworkers = 1\ntcp-max-connections = 5\ntcp-idle-timeout = 20\n", name="cap"),
        "maxq": ServerProc(d, ["--zone", str(small)], probe="example.",
                           config="[server]\ntcp-max-queries-per-connection = 3\n", name="maxq"),
    }
    start_all(list(made.values()))
    made["root_text"] = root.read_text()
    yield made
    errors = []
    for key in ("root", "idle", "cap", "maxq"):
        try:
            made[key].stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


def _still_serves(srv) -> None:
    """A fresh UDP and a fresh TCP query are answered."""
    probe = "example." if srv.probe == "example." else "."
    for ask in (udp_ask, tcp_ask):
        wire = query(probe, "SOA", random.randrange(65536))
        resp = ask(srv.host, srv.port, wire)
        assert resp is not None, f"{ask.__name__} got no answer"
        msg = parse(resp)
        assert msg.id == struct.unpack("!H", wire[:2])[0] and msg.rcode() == dns.rcode.NOERROR and msg.answer


# -------------------------------------------------------------------------- framing


def test_framing_length_prefix_matches_message(servers):
    srv = servers["root"]
    wire = query("com.", "NS", 4242, do=True)
    with tcp_connect(*srv.addr) as s:
        s.sendall(frame(wire))
        prefix = s.recv(2, socket.MSG_WAITALL)
        assert len(prefix) == 2
        length = struct.unpack("!H", prefix)[0]
        body = b""
        while len(body) < length:
            chunk = s.recv(length - len(body))
            assert chunk
            body += chunk
        msg = parse(body)  # dnspython rejects trailing junk: the prefix is exact
        assert msg.id == 4242 and msg.flags & dns.flags.QR
        assert str(msg.question[0].name) == "com." and msg.rcode() == dns.rcode.NOERROR
        assert msg.authority, "a referral for com. has an authority section"
        # nothing more is sent for one query
        s.settimeout(0.3)
        with pytest.raises((TimeoutError, socket.timeout)):
            s.recv(1)


def test_ipv6_tcp(servers):
    srv = servers["root"]
    resp = tcp_ask("::1", srv.port, query(".", "SOA", 7))
    assert resp is not None
    msg = parse(resp)
    assert msg.id == 7 and msg.answer[0].rdtype == dns.rdatatype.SOA


def test_pipelined_queries_in_one_write_answered_in_order(servers):
    srv = servers["root"]
    names = [(".", "SOA"), ("com.", "NS"), ("org.", "DS"), ("nonexistent-tld.", "A"), (".", "DNSKEY"),
             ("a.root-servers.net.", "A"), ("de.", "NS"), ("example.com.", "MX"), (".", "NS"), ("nl.", "DS")]
    wires = [query(n, t, 1000 + i, do=(i % 2 == 0)) for i, (n, t) in enumerate(names)]
    with tcp_connect(*srv.addr) as s:
        s.sendall(b"".join(frame(w) for w in wires))
        got = [read_frame(s) for _ in wires]
    assert all(g is not None for g in got)
    msgs = [parse(g) for g in got]
    assert [m.id for m in msgs] == [1000 + i for i in range(len(names))]
    assert [(str(m.question[0].name), dns.rdatatype.to_text(m.question[0].rdtype)) for m in msgs] == names
    assert msgs[3].rcode() == dns.rcode.NXDOMAIN
    assert all(m.rcode() == dns.rcode.NOERROR for i, m in enumerate(msgs) if i != 3)


def test_pipelined_answers_equal_single_answers(servers):
    srv = servers["root"]
    wires = [query(n, "NS", 50 + i) for i, n in enumerate(["com.", "org.", "net.", "arpa."])]
    singles = [tcp_ask(srv.host, srv.port, w) for w in wires]
    with tcp_connect(*srv.addr) as s:
        s.sendall(b"".join(frame(w) for w in wires))
        piped = [read_frame(s) for _ in wires]
    assert piped == singles


def test_query_split_byte_by_byte(servers):
    srv = servers["root"]
    wire = query("org.", "NS", 777)
    data = frame(wire)
    with tcp_connect(*srv.addr) as s:
        for i in range(len(data)):
            s.send(data[i : i + 1])
            time.sleep(0.002)
        resp = read_frame(s)
    assert resp is not None
    msg = parse(resp)
    assert msg.id == 777 and str(msg.question[0].name) == "org." and msg.authority


def test_two_queries_split_across_writes_at_odd_places(servers):
    srv = servers["root"]
    data = frame(query("com.", "DS", 1)) + frame(query("net.", "DS", 2))
    cuts = [1, 3, 20, len(data) - 5, len(data)]
    with tcp_connect(*srv.addr) as s:
        start = 0
        for cut in cuts:
            s.send(data[start:cut])
            start = cut
            time.sleep(0.02)
        ids = [parse(read_frame(s)).id for _ in range(2)]
    assert ids == [1, 2]


# -------------------------------------------------------------------------- timeouts


def test_idle_connection_closed_after_timeout(servers):
    srv = servers["idle"]
    with tcp_connect(*srv.addr) as s:
        took = closed_by_peer(s, timeout=8)
    assert took is not None, "a silent connection stayed open past 8 s (tcp-idle-timeout = 1)"
    assert 0.7 <= took <= 5, took


def test_idle_timeout_restarts_after_each_answer(servers):
    srv = servers["idle"]
    with tcp_connect(*srv.addr) as s:
        for i in range(4):  # 4 queries 0.5 s apart: 2 s in all, longer than the timeout
            s.sendall(frame(query(".", "SOA", 300 + i)))
            resp = read_frame(s)
            assert resp is not None and parse(resp).id == 300 + i, f"closed before query {i}"
            time.sleep(0.5)
        assert closed_by_peer(s, timeout=8) is not None


def test_half_frame_then_silence_closed_without_harming_others(servers):
    srv = servers["idle"]
    other = tcp_connect(*srv.addr)
    half = tcp_connect(*srv.addr)
    try:
        half.sendall(frame(query("com.", "NS", 9))[:10])  # prefix says 20+ octets, 8 come
        t0 = time.monotonic()
        answered = 0
        # keep the other connection busy (one query every 0.25 s) until the half one is closed
        half.settimeout(0.25)
        closed = None
        for i in range(40):
            other.sendall(frame(query(".", "SOA", 400 + i)))
            resp = read_frame(other)
            assert resp is not None and parse(resp).id == 400 + i
            answered += 1
            closed = closed_by_peer(half, 0.25)
            if closed is not None:
                break
        took = time.monotonic() - t0
        assert closed is not None, "half a frame kept the connection open for 10 s"
        assert 0.7 <= took <= 6, took
        assert answered >= 2
        other.sendall(frame(query("org.", "NS", 499)))
        assert parse(read_frame(other)).id == 499
    finally:
        other.close()
        half.close()
    _still_serves(srv)


def test_client_that_never_reads_does_not_stop_the_server(servers):
    srv = servers["idle"]
    hog = tcp_connect(*srv.addr)
    try:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # . RRSIG with DO is ~2.2 kB over TCP: 4,000 of them (9 MB) cannot fit in the buffers
        # (the kernel's send buffer alone may grow to 4 MB)
        one = frame(query(".", "RRSIG", 1, do=True))
        blob = one * 4000
        hog.settimeout(5)
        try:
            hog.sendall(blob)
        except (TimeoutError, ConnectionError):
            pass  # the server stopped reading from us, or already dropped us: both fine
        t0 = time.monotonic()
        # others are served meanwhile
        for i in range(5):
            _still_serves(srv)
            time.sleep(0.1)
        # ... and the hog is dropped (its write buffer stays full past the 1 s timeout)
        left = 10 - (time.monotonic() - t0)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        assert closed_by_peer(hog, timeout=max(left, 1)) is not None, "a client that never reads kept its connection"
    finally:
        hog.close()
    _still_serves(srv)


# -------------------------------------------------------------------------- limits


def test_connection_cap_evicts_the_longest_idle(servers):
    """At the cap, a new connection is served and the connection idle the longest makes room
    (so thousands of idle connections cannot lock real clients out)."""
    srv = servers["cap"]
    conns = [tcp_connect(*srv.addr) for _ in range(5)]
    try:
        for i, c in enumerate(conns):
            c.sendall(frame(query("www.example.", "A", 600 + i)))
            assert parse(read_frame(c)).id == 600 + i
        conns.append(tcp_connect(*srv.addr))  # a 6th is served; the longest idle makes room
        conns[5].sendall(frame(query("www.example.", "A", 666)))
        assert parse(read_frame(conns[5])).id == 666
        assert closed_by_peer(conns[0], timeout=3) is not None
        for i, c in enumerate(conns[1:], 1):
            c.sendall(frame(query("www.example.", "AAAA", 700 + i)))
            msg = parse(read_frame(c))
            assert msg.id == 700 + i and msg.answer
    finally:
        for c in conns:
            c.close()


def test_max_queries_per_connection_pipelined(servers):
    srv = servers["maxq"]
    with tcp_connect(*srv.addr) as s:
        s.sendall(b"".join(frame(query("www.example.", "A", 900 + i)) for i in range(5)))
        ids = []
        for _ in range(5):
            resp = read_frame(s)
            if resp is None:
                break
            ids.append(parse(resp).id)
        assert ids == [900, 901, 902]
        assert closed_by_peer(s, timeout=3) is not None


def test_max_queries_per_connection_one_at_a_time(servers):
    srv = servers["maxq"]
    with tcp_connect(*srv.addr) as s:
        for i in range(3):
            s.sendall(frame(query("www.example.", "A", 950 + i)))
            assert parse(read_frame(s)).id == 950 + i
        assert closed_by_peer(s, timeout=3) is not None, "still open after 3 answers"


# -------------------------------------------------------------------------- garbage


def _garbage_frames() -> list[bytes]:
    rng = random.Random(7766)
    frames = [
        b"",  # length 0
        b"\x12",
        b"\x12\x34\x00\x00\x00",  # shorter than a header
        b"\x01\x02" + b"\x00\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x03com",  # name runs off the end
        b"\x01\x03" + b"\x00\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        b"\x01\x04" + b"\x00\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x80abc\x00\x00\x01\x00\x01",  # bad label type
        b"\x01\x05" + b"\x00\x00" + b"\x00\x05\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x01\x00\x01",  # QDCOUNT 5
        b"\x01\x06" + b"\x80\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x06\x00\x01",  # a response
        b"\x01\x07" + b"\x00\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x05" + b"\x00\x00\x06\x00\x01\x00",  # ARCOUNT 5, 1 octet
        b"\xff" * 300,
    ]
    frames += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(40)]
    return frames


def test_garbage_frames_get_formerr_or_nothing(servers):
    srv = servers["root"]
    frames = _garbage_frames()
    final = query(".", "SOA", 0xBEEF)
    with tcp_connect(*srv.addr, timeout=10) as s:
        s.sendall(b"".join(frame(f) for f in frames) + frame(final))
        replies = []
        for _ in range(len(frames) + 1):
            resp = read_frame(s)
            assert resp is not None, "the server closed the connection over garbage"
            replies.append(resp)
            if resp[:2] == b"\xbe\xef":
                break
    assert replies and parse(replies[-1]).answer[0].rdtype == dns.rdatatype.SOA
    garbage_ids = {f[:2] for f in frames if len(f) >= 2}
    for r in replies[:-1]:
        assert len(r) >= 12 and r[2] & 0x80, "a reply to garbage must be a DNS response"
        assert r[:2] in garbage_ids
    # the clearly malformed questions get FORMERR
    by_id = {r[:2]: r for r in replies[:-1]}
    for qid in (b"\x01\x02", b"\x01\x03", b"\x01\x04", b"\x01\x05", b"\x01\x07"):
        assert qid in by_id, f"no answer to malformed query {qid.hex()}"
        assert by_id[qid][3] & 0x0F == dns.rcode.FORMERR
    assert b"\x01\x06" not in by_id, "a response must not be answered"
    _still_serves(srv)


def test_garbage_then_close_mid_frame(servers):
    srv = servers["root"]
    for blob in (b"\xff", b"\x00\x40" + os.urandom(20), os.urandom(3000)):
        with tcp_connect(*srv.addr) as s:
            s.sendall(blob)
    _still_serves(srv)


# -------------------------------------------------------------------------- big answers


def _apex_counts(zone_text: str) -> dict[int, int]:
    """rdtype -> number of records at the apex (RRSIG counted separately)."""
    zone = dns.zone.from_text(zone_text, origin=".", relativize=False)
    node = zone.find_node(dns.name.root)
    return {rds.rdtype: len(rds) for rds in node.rdatasets if rds.rdtype != dns.rdatatype.RRSIG} | {
        dns.rdatatype.RRSIG: sum(len(rds) for rds in node.rdatasets if rds.rdtype == dns.rdatatype.RRSIG)}


@pytest.mark.parametrize("rdtype", ["RRSIG", "DNSKEY", "NS", "NSEC", "ZONEMD", "SOA"])
def test_tcp_answers_for_the_apex_are_never_truncated(servers, rdtype):
    srv = servers["root"]
    counts = _apex_counts(servers["root_text"])
    wire = query(".", rdtype, 321, do=True, payload=512)
    resp = tcp_ask(srv.host, srv.port, wire)
    assert resp is not None
    msg = parse(resp)
    assert not msg.flags & dns.flags.TC
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    code = dns.rdatatype.from_text(rdtype)
    got = sum(len(rrset) for rrset in msg.answer if rrset.rdtype == code)
    assert got == counts[code], f"{got} {rdtype} records, the zone has {counts[code]}"
    if rdtype != "RRSIG":  # the RRset's signature comes along with DO
        assert any(r.rdtype == dns.rdatatype.RRSIG and r.covers == code for r in msg.answer)
    if rdtype in ("RRSIG", "NS"):
        # root-server glue in full: 13 A and 13 AAAA
        glue = [r for r in msg.additional if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
        assert sum(len(r) for r in glue) == 26
    assert msg.edns >= 0 and msg.ednsflags & dns.flags.DO


def test_rrsig_answer_truncated_on_udp_but_whole_on_tcp(servers):
    srv = servers["root"]
    wire = query(".", "RRSIG", 99, do=True, payload=4096)
    udp = parse(udp_ask(srv.host, srv.port, wire))
    tcp_wire = tcp_ask(srv.host, srv.port, wire)
    tcp = parse(tcp_wire)
    assert udp.flags & dns.flags.TC, "expected the biggest apex answer not to fit in a UDP response"
    assert not tcp.flags & dns.flags.TC
    assert len(tcp_wire) > 1232
    assert len(tcp.answer) >= 5
