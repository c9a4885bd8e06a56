"""The running server: TCP per RFC 7766, CHAOS and NSID settings, the command line, signals."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from peers import proc
from peers.imrs_server import SRC, ImrsServer

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"

CONFIG = """\
[server]
tcp-idle-timeout = 1.5
tcp-max-connections = 4
identity = "test-instance"
hide-version = true
nsid = "nsid-of-test"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    config = work / "imrs.toml"
    config.write_text(CONFIG)
    with ImrsServer(ZONE, work, extra_args=["--config", str(config)]) as srv:
        yield srv


def _query(name: str, rdtype: str, qid: int, **kw) -> bytes:
    q = dns.message.make_query(name, rdtype, **kw)
    q.id = qid
    return q.to_wire()


def _frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def _read_frames(sock: socket.socket, count: int, timeout: float = 5.0) -> list[dns.message.Message]:
    sock.settimeout(timeout)
    data = b""
    out = []
    while len(out) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
            length = struct.unpack("!H", data[:2])[0]
            out.append(dns.message.from_wire(data[2 : 2 + length]))
            data = data[2 + length :]
    return out


def _udp(server, wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(proc.udp_once(server.host, server.port, wire, timeout=2.0))


def test_tcp_pipelined_queries_in_one_write_are_all_answered_in_order(server):
    names = ["com.", "nosuchtld.", ".", "www.example.org.", "aaa."] * 20
    wires = [_query(n, "NS", 1000 + i, want_dnssec=True) for i, n in enumerate(names)]
    with socket.create_connection(server.addr, timeout=5) as sock:
        sock.sendall(b"".join(_frame(w) for w in wires))
        answers = _read_frames(sock, len(wires))
    assert [a.id for a in answers] == [1000 + i for i in range(len(names))]
    assert all(not a.flags & dns.flags.TC for a in answers)


def test_tcp_query_sent_byte_by_byte_is_answered(server):
    wire = _frame(_query("com.", "DS", 77))
    with socket.create_connection(server.addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(wire)):
            sock.send(wire[i : i + 1])
            time.sleep(0.002)
        (answer,) = _read_frames(sock, 1)
    assert answer.id == 77 and answer.answer[0].rdtype == dns.rdatatype.DS


def test_tcp_idle_connection_is_closed_after_the_timeout(server):
    with socket.create_connection(server.addr, timeout=5) as sock:
        sock.sendall(b"\x00")  # half a length prefix, then silence
        started = time.monotonic()
        assert sock.recv(10) == b""  # closed by the server
        waited = time.monotonic() - started
    assert 1.0 <= waited < 4.0


def test_tcp_connection_cap(server):
    held = [socket.create_connection(server.addr, timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(server.addr, timeout=5)
        extra.sendall(_frame(_query(".", "SOA", 5)))
        extra.settimeout(3)
        try:
            assert extra.recv(10) == b""  # over the cap: closed without an answer
        except ConnectionResetError:
            pass
        extra.close()
        # the held connections still work, and UDP is unaffected
        held[0].sendall(_frame(_query(".", "SOA", 6)))
        assert _read_frames(held[0], 1)[0].id == 6
        assert _udp(server, _query(".", "SOA", 7)).id == 7
    finally:
        for sock in held:
            sock.close()


def test_tcp_answers_are_whole(server):
    wire = _query(".", "RRSIG", 9, want_dnssec=True, use_edns=0, payload=512)
    with socket.create_connection(server.addr, timeout=5) as sock:
        sock.sendall(_frame(wire))
        (answer,) = _read_frames(sock, 1)
    udp = _udp(server, wire)
    assert udp.flags & dns.flags.TC  # too big for 512 octets ...
    assert not answer.flags & dns.flags.TC and len(answer.answer) == 5  # ... whole over TCP


def test_chaos_and_nsid_from_the_configuration(server):
    identity = _udp(server, _query("id.server.", "TXT", 11, rdclass="CH"))
    assert identity.answer[0][0].strings == (b"test-instance",)
    hidden = _udp(server, _query("version.bind.", "TXT", 12, rdclass="CH"))
    assert hidden.rcode() == dns.rcode.REFUSED and not hidden.answer
    nsid = _udp(server, _query(".", "SOA", 13, use_edns=0, options=[dns.edns.GenericOption(3, b"")]))
    assert any(o.otype == 3 and o.to_wire() == b"nsid-of-test" for o in nsid.options)
    plain = _udp(server, _query(".", "SOA", 14, use_edns=0))
    assert not plain.options  # NSID only when asked for


def _run_imrs(args: list[str], timeout: float = 60, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "imrs", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_bad_zone_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.zone"
    bad.write_text(". 86400 IN SOA a. b. 1 2 3 4 5\n. 86400 IN NS a.\na. 86400 IN A 300.0.0.1\n")
    result = _run_imrs(["serve", "--zone", str(bad), "--listen", f"127.0.0.1:{proc.free_port()}"])
    assert result.returncode == 1
    assert f"{bad}:3" in result.stderr and "Traceback" not in result.stderr
    missing = _run_imrs(["serve", "--zone", str(tmp_path / "none.zone"), "--listen", f"127.0.0.1:{proc.free_port()}"])
    assert missing.returncode != 0 and "none.zone" in missing.stderr and "Traceback" not in missing.stderr


def test_check_config(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(CONFIG)
    assert _run_imrs(["check-config", str(good)]).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = ["127.0.0.1:5300"]\ntcp-idle-timeot = 3\n')
    result = _run_imrs(["check-config", str(bad)])
    assert result.returncode == 1
    assert f"{bad}:3" in result.stderr and "tcp-idle-timeot" in result.stderr


SMALL = """\
example. 3600 IN SOA ns.example. hostmaster.example. 7 3600 900 604800 300
example. 3600 IN NS ns.example.
ns.example. 3600 IN A 192.0.2.1
"""


def test_refused_outside_the_zones_sigterm_and_both_udp_paths(tmp_path):
    """Serving only example.: a name elsewhere is REFUSED.  The recvfrom/sendto path and the
    batched path give the same bytes.  SIGTERM stops the server with status 0."""
    zone = tmp_path / "example.zone"
    zone.write_text(SMALL)
    replies = []
    for env in ({}, {"IMRS_NO_BATCHIO": "1"}):
        port = proc.free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "imrs", "serve", "--zone", str(zone), "--listen", f"127.0.0.1:{port}"],
            env=dict(os.environ, PYTHONPATH=str(SRC), **env), stderr=subprocess.PIPE, text=True,
        )
        try:
            wires = [_query(name, "A", 40 + i, want_dnssec=bool(i % 2)) for i, name in
                     enumerate(["ns.example.", "foo.org.", "example.", "nx.example.", "."])]
            deadline = time.monotonic() + 30
            while proc.udp_once("127.0.0.1", port, wires[0], timeout=0.3) is None:
                assert time.monotonic() < deadline and server.poll() is None
            replies.append([proc.udp_once("127.0.0.1", port, w, timeout=2.0) for w in wires])
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=10)
        assert server.returncode == 0 and "Traceback" not in stderr, stderr
    batched, plain = replies
    assert batched == plain
    assert dns.message.from_wire(batched[1]).rcode() == dns.rcode.REFUSED
    assert dns.message.from_wire(batched[0]).answer[0][0].address == "192.0.2.1"
    assert dns.message.from_wire(batched[3]).rcode() == dns.rcode.NXDOMAIN


def test_a_port_in_use_is_a_clear_error(server, tmp_path):
    zone = tmp_path / "example.zone"
    zone.write_text(SMALL)
    result = _run_imrs(["serve", "--zone", str(zone), "--listen", f"127.0.0.1:{server.port}"])
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr and "Traceback" not in result.stderr
