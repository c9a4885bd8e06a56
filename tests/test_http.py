"""The telemetry endpoint of a real `imrs serve --http`: /health, /ready, `imrs drain`, /metrics,
/stats, `imrs stats`, bad requests; and the `http` setting's errors.

One server for the module (two workers, so counters are summed over both): a static root zone
(a subset, from a file) and a kept zone refreshed from a file source, so both kinds of zone
show up in /ready and /metrics.  Only 127.0.0.1 is used.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import dns.edns
import dns.message
import pytest
from peers import proc
from prometheus_client.parser import text_string_to_metric_families
from serverproc import (
    SMALL_ZONE,
    ServerProc,
    imrs_run,
    parse,
    query,
    root_subset,
    tcp_ask,
    udp_ask,
)

from imrs import __version__
from imrs.config import (
    ConfigError,
    default_settings,
    load_config,
    parse_http,
    with_overrides,
)

ROOT_SERIAL = 2026082201
EXAMPLE_SERIAL = 2024010101


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def get_json(port: int, path: str) -> tuple[int, dict]:
    status, body, headers = http_request(port, "GET", path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or resets, or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def metrics(port: int) -> dict[str, list]:
    """/metrics parsed: family name -> samples."""
    status, body, headers = http_request(port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def sample(families: dict[str, list], name: str, sparse: bool = False, **labels: str) -> float:
    """The value of the one sample called ``name`` with these labels (``sparse``: of a family
    whose label values appear once counted, 0 when absent)."""
    family = name.removesuffix("_total")
    found = [s.value for s in families[family] if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    if sparse and not found:
        return 0.0
    assert len(found) == 1, (name, labels, families[family])
    return found[0]


def total(families: dict[str, list], name: str) -> float:
    return sum(s.value for s in families[name.removesuffix("_total")] if s.name == name)


def wait_ready(port: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, data = get_json(port, "/ready")
        if status == 200:
            return data
        assert time.monotonic() < deadline, f"/ready still {status} after {timeout} s: {data}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("http")
    (d / "root.zone").write_text(root_subset({"com", "net", "org"}))
    (d / "example.zone").write_text(SMALL_ZONE)
    config = f"""
[[zone]]
file = "root.zone"

[[zone]]
name = "example."
sources = ["{d / 'example.zone'}"]
anchor = "none"
"""
    http_port = proc.free_port()
    srv = ServerProc(d, ["--workers", "2", "--http", f"127.0.0.1:{http_port}"], config=config)
    srv.http_port = http_port  # type: ignore[attr-defined]
    srv.start()
    try:
        srv.wait_ready()
        wait_ready(http_port)
        yield srv
    finally:
        srv.stop()  # raises on a traceback or internal errors in its log


def answered(srv: ServerProc, tcp: bool) -> bool:
    wire = query("com.", "NS", qid=4242)
    response = (tcp_ask if tcp else udp_ask)(srv.host, srv.port, wire)
    return response is not None and parse(response).id == 4242


# -- /health, /ready, drain ---------------------------------------------------------------------

def test_health(server: ServerProc) -> None:
    status, data = get_json(server.http_port, "/health")
    assert status == 200
    assert data["status"] == "alive"
    assert data["pid"] == server.proc.pid
    assert data["version"] == __version__
    assert data["uptime"] > 0


def test_ready_describes_zones_listeners_workers(server: ServerProc) -> None:
    data = wait_ready(server.http_port)
    assert data["ready"] is True and data["reasons"] == [] and data["draining"] is False
    zones = {zone["zone"]: zone for zone in data["zones"]}
    root, example = zones["."], zones["example."]
    assert (root["kind"], root["serial"], root["validation"], root["served"]) == ("static", ROOT_SERIAL, "static", True)
    assert root["expiry_seconds"] is None
    assert root["zonemd"] is True  # root_subset recomputes the digest, so it verified
    assert 0 <= root["age_seconds"] < 600
    assert root["signature_expiry_seconds"] > 0  # the test root is signed until 2036
    assert (example["kind"], example["serial"], example["validation"]) == ("kept", EXAMPLE_SERIAL, "verified")
    # the SOA expire of the example zone is 1209600 s, counted from the last refresh
    assert 1209600 - 600 < example["expiry_seconds"] <= 1209600
    assert example["last_transfer_ok"] is True and example["last_error"] is None
    assert example["signature_expiry_seconds"] is None and example["zonemd"] is False
    assert data["listeners"] == [f"127.0.0.1:{server.port}"]
    assert data["workers"] == {"count": 2, "live": 2, "restarts": 0}


def test_drain_fails_ready_but_answers(server: ServerProc) -> None:
    port = server.http_port
    result = imrs_run(["drain", "--http", f"127.0.0.1:{port}"], cwd=server.workdir)
    assert result.returncode == 0, result.stderr
    assert "draining" in result.stdout and "Traceback" not in result.stderr
    try:
        status, data = get_json(port, "/ready")
        assert status == 503
        assert data["ready"] is False and data["draining"] is True and data["reasons"] == ["draining"]
        assert answered(server, tcp=False) and answered(server, tcp=True)
        assert get_json(port, "/health")[0] == 200
        families = metrics(port)
        assert sample(families, "imrs_draining") == 1 and sample(families, "imrs_ready") == 0
        # draining twice is still draining
        assert imrs_run(["drain", "--http", f"127.0.0.1:{port}"], cwd=server.workdir).returncode == 0
    finally:
        result = imrs_run(["drain", "--undo", "--http", f"127.0.0.1:{port}"], cwd=server.workdir)
    assert result.returncode == 0, result.stderr
    assert "drain ended: ready" in result.stdout
    status, data = get_json(port, "/ready")
    assert status == 200 and data["draining"] is False
    assert answered(server, tcp=False)
    families = metrics(port)
    assert sample(families, "imrs_draining") == 0 and sample(families, "imrs_ready") == 1


def test_drain_is_post_only(server: ServerProc) -> None:
    status, _, headers = http_request(server.http_port, "GET", "/drain")
    assert status == 405 and "POST" in headers["allow"]
    assert get_json(server.http_port, "/ready")[0] == 200


# -- /metrics and /stats ------------------------------------------------------------------------

def test_metrics_zones_and_workers(server: ServerProc) -> None:
    families = metrics(server.http_port)
    assert sample(families, "imrs_zone_serial", zone=".") == ROOT_SERIAL
    assert sample(families, "imrs_zone_serial", zone="example.") == EXAMPLE_SERIAL
    assert sample(families, "imrs_zone_served", zone=".") == 1
    assert sample(families, "imrs_zone_last_transfer_success", zone="example.") == 1
    assert sample(families, "imrs_zone_expiry_seconds", zone="example.") > 1209600 - 600
    assert sample(families, "imrs_zone_signature_expiry_seconds", zone=".") > 0
    assert 0 <= sample(families, "imrs_zone_age_seconds", zone="example.") < 600
    assert 0 < sample(families, "imrs_zone_last_load_seconds", zone="example.") < 60
    assert abs(sample(families, "imrs_zone_last_transfer_timestamp_seconds", zone="example.") - time.time()) < 600
    assert sample(families, "imrs_workers") == 2 and sample(families, "imrs_workers_configured") == 2
    assert sample(families, "imrs_worker_restarts_total") == 0
    assert sample(families, "imrs_build_info", version=__version__) == 1
    assert families["imrs_request_size_bytes"][0].name == "imrs_request_size_bytes_bucket"


def test_metrics_count_queries_over_both_workers(server: ServerProc) -> None:
    """N queries from N source ports (SO_REUSEPORT spreads them over the two workers) and M
    over TCP: the counters go up by exactly that, summed over the workers."""
    before = metrics(server.http_port)
    n_udp, n_tcp = 40, 7
    for i in range(n_udp):
        assert udp_ask(server.host, server.port, query("org.", "NS", qid=i + 1)) is not None
    for i in range(n_tcp):
        assert tcp_ask(server.host, server.port, query("nosuchtld.", "A", qid=i + 1, do=True)) is not None
    n_cookie = 6  # a client cookie alone, over UDP
    for i in range(n_cookie):
        wire = dns.message.make_query("net.", "NS", use_edns=0, options=[dns.edns.GenericOption(10, bytes(range(8)))])
        assert udp_ask(server.host, server.port, wire.to_wire()) is not None
    after = metrics(server.http_port)

    def delta(name: str, **labels: str) -> float:
        sparse = name in ("imrs_queries_by_qtype_total", "imrs_top_tld_queries")
        return sample(after, name, sparse, **labels) - sample(before, name, sparse, **labels)

    assert delta("imrs_cookie_queries_total", result="client_only") == n_cookie
    assert delta("imrs_cookie_queries_total", result="valid") == 0
    # few distinct TLDs: the Space-Saving counts are exact
    assert delta("imrs_top_tld_queries", tld="org") == n_udp
    assert delta("imrs_top_tld_queries", tld="nosuchtld") == n_tcp
    assert delta("imrs_top_tld_queries", tld="net") == n_cookie
    n_udp += n_cookie

    assert delta("imrs_udp_received_total") == n_udp
    assert delta("imrs_tcp_queries_total") == n_tcp
    assert delta("imrs_queries_total", transport="udp", family="ipv4") == n_udp
    assert delta("imrs_queries_total", transport="tcp", family="ipv4") == n_tcp
    assert delta("imrs_responses_total", transport="udp", family="ipv4") == n_udp
    assert delta("imrs_queries_by_qtype_total", qtype="NS") == n_udp
    assert delta("imrs_responses_by_rcode_total", rcode="NXDOMAIN") == n_tcp
    assert delta("imrs_queries_by_edns_total", edns="do") == n_tcp
    infinite = [s for s in after["imrs_processing_latency_seconds"] if s.labels.get("le") == "+Inf"]
    assert sum(s.value for s in infinite) > 0
    sums = {s.labels["transport"]: s.value for s in after["imrs_request_size_bytes"] if s.name.endswith("_sum")}
    before_sums = {s.labels["transport"]: s.value for s in before["imrs_request_size_bytes"] if s.name.endswith("_sum")}
    assert sums["tcp"] - before_sums["tcp"] == n_tcp * len(query("nosuchtld.", "A", do=True))


def test_stats_json(server: ServerProc) -> None:
    status, data = get_json(server.http_port, "/stats")
    assert status == 200
    assert data["ready"] is True and data["workers"]["live"] == 2
    assert data["counters"]["udp_received"] > 0 and "workers_restarted" in data["counters"]
    assert {zone["zone"] for zone in data["zones"]} == {".", "example."}


def test_imrs_stats_command(server: ServerProc) -> None:
    result = imrs_run(["stats", "--http", f"127.0.0.1:{server.http_port}"], cwd=server.workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("Queries", "Responses", "Rcodes", "Top qtypes", "Top TLDs", "EDNS", "Truncated", "RRL", "Cookies",
                    "TCP", "Workers"):
        assert f"\n{heading} " in out, out
    assert "2 live of 2" in out
    assert f"Zone .       serial {ROOT_SERIAL}" in out
    assert f"Zone example. serial {EXAMPLE_SERIAL}, serving, validation verified" in out
    as_json = imrs_run(["stats", "--json", "--http", f"127.0.0.1:{server.http_port}"], cwd=server.workdir)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["counters"]["udp_received"] > 0


def test_cli_unreachable_and_bad_address(tmp_path: Path) -> None:
    port = proc.free_port()
    result = imrs_run(["drain", "--http", f"127.0.0.1:{port}"], cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot reach the imrs telemetry endpoint at 127.0.0.1:{port}" in result.stderr
    result = imrs_run(["stats", "--http", f"127.0.0.1:{port}"], cwd=tmp_path)
    assert result.returncode == 1 and "cannot reach" in result.stderr
    result = imrs_run(["stats", "--http", "localhost:80"], cwd=tmp_path)
    assert result.returncode == 2 and "not a valid IPv4 address" in result.stderr
    assert "Traceback" not in result.stderr


# -- bad requests ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"DELETE /ready HTTP/1.1\r\n\r\n", 405),
    (b"PUT /drain HTTP/1.1\r\n\r\n", 405),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"garbage\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics SPDY/9\r\n\r\n", 400),
    (b"\xff\xfe\x00\x01 / HTTP/1.1\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /drain HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", 413),
    (b"POST /drain HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /drain HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
])
def test_bad_requests_get_an_error_status(server: ServerProc, request_bytes: bytes, status: int) -> None:
    response = raw_exchange(server.http_port, request_bytes)
    assert response.startswith(f"HTTP/1.1 {status} ".encode()), response[:200]
    assert b"Traceback" not in response
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]
    assert get_json(server.http_port, "/health")[0] == 200


def test_abuse_does_not_stop_it(server: ServerProc) -> None:
    port = server.http_port
    # connections that say nothing, half a request, or close at once, while others are served
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
    try:
        idle[0].sendall(b"GET /health HT")
        for _ in range(20):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        raw_exchange(port, b"GET /health HTTP/1.1\r\n", timeout=1)  # no end of head: the server waits 10 s
        assert raw_exchange(port, b"HEAD /health HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")  # head, no body
        assert get_json(port, "/health")[0] == 200
        assert get_json(port, "/ready")[0] == 200
        assert answered(server, tcp=True)
    finally:
        for sock in idle:
            sock.close()
    status, body, _ = http_request(port, "GET", "/metrics?name[]=x&%ff")  # a query string is ignored
    assert status == 200 and b"imrs_zone_serial" in body
    assert server.alive()
    assert "Traceback" not in server.stderr()


def test_http_port_in_use_is_a_startup_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        dns_port = proc.free_port()
        result = imrs_run(["serve", "--listen", f"127.0.0.1:{dns_port}", "--http", f"127.0.0.1:{port}",
                           "--workers", "1", "--zone", str(_small_zone(tmp_path))], cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def _small_zone(tmp_path: Path) -> Path:
    path = tmp_path / "example.zone"
    path.write_text(SMALL_ZONE)
    return path


# -- configuration ----------------------------------------------------------------------------------

def _load(tmp_path: Path, text: str):
    path = tmp_path / "imrs.toml"
    path.write_text(text)
    return load_config(path)


def test_http_setting(tmp_path: Path) -> None:
    assert _load(tmp_path, "[server]\n").http is None
    settings = _load(tmp_path, '[server]\nhttp = "127.0.0.1:8053"\n')
    assert str(settings.http) == "127.0.0.1:8053"
    assert str(_load(tmp_path, '[server]\nhttp = "[::1]:8053"\n').http) == "[::1]:8053"
    assert str(with_overrides(settings, http="[::1]:9100").http) == "[::1]:9100"
    assert with_overrides(settings, http="off").http is None
    assert with_overrides(settings).http == settings.http


@pytest.mark.parametrize(("value", "fragment"), [
    ("8053", 'expected a "HOST:PORT" string, got integer 8053'),
    ('"127.0.0.1"', "missing port in HTTP address '127.0.0.1'"),
    ('"[::1]"', "missing port"),
    ('"localhost:8053"', "'localhost' is not a valid IPv4 address"),
    ('"::1:8053"', "must be written in brackets"),
    ('"127.0.0.1:0"', "port 0 out of range"),
    ('"127.0.0.1:99999"', "out of range"),
    ('""', "empty listen address"),
    ('"127.0.0.1:5300"', "HTTP address 127.0.0.1:5300 is also a DNS listen address"),
    ('["127.0.0.1:8053"]', 'expected a "HOST:PORT" string, got array'),
])
def test_http_setting_errors(tmp_path: Path, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f'[server]\nlog-level = "info"\nhttp = {value}\n')
    assert len(info.value.errors) == 1
    issue = info.value.errors[0]
    assert (issue.line, issue.key) == (3, "server.http")
    assert fragment in issue.message, issue.message


def test_http_override_errors() -> None:
    settings = default_settings()
    for value, fragment in (("bogus", "not a valid IPv4 address"), ("127.0.0.1", "missing port"),
                            ("127.0.0.1:5300", "also a DNS listen address")):
        with pytest.raises(ConfigError) as info:
            with_overrides(settings, http=value)
        assert info.value.key == "--http" and fragment in info.value.message
    # the clash is checked against the listeners given on the same command line
    assert with_overrides(settings, listen=["127.0.0.1:5301"], http="127.0.0.1:5300").http == parse_http("127.0.0.1:5300")


def test_serve_rejects_bad_http_and_check_config_shows_it(tmp_path: Path) -> None:
    result = imrs_run(["serve", "--http", "nonsense"], cwd=tmp_path)
    assert result.returncode == 2
    assert "key '--http'" in result.stderr and "Traceback" not in result.stderr
    cfg = tmp_path / "imrs.toml"
    cfg.write_text('[server]\nhttp = "127.0.0.1:8053"\n')
    result = imrs_run(["check-config", str(cfg)], cwd=tmp_path)
    assert result.returncode == 0 and "http 127.0.0.1:8053" in result.stdout


# -- the mapping of counters to metric families, without a server ------------------------------------

def test_metric_families_from_counters() -> None:
    from imrs.telemetry.metrics import render
    from imrs.telemetry.snapshot import Telemetry, VersionFacts, ZoneTelemetry
    from imrs.telemetry.stats_cli import format_stats

    now = time.time()
    counters = {"queries_udp_ipv6": 5, "rcode_3": 2, "rcode_16": 1, "rcode_12": 1, "rcode_other": 4, "qtype_28": 3,
                "qtype_65534": 0, "qtype_other": 2, "edns_do": 5, "truncated": 1,
                "request_size_udp_0": 1, "request_size_udp_32": 2, "request_size_udp_288": 3,
                "response_size_tcp_4080": 1, "response_size_tcp_4096": 2,
                "latency_udp_50": 4, "latency_udp_100000": 1, "latency_udp_inf": 1, "latency_sum_us_udp": 250_000,
                "request_octets_udp": 1234, "response_octets_tcp": 12345,
                "rrl_slipped": 6, "workers_restarted": 2, "some_new_counter": 9, "cookie_valid": 3, "cookie_badcookie": 1,
                "tld_com": 7, "tld_.": 2}
    zone = ZoneTelemetry("example.", "kept", True, "serving", 7, VersionFacts(now - 60, None, False), False,
                         expire_at=now + 100, last_check=now - 5, last_error="fetch failed", failures={"fetch": 2})
    telemetry = Telemetry(now, 1, __version__, now - 100, 100.0, True, (), 1, 0, 2, (zone,), counters)
    families = {f.name: f.samples for f in text_string_to_metric_families(render(telemetry).decode())}
    assert sample(families, "imrs_queries_total", transport="udp", family="ipv6") == 5
    assert sample(families, "imrs_queries_total", transport="tcp", family="ipv4") == 0  # missing key: 0
    assert {s.labels["rcode"]: s.value for s in families["imrs_responses_by_rcode"]} == {
        "NOERROR": 0, "FORMERR": 0, "SERVFAIL": 0, "NXDOMAIN": 2, "NOTIMP": 0, "REFUSED": 0, "12": 1, "BADVERS": 1,
        "other": 4}
    assert {s.labels["qtype"]: s.value for s in families["imrs_queries_by_qtype"]} == {
        "AAAA": 3, "TYPE65534": 0, "other": 2}
    assert sample(families, "imrs_queries_by_edns_total", edns="do") == 5
    assert sample(families, "imrs_responses_truncated_total") == 1
    def buckets(family: str, transport: str) -> dict[str, float]:
        return {s.labels["le"]: s.value for s in families[family]
                if s.name.endswith("_bucket") and s.labels["transport"] == transport}

    request = buckets("imrs_request_size_bytes", "udp")
    assert (request["15.0"], request["31.0"], request["47.0"], request["287.0"], request["+Inf"]) == (1, 1, 3, 3, 6)
    assert len(request) == 19
    response = buckets("imrs_response_size_bytes", "tcp")
    assert (response["4079.0"], response["4095.0"], response["+Inf"], len(response)) == (0, 1, 3, 257)
    latency = buckets("imrs_processing_latency_seconds", "udp")
    assert (latency["5e-05"], latency["0.01"], latency["0.1"], latency["+Inf"]) == (4, 4, 5, 6)
    histogram_sums = {(s.name, s.labels["transport"]): s.value for f in families.values() for s in f
                      if s.name.endswith(("_sum", "_count"))}
    assert histogram_sums[("imrs_processing_latency_seconds_sum", "udp")] == 0.25
    assert histogram_sums[("imrs_processing_latency_seconds_count", "udp")] == 6
    assert histogram_sums[("imrs_request_size_bytes_sum", "udp")] == 1234
    assert histogram_sums[("imrs_request_size_bytes_count", "udp")] == 6
    assert histogram_sums[("imrs_response_size_bytes_sum", "tcp")] == 12345
    assert histogram_sums[("imrs_response_size_bytes_count", "tcp")] == 3
    assert sample(families, "imrs_rrl_slipped_total") == 6
    assert sample(families, "imrs_worker_restarts_total") == 2
    assert sample(families, "imrs_some_new_counter_total") == 9  # unknown keys are not lost
    assert {s.labels["result"]: s.value for s in families["imrs_cookie_queries"]} == {
        "client_only": 0, "valid": 3, "invalid": 0, "malformed": 0, "badcookie": 1}
    assert {s.labels["tld"]: s.value for s in families["imrs_top_tld_queries"]} == {"com": 7, ".": 2}
    assert sample(families, "imrs_ready") == 0 and sample(families, "imrs_draining") == 1
    assert sample(families, "imrs_zone_last_transfer_success", zone="example.") == 0
    assert sample(families, "imrs_zone_refresh_failures_total", zone="example.", check="fetch") == 2
    assert 59 < sample(families, "imrs_zone_age_seconds", zone="example.") < 70
    assert "imrs_zone_signature_expiry_seconds" not in {s.name for f in families.values() for s in f}
    assert telemetry.not_ready() == ["draining", "no worker is serving"]
    # the terminal view copes with the same, and with nothing at all
    text = format_stats(telemetry.stats_json())
    assert "NOT READY: draining, no worker is serving" in text and "last refresh FAILED: fetch failed" in text
    assert "\nTop TLDs     com 7  . 2\n" in text and "\nCookies      valid 3  badcookie 1\n" in text
    assert "Queries" in format_stats({})
