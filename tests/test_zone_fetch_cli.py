"""`imrs zone fetch`: from a file, HTTP and a real NSD primary; written only when it verifies."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
from peers.nsd_primary import NsdPrimary
from serverproc import imrs_run

from imrs.zone.parse import load_zone_records

TESTROOT = Path(__file__).resolve().parents[1].parent / "shared" / "zones" / "testroot"
AUTHENTIC = TESTROOT.parent / "authentic"
ZONE = TESTROOT / "root-2026082201.zone"
ANCHOR = ["--anchor", str(TESTROOT / "root.ds")]


@functools.cache
def _records(path: Path) -> set:
    return set(load_zone_records(path).records)


def _fetched_ok(tmp_path: Path, done, out: Path, source: Path = ZONE) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serial 2026082201" in done.stdout or source != ZONE
    assert set(load_zone_records(out).records) == _records(source)
    again = imrs_run(["zone", "verify", str(out), *ANCHOR], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def test_fetch_from_a_file(tmp_path):
    out = tmp_path / "root.zone"
    done = imrs_run(["zone", "fetch", str(ZONE), "-o", str(out), *ANCHOR], tmp_path)
    _fetched_ok(tmp_path, done, out)
    assert "(file)" in done.stdout


@pytest.fixture
def http_dir(tmp_path):
    directory = tmp_path / "www"
    directory.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_over_http_and_a_tampered_copy_is_not_written(tmp_path, http_dir):
    directory, url = http_dir
    (directory / "root.zone").write_text(ZONE.read_text())
    text = ZONE.read_text()
    glue = "a.gtld-servers.net. 172800 IN A 192.5.6.30"
    assert glue in text
    (directory / "bad.zone").write_text(text.replace(glue, "a.gtld-servers.net. 172800 IN A 192.5.6.99"))
    out = tmp_path / "root.zone"
    done = imrs_run(["zone", "fetch", f"{url}/root.zone", "-o", str(out), *ANCHOR], tmp_path)
    _fetched_ok(tmp_path, done, out)
    bad = tmp_path / "bad-out.zone"
    done = imrs_run(["zone", "fetch", f"{url}/bad.zone", "-o", str(bad), *ANCHOR], tmp_path)
    assert done.returncode == 1 and "REJECTED: zonemd" in done.stdout, done.stdout + done.stderr
    assert not bad.exists() and "Traceback" not in done.stderr


def test_fetch_from_a_real_nsd_primary(tmp_path):
    with NsdPrimary(ZONE, tmp_path / "nsd") as nsd:
        out = tmp_path / "root.zone"
        done = imrs_run(["zone", "fetch", f"axfr://127.0.0.1:{nsd.port}", "-o", str(out), *ANCHOR], tmp_path)
    _fetched_ok(tmp_path, done, out)
    assert "(axfr)" in done.stdout


def test_every_source_dead_is_exit_1_with_each_error(tmp_path):
    out = tmp_path / "root.zone"
    done = imrs_run(["zone", "fetch", "axfr://127.0.0.1:1", str(tmp_path / "missing.zone"), "-o", str(out)], tmp_path)
    assert done.returncode == 1 and not out.exists()
    assert "axfr://127.0.0.1:1" in done.stderr and "missing.zone" in done.stderr and "Traceback" not in done.stderr


def test_authentic_2017_root_at_its_time(tmp_path):
    out = tmp_path / "root.zone"
    source = AUTHENTIC / "root-2017082100.zone"
    done = imrs_run(["zone", "fetch", str(source), "-o", str(out), "--anchor", str(AUTHENTIC / "root.ds"),
                     "--at", "20170821120000"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(load_zone_records(out).records) == _records(source)
    late = imrs_run(["zone", "fetch", str(source), "-o", str(tmp_path / "late.zone"),
                     "--anchor", str(AUTHENTIC / "root.ds")], tmp_path)
    assert late.returncode == 1 and "REJECTED: dnssec" in late.stdout


def test_usage_errors(tmp_path):
    for args in (["gopher://x", "-o", "x"], ["/x", "-o", "x", "--at", "2017"], ["/x", "-o", "x", "--tsig", "nonsense"]):
        done = imrs_run(["zone", "fetch", *args], tmp_path)
        assert done.returncode == 2 and "error" in done.stderr and "Traceback" not in done.stderr, done.stderr
