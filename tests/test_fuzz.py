"""Fuzz the real UDP and TCP listeners with > 100,000 random, mutated and odd packets.

One imrs server (a subprocess on a free 127.0.0.1 port) serves the whole module.  Every
reply must parse with dnspython, be a response (QR=1), carry the query's ID, and be no
larger than the client allowed: over UDP 512 octets without a valid EDNS OPT record,
otherwise max(512, min(payload, 1232)); over TCP 65535.  A well-formed query must always
be answered.  Every ~5,000 packets, and at the end, the server must still answer `. SOA`
over UDP and TCP, and its process must be alive; at the end its stderr must hold no Python
traceback.

Packets are deterministic (seeded ``random`` for the bulk, ``derandomize`` for hypothesis);
set IMRS_FUZZ_SEED to explore other seeds, IMRS_FUZZ_SCALE (e.g. 0.1) to run a short
version.  Counts are printed (``pytest -s tests/test_fuzz.py``).
"""

from __future__ import annotations

import ast
import os
import random
import re
import select
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fuzzlib import (
    C_ANY, C_CH, C_HS, C_IN, C_NONE, CD, CHAOS_NAMES, COMMON_QTYPES, EDNS_PAYLOADS, RD, AD,
    T_IXFR, T_SOA, T_TSIG, Checker, PacketFactory, Pkt, TcpScript, UdpDriver, edns_option,
    frame, header, labels_wire, name_wire, opt_rr, rr, run_tcp_scripts, soa_query, split_chunks,
    zone_names,
)
from peers import proc
from peers.imrs_server import ImrsServer

ZONE = Path(os.environ.get("IMRS_FUZZ_ZONE", "/work/shared/zones/testroot/root-2026082201.zone"))
SEED = int(os.environ.get("IMRS_FUZZ_SEED", "20260822"))
SCALE = float(os.environ.get("IMRS_FUZZ_SCALE", "1"))
UDP_PACKETS = int(86_000 * SCALE)  # + the qtype sweep (~2,100) + hypothesis (~2 x 2,500)
TCP_PACKETS = int(11_000 * SCALE)  # + the special streams (~1,500)
HYPOTHESIS_EXAMPLES = max(50, int(2_500 * SCALE))
HEALTH_EVERY = 5_000
UDP_WINDOW = 64
TIME_LIMIT = 240.0  # per test: every loop is bounded (pytest-timeout is not required)

TOTAL = Checker()  # module totals, printed at the end


def _merge(ck: Checker) -> None:
    TOTAL.stats.update(ck.stats)
    TOTAL.rcodes.update(ck.rcodes)
    TOTAL.failure_count += ck.failure_count


def _assert_clean(ck: Checker, what: str) -> None:
    if ck.failure_count:
        shown = "\n  ".join(ck.failures)
        pytest.fail(f"{what}: {ck.failure_count} failures; first {len(ck.failures)}:\n  {shown}", pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not ZONE.is_file():
        pytest.skip(f"zone file {ZONE} not found")
    work = tmp_path_factory.mktemp("fuzz-imrs")
    config = work / "imrs.toml"
    # NSID on, so NSID requests are answered with the option; 1232 is the UDP cap checked here.
    # No cap on FORMERR/NOTIMP responses (error-rate 0): every one of them is checked here.
    config.write_text('[server]\nedns-buffer-size = 1232\nnsid = "fuzz.imrs.test"\n[rrl]\nerror-rate = 0\n')
    srv = ImrsServer(ZONE, work, extra_args=["--config", str(config)])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()  # raises if the server died, hung on SIGTERM or wrote a traceback


@pytest.fixture(scope="module")
def names():
    if not ZONE.is_file():
        pytest.skip(f"zone file {ZONE} not found")
    tlds, hosts = zone_names(ZONE)
    rng = random.Random(SEED)
    return rng.sample(tlds, min(400, len(tlds))), rng.sample(hosts, min(400, len(hosts)))


def health(srv: ImrsServer, where: str) -> None:
    assert srv.alive(), f"imrs died ({where}); stderr:\n{proc.tail(srv.stderr_path)}"
    for tcp in (False, True):
        ok = any(proc.answers_soa(srv.host, srv.port, tcp=tcp) for _ in range(3))
        assert ok, f"imrs does not answer `. SOA` over {'TCP' if tcp else 'UDP'} ({where})"
    TOTAL.stats["health_checks"] += 1


def stderr_traceback(srv: ImrsServer) -> str | None:
    text = proc.tail(srv.stderr_path, 200_000)
    if "Traceback (most recent call last)" in text:
        return text[text.index("Traceback (most recent call last)") - 300 :][:4000]
    return None


# ---------------------------------------------------------------------------------------
# UDP: the seeded bulk


def qtype_sweep(rng: random.Random, tlds: list[str]) -> list[Pkt]:
    """Well-formed queries for qtypes 0..299 and a sample of the rest, odd classes too."""
    qtypes = list(range(300)) + sorted(rng.sample(range(300, 65536), 1500)) + [65535]
    out = []
    for qt in qtypes:
        name = rng.choice([b"\x00", name_wire(rng.choice(tlds)), name_wire("nonexistent-tld."),
                           name_wire("www." + rng.choice(tlds))])
        qclass = rng.choice([C_IN, C_IN, C_IN, C_CH, C_HS, C_NONE, C_ANY, rng.randrange(65536)])
        flags = rng.choice([0, RD, CD, RD | AD])
        ns = []
        if qt == T_IXFR:
            ns = [rr(b"\xc0\x0c", T_SOA, C_IN, 0, name_wire("a.") + name_wire("b.") + bytes(20))]
        ar = []
        if rng.random() < 0.6:
            ar = [opt_rr(rng.choice(EDNS_PAYLOADS), 0, rng.choice([0, 0x8000]),
                         edns_option(3, b"") if rng.random() < 0.3 else b"")]
        wire = header(0, flags, 1, 0, len(ns), len(ar)) + name + struct.pack("!HH", qt, qclass) + b"".join(ns) + b"".join(ar)
        out.append(Pkt(wire, "qtype-sweep", well_formed=True))
    return out


def test_udp_fuzz(server, names):
    tlds, hosts = names
    rng = random.Random(SEED)
    factory = PacketFactory(rng, tlds, hosts)
    ck = Checker()
    drv = UdpDriver(server.addr, ck, first_id=rng.randrange(65536))
    t0 = time.monotonic()
    sent = 0
    next_health = HEALTH_EVERY
    try:
        packets = qtype_sweep(rng, tlds)
        stream = factory.stream(UDP_PACKETS)
        window: list[Pkt] = []

        def flush() -> None:
            nonlocal sent, next_health
            if window:
                drv.window(window)
                sent += len(window)
                window.clear()
            if sent >= next_health:
                health(server, f"after {sent} UDP packets")
                next_health += HEALTH_EVERY
            assert not drv.server_gone, "the UDP port became unreachable"
            assert time.monotonic() - t0 < TIME_LIMIT, f"UDP fuzz too slow: {sent} packets in {TIME_LIMIT} s"

        for pkt in packets:
            window.append(pkt)
            if len(window) >= UDP_WINDOW:
                flush()
        flush()
        for pkt in stream:
            window.append(pkt)
            if len(window) >= UDP_WINDOW:
                flush()
        flush()
        health(server, f"end of UDP fuzz ({sent} packets)")
    finally:
        drv.close()
        _merge(ck)
    dt = time.monotonic() - t0
    print(f"\n[fuzz] UDP: {sent} packets in {dt:.1f} s ({sent / dt:.0f}/s); {ck.summary()}")
    _assert_clean(ck, "UDP fuzz")
    assert sent >= UDP_PACKETS


# ---------------------------------------------------------------------------------------
# TCP: pipelined streams, odd framing, partial frames


def tcp_scripts(rng: random.Random, factory: PacketFactory, n_packets: int) -> list[TcpScript]:
    scripts: list[TcpScript] = []
    stream = factory.stream(n_packets)

    def framed(pkts: list[Pkt], *, mode: str, end: str, label: str, zero_frames: bool = False,
               tail: bytes = b"") -> TcpScript:
        qid = rng.randrange(65536)
        frames = []
        for pkt in pkts:
            wire = pkt.wire
            if len(wire) >= 2:
                wire = (qid & 0xFFFF).to_bytes(2, "big") + wire[2:]
                qid += 1
            frames.append((wire, pkt))
            if zero_frames and rng.random() < 0.2:
                frames.append((b"", Pkt(b"", "empty-frame")))
        barrier = None
        data = b"".join(frame(w) for w, _ in frames)
        if end in ("barrier", "hold"):
            barrier = qid & 0xFFFF
            data += frame(soa_query(barrier))
        data += tail
        return TcpScript(split_chunks(rng, data, mode), frames, end, label, barrier)

    # the bulk: ~100 packets per connection, all write patterns, barrier or half-close endings
    modes = ["whole", "random", "tiny", "slow"]
    i = 0
    while True:
        pkts = [p for _, p in zip(range(rng.randint(40, 160)), stream)]
        if not pkts:
            break
        mode = modes[i % 4]
        end = "barrier" if i % 3 else "shutdown"
        scripts.append(framed(pkts, mode=mode, end=end, label=f"bulk#{i} {mode}/{end}", zero_frames=i % 5 == 0))
        i += 1
    # one long pipeline: 1,500 queries written at once, most of them well-formed
    many = [factory.valid() if rng.random() < 0.7 else factory.mutated() for _ in range(1500)]
    scripts.append(framed(many, mode="whole", end="barrier", label="pipeline-1500"))
    # 300 well-formed queries (many with large answers) written at once, then half-close:
    # every one must be answered before the server closes
    big = []
    for _ in range(300):
        q = factory.valid()
        if rng.random() < 0.5:
            q = Pkt(header(0, 0, 1, 0, 0, 1) + b"\x00" + struct.pack("!HH", rng.choice([255, 48, 2, 6]), C_IN)
                    + opt_rr(4096, 0, 0x8000), "big-answer", True)
        big.append(q)
    scripts.append(framed(big, mode="whole", end="shutdown", label="pipeline-300-half-close"))
    # zero-length frames only, then a query
    scripts.append(framed([Pkt(b"", "empty-frame")] * 20 + [factory.valid()], mode="random", end="barrier",
                          label="zero-length frames"))
    # a length prefix larger than the data that follows, then close
    for k in range(10):
        pkts = [factory.valid() for _ in range(rng.randint(0, 5))]
        cut = factory.valid().wire
        tail = frame(cut)[: rng.randint(1, len(cut) + 1)]
        scripts.append(framed(pkts, mode=rng.choice(modes), end="shutdown", label=f"short-frame-then-close#{k}",
                              tail=tail))
        scripts.append(TcpScript([(0.0, struct.pack("!H", rng.randint(1, 65535)) + rng.randbytes(rng.randint(0, 40)))],
                                 [], "shutdown", f"prefix-over-data#{k}"))
    # a length prefix (or half of one) and then silence: held open until the end of this test
    for k in range(6):
        pkts = [factory.valid() for _ in range(rng.randint(0, 3))]
        tail = [b"\x01", b"\x00\x40", b"\x00\x40" + b"\x12\x34\x00"][k % 3]
        scripts.append(framed(pkts, mode="random", end="hold", label=f"prefix-then-silence#{k}", tail=tail))
    # one octet and close; nothing at all and close
    scripts.append(TcpScript([(0.0, b"\x00")], [], "shutdown", "one-octet"))
    scripts.append(TcpScript([(0.0, b"")], [], "shutdown", "nothing"))
    # maximum-size frames of garbage, and a 4096-octet query-shaped frame
    for k in range(4):
        body = rng.randbytes(65535 if k < 2 else 4096)
        if k % 2:
            body = header(0, 0, 1, 0, 0, 0) + body[12:]
        scripts.append(framed([Pkt(body, "huge-frame")], mode="random", end="barrier", label=f"huge-frame#{k}"))
    # framing garbage: wrong length prefixes, raw noise (replies only need to parse)
    noise = factory.stream(2000)
    for k in range(40):
        pkts = [p for _, p in zip(range(rng.randint(5, 40)), noise)] or [factory.valid()]
        data = b""
        for p in pkts:
            n = len(p.wire)
            if rng.random() < 0.3:
                n = max(0, min(65535, n + rng.choice([-3, -2, -1, 1, 2, 5, 100])))
            data += struct.pack("!H", n) + p.wire
        if k % 4 == 0:
            data = rng.randbytes(rng.randint(1, 3000))
        scripts.append(TcpScript(split_chunks(rng, data, rng.choice(modes)), None, "shutdown", f"desync#{k}"))
    rng.shuffle(scripts)
    return scripts


def test_tcp_fuzz(server, names):
    tlds, hosts = names
    rng = random.Random(SEED + 1)
    factory = PacketFactory(rng, tlds, hosts)
    ck = Checker()
    scripts = tcp_scripts(rng, factory, TCP_PACKETS)
    t0 = time.monotonic()
    batch = []
    done = 0
    try:
        for s in scripts:
            batch.append(s)
            frames = sum(len(x.frames) if x.frames is not None else 1 for x in batch)
            if frames >= HEALTH_EVERY:
                run_tcp_scripts(server.addr, batch, ck, concurrency=16, deadline_s=TIME_LIMIT)
                done += frames
                batch = []
                health(server, f"after {done} TCP packets")
        run_tcp_scripts(server.addr, batch, ck, concurrency=16, deadline_s=TIME_LIMIT)
        health(server, "end of TCP fuzz")
    finally:
        _merge(ck)
    sent = sum(len(s.frames) if s.frames is not None else 0 for s in scripts)
    garbage = sum(1 for s in scripts if s.frames is None)
    TOTAL.stats["tcp_sent"] += sent
    dt = time.monotonic() - t0
    print(f"\n[fuzz] TCP: {len(scripts)} connections, {sent} framed packets (+{garbage} garbage-framed streams) "
          f"in {dt:.1f} s; {ck.summary()}")
    _assert_clean(ck, "TCP fuzz")
    assert sent >= TCP_PACKETS


# ---------------------------------------------------------------------------------------
# hypothesis: structured but odd messages, over UDP and TCP

_label = st.one_of(
    st.sampled_from([b"com", b"net", b"org", b"arpa", b"bind", b"version", b"server", b"id", b"hostname",
                     b"root-servers", b"a", b"xn--p1ai", b"*", b"COM"]),
    st.binary(min_size=1, max_size=63),
    st.binary(min_size=60, max_size=63),
)
_safe_label = st.one_of(st.sampled_from([b"com", b"net", b"bind", b"version", b"server", b"a", b"NeT"]),
                        st.text("abcXYZ019-_*.\\ ", min_size=1, max_size=20).map(str.encode))
_known_names = st.sampled_from([name_wire(n) for n in CHAOS_NAMES + ["com.", "a.root-servers.net.", "arpa.",
                                                                      "www.example.com.", "nonexistent."]])
_name = st.one_of(
    _known_names,
    st.lists(_label, max_size=6).map(labels_wire),
    st.tuples(st.lists(_label, max_size=3), st.integers(0, 0x3FFF)).map(
        lambda t: labels_wire(t[0], end=b"") + struct.pack("!H", 0xC000 | t[1])),  # pointers, loops
    st.tuples(st.lists(_label, max_size=2), st.integers(64, 255), st.binary(max_size=70)).map(
        lambda t: labels_wire(t[0], end=b"") + bytes([t[1]]) + t[2]),  # label types 0x40/0x80, > 63
    st.integers(250, 600).map(lambda n: labels_wire([b"x" * 63] * (n // 64) + [b"y" * max(1, n % 64 - 1)])),
    st.binary(max_size=40),
)
_qtype = st.one_of(st.sampled_from(COMMON_QTYPES), st.integers(0, 65535))
_qclass = st.one_of(st.sampled_from([C_IN, C_CH, C_HS, C_NONE, C_ANY]), st.integers(0, 65535))
_payload = st.one_of(st.sampled_from(EDNS_PAYLOADS), st.integers(0, 65535))
def _well_formed_option(code: int, data: bytes) -> bytes:
    """An option a well-formed query may carry: a COOKIE is 8 or 16..40 octets (RFC 7873 5.2.2:
    other lengths are FORMERR), an edns-tcp-keepalive in a query is empty (RFC 7828 3.2.1)."""
    if code == 10 and not (len(data) == 8 or 16 <= len(data) <= 40):
        data = (data + bytes(8))[:8]
    if code == 11:
        data = b""
    return edns_option(code, data)


_good_options = st.lists(
    st.tuples(st.one_of(st.sampled_from([3, 8, 10, 11, 12, 15]), st.integers(0, 65535)), st.binary(max_size=40)),
    max_size=4).map(lambda opts: b"".join(_well_formed_option(c, d) for c, d in opts))
_options = st.one_of(_good_options, st.binary(max_size=40), st.tuples(_good_options, st.binary(min_size=1, max_size=3)).map(b"".join))
_opt = st.builds(opt_rr, payload=_payload, version=st.one_of(st.just(0), st.integers(0, 255)),
                 flags=st.one_of(st.sampled_from([0, 0x8000]), st.integers(0, 65535)), rdata=_options,
                 ext_rcode=st.one_of(st.just(0), st.integers(0, 255)),
                 owner=st.one_of(st.just(b"\x00"), _name))
_tsig = st.tuples(_name, st.binary(max_size=80)).map(lambda t: rr(t[0], T_TSIG, C_ANY, 0, name_wire("hmac-sha256.") + t[1]))
_generic_rr = st.builds(rr, owner=_name, rtype=_qtype, rclass=_qclass, ttl=st.integers(0, 2**32 - 1),
                        rdata=st.binary(max_size=60),
                        rdlen=st.one_of(st.none(), st.integers(0, 65535)))
_record = st.one_of(_opt, _tsig, _generic_rr)
_flags = st.one_of(st.sampled_from([0, RD, CD, AD, RD | CD, 0x0040, 0x0200, 0x0400, 0x0080, 0x2000, 0x2800, 0x1000,
                                    0x000F, 0x7800, 0x8000]), st.integers(0, 0xFFFF))


@st.composite
def _odd_message(draw) -> bytes:
    flags = draw(_flags)
    qd = draw(st.lists(st.tuples(_name, _qtype, _qclass), min_size=0, max_size=3))
    an = draw(st.lists(_record, max_size=2))
    ns = draw(st.lists(_record, max_size=2))
    ar = draw(st.lists(_record, max_size=3))
    counts = draw(st.one_of(st.none(), st.tuples(*[st.integers(0, 65535)] * 4),
                            st.tuples(*[st.integers(0, 3)] * 4)))
    counts = counts or (len(qd), len(an), len(ns), len(ar))
    body = b"".join(n + struct.pack("!HH", t, c) for n, t, c in qd) + b"".join(an) + b"".join(ns) + b"".join(ar)
    trailing = draw(st.one_of(st.just(b""), st.binary(max_size=30)))
    wire = header(0, flags, *counts) + body + trailing
    cut = draw(st.one_of(st.none(), st.integers(0, len(wire))))
    return wire if cut is None else wire[:cut]


@st.composite
def _good_query(draw) -> bytes:
    flags = draw(st.sampled_from([0, RD, CD, AD, RD | CD | AD]))
    name = draw(st.one_of(_known_names, st.lists(_safe_label, max_size=4).map(labels_wire)))
    qtype = draw(_qtype)
    qclass = draw(_qclass)
    ar = []
    if draw(st.booleans()):
        ar.append(opt_rr(draw(_payload), draw(st.one_of(st.just(0), st.integers(0, 255))),
                         draw(st.sampled_from([0, 0x8000])), draw(_good_options)))
    ns = []
    if qtype == T_IXFR and draw(st.booleans()):
        ns.append(rr(b"\xc0\x0c", T_SOA, C_IN, 0, name_wire("a.") + name_wire("b.") + bytes(20)))
    return header(0, flags, 1, 0, len(ns), len(ar)) + name + struct.pack("!HH", qtype, qclass) + b"".join(ns) + b"".join(ar)


_messages = st.one_of(_good_query().map(lambda w: (w, True)), _odd_message().map(lambda w: (w, False)))


@pytest.fixture(scope="module")
def hypo(server):
    ck = Checker()
    drv = UdpDriver(server.addr, ck, first_id=4242)
    state = {"ck": ck, "drv": drv, "n": 0, "t0": time.monotonic(), "tcp_id": 0}
    yield state
    drv.close()


@settings(max_examples=HYPOTHESIS_EXAMPLES, derandomize="IMRS_FUZZ_SEED" not in os.environ, database=None,
          deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
@seed(SEED)
@given(msg=_messages)
def test_hypothesis_messages(server, hypo, msg):
    wire, good = msg
    ck: Checker = hypo["ck"]
    before = ck.failure_count
    pkt = Pkt(wire, "hypothesis-good" if good else "hypothesis", well_formed=good)
    hypo["drv"].window([pkt])
    # the same packet over TCP (a fresh connection each time; with a barrier behind it)
    hypo["tcp_id"] = (hypo["tcp_id"] + 2) & 0xFFFF
    tid = hypo["tcp_id"]
    w = tid.to_bytes(2, "big") + wire[2:] if len(wire) >= 2 else wire
    script = TcpScript([(0.0, frame(w) + frame(soa_query((tid + 1) & 0xFFFF)))], [(w, pkt)], "barrier",
                       "hypothesis", (tid + 1) & 0xFFFF)
    run_tcp_scripts(server.addr, [script], ck, concurrency=1, deadline_s=20)
    ck.stats["tcp_sent"] += 1
    hypo["n"] += 1
    if hypo["n"] % HEALTH_EVERY == 0:
        health(server, f"after {hypo['n']} hypothesis examples")
    if ck.failure_count > before:
        raise AssertionError("\n".join(ck.failures[-(ck.failure_count - before):]))


def test_hypothesis_summary(server, hypo):
    ck: Checker = hypo["ck"]
    _merge(ck)
    dt = time.monotonic() - hypo["t0"]
    print(f"\n[fuzz] hypothesis: {hypo['n']} examples (UDP + TCP each) in {dt:.1f} s; {ck.summary()}")
    health(server, "after the hypothesis examples")


# ---------------------------------------------------------------------------------------
# slow and half-open TCP clients


def _tcp_ask(addr, wire: bytes, timeout: float = 3.0) -> bytes | None:
    return proc.tcp_once(addr[0], addr[1], wire, timeout=timeout)


def test_slow_tcp_clients_do_not_hurt(server):
    """50 connections that send nothing, half a length prefix or half a message, held open:
    other clients are still answered promptly over UDP and TCP, and the server closes the
    idle connections itself after its idle timeout."""
    from imrs.config import default_settings

    idle = default_settings().tcp_idle_timeout
    addr = server.addr
    rng = random.Random(SEED + 2)
    ck = Checker()
    slow: list[socket.socket] = []
    try:
        for i in range(50):
            s = socket.create_connection(addr, timeout=5)
            kind = i % 5
            if kind == 1:
                s.sendall(b"\x00")  # half a length prefix
            elif kind == 2:
                s.sendall(b"\x00\x1d")  # a length prefix, no message
            elif kind == 3:
                s.sendall(frame(soa_query(i))[:15])  # half a message
            elif kind == 4:
                s.sendall(struct.pack("!H", 65535) + rng.randbytes(1000))  # a big frame, never finished
            slow.append(s)
        t_open = time.monotonic()
        worst = 0.0
        udp = UdpDriver(addr, ck, first_id=777)
        try:
            rounds = 0
            # keep asking while the slow clients sit there, until the server has had the
            # chance to time them out
            while time.monotonic() - t_open < idle + 8:
                t = time.monotonic()
                assert udp.window([Pkt(soa_query(0), "soa", True)] * 4) == 4
                for k in range(2):
                    q = soa_query(1000 + rounds * 2 + k)
                    r = _tcp_ask(addr, q)
                    assert r is not None, "no TCP answer while slow clients hold connections"
                    ck.check("tcp", Pkt(q, "soa", True), q, r, 65535)
                # pipelined on one connection
                qs = [soa_query(5000 + j) for j in range(10)]
                script = TcpScript(split_chunks(rng, b"".join(frame(q) for q in qs), "tiny"),
                                   [(q, Pkt(q, "soa", True)) for q in qs], "shutdown", "pipelined-while-slow")
                run_tcp_scripts(addr, [script], ck, concurrency=1, deadline_s=10)
                worst = max(worst, time.monotonic() - t)
                rounds += 1
                if all(_closed_by_peer(s) for s in slow):
                    break
                time.sleep(0.2)
        finally:
            udp.close()
        closed = [_closed_by_peer(s) for s in slow]
        waited = time.monotonic() - t_open
    finally:
        for s in slow:
            s.close()
    _merge(ck)
    print(f"\n[fuzz] slow clients: {rounds} rounds of UDP+TCP queries beside 50 stalled connections; "
          f"slowest round {worst:.2f} s; server closed {sum(closed)}/50 stalled connections within {waited:.1f} s "
          f"(idle timeout {idle} s)")
    _assert_clean(ck, "slow clients")
    assert worst < 5.0, f"a round of queries took {worst:.2f} s while slow clients were connected"
    assert all(closed), f"the server left {closed.count(False)} stalled connections open after {waited:.1f} s"
    health(server, "after slow clients")


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            return False
        return s.recv(65535, socket.MSG_PEEK) == b""
    except ConnectionError:
        return True
    except OSError:
        return True


# ---------------------------------------------------------------------------------------
# pipelined queries, then a half-close, while the replies back up


def _tcp_queues(a: tuple[str, int], b: tuple[str, int]) -> tuple[int, int] | None:
    """(tx_queue, rx_queue) of the IPv4 TCP socket a -> b, from /proc/net/tcp."""
    def key(addr):
        return f"{socket.inet_aton(addr[0])[::-1].hex().upper()}:{addr[1]:04X}"
    want = (key(a), key(b))
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if (f[1], f[2]) == want:
            tx, rx = f[4].split(":")
            return int(tx, 16), int(rx, 16)
    return None


def _stable_queues(s: socket.socket, srv_addr) -> tuple:
    """Wait (at most 5 s) until both ends' kernel queues stop changing."""
    me = s.getsockname()
    last = None
    t_end = time.monotonic() + 5
    while time.monotonic() < t_end:
        cur = (_tcp_queues(me, srv_addr), _tcp_queues(srv_addr, me))
        if cur == last:
            break
        last = cur
        time.sleep(0.1)
    return last


def _read_frames(s: socket.socket, timeout: float = 20.0) -> tuple[list[bytes], int]:
    """Read to EOF (bounded); the complete frames, and the octets of an unfinished one."""
    s.settimeout(timeout)
    buf = bytearray()
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            d = s.recv(1 << 20)
        except (ConnectionError, socket.timeout):
            break
        if not d:
            break
        buf += d
    out = []
    while len(buf) >= 2 and len(buf) >= 2 + ((buf[0] << 8) | buf[1]):
        n = (buf[0] << 8) | buf[1]
        out.append(bytes(buf[2 : 2 + n]))
        del buf[: 2 + n]
    return out, len(buf)


def test_tcp_pipelined_then_half_close_all_answered(server):
    """A client pipelines queries, half-closes (SHUT_WR) and reads only after a pause:
    RFC 7766 6.2.4 -- every query already received must still be answered, in full.

    The queries are chosen so that their replies overflow the kernel's socket buffers by
    less than the server's 64 KiB write-buffer threshold (the kernel capacity is measured
    first, from /proc/net/tcp), i.e. some replies sit in the server's user-space buffer
    when it reads the client's EOF."""
    addr = server.addr
    ck = Checker()

    def query(i: int) -> bytes:  # `. NS` with DO: ~1.1 KB replies
        return header(i, 0, 1, 0, 0, 1) + b"\x00" + struct.pack("!HH", 2, C_IN) + opt_rr(4096, 0, 0x8000)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        s.connect(addr)
        return s

    reply_size = len(_tcp_ask(addr, query(0)) or b"") + 2
    assert reply_size > 100
    # 1. how much the kernel holds: pipeline far too much, do not read, measure the queues
    s = connect()
    try:
        s.sendall(b"".join(frame(query(i)) for i in range(6000)))
        q = _stable_queues(s, addr)
    finally:
        s.close()
    if not q or q[0] is None or q[1] is None:
        capacities = [3000 * reply_size]  # no /proc/net/tcp: a guess
    else:
        capacities = [q[0][1] + q[1][0]]
    n_base = capacities[0] // reply_size
    results = []
    for extra in (15, 40):
        n = n_base + extra
        s = connect()
        try:
            s.sendall(b"".join(frame(query(i)) for i in range(n)))
            s.shutdown(socket.SHUT_WR)
            _stable_queues(s, addr)
            replies, partial = _read_frames(s)
        finally:
            s.close()
        results.append((n, len(replies), partial))
        for i, r in enumerate(replies):
            ck.check("tcp", Pkt(query(i), "half-close", True), query(i), r, 65535)
        if len(replies) != n or partial:
            ck.fail(f"TCP: {n} pipelined `. NS` +DO queries then SHUT_WR, reading after a pause: "
                    f"{len(replies)} complete replies, {partial} octets of a cut-off frame "
                    f"(kernel buffers held ~{capacities[0]} octets = {n_base} replies)")
    _merge(ck)
    TOTAL.stats["tcp_sent_plain"] += sum(n for n, _, _ in results) + 6000  # not fuzz: counted apart
    print(f"\n[fuzz] pipelined + half-close: (queries, replies, cut-off octets) = {results}")
    _assert_clean(ck, "pipelined queries then half-close")
    health(server, "after the half-close test")


# ---------------------------------------------------------------------------------------


def test_server_survived(server):
    """Last: the server is alive, answers, and logged no traceback; print the totals."""
    health(server, "end of the fuzz tests")
    tb = stderr_traceback(server)
    sent = TOTAL.stats["udp_sent"] + TOTAL.stats["tcp_sent"]
    print(f"\n[fuzz] TOTAL: {sent} fuzz packets sent ({TOTAL.stats['udp_sent']} UDP, {TOTAL.stats['tcp_sent']} TCP; "
          f"+{TOTAL.stats['tcp_sent_plain']} plain pipelined TCP queries), "
          f"{TOTAL.stats['udp_replies'] + TOTAL.stats['tcp_replies']} replies checked, "
          f"{TOTAL.failure_count} failures\n    rcodes: {dict(TOTAL.rcodes.most_common())}")
    assert tb is None, f"imrs wrote a traceback to stderr:\n{tb}"
    server.stop()  # SIGTERM; raises on a crash, a hang, a traceback or internal errors
    m = re.search(r"stopped: (\{.*\})", proc.tail(server.stderr_path, 200_000))
    if m:
        counters = ast.literal_eval(m.group(1))
        print(f"    server counters: {counters}")
        assert not counters.get("internal_errors"), f"imrs counted internal errors: {counters}"
