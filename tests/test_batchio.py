"""Batched UDP I/O (imrs.serve.batchio): recvmmsg/sendmmsg on real loopback sockets, IPv4 and
IPv6 — every datagram received with its exact contents, every reply back to its own sender —
and a running server answering byte for byte the same with and without it (IMRS_NO_BATCHIO=1).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flood.floodgen import junk_payload
from flood.ipv6 import NO_NAMESPACE
from serverproc import ServerProc, imrs_env, query, root_subset, start_all

from imrs.answer import fastc
from imrs.serve import batchio

pytestmark = pytest.mark.skipif(not batchio.AVAILABLE, reason="recvmmsg/sendmmsg not available here")

LOOPBACK = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


def _ipv6_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(params=["ipv4", "ipv6"])
def family(request):
    if request.param == "ipv6" and not _ipv6_ok():
        pytest.skip("no IPv6 loopback")
    return LOOPBACK[request.param]


@pytest.fixture
def sockets(family):
    """(server socket, its BatchSocket, [3 client sockets])."""
    fam, host = family
    server = socket.socket(fam, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind((host, 0))
    server.setblocking(False)
    clients = []
    for _ in range(3):
        c = socket.socket(fam, socket.SOCK_DGRAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        c.bind((host, 0))
        c.settimeout(2)
        clients.append(c)
    yield server, batchio.BatchSocket(server.fileno()), clients
    for s in clients + [server]:
        s.close()


def _receive_all(batch: batchio.BatchSocket, expected: int, timeout: float = 3.0) -> list[list[bytes]]:
    """Call receive() until `expected` datagrams came (bounded); one list per call."""
    calls = []
    total = 0
    deadline = time.monotonic() + timeout
    while total < expected and time.monotonic() < deadline:
        got = batch.receive()
        if got:
            calls.append(got)
            total += len(got)
        else:
            time.sleep(0.005)
    return calls


def _drain(sock: socket.socket, quiet: float = 0.2) -> list[bytes]:
    """Everything waiting on `sock` (stops after `quiet` seconds of silence)."""
    out = []
    sock.settimeout(quiet)
    while len(out) < 10_000:
        try:
            out.append(sock.recv(70000))
        except TimeoutError:
            break
    return out


def test_available_and_disabled_by_environment():
    assert batchio.AVAILABLE
    code = "import imrs.serve.batchio as b; print(b.AVAILABLE)"
    out = subprocess.run([sys.executable, "-c", code], env=imrs_env({"IMRS_NO_BATCHIO": "1"}),
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.stdout.strip() == "False", out.stderr


def test_receive_nothing_waiting(sockets):
    _server, batch, _clients = sockets
    assert batch.receive() == []
    assert batch.reply([]) == 0


def test_receive_exact_contents_and_reply_to_each_source(sockets):
    server, batch, clients = sockets
    addr = server.getsockname()[:2]
    rng = random.Random(1)
    max_payload = 65507 if server.family == socket.AF_INET else 65527
    sent: list[tuple[int, bytes]] = []
    sizes = [1, 12, 512, 1232, 1500, 9000, max_payload, 0, 3]
    for i, size in enumerate(sizes * 2):
        k = i % len(clients)
        payload = bytes(rng.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1)
        payload = payload[:size]
        clients[k].sendto(payload, addr)
        sent.append((k, payload))
    calls = _receive_all(batch, len(sent))
    assert len(calls) == 1, "fewer than VLEN datagrams should come in one receive()"
    got = calls[0]
    assert got == [p for _k, p in sent]  # exact octets, arrival order
    responses: list[bytes | None] = []
    for i, (k, p) in enumerate(sent):
        responses.append(None if i % 4 == 3 else f"reply {i} to client {k} ".encode() + p[:100])
    assert batch.reply(responses) == sum(r is not None for r in responses)
    for k, c in enumerate(clients):
        expect = [r for r, (kk, _p) in zip(responses, sent) if kk == k and r is not None]
        assert _drain(c) == expect, f"client {k}"


def test_more_than_vlen_needs_several_receives(sockets):
    server, batch, clients = sockets
    addr = server.getsockname()[:2]
    total = 2 * batchio.VLEN + 22
    sent = []
    for i in range(total):
        k = i % 2
        payload = b"q%05d-" % i + bytes([k]) * (i % 50)
        clients[k].sendto(payload, addr)
        sent.append((k, payload))
    received = []
    replies = {0: [], 1: []}
    sizes = []
    for _ in range(10):  # bounded: 3 calls expected
        got = batch.receive()
        if not got:
            if len(received) >= total:
                break
            time.sleep(0.01)
            continue
        sizes.append(len(got))
        base = len(received)
        received += got
        # answer this batch (every 5th skipped), addressed from *this* receive's names
        resp = [None if (base + j) % 5 == 0 else b"R" + w for j, w in enumerate(got)]
        assert batch.reply(resp) == sum(r is not None for r in resp)
        for j, r in enumerate(resp):
            if r is not None:
                replies[sent[base + j][0]].append(r)
    assert sizes == [batchio.VLEN, batchio.VLEN, 22]
    assert received == [p for _k, p in sent]
    assert batch.receive() == []
    for k in (0, 1):
        assert _drain(clients[k]) == replies[k]
    assert _drain(clients[2], quiet=0.05) == []


def test_reply_all_none_sends_nothing(sockets):
    server, batch, clients = sockets
    addr = server.getsockname()[:2]
    for c in clients:
        c.sendto(b"hello", addr)
    got = _receive_all(batch, 3)[0]
    assert got == [b"hello"] * 3
    assert batch.reply([None, None, None]) == 0
    for c in clients:
        assert _drain(c, quiet=0.05) == []


def test_peers_give_each_source_address(sockets):
    server, batch, clients = sockets
    addr = server.getsockname()[:2]
    for i, c in enumerate(clients):
        c.sendto(b"%d" % i, addr)
    wires = _receive_all(batch, 3)[0]
    names = batch.peers()
    offset, size = (8, 16) if server.family == socket.AF_INET6 else (4, 4)
    step = batchio.SOCKADDR_SIZE
    got = {wire: socket.inet_ntop(server.family, names[i * step + offset : i * step + offset + size])
           for i, wire in enumerate(wires)}
    assert got == {b"%d" % i: c.getsockname()[0] for i, c in enumerate(clients)}


def test_ipv4_and_ipv6_sockets_side_by_side():
    if not _ipv6_ok():
        pytest.skip("no IPv6 loopback")
    pairs = []
    try:
        for fam, host in LOOPBACK.values():
            srv = socket.socket(fam, socket.SOCK_DGRAM)
            srv.bind((host, 0))
            cli = socket.socket(fam, socket.SOCK_DGRAM)
            cli.bind((host, 0))
            pairs.append((srv, batchio.BatchSocket(srv.fileno()), cli))
        for round_ in range(3):
            for n, (srv, _b, cli) in enumerate(pairs):
                for i in range(5):
                    cli.sendto(b"%d-%d-%d" % (round_, n, i), srv.getsockname()[:2])
            for n, (srv, b, cli) in enumerate(pairs):
                got = _receive_all(b, 5)[0]
                assert got == [b"%d-%d-%d" % (round_, n, i) for i in range(5)]
                assert b.reply([w.upper() + b"!" for w in got]) == 5
                assert _drain(cli) == [w.upper() + b"!" for w in got]
    finally:
        for srv, _b, cli in pairs:
            srv.close()
            cli.close()


def test_oversized_datagram_comes_back_empty():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        a.send(b"x" * (batchio.SLOT + 1000))
        a.send(b"small")
        got = batchio.BatchSocket(b.fileno()).receive()
        assert got == [b"", b"small"]
    finally:
        a.close()
        b.close()


# -------------------------------------------------------------------------- whole server, both paths


def _queries(rng: random.Random) -> list[bytes]:
    names = [".", "com.", "net.", "org.", "de.", "a.root-servers.net.", "www.example.com.", "nonexistent.",
             "xn--p1ai.", "b.root-servers.net.", "arpa.", "in-addr.arpa.", "Com.", "ZZ.", "version.bind."]
    types = ["A", "AAAA", "NS", "SOA", "DS", "DNSKEY", "RRSIG", "NSEC", "TXT", "ANY", "MX", "ZONEMD", "TYPE999"]
    out = []
    for i in range(300):
        name = rng.choice(names)
        kind = rng.random()
        if kind < 0.3:
            wire = query(name, rng.choice(types), i)
        elif kind < 0.8:
            wire = query(name, rng.choice(types), i, do=rng.random() < 0.7,
                         payload=rng.choice([512, 1220, 1232, 1400, 4096]))
        elif kind < 0.9:
            # header bits: RD, CD, AD
            wire = bytearray(query(name, rng.choice(types), i, do=True))
            wire[2] |= 0x01
            wire[3] |= rng.choice([0x10, 0x20, 0x30])
            wire = bytes(wire)
        else:
            # malformed: cut short, or garbage after a header with this ID
            base = query(name, "A", i)
            wire = base[: rng.randrange(12, len(base))] if rng.random() < 0.5 else \
                base[:2] + bytes(rng.randrange(256) for _ in range(rng.randrange(10, 40)))
            wire = wire[:2] + bytes([wire[2] & 0x7F]) + wire[3:]  # a query, not a response
        out.append(wire)
    # junk that floods carry, which the C loop answers or drops itself: other opcodes (NOTIMP,
    # with AD and rcode bits to clear), responses (QR set) and runts shorter than a header
    for i in range(300, 360):
        base = bytearray(query(rng.choice(names), "A", i, do=rng.random() < 0.5))
        kind = i % 4
        if kind == 0:
            base[2] = (base[2] & 0x87) | (rng.choice([1, 2, 3, 5, 6, 15]) << 3)
            base[3] |= rng.choice([0x20, 0x2F, 0x05, 0x10])
        elif kind == 1:
            base[2] |= 0x80
        elif kind == 2:
            base = base[:11]
        else:
            base[2] = (base[2] & 0x87) | (2 << 3)  # opcode STATUS, nothing else odd
        out.append(bytes(base))
    # and the flood generator's malformed and odd messages (cut short, QDCOUNT 2, opcodes,
    # responses, random octets), each with its own ID
    for i in range(400, 640):
        junk = bytearray(junk_payload(rng, ["com", "net", "org", "de"], (0, 0, 1)))
        if len(junk) >= 2:
            junk[0:2] = i.to_bytes(2, "big")
            out.append(bytes(junk))
    return out


def _ask_all(host: str, port: int, wires: list[bytes], burst: int = 40) -> dict[int, bytes]:
    """Send in bursts (so the batched server gets several per system call); responses by index."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: dict[int, bytes] = {}
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.connect((host, port))
        for start in range(0, len(wires), burst):
            chunk = wires[start : start + burst]
            for w in chunk:
                s.send(w)
            s.settimeout(0.5)
            for _ in range(len(chunk)):
                try:
                    data = s.recv(65535)
                except TimeoutError:
                    break  # some get no answer (dropped garbage)
                qid = int.from_bytes(data[:2], "big")
                assert qid not in out, f"two answers for query {qid}"
                out[qid] = data
    return out


def test_server_answers_the_same_with_and_without_batchio(tmp_path_factory):
    """The C loop (imrs._fastpath.udp_drain, the default where it is built), the batched
    Python loop and the plain one send the same bytes.  RRL is on, at a rate this traffic
    never reaches, so that the C loop answers through the C answer and the C RRL gate (and the
    Python loops through the Python decider)."""
    d = tmp_path_factory.mktemp("batch")
    zone = d / "root.zone"
    zone.write_text(root_subset({"com", "net", "org", "de", "arpa", "xn--p1ai"}))
    hosts = ("127.0.0.1", "::1") if _ipv6_ok() else ("127.0.0.1",)
    one = ["--zone", str(zone), "--workers", "1", "--log-level", "debug", "--rrl-rate", "100000"]
    c_loop = ServerProc(d, one, hosts=hosts, name="c-loop")
    batched = ServerProc(d, one, hosts=hosts, env={"IMRS_NO_FASTC": "1"}, name="batched")
    plain = ServerProc(d, one, hosts=hosts, env={"IMRS_NO_BATCHIO": "1", "IMRS_NO_FASTC": "1"}, name="plain")
    servers = (c_loop, batched, plain)
    start_all(list(servers))
    try:
        wires = _queries(random.Random(6891))
        assert len({w[:2] for w in wires}) == len(wires)  # IDs identify the queries
        for host in hosts:
            b = _ask_all(host, plain.port, wires)
            assert len(b) >= 250, f"only {len(b)} answers over {host}"
            for other in (batched, c_loop):
                a = _ask_all(host, other.port, wires)
                assert a.keys() == b.keys(), other.name
                diffs = [i for i in a if a[i] != b[i]]
                assert not diffs, f"{other.name}: {len(diffs)} responses differ over {host}, e.g. query {diffs[0]}"
    finally:
        errors = []
        for s in servers:
            try:
                s.stop()
            except AssertionError as exc:
                errors.append(str(exc))
        assert not errors, "\n".join(errors)
    # each actually served every datagram on its own path
    for s, path in zip(servers, ("C loop", "batched Python loop", "plain Python loop")):
        assert f": {path} (" in s.stderr(), f"{s.name} did not use the {path}"
    for s in servers:
        stats = s.stats()
        assert stats.get("udp_received", 0) >= len(wires) * len(hosts), stats
        # every response went through the rate limiter, none was limited
        assert stats["rrl_responses"] >= 250 * len(hosts) and stats["rrl_limited"] == 0, stats


# In a network namespace of its own (only its loopback, so nothing it sends can leave it), a
# server socket on ::1 gets 20 queries from an address no interface or route has (bound with
# IP_FREEBIND) and 20 from ::1, interleaved, and answers all 40 in one drain: the answers to
# the first are refused (ENETUNREACH); the others must still go.
_REFUSED_DESTINATION = r"""
import json, socket, time
from flood.ipv6 import enter_namespace
enter_namespace(address=None)
from imrs.answer import fastc
from imrs.serve import batchio
out = {}
for loop in ("c", "batched"):
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.bind(("::1", 0))
    server.setblocking(False)
    stray = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    stray.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
    stray.bind(("fd00:99::1", 0))
    good = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    good.bind(("::1", 0))
    for i in range(20):
        stray.sendto(b"s%d" % i, server.getsockname())
        good.sendto(b"g%d" % i, server.getsockname())
    time.sleep(0.1)
    if loop == "c":
        received, sent, _errors = fastc._fastpath.udp_drain(server.fileno(), lambda wire, peer, port: b"re:" + wire, True, 512)
    else:
        batch = batchio.BatchSocket(server.fileno())
        got = batch.receive()
        received, sent = len(got), batch.reply([b"re:" + wire for wire in got])
    good.settimeout(0.3)
    answers = []
    try:
        while True:
            answers.append(good.recv(100).decode())
    except TimeoutError:
        pass
    out[loop] = {"received": received, "sent": sent, "answers": sorted(answers)}
print(json.dumps(out))
"""


def test_an_answer_the_kernel_refuses_does_not_lose_the_rest_of_the_batch():
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root on Linux (a network namespace of its own)")
    if getattr(fastc._fastpath, "udp_drain", None) is None:
        pytest.skip("the C extension is not built")
    env = imrs_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), env["PYTHONPATH"]])  # flood.ipv6
    run = subprocess.run([sys.executable, "-c", _REFUSED_DESTINATION], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    if run.returncode == NO_NAMESPACE:
        pytest.skip(f"no network namespace here: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    expected = sorted(f"re:g{i}" for i in range(20))
    for loop in ("c", "batched"):
        assert out[loop]["received"] == 40, out
        assert out[loop]["answers"] == expected, out
        assert out[loop]["sent"] == 20, out
