"""The `imrs` command line: `python -m imrs serve` (defaults, --zone, --listen, --config),
startup errors (bad zone, missing zone, address in use), `imrs check-config`, signals,
`imrs --version`.  Everything runs as a subprocess, as an operator would run it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from peers import proc
from serverproc import (
    SMALL_ZONE,
    ServerProc,
    imrs_run,
    parse,
    query,
    root_subset,
    tcp_ask,
    tcp_connect,
    udp_ask,
)

from imrs import __version__

DEFAULT_PORT = 5300

ROOT_SERVERS_NET = """$ORIGIN root-servers.net.
$TTL 3600000
@   IN SOA a.root-servers.net. nstld.verisign-grs.com. 2024120401 14400 7200 1209600 3600000
@   IN NS  a.root-servers.net.
@   IN NS  b.root-servers.net.
a   IN A    198.41.0.4
a   IN AAAA 2001:503:ba3e::2:30
b   IN A    170.247.170.2
marker IN TXT "served from the root-servers.net zone"
"""


def _port_free(host: str, port: int) -> str | None:
    """None if `port` is free for UDP and TCP on `host`, else why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError as exc:
                return f"{host} port {port} ({'UDP' if kind == socket.SOCK_DGRAM else 'TCP'}) is busy: {exc}"
    return None


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """`python -m imrs serve` with no arguments, started at module setup (the embedded root
    takes seconds to load, so the other tests run meanwhile); a string saying why if 5300 is busy."""
    busy = _port_free("127.0.0.1", DEFAULT_PORT)
    if busy:
        yield busy
        return
    srv = ServerProc(tmp_path_factory.mktemp("default"), [], port=DEFAULT_PORT, name="default", cli_listen=False)
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.kill()


@pytest.fixture(scope="module", autouse=True)
def _start_default_early(default_server):
    yield


@pytest.fixture(scope="module")
def zones(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zones")
    out = {
        "root": d / "root.zone",
        "rsnet": d / "root-servers.net.zone",
        "example": d / "example.zone",
    }
    out["root"].write_text(root_subset({"net", "org", "com"}))
    out["rsnet"].write_text(ROOT_SERVERS_NET)
    out["example"].write_text(SMALL_ZONE)
    return out


def _ok_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# -------------------------------------------------------------------------- serving


def test_two_zones_root_and_root_servers_net(tmp_path, zones):
    srv = ServerProc(tmp_path, ["--zone", str(zones["root"]), "--zone", str(zones["rsnet"])],
                     hosts=("127.0.0.1", "::1"))
    srv.start()
    try:
        srv.wait_ready()
        for host in srv.hosts:
            # a name in root-servers.net: answered authoritatively from that zone
            msg = parse(udp_ask(host, srv.port, query("a.root-servers.net.", "A", 1)))
            assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
            assert [r.to_text() for r in msg.answer[0]] == ["198.41.0.4"]
            msg = parse(udp_ask(host, srv.port, query("marker.root-servers.net.", "TXT", 2)))
            assert msg.flags & dns.flags.AA and "root-servers.net zone" in msg.answer[0].to_text()
            msg = parse(udp_ask(host, srv.port, query("nope.root-servers.net.", "A", 3)))
            assert msg.rcode() == dns.rcode.NXDOMAIN and msg.flags & dns.flags.AA
            assert str(msg.authority[0].name) == "root-servers.net." and msg.authority[0].rdtype == dns.rdatatype.SOA
            # a name elsewhere under net.: the root's referral to net.
            msg = parse(udp_ask(host, srv.port, query("example.net.", "A", 4)))
            assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and not msg.flags & dns.flags.AA
            assert str(msg.authority[0].name) == "net." and msg.authority[0].rdtype == dns.rdatatype.NS
            # the root itself
            msg = parse(tcp_ask(host, srv.port, query(".", "SOA", 5)))
            assert msg.flags & dns.flags.AA and msg.answer[0][0].serial == 2026082201
            # a TLD not in the cut-down root: NXDOMAIN from the root
            msg = parse(udp_ask(host, srv.port, query("no-such-tld.", "A", 6)))
            assert msg.rcode() == dns.rcode.NXDOMAIN and str(msg.authority[0].name) == "."
    finally:
        srv.stop()


def test_name_in_no_served_zone_is_refused(tmp_path, zones):
    srv = ServerProc(tmp_path, ["--zone", str(zones["example"])], probe="example.")
    srv.start()
    try:
        srv.wait_ready()
        msg = parse(udp_ask(srv.host, srv.port, query("foo.org.", "A", 11)))
        assert msg.rcode() == dns.rcode.REFUSED and not msg.answer and not msg.flags & dns.flags.AA
        msg = parse(tcp_ask(srv.host, srv.port, query("foo.org.", "A", 12)))
        assert msg.rcode() == dns.rcode.REFUSED
        msg = parse(udp_ask(srv.host, srv.port, query("www.example.", "A", 13)))
        assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
        assert [r.to_text() for r in msg.answer[0]] == ["192.0.2.1"]
    finally:
        srv.stop()


def test_listen_from_config_file_and_zone_relative_to_it(tmp_path, zones):
    run = tmp_path / "run"
    run.mkdir()
    (run / "example.zone").write_text(SMALL_ZONE)
    port = proc.free_port("127.0.0.1")
    config = f'[server]\nlisten = ["127.0.0.1:{port}"]\n\n[[zone]]\nfile = "example.zone"\n'
    srv = ServerProc(run, [], port=port, config=config, probe="example.", cli_listen=False)
    srv.start()
    try:
        srv.wait_ready()
        msg = parse(udp_ask("127.0.0.1", port, query("www.example.", "AAAA", 21)))
        assert [r.to_text() for r in msg.answer[0]] == ["2001:db8::1"]
    finally:
        srv.stop()


def test_sigterm_stops_with_status_0(tmp_path, zones):
    srv = ServerProc(tmp_path, ["--zone", str(zones["example"])], probe="example.")
    srv.start()
    srv.wait_ready()
    idle = tcp_connect(*srv.addr)  # an open, idle TCP connection must not hold up the exit
    try:
        rc, took = srv.terminate(signal.SIGTERM, timeout=10)
    finally:
        idle.close()
    assert rc == 0, srv.stderr()
    assert took < 5, f"took {took:.1f} s to stop"
    assert "Traceback" not in srv.stderr()
    assert "stopped" in srv.stderr()
    # the port is free again (for a server, which binds TCP with SO_REUSEADDR: TIME_WAIT is fine)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        u.bind(("127.0.0.1", srv.port))
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("127.0.0.1", srv.port))


def test_sigint_stops_with_status_0(tmp_path, zones):
    srv = ServerProc(tmp_path, ["--zone", str(zones["example"])], probe="example.")
    srv.start()
    srv.wait_ready()
    rc, took = srv.terminate(signal.SIGINT, timeout=10)
    assert rc == 0 and took < 5
    assert "Traceback" not in srv.stderr()


def test_no_arguments_serves_the_embedded_root_on_port_5300(default_server):
    if isinstance(default_server, str):
        pytest.skip(f"cannot test the default listener: {default_server}")
    srv = default_server
    try:
        srv.wait_ready(timeout=120)
    except AssertionError as exc:
        if "in use" in str(exc):
            pytest.skip(f"port {DEFAULT_PORT} was taken by another process: {exc}")
        raise
    time.sleep(0.2)
    if not srv.alive() and "in use" in srv.stderr():  # someone else's server answered the probe
        pytest.skip(f"port {DEFAULT_PORT} was taken by another process")
    assert srv.alive()
    msg = parse(udp_ask("127.0.0.1", DEFAULT_PORT, query(".", "SOA", 31)))
    assert msg.flags & dns.flags.AA and msg.answer[0][0].serial == 2026082201
    msg = parse(tcp_ask("127.0.0.1", DEFAULT_PORT, query("com.", "NS", 32, do=True)))
    assert msg.rcode() == dns.rcode.NOERROR and str(msg.authority[0].name) == "com."
    assert any(r.rdtype == dns.rdatatype.DS for r in msg.authority)
    if _port_free("::1", 0) is None:  # IPv6 loopback exists: the default listens there too
        msg = parse(udp_ask("::1", DEFAULT_PORT, query(".", "SOA", 33)))
        assert msg.answer[0][0].serial == 2026082201
    rc, took = srv.terminate(signal.SIGTERM, timeout=10)
    assert rc == 0 and took < 5
    assert "Traceback" not in srv.stderr()


# -------------------------------------------------------------------------- startup errors


BAD_ZONES = [
    # (text, line of the error)
    ("$ORIGIN example.\n$TTL 3600\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.1\n\nwww BOGUS x\nz A 1.2.3.4\n", 7),
    ("$ORIGIN example.\n$TTL 3600\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\nw..x A 127.0.0.1\nz A 1.2.3.4\n", 5),
    # errors in the RDATA, found after dnspython has read the end of the line
    ("$ORIGIN example.\n$TTL 3600\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\nwww A 999.1.1.1\nz A 1.2.3.4\n", 5),
    ("$ORIGIN example.\n$TTL 3600\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\n\nwww MX 10\nz A 1.2.3.4\n", 6),
    ("$ORIGIN example.\n$TTL 3600\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\nwww A 1.2.3.4 extra\nz A 1.2.3.4\n", 5),
]


@pytest.mark.parametrize("text,line", BAD_ZONES)
def test_zone_syntax_error_names_file_and_line(tmp_path, text, line):
    bad = tmp_path / "bad.zone"
    bad.write_text(text)
    port = proc.free_port()
    result = imrs_run(["serve", "--zone", str(bad), "--listen", f"127.0.0.1:{port}"], tmp_path)
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert f"{bad}:{line}:" in result.stderr, result.stderr


def test_zone_without_soa_is_an_error(tmp_path):
    bad = tmp_path / "nosoa.zone"
    bad.write_text("$ORIGIN example.\n$TTL 3600\n@ NS ns1\nns1 A 127.0.0.1\n")
    result = imrs_run(["serve", "--zone", str(bad), "--listen", f"127.0.0.1:{proc.free_port()}"], tmp_path)
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert str(bad) in result.stderr and "SOA" in result.stderr


def test_missing_zone_file(tmp_path):
    missing = tmp_path / "nope.zone"
    result = imrs_run(["serve", "--zone", str(missing), "--listen", f"127.0.0.1:{proc.free_port()}"], tmp_path)
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert str(missing) in result.stderr
    assert "does not exist" in result.stderr or "no such file" in result.stderr.lower()


def test_corrupt_gzip_zone_is_a_clear_error(tmp_path):
    bad = tmp_path / "root.zone.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00not gzip at all")
    result = imrs_run(["serve", "--zone", str(bad), "--listen", f"127.0.0.1:{proc.free_port()}"], tmp_path)
    assert result.returncode == 1
    _ok_no_traceback(result)
    assert str(bad) in result.stderr


def test_zone_is_a_directory(tmp_path):
    result = imrs_run(["serve", "--zone", str(tmp_path), "--listen", f"127.0.0.1:{proc.free_port()}"], tmp_path)
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert str(tmp_path) in result.stderr


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_listen_address_in_use(tmp_path, zones, kind):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 0))
        if kind == "tcp":
            holder.listen(1)
        port = holder.getsockname()[1]
        result = imrs_run(["serve", "--zone", str(zones["example"]), "--listen", f"127.0.0.1:{port}"], tmp_path)
    finally:
        holder.close()
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert f"127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr.lower(), result.stderr


def test_bad_listen_argument(tmp_path, zones):
    result = imrs_run(["serve", "--zone", str(zones["example"]), "--listen", "localhost:53x"], tmp_path)
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert "--listen" in result.stderr


def test_serve_with_bad_config_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\ntcp-idle-timeout = -3\n")
    result = imrs_run(["serve", "--config", str(cfg)], tmp_path)
    assert result.returncode != 0
    _ok_no_traceback(result)
    assert f"{cfg}:2:" in result.stderr and "tcp-idle-timeout" in result.stderr


# -------------------------------------------------------------------------- check-config, --version


def test_check_config_good(tmp_path, zones):
    cfg = tmp_path / "good.toml"
    cfg.write_text(f'[server]\nlisten = ["127.0.0.1:5353", "[::1]:5353"]\ntcp-idle-timeout = 3\n\n'
                   f'[[zone]]\nfile = "{zones["example"]}"\n')
    result = imrs_run(["check-config", str(cfg)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{cfg}: OK" in result.stdout
    assert "127.0.0.1:5353" in result.stdout and str(zones["example"]) in result.stdout


def test_check_config_bad(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nedns-buffer-size = 100\nlisen = ["127.0.0.1:53"]\n\n[[zone]]\nfile = "missing.zone"\n')
    result = imrs_run(["check-config", str(cfg)], tmp_path)
    assert result.returncode == 1
    _ok_no_traceback(result)
    lines = result.stderr.splitlines()
    assert any(l.startswith(f"{cfg}:2: key 'server.edns-buffer-size'") for l in lines), result.stderr
    assert any(l.startswith(f"{cfg}:3: key 'server.lisen'") and "listen" in l for l in lines), result.stderr
    assert any(l.startswith(f"{cfg}:6: key 'zone[0].file'") or (f"{cfg}:6:" in l and "file" in l) for l in lines), \
        result.stderr


def test_check_config_toml_syntax_error(tmp_path):
    cfg = tmp_path / "syntax.toml"
    cfg.write_text("[server]\nidentity = \"x\"\nversion = = 3\n")
    result = imrs_run(["check-config", str(cfg)], tmp_path)
    assert result.returncode == 1
    _ok_no_traceback(result)
    assert f"{cfg}:3:" in result.stderr


def test_check_config_missing_file(tmp_path):
    result = imrs_run(["check-config", str(tmp_path / "absent.toml")], tmp_path)
    assert result.returncode == 1
    _ok_no_traceback(result)
    assert "absent.toml" in result.stderr


def test_version(tmp_path):
    result = imrs_run(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"imrs {__version__}"


def test_console_script_version(tmp_path):
    script = Path(sys.executable).with_name("imrs")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and result.stdout.strip() == f"imrs {__version__}"


def test_no_command_is_a_usage_error(tmp_path):
    result = imrs_run([], tmp_path)
    assert result.returncode == 2
    _ok_no_traceback(result)
    assert "usage" in result.stderr.lower()
