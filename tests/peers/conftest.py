"""Fixtures for the peer (differential) tests: real NSD and imrs servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .imrs_server import ImrsServer, ImrsServerError
from .nsd_server import NsdServer, NsdUnavailable, find_nsd

TESTROOT = Path(os.environ.get("IMRS_TESTROOT", "/work/shared/zones/testroot"))

_REPORTS: list[tuple[str, str]] = []


@pytest.fixture
def testroot() -> Path:
    if not TESTROOT.is_dir():
        pytest.fail(f"test root zones not found in {TESTROOT} (set IMRS_TESTROOT)", pytrace=False)
    return TESTROOT


@pytest.fixture
def nsd_factory(tmp_path_factory):
    """start(zonefile, **kw) -> running NsdServer; all are stopped at teardown.

    Fails (does not skip) when nsd is not installed."""
    started: list[NsdServer] = []

    def start(zonefile, **kw) -> NsdServer:
        try:
            find_nsd()
        except NsdUnavailable as e:
            pytest.fail(str(e), pytrace=False)
        srv = NsdServer(zonefile, tmp_path_factory.mktemp("nsd"), **kw)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in reversed(started):
        srv.stop()


@pytest.fixture
def imrs_factory(tmp_path_factory):
    """start(zonefile, **kw) -> running ImrsServer; stopped (SIGTERM) at teardown.

    Teardown fails the test if imrs exited on its own or printed a traceback."""
    started: list[ImrsServer] = []

    def start(zonefile, **kw) -> ImrsServer:
        srv = ImrsServer(zonefile, tmp_path_factory.mktemp("imrs"), **kw)
        try:
            srv.start()
        except ImrsServerError as e:
            pytest.fail(str(e), pytrace=False)
        started.append(srv)
        return srv

    yield start
    errors = []
    for srv in reversed(started):
        try:
            srv.stop()
        except ImrsServerError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def nsd(nsd_factory, testroot):
    """NSD serving the newest test root zone."""
    return nsd_factory(testroot / "root-2026082201.zone")


@pytest.fixture
def peers_report(request):
    """Call with a compare.Report (or text) to have it printed in the terminal summary."""

    def add(report) -> None:
        text = report if isinstance(report, str) else report.format()
        _REPORTS.append((request.node.nodeid, text))

    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _REPORTS:
        return
    terminalreporter.section("imrs vs NSD differential")
    for nodeid, text in _REPORTS:
        terminalreporter.write_line(f"--- {nodeid}")
        for line in text.splitlines():
            terminalreporter.write_line(line)
