"""CHAOS identity/version and NSID as the configuration sets them, on the running server."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from peers import proc
from peers.imrs_server import ImrsServer

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"

CONFIG = """\
[server]
identity = "test-instance"
hide-version = true
nsid = "nsid-of-test"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("identity")
    config = work / "imrs.toml"
    config.write_text(CONFIG)
    with ImrsServer(ZONE, work, extra_args=["--config", str(config)]) as srv:
        yield srv


def _ask(server, name: str, rdtype: str, qid: int, **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    q.id = qid
    return dns.message.from_wire(proc.udp_once(server.host, server.port, q.to_wire(), timeout=2.0))


def test_identity_is_the_configured_one(server):
    for name in ("id.server.", "hostname.bind."):
        answer = _ask(server, name, "TXT", 11, rdclass="CH")
        assert answer.answer[0][0].strings == (b"test-instance",)


def test_hidden_version_is_refused(server):
    for name in ("version.bind.", "version.server."):
        hidden = _ask(server, name, "TXT", 12, rdclass="CH")
        assert hidden.rcode() == dns.rcode.REFUSED and not hidden.answer


def test_nsid_only_when_asked_for(server):
    nsid = _ask(server, ".", "SOA", 13, use_edns=0, options=[dns.edns.GenericOption(3, b"")])
    assert any(o.otype == 3 and o.to_wire() == b"nsid-of-test" for o in nsid.options)
    plain = _ask(server, ".", "SOA", 14, use_edns=0)
    assert not plain.options
