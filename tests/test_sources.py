"""Source specs, failover between sources, HTTP and file sources, and the multi-source check."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.nsd_primary import NsdPrimary
from peers.proc import free_port

from imrs.zone.parse import load_zone_records
from imrs.zone.records import ZoneRecords, canonical_rdata, name_from_text
from imrs.zone.sources import (
    RFC8806_ROOT_SOURCES,
    FetchError,
    SourceError,
    check_sources,
    disagreements,
    fetch_zone,
    parse_source,
    source_serial,
)
from imrs.zone.transfer import TsigKey

TESTROOT = Path(os.environ.get("IMRS_TESTROOT", "/work/shared/zones/testroot"))
V1, V2 = "2026082101", "2026082102"
ROOT = b"\x00"


def record_set(zone: ZoneRecords) -> list[tuple]:
    return sorted((r.owner, r.rdtype, r.ttl, canonical_rdata(r.rdtype, r.rdata)) for r in zone.records)


@functools.cache
def file_records(version: str) -> ZoneRecords:
    return load_zone_records(TESTROOT / f"root-{version}.zone")


# --- specs ------------------------------------------------------------------------------------


def test_parse_source_forms(tmp_path):
    key = TsigKey("xfr-key.", "hmac-sha256", b"s" * 32)
    keys = {"xfr-key.": key}
    s = parse_source("axfr://192.0.2.1", keys)
    assert (s.kind, s.address, s.port, s.tsig) == ("axfr", "192.0.2.1", 53, None)
    s = parse_source("ixfr://127.0.0.1:5300?tsig=XFR-KEY", keys)
    assert (s.kind, s.address, s.port, s.tsig) == ("ixfr", "127.0.0.1", 5300, key)
    assert str(s) == "ixfr://127.0.0.1:5300?tsig=XFR-KEY"
    s = parse_source("axfr://[2001:db8::1]:5353/?tsig=xfr-key.", keys)
    assert (s.address, s.port, s.tsig) == ("2001:db8::1", 5353, key)
    assert parse_source("ixfr://[::1]", {}).port == 53
    assert parse_source("ixfr://2001:500:2::c", {}).address == "2001:500:2::c"
    s = parse_source("https://www.internic.net/domain/root.zone", {})
    assert (s.kind, s.url) == ("http", "https://www.internic.net/domain/root.zone")
    assert parse_source("file:///var/lib/root%20zone", {}).path == "/var/lib/root zone"
    assert parse_source(str(tmp_path / "root.zone"), {}).path == str(tmp_path / "root.zone")


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty source"),
    ("ftp://example.org/root.zone", "unknown scheme 'ftp'"),
    ("axfr://b.root-servers.net", "not an IP address"),
    ("axfr://127.0.0.1:0", "bad port"),
    ("axfr://127.0.0.1:99999", "bad port"),
    ("axfr://[::1", "missing ']'"),
    ("axfr://[::1]x", "unexpected"),
    ("axfr://127.0.0.1/zone", "no path"),
    ("axfr://127.0.0.1?tsig=nokey", "TSIG key 'nokey' is not defined"),
    ("axfr://127.0.0.1?key=x", "unknown parameter 'key'"),
    ("axfr://127.0.0.1?tsig=", "one key"),
    ("https:///root.zone", "no host"),
    ("file://server/root.zone", "must be local"),
])
def test_parse_source_errors(spec, message):
    with pytest.raises(SourceError, match=message):
        parse_source(spec, {})


def test_rfc8806_default_sources_parse():
    sources = [parse_source(spec, {}) for spec in RFC8806_ROOT_SOURCES]
    assert [s.kind for s in sources[:-1]] == ["ixfr"] * 16
    assert {s.address for s in sources[:-1]} >= {"199.9.14.201", "2001:7fd::1", "192.0.47.132", "2620:0:2d0:202::132"}
    assert sources[-1].url == "https://www.internic.net/domain/root.zone"


# --- HTTP and file sources --------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a directory: good, gzipped, modified and corrupt
    copies of the first test root zone."""
    root = tmp_path_factory.mktemp("web")
    text = (TESTROOT / f"root-{V1}.zone").read_text()
    (root / "root.zone").write_text(text)
    (root / "root.zone.gz").write_bytes(gzip.compress(text.encode(), compresslevel=1))
    lines = text.splitlines(keepends=True)
    # Same serial, different ZONEMD digest: what the multi-source check must notice.
    modified = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[3] == "ZONEMD":
            line = line.rstrip("\n")[:-1] + ("0" if line.rstrip("\n")[-1] != "0" else "1") + "\n"
        modified.append(line)
    assert modified != lines
    (root / "modified.zone").write_text("".join(modified))
    (root / "corrupt.zone").write_text("".join(lines[:40]) + "com. 172800 IN NS (broken\n")
    (root / "binary.zone").write_bytes(b"\x00\xff\xfe garbage")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_failover_404_corrupt_then_good(web):
    base, _ = web
    sources = [parse_source(f"{base}/{name}", {}) for name in ("missing.zone", "corrupt.zone", "binary.zone", "root.zone")]
    result = fetch_zone(sources, ROOT, None, timeout=5)
    assert result.how == "http" and result.source == sources[3]
    assert record_set(result.zone) == record_set(file_records(V1))
    assert len(result.errors) == 3
    assert result.errors[0] == f"{base}/missing.zone: HTTP 404 File not found"
    assert result.errors[1].startswith(f"{base}/corrupt.zone: line 41:")
    assert "not UTF-8" in result.errors[2]


def test_http_gzip_and_up_to_date(web):
    base, _ = web
    source = parse_source(f"{base}/root.zone.gz", {})
    assert record_set(fetch_zone([source], ROOT, None, timeout=5).zone) == record_set(file_records(V1))
    same = fetch_zone([source], ROOT, file_records(V1), timeout=5)
    assert same.up_to_date and same.serial == int(V1)
    # A source behind our copy: noted, nothing fetched.
    behind = fetch_zone([source], ROOT, file_records(V2), timeout=5)
    assert behind.up_to_date and any("behind" in note for note in behind.notes)
    assert source_serial(source, ROOT, timeout=5) == int(V1)


def test_file_sources(tmp_path):
    copy = tmp_path / "root.zone"
    shutil.copyfile(TESTROOT / f"root-{V2}.zone", copy)
    missing = parse_source(str(tmp_path / "nothere.zone"), {})
    result = fetch_zone([missing, parse_source(f"file://{copy}", {})], ROOT, file_records(V1), timeout=5)
    assert result.how == "file" and result.serial == int(V2)
    assert result.errors == (f"{tmp_path / 'nothere.zone'}: no such file",)
    with pytest.raises(FetchError, match="outside the zone example."):
        fetch_zone([parse_source(str(copy), {})], name_from_text("example."), None, timeout=5)
    with pytest.raises(FetchError, match="is a directory"):
        fetch_zone([parse_source(str(tmp_path), {})], ROOT, None, timeout=5)


# --- primaries: failover and the multi-source check ---------------------------------------------------


@pytest.fixture(scope="module")
def primary(tmp_path_factory) -> Iterator[NsdPrimary]:
    with NsdPrimary(TESTROOT / f"root-{V1}.zone", tmp_path_factory.mktemp("nsd")) as nsd:
        yield nsd


def test_failover_from_dead_primary(primary):
    dead = parse_source(f"axfr://127.0.0.1:{free_port()}", {})
    live = parse_source(f"ixfr://127.0.0.1:{primary.port}", {})
    result = fetch_zone([dead, live], ROOT, None, timeout=2)
    assert result.source == live and result.how == "axfr"
    assert record_set(result.zone) == record_set(file_records(V1))
    assert result.errors == (f"{dead}: connection refused",)
    same = fetch_zone([dead, live], ROOT, file_records(V1), timeout=2)
    assert same.up_to_date and same.how == "ixfr" and len(same.errors) == 1
    # An axfr:// source checks the serial before transferring.
    assert fetch_zone([parse_source(f"axfr://127.0.0.1:{primary.port}", {})], ROOT, file_records(V1)).up_to_date
    assert source_serial(live, ROOT) == int(V1)
    with pytest.raises(FetchError) as failed:
        fetch_zone([dead, parse_source("/nonexistent/root.zone", {})], ROOT, None, timeout=2)
    assert failed.value.errors == (f"{dead}: connection refused", "/nonexistent/root.zone: no such file")
    assert "every source failed" in str(failed.value)


def test_multi_source_check(primary, web):
    base, _ = web
    nsd = parse_source(f"axfr://127.0.0.1:{primary.port}", {})
    good = parse_source(f"{base}/root.zone", {})
    modified = parse_source(f"{base}/modified.zone", {})
    missing = parse_source(f"{base}/missing.zone", {})
    statuses = check_sources([nsd, good, missing], ROOT, timeout=5)
    assert [s.serial for s in statuses] == [int(V1), int(V1), None]
    assert statuses[0].zonemd == statuses[1].zonemd and len(statuses[0].zonemd) == 1
    assert statuses[2].error == "HTTP 404 File not found"
    assert disagreements(statuses) == []
    found = disagreements(check_sources([nsd, good, modified], ROOT, timeout=5))
    assert len(found) == 1
    assert f"ZONEMD of serial {V1}" in found[0] and str(modified) in found[0] and str(nsd) in found[0]
