"""dnstap output (imrs.telemetry.dnstap), read back with real readers.

The files and streams written here are read with Debian's ``dnstap-ldns`` (libfstrm +
protobuf-c) and, for the unix socket, received by ``fstrm_capture`` (farsightsec's reference
Frame Streams reader), so the encoding and the fstrm handshake are checked against the
implementations NSD, Knot and BIND are read with, not against our own reading of the specs.
When the ``protobuf`` package is installed, the messages are also decoded with it, from a
descriptor built after dnstap.proto, to compare every field exactly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
import yaml

from imrs.config import ConfigError
from imrs.telemetry import dnstap
from imrs.telemetry.dnstap import DnstapConfig, DnstapWriter

TOOLS = ("dnstap-ldns", "fstrm_capture")
PACKAGES = ("dnstap-ldns", "fstrm-bin")
CONTENT_TYPE = "protobuf:dnstap.Dnstap"

# (name, type, transport, peer, peer port, local, local port): a mix of families and transports
QUERIES = [
    ("dnstap-one.example.", "NS", "udp", "127.0.0.1", 40001, "127.0.0.1", 53),
    ("dnstap-two.example.", "AAAA", "tcp", "127.0.0.2", 40002, "127.0.0.1", 53),
    ("dnstap-three.example.", "DS", "udp", "::1", 40003, "::1", 5353),
    ("dnstap-four.example.", "SOA", "tcp", "2001:db8::7", 40004, "::1", 5353),
]


# -- the readers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tools() -> None:
    """dnstap-ldns and fstrm_capture, installed from Debian when missing (./run installs
    them); skipped only when that is impossible, and never under CI."""
    if not all(shutil.which(tool) for tool in TOOLS) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, timeout=600,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        reason = (f"{', '.join(missing)} not found and could not be installed "
                  f"(Debian packages {' '.join(PACKAGES)}: ./run test installs them)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def read_text(path: Path) -> list[str]:
    """``dnstap-ldns -r``: one line per message (time, AQ/AR, peer, transport, size, question)."""
    out = subprocess.run(["dnstap-ldns", "-r", str(path)], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.splitlines()


def read_yaml(path: Path) -> list[dict]:
    """``dnstap-ldns -y``: every field, as YAML documents."""
    out = subprocess.run(["dnstap-ldns", "-y", "-r", str(path)], capture_output=True, text=True, timeout=30, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


class Capture:
    """``fstrm_capture`` listening on a unix socket, writing what it receives to a file."""

    def __init__(self, sock: Path, out: Path) -> None:
        self.sock, self.out = sock, out
        self.proc = subprocess.Popen(["fstrm_capture", "-t", CONTENT_TYPE, "-u", str(sock), "-w", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"fstrm_capture did not start: {self.proc.communicate()[1]!r}")
            time.sleep(0.01)

    def _listening(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.sock))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self) -> None:
        """Stop it properly (SIGTERM): it finishes the output file."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)

    def kill(self) -> None:
        """The reader crashes."""
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def capture(tools, tmp_path):
    """Start fstrm_capture readers (stopped at the end whatever happens)."""
    started: list[Capture] = []

    def start(out: str = "capture.fstrm") -> Capture:
        cap = Capture(tmp_path / "dnstap.sock", tmp_path / out)
        started.append(cap)
        return cap

    yield start
    for cap in started:
        if cap.proc.poll() is None:
            cap.kill()


@pytest.fixture
def writers():
    """Writers made by a test, closed at its end (their thread would outlive it)."""
    made: list[DnstapWriter] = []

    def make(destination: str | Path, **options) -> DnstapWriter:
        options.setdefault("identity", "dnstap-test.example")
        options.setdefault("version", "imrs-test")
        options.setdefault("flush_interval", 0.02)
        writer = DnstapWriter(str(destination), **options)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close(timeout=5)


# -- helpers ---------------------------------------------------------------------------------


def exchange(name: str, rdtype: str) -> tuple[bytes, bytes]:
    query = dns.message.make_query(name, rdtype)
    response = dns.message.make_response(query)
    return query.to_wire(), response.to_wire()


def log_queries(writer: DnstapWriter, queries=QUERIES) -> None:
    for name, rdtype, transport, peer, port, local, local_port in queries:
        query, response = exchange(name, rdtype)
        writer.log_exchange(query, response, socket.inet_pton(family_of(peer), peer), port,
                            tcp=transport == "tcp", local=local, local_port=local_port)


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def names_in(lines: list[str]) -> list[str]:
    return [line.split('"')[1] for line in lines]


def data_frames(path: Path) -> list[bytes]:
    """The data frames of a unidirectional Frame Streams file, checking its control frames."""
    data = path.read_bytes()
    escape, length, kind = struct.unpack_from(">III", data)
    assert (escape, kind) == (0, dnstap.CONTROL_START)
    assert data[12 : 8 + length] == struct.pack(">II", 1, len(CONTENT_TYPE)) + CONTENT_TYPE.encode()
    pos, frames = 8 + length, []
    while True:
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if size == 0:  # a control frame: must be the STOP, at the end
            assert struct.unpack_from(">II", data, pos) == (4, dnstap.CONTROL_STOP)
            assert pos + 8 == len(data)
            return frames
        frames.append(data[pos : pos + size])
        pos += size


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- a file, read with dnstap-ldns -------------------------------------------------------------


def test_a_file_is_read_by_dnstap_ldns(tools, writers, tmp_path):
    path = tmp_path / "out.dnstap"
    writer = writers(path)
    writer.start()
    assert writer.connected
    log_queries(writer)
    writer.close()
    assert writer.counters()["written"] == 2 * len(QUERIES)
    assert writer.dropped == writer.sampled_out == writer.counters()["errors"] == 0

    lines = read_text(path)
    assert len(lines) == 2 * len(QUERIES), lines
    for (name, rdtype, transport, peer, _port, _local, _lport), query_line, response_line in zip(
            QUERIES, lines[0::2], lines[1::2], strict=True):
        # e.g. 2024-01-01 00:00:00.000000 AQ 127.0.0.1 UDP 37b "dnstap-one.example." IN NS
        for line, mnemonic in ((query_line, "AQ"), (response_line, "AR")):
            fields = line.split()
            assert fields[2:5] == [mnemonic, peer, transport.upper()], line
            assert line.endswith(f'"{name}" IN {rdtype}'), line

    docs = read_yaml(path)
    assert len(docs) == 2 * len(QUERIES)
    for (name, rdtype, transport, peer, port, local, local_port), query_doc, response_doc in zip(
            QUERIES, docs[0::2], docs[1::2], strict=True):
        for doc, kind, wire_key in ((query_doc, "AUTH_QUERY", "query_message"),
                                    (response_doc, "AUTH_RESPONSE", "response_message")):
            assert doc["type"] == "MESSAGE"
            assert doc["identity"] == "dnstap-test.example"
            assert doc["version"] == "imrs-test"
            message = doc["message"]
            assert message["type"] == kind
            assert message["socket_family"] == ("INET6" if ":" in peer else "INET")
            assert message["socket_protocol"] == transport.upper()
            assert message["query_address"] == peer
            assert message["query_port"] == port
            assert message["response_address"] == local
            assert message["response_port"] == local_port
            assert f";{name}\tIN\t{rdtype}" in message[wire_key]
            assert "query_time" in message
        assert "flags: qr" in response_doc["message"]["response_message"]
        assert "response_time" in response_doc["message"]
        assert "response_message" not in query_doc["message"]


def test_the_writer_frames_are_the_reference_encoding(tools, writers, tmp_path):
    """What the writer builds from its cached prefixes is what the plain encoder builds."""
    path = tmp_path / "out.dnstap"
    writer = writers(path, identity="id", version="v")
    writer.start()
    query, response = exchange("encoding.example.", "TXT")
    t_query, t_response = 1_700_000_000_123_456_789, 1_700_000_001_000_000_007
    writer.log_query(query, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 65535, tcp=True,
                     local="2001:db8::53", local_port=53, time_ns=t_query)
    writer.log_response(response, "192.0.2.1", 1, local=b"\xc0\x00\x02\x35", local_port=53,
                        time_ns=t_response, query_time_ns=t_query)
    writer.close()
    assert data_frames(path) == [
        dnstap.encode_message(dnstap.AUTH_QUERY, query=query, peer="2001:db8::1", peer_port=65535, tcp=True,
                              local="2001:db8::53", local_port=53, query_time_ns=t_query,
                              identity=b"id", version=b"v"),
        dnstap.encode_message(dnstap.AUTH_RESPONSE, response=response, peer="192.0.2.1", peer_port=1,
                              local="192.0.2.53", local_port=53, query_time_ns=t_query,
                              response_time_ns=t_response, identity=b"id", version=b"v"),
    ]
    docs = read_yaml(path)
    assert [doc["message"]["type"] for doc in docs] == ["AUTH_QUERY", "AUTH_RESPONSE"]
    assert docs[0]["message"]["query_address"] == "2001:db8::1"
    assert docs[0]["message"]["query_port"] == 65535
    assert docs[1]["message"]["response_address"] == "192.0.2.53"
    assert str(docs[0]["message"]["query_time"]).startswith("2023-11-14 22:13:20.123456")


def test_sampling_keeps_exactly_one_in_n(tools, writers, tmp_path):
    path = tmp_path / "sampled.dnstap"
    writer = writers(path, sample_rate=3)
    writer.start()
    names = [f"q{i}.sampling.example." for i in range(10)]
    for name in names:
        writer.log_exchange(*exchange(name, "A"), b"\x7f\x00\x00\x01", 1053)
    writer.close()
    kept = names[0::3]  # the first of every three: 4 of 10, each with its response
    lines = read_text(path)
    assert names_in(lines) == [name for name in kept for _ in range(2)]
    assert [line.split()[2] for line in lines] == ["AQ", "AR"] * len(kept)
    assert writer.written == 2 * len(kept)
    assert writer.sampled_out == 2 * (len(names) - len(kept))


def test_sampling_of_separate_calls_counts_each_type(tools, writers, tmp_path):
    path = tmp_path / "sampled.dnstap"
    writer = writers(path, sample_rate=4)
    writer.start()
    for i in range(9):
        query, response = exchange(f"s{i}.example.", "A")
        writer.log_query(query, "127.0.0.1", 1053)
        writer.log_response(response, "127.0.0.1", 1053)
    writer.close()
    assert names_in(read_text(path)) == ["s0.example."] * 2 + ["s4.example."] * 2 + ["s8.example."] * 2
    assert (writer.written, writer.sampled_out) == (6, 12)


@pytest.mark.parametrize(("types", "expected"), [(["auth-query"], "AQ"), (["auth-response"], "AR")])
def test_message_types_filter(tools, writers, tmp_path, types, expected):
    path = tmp_path / "filtered.dnstap"
    writer = writers(path, message_types=types)
    writer.start()
    log_queries(writer)
    writer.log_exchange(exchange("dropped-by-rrl.example.", "A")[0], None, "127.0.0.1", 1)
    writer.close()
    lines = read_text(path)
    wanted = [q[0] for q in QUERIES] + (["dropped-by-rrl.example."] if expected == "AQ" else [])
    assert names_in(lines) == wanted
    assert {line.split()[2] for line in lines} == {expected}


def test_reopen_starts_a_new_file(tools, writers, tmp_path):
    """Log rotation: the old file is finished (STOP), the new one starts with START."""
    path = tmp_path / "rotated.dnstap"
    writer = writers(path)
    writer.start()
    writer.log_exchange(*exchange("before.example.", "A"), "127.0.0.1", 1)
    assert writer.flush(5)
    path.rename(tmp_path / "rotated.dnstap.1")
    writer.reopen()
    assert wait_until(lambda: writer.counters()["connects"] == 2)
    writer.log_exchange(*exchange("after.example.", "A"), "127.0.0.1", 1)
    writer.close()
    assert names_in(read_text(tmp_path / "rotated.dnstap.1")) == ["before.example."] * 2
    assert names_in(read_text(path)) == ["after.example."] * 2
    assert len(data_frames(tmp_path / "rotated.dnstap.1")) == len(data_frames(path)) == 2


def test_several_workers_write_a_file_each(tools, writers, tmp_path):
    config = DnstapConfig(enabled=True, destination=str(tmp_path / "w.dnstap"))
    made = []
    for index in range(2):
        writer = DnstapWriter.from_config(config, index, 2)
        made.append(writer)
        writer.start()
        writer.log_exchange(*exchange(f"worker{index}.example.", "A"), "127.0.0.1", 1)
    for writer in made:
        writer.close()
    for index in range(2):
        assert names_in(read_text(tmp_path / f"w.dnstap.{index}")) == [f"worker{index}.example."] * 2


# -- a unix socket, received by fstrm_capture ----------------------------------------------------


def test_unix_socket_to_fstrm_capture(capture, writers):
    cap = capture()
    writer = writers(f"unix:{cap.sock}")
    writer.start()
    assert writer.connected  # READY / ACCEPT / START done
    log_queries(writer)
    writer.close()  # STOP, and the reader's FINISH
    counters = writer.counters()
    assert counters["written"] == 2 * len(QUERIES)
    assert counters["io_errors"] == 0, "the stream did not end with STOP -> FINISH"
    cap.stop()
    lines = read_text(cap.out)
    assert names_in(lines) == [q[0] for q in QUERIES for _ in range(2)]
    assert [(line.split()[2], line.split()[3]) for line in lines] == [
        (kind, q[3]) for q in QUERIES for kind in ("AQ", "AR")]


def test_workers_share_the_socket_with_a_connection_each(capture, writers):
    cap = capture()
    config = DnstapConfig(enabled=True, destination=f"unix:{cap.sock}", flush_interval=0.02)
    made = [DnstapWriter.from_config(config, index, 3) for index in range(3)]
    for index, writer in enumerate(made):
        writer.start()
        writer.log_exchange(*exchange(f"worker{index}.example.", "A"), "127.0.0.1", 1)
    for writer in made:
        writer.close()
        assert writer.written == 2
    cap.stop()
    assert sorted(names_in(read_text(cap.out))) == sorted(f"worker{i}.example." for i in range(3) for _ in range(2))


def test_a_reader_that_goes_away_costs_nothing_and_delivery_resumes(capture, writers):
    cap = capture("first.fstrm")
    writer = writers(f"unix:{cap.sock}", reconnect_min=0.05, reconnect_max=0.2)
    writer.start()
    writer.log_exchange(*exchange("before.example.", "A"), "127.0.0.1", 1)
    assert writer.flush(5)
    assert writer.written == 2

    cap.kill()  # the reader crashes
    slowest = 0.0
    logged = 0
    deadline = time.monotonic() + 10
    while writer.connected and time.monotonic() < deadline:  # the writer notices by itself
        started = time.perf_counter()
        writer.log_exchange(*exchange("meanwhile.example.", "A"), "127.0.0.1", 1)
        slowest = max(slowest, time.perf_counter() - started)
        logged += 2
        time.sleep(0.001)
    assert not writer.connected
    for _ in range(200):  # while it is gone: dropped at once, counted
        started = time.perf_counter()
        writer.log_exchange(*exchange("meanwhile.example.", "A"), "127.0.0.1", 1)
        slowest = max(slowest, time.perf_counter() - started)
        logged += 2
    assert slowest < 0.05, f"a log call took {slowest * 1000:.1f} ms with the reader gone"
    assert writer.dropped >= 400
    assert wait_until(lambda: writer.written + writer.dropped == 2 + logged)
    assert writer.counters()["io_errors"] >= 1

    cap = capture("second.fstrm")  # a reader again, on the same path: the writer reconnects
    assert writer.wait_connected(10)
    assert writer.counters()["connects"] == 2
    writer.log_exchange(*exchange("after.example.", "A"), "127.0.0.1", 1)
    writer.close()
    assert writer.written == 4
    cap.stop()
    assert names_in(read_text(cap.out)) == ["after.example."] * 2


def test_no_reader_at_start_then_one(capture, writers, tmp_path):
    writer = writers(f"unix:{tmp_path / 'dnstap.sock'}", reconnect_min=0.05, reconnect_max=0.1)
    started = time.perf_counter()
    writer.start()
    assert time.perf_counter() - started < 1
    assert not writer.connected
    writer.log_exchange(*exchange("lost.example.", "A"), "127.0.0.1", 1)
    assert writer.dropped == 2
    cap = capture()
    assert writer.wait_connected(10)
    writer.log_exchange(*exchange("found.example.", "A"), "127.0.0.1", 1)
    writer.close()
    cap.stop()
    assert names_in(read_text(cap.out)) == ["found.example."] * 2


class StalledReader:
    """A reader that does the handshake, then never reads again (a wedged collector)."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.conns: list[socket.socket] = []
        self.ready: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        self.conns.append(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.ready.append(self._control(conn))
        conn.sendall(dnstap.control_frame(dnstap.CONTROL_ACCEPT, CONTENT_TYPE.encode()))
        self.ready.append(self._control(conn))

    @staticmethod
    def _control(conn: socket.socket) -> bytes:
        escape, length = struct.unpack(">II", conn.recv(8, socket.MSG_WAITALL))
        assert escape == 0, "a data frame before START"
        return conn.recv(length, socket.MSG_WAITALL)

    def close(self) -> None:
        self.server.close()
        for conn in self.conns:
            conn.close()


def test_a_stalled_reader_never_blocks_the_caller(writers, tmp_path):
    reader = StalledReader(tmp_path / "stalled.sock")
    try:
        writer = writers(f"unix:{tmp_path / 'stalled.sock'}", buffer_size=65536, timeout=0.5,
                         reconnect_min=5, reconnect_max=5)
        writer.start()
        assert writer.connected
        assert wait_until(lambda: len(reader.ready) == 2)
        ready = dnstap._parse_control(reader.ready[0])
        start = dnstap._parse_control(reader.ready[1])
        assert ready == (dnstap.CONTROL_READY, [CONTENT_TYPE.encode()])
        assert start == (dnstap.CONTROL_START, [CONTENT_TYPE.encode()])
        query, response = exchange("stalled.example.", "A")
        slowest = 0.0
        logged = 0
        deadline = time.monotonic() + 20
        # log until the socket buffers are full and the write times out: the writer gives the
        # connection up (and, reconnect_min being 5 s, stays disconnected for the checks below)
        while writer.connected and time.monotonic() < deadline:
            for _ in range(1000):
                started = time.perf_counter()
                writer.log_exchange(query, response, "127.0.0.1", 1)
                slowest = max(slowest, time.perf_counter() - started)
                logged += 2
            assert writer.counters()["queued_bytes"] <= 65536
            time.sleep(0.001)
        assert not writer.connected
        assert slowest < 0.05, f"a log call took {slowest * 1000:.1f} ms with the reader stalled"
        assert writer.dropped > 0  # the queue is bounded: the overflow is dropped and counted
        assert writer.counters()["io_errors"] >= 1
        assert wait_until(lambda: writer.written + writer.dropped == logged)
    finally:
        reader.close()


def test_io_errors_never_reach_the_caller(writers, tmp_path):
    missing_dir = writers(tmp_path / "no-such-dir" / "out.dnstap", reconnect_min=0.01, reconnect_max=0.02)
    missing_dir.start()
    full = writers("/dev/full", reconnect_min=0.01, reconnect_max=0.02)  # every write: ENOSPC
    full.start()
    for writer in (missing_dir, full):
        assert not writer.connected
        writer.log_exchange(*exchange("x.example.", "A"), "127.0.0.1", 1)
        writer.log_query(b"", "127.0.0.1", 1)
        assert writer.dropped == 3
        assert wait_until(lambda w=writer: w.counters()["io_errors"] >= 2)  # it keeps retrying


def test_bad_input_is_counted_not_raised(writers, tmp_path):
    writer = writers(tmp_path / "out.dnstap")
    writer.start()
    writer.log_query(b"\0" * 12, b"\x01\x02\x03", 53)  # an address of 3 octets
    writer.log_response(b"\0" * 12, "not an address", 53)
    writer.log_exchange(b"\0" * 12, b"\0" * 12, "127.0.0.1", -1)  # a negative port
    writer.log_query(b"\0" * 12, "127.0.0.1", 53)
    writer.close()
    assert writer.counters()["errors"] == 3
    assert writer.written == 1
    assert len(data_frames(tmp_path / "out.dnstap")) == 1


# -- an independent decoder: the protobuf package, from a descriptor of dnstap.proto ----------------


def dnstap_classes():
    """The Dnstap message class, built from dnstap.proto's definitions (the fields we use)."""
    descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
    from google.protobuf import descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="dnstap.proto", package="dnstap", syntax="proto2")
    for name, values in (("SocketFamily", ["INET", "INET6"]), ("SocketProtocol", ["UDP", "TCP", "DOT", "DOH"])):
        enum = proto.enum_type.add(name=name)
        for number, value in enumerate(values, 1):
            enum.value.add(name=value, number=number)
    envelope = proto.message_type.add(name="Dnstap")
    envelope.enum_type.add(name="Type").value.add(name="MESSAGE", number=1)
    for name, number, kind, label, type_name in (
            ("identity", 1, f.TYPE_BYTES, f.LABEL_OPTIONAL, None),
            ("version", 2, f.TYPE_BYTES, f.LABEL_OPTIONAL, None),
            ("extra", 3, f.TYPE_BYTES, f.LABEL_OPTIONAL, None),
            ("type", 15, f.TYPE_ENUM, f.LABEL_REQUIRED, ".dnstap.Dnstap.Type"),
            ("message", 14, f.TYPE_MESSAGE, f.LABEL_OPTIONAL, ".dnstap.Message")):
        envelope.field.add(name=name, number=number, type=kind, label=label, type_name=type_name)
    message = proto.message_type.add(name="Message")
    message_type = message.enum_type.add(name="Type")
    for number, value in enumerate(["AUTH_QUERY", "AUTH_RESPONSE", "RESOLVER_QUERY", "RESOLVER_RESPONSE"], 1):
        message_type.value.add(name=value, number=number)
    for name, number, kind, type_name in (
            ("type", 1, f.TYPE_ENUM, ".dnstap.Message.Type"),
            ("socket_family", 2, f.TYPE_ENUM, ".dnstap.SocketFamily"),
            ("socket_protocol", 3, f.TYPE_ENUM, ".dnstap.SocketProtocol"),
            ("query_address", 4, f.TYPE_BYTES, None),
            ("response_address", 5, f.TYPE_BYTES, None),
            ("query_port", 6, f.TYPE_UINT32, None),
            ("response_port", 7, f.TYPE_UINT32, None),
            ("query_time_sec", 8, f.TYPE_UINT64, None),
            ("query_time_nsec", 9, f.TYPE_FIXED32, None),
            ("query_message", 10, f.TYPE_BYTES, None),
            ("query_zone", 11, f.TYPE_BYTES, None),
            ("response_time_sec", 12, f.TYPE_UINT64, None),
            ("response_time_nsec", 13, f.TYPE_FIXED32, None),
            ("response_message", 14, f.TYPE_BYTES, None)):
        label = f.LABEL_REQUIRED if name == "type" else f.LABEL_OPTIONAL
        message.field.add(name=name, number=number, type=kind, label=label, type_name=type_name)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("dnstap.Dnstap"))


def test_the_protobuf_package_decodes_every_field(writers, tmp_path):
    Dnstap = dnstap_classes()
    path = tmp_path / "out.dnstap"
    writer = writers(path, identity="", version="v9")
    writer.start()
    query, response = exchange("protobuf.example.", "NS")
    big = response + b"\0" * 20000  # lengths of 3-octet varints
    t_query, t_response = 1_999_999_999_999_999_999, 2_000_000_000_000_000_001
    writer.log_exchange(query, big, socket.inet_pton(socket.AF_INET6, "2001:db8::5"), 12345, tcp=True,
                        local="2001:db8::35", local_port=8053, query_time_ns=t_query, response_time_ns=t_response)
    writer.close()
    frames = data_frames(path)
    assert len(frames) == 2
    decoded = []
    for frame in frames:
        envelope = Dnstap()
        envelope.ParseFromString(frame)
        assert envelope.IsInitialized()
        decoded.append(envelope)
    q, r = decoded
    for envelope in decoded:
        assert not envelope.HasField("identity")
        assert envelope.version == b"v9"
        assert envelope.type == 1
        m = envelope.message
        assert (m.socket_family, m.socket_protocol) == (2, 2)
        assert m.query_address == socket.inet_pton(socket.AF_INET6, "2001:db8::5")
        assert m.response_address == socket.inet_pton(socket.AF_INET6, "2001:db8::35")
        assert (m.query_port, m.response_port) == (12345, 8053)
        assert (m.query_time_sec, m.query_time_nsec) == divmod(t_query, 10**9)
    assert q.message.type == dnstap.AUTH_QUERY
    assert q.message.query_message == query
    assert not q.message.HasField("response_message") and not q.message.HasField("response_time_sec")
    assert r.message.type == dnstap.AUTH_RESPONSE
    assert r.message.response_message == big
    assert (r.message.response_time_sec, r.message.response_time_nsec) == divmod(t_response, 10**9)
    assert not r.message.HasField("query_message")


# -- configuration -----------------------------------------------------------------------------------


def test_config_from_table(tmp_path):
    (tmp_path / "logs").mkdir()
    config = DnstapConfig.from_table({
        "destination": "logs/dnstap.fstrm",
        "message-types": ["AUTH_RESPONSE"],
        "sample-rate": 10,
        "identity": "l1.example",
        "version": "",
        "flush-interval": 1,
        "buffer-size": 1 << 20,
    }, "imrs.toml", base_dir=str(tmp_path))
    assert config == DnstapConfig(enabled=True, destination=str(tmp_path / "logs" / "dnstap.fstrm"),
                                  message_types=("auth-response",), sample_rate=10, identity="l1.example",
                                  version="", flush_interval=1.0, buffer_size=1 << 20)
    assert config.socket_path is None
    unix = DnstapConfig.from_table({"destination": "unix:/run/dnstap.sock"}, "imrs.toml")
    assert unix.enabled and unix.socket_path == "/run/dnstap.sock"
    assert unix.message_types == ("auth-query", "auth-response")
    assert unix.identity == socket.gethostname()
    assert DnstapConfig.from_table({"enabled": False}, "imrs.toml").enabled is False
    assert DnstapConfig().enabled is False


def test_config_errors_are_all_reported(tmp_path):
    lines = {("dnstap", "sample-rate"): 4, ("dnstap", "message-types"): 5, ("dnstap", "destination"): 3}
    with pytest.raises(ConfigError) as caught:
        DnstapConfig.from_table({
            "destination": str(tmp_path / "missing" / "out.dnstap"),
            "sample-rate": 0,
            "message-types": ["auth-query", "client-query"],
            "identiy": "typo",
            "flush-interval": True,
            "enabled": "yes",
        }, "imrs.toml", line_for=lambda path: lines.get(path))
    issues = {issue.key: issue for issue in caught.value.errors}
    assert set(issues) == {"dnstap.destination", "dnstap.sample-rate", "dnstap.message-types",
                           "dnstap.identiy", "dnstap.flush-interval", "dnstap.enabled"}
    assert "directory does not exist" in issues["dnstap.destination"].message
    assert issues["dnstap.sample-rate"].message == "must be between 1 and 1000000000, got 0"
    assert "unknown message type 'client-query'" in issues["dnstap.message-types"].message
    assert issues["dnstap.identiy"].message == "unknown key; did you mean 'identity'?"
    assert all(issue.file == "imrs.toml" for issue in caught.value.errors)
    assert issues["dnstap.sample-rate"].line == 4
    assert str(issues["dnstap.sample-rate"]) == "imrs.toml:4: key 'dnstap.sample-rate': must be between 1 and 1000000000, got 0"


@pytest.mark.parametrize(("table", "message"), [
    ({}, "missing required key 'destination'"),
    ({"destination": ""}, "the path is empty"),
    ({"destination": "unix:"}, "the path is empty"),
    ({"destination": "unix:/" + "x" * 120}, "longer than 107 octets"),
    ({"destination": "/"}, "is a directory"),
    ({"destination": "/tmp/x", "message-types": []}, "no message type"),
    ({"destination": "/tmp/x", "buffer-size": 10}, "must be between 65536"),
    ({"destination": 5}, "expected a string, got integer 5"),
])
def test_config_rejects(table, message):
    with pytest.raises(ConfigError, match=message):
        DnstapConfig.from_table(table, "imrs.toml")


def test_worker_destination():
    assert dnstap.worker_destination("/var/log/imrs.dnstap", 0, 1) == "/var/log/imrs.dnstap"
    assert dnstap.worker_destination("/var/log/imrs.dnstap", 3, 4) == "/var/log/imrs.dnstap.3"
    assert dnstap.worker_destination("unix:/run/dnstap.sock", 3, 4) == "unix:/run/dnstap.sock"


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 1_700_000_000, 2**64 - 1])
def test_varint(n):
    encoded = dnstap._varint(n)
    value = sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(encoded))
    assert value == n
    assert all(byte & 0x80 for byte in encoded[:-1]) and not encoded[-1] & 0x80


# -- from a running server ---------------------------------------------------------------------


def test_a_server_logs_its_queries_and_responses(tools, tmp_path):
    """imrs with [dnstap] to a file and 2 workers: after UDP and TCP queries and a stop, the
    workers' files (PATH.0, PATH.1) read with dnstap-ldns hold every query and its response,
    with the client's port; sampling is off (1)."""
    from serverproc import ROOT_ZONE, ServerProc, query, tcp_ask, udp_ask

    out = tmp_path / "imrs.dnstap"
    srv = ServerProc(tmp_path, ["--zone", str(ROOT_ZONE), "--workers", "2"],
                     config=f'[dnstap]\ndestination = "{out}"\nidentity = "test-node"\n')
    srv.start().wait_ready()
    names = [f"dnstap-{n}.example." for n in range(12)]
    try:
        for n, name in enumerate(names[:10]):
            assert udp_ask(srv.host, srv.port, query(name, "A", n)) is not None
        for n, name in enumerate(names[10:]):
            assert tcp_ask(srv.host, srv.port, query(name, "AAAA", 50 + n)) is not None
    finally:
        srv.stop()
    files = sorted(tmp_path.glob("imrs.dnstap.*"))
    assert [f.name for f in files] == ["imrs.dnstap.0", "imrs.dnstap.1"]
    docs = [doc for f in files for doc in read_yaml(f)]
    assert all(doc["identity"] == "test-node" for doc in docs)
    by_name: dict[str, set[str]] = {}
    for doc in docs:
        message = doc["message"]
        wire = message.get("query_message") or message.get("response_message") or ""
        for name in names:
            if name in wire:
                by_name.setdefault(name, set()).add(message["type"])
                assert message["query_port"] > 0
    assert all(by_name.get(name) == {"AUTH_QUERY", "AUTH_RESPONSE"} for name in names), by_name


def test_the_configuration_file_reports_dnstap_errors_with_line(tmp_path):
    from imrs.config import ConfigError, load_config

    good = tmp_path / "good.toml"
    good.write_text(f'[dnstap]\ndestination = "{tmp_path / "q.dnstap"}"\nsample-rate = 5\n')
    settings = load_config(str(good))
    assert settings.dnstap.enabled and settings.dnstap.sample_rate == 5
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nworkers = 1\n\n[dnstap]\ndestination = ""\nsample-rate = 0\ncolour = "red"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(bad))
    text = str(caught.value)
    assert "dnstap.sample-rate" in text and "dnstap.colour" in text and ":6:" in text
