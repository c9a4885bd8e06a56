"""`imrs selftest`: RSSAC047-style correctness checks, against real servers.

A real imrs (transfers allowed, so the default run takes its reference zone by AXFR) and a real
NSD serve the test root: every check passes.  NSD serving a copy with one delegation's NS RRset
changed, and imrs serving a copy with one RRSIG's signature corrupted (ZONEMD recomputed in
both, so the servers load them): the run fails, naming the check.  Usage and configuration
errors exit 2 without a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest
from peers import proc
from peers.nsd_server import NsdServer, NsdUnavailable, find_nsd
from serverproc import ROOT_ZONE, SRC, ServerProc, imrs_env, start_all, tcp_ask

from imrs import selftest
from imrs.zone.parse import parse_zone_records
from imrs.zone.verify import zonemd_input

TESTROOT = ROOT_ZONE.parent
ANCHOR_DS = TESTROOT / "root.ds"
ANCHOR_KEY = TESTROOT / "root.key"
DELEGATIONS = 1438  # in root-2026082201


# --- tampered copies of the test root ----------------------------------------------------------

def with_zonemd(text: str) -> str:
    """The zone with its ZONEMD digest computed anew, so a server that checks it loads the
    copy (the RRSIG over the ZONEMD no longer verifies; only a trust anchor would notice)."""
    digest = hashlib.sha384(zonemd_input(parse_zone_records(text, "tampered", "."))).hexdigest()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if fields[:4] == [".", fields[1], "IN", "ZONEMD"]:
            lines[i] = " ".join(fields[:7] + [digest])
    return "\n".join(lines) + "\n"


def replace_line(text: str, old: str, new: str) -> str:
    assert text.count(old + "\n") == 1, old
    return text.replace(old + "\n", new + "\n")


def tampered_delegation() -> str:
    """nl.'s NS RRset with one name changed, not re-signed (NS at a cut is not signed anyway)."""
    text = ROOT_ZONE.read_text()
    return with_zonemd(replace_line(text, "nl. 172800 IN NS ns4.dns.nl.", "nl. 172800 IN NS ns4.dns-evil.nl."))


def corrupted_signature(owner: str = "org.", covered: str = "DS") -> str:
    """The RRSIG over ``owner covered`` with one octet of its signature flipped."""
    lines = ROOT_ZONE.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if fields[0] == owner and fields[3:5] == ["RRSIG", covered]:
            signature = bytearray(base64.b64decode("".join(fields[12:])))
            signature[20] ^= 0x55
            lines[i] = " ".join(fields[:12] + [base64.b64encode(bytes(signature)).decode()])
            return with_zonemd("\n".join(lines) + "\n")
    raise AssertionError(f"no RRSIG {covered} at {owner}")


# --- servers -----------------------------------------------------------------------------------

def transfer_config(zone: Path) -> str:
    return f'[[zone]]\nfile = "{zone}"\nallow-transfer = ["127.0.0.1/32"]\n'


@pytest.fixture(scope="module")
def imrs_servers(tmp_path_factory):
    """(good, bad): imrs serving the test root, and a copy with the RRSIG over org. DS
    corrupted; both allow AXFR from 127.0.0.1.  Started together: they load in parallel."""
    work = tmp_path_factory.mktemp("selftest-imrs")
    bad_zone = work / "root-badsig.zone"
    bad_zone.write_text(corrupted_signature())
    good = ServerProc(work / "good", [], config=transfer_config(ROOT_ZONE), name="imrs-good",
                      hosts=("127.0.0.1", "::1"))
    bad = ServerProc(work / "bad", [], config=transfer_config(bad_zone), name="imrs-badsig")
    start_all([good, bad])
    yield good, bad
    good.stop()
    bad.stop()


def _nsd(zone: Path, workdir: Path) -> NsdServer:
    try:
        find_nsd()
    except NsdUnavailable as exc:  # as in tests/peers: the reference server is required
        pytest.fail(str(exc), pytrace=False)
    return NsdServer(zone, workdir).start()


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    server = _nsd(ROOT_ZONE, tmp_path_factory.mktemp("selftest-nsd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nsd_tampered(tmp_path_factory):
    work = tmp_path_factory.mktemp("selftest-nsd-tampered")
    zone = work / "root-tampered.zone"
    zone.write_text(tampered_delegation())
    server = _nsd(zone, work / "nsd")
    yield server
    server.stop()


def target(server) -> str:
    host, port = server.addr
    return f"{host}:{port}"


def run(capsys, *args: str) -> tuple[int, str]:
    """``imrs selftest ARGS`` in this process; (exit status, stdout + stderr)."""
    status = selftest.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def failing(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("FAIL ")]


def rule_counts(output: str, rule: str) -> tuple[int, int, int]:
    for line in output.splitlines():
        fields = line.split()
        if fields[:1] == [rule] and len(fields) == 5:
            assert fields[4] == "0", line  # nothing skipped
            return int(fields[1]), int(fields[2]), int(fields[3])
    raise AssertionError(f"no {rule} line in\n{output}")


# --- passing ------------------------------------------------------------------------------------

def test_passes_against_imrs_by_default(imrs_servers, capsys):
    """No --zone, no --anchor: the zone comes by AXFR from the target, verified with the key
    of the test root packaged with imrs; every delegation, UDP and TCP."""
    good, _bad = imrs_servers
    status, out = run(capsys, target(good))
    assert status == 0, out
    assert "reference: AXFR from the target: serial 2026082201" in out
    assert "ZONEMD SHA-384 verified" in out and "packaged with imrs" in out
    assert rule_counts(out, "axfr-zone") == (1, 1, 0)
    assert rule_counts(out, "tld-referral") == (2 * DELEGATIONS, 2 * DELEGATIONS, 0)
    assert sum(rule_counts(out, r)[0] for r in ("tld-ds", "tld-no-ds")) == 2 * DELEGATIONS
    assert rule_counts(out, "nxdomain") == (40, 40, 0)
    assert "PASS: all" in out and not failing(out)
    udp = next(line for line in out.splitlines() if line.startswith("udp "))
    assert len(udp.split()) >= 6, udp  # queries, min, median, p95, max


def test_passes_against_imrs_with_zone_file_and_dnskey_anchor(imrs_servers, capsys):
    good, _bad = imrs_servers
    status, out = run(capsys, target(good), "--zone", str(ROOT_ZONE), "--anchor", str(ANCHOR_KEY),
                      "--sample", "100", "--seed", "7", "--at", "20260822120000")
    assert status == 0, out
    assert f"reference: {ROOT_ZONE}: serial 2026082201" in out and "(DNSKEY) from" in out
    assert "NS and DS of 100 of 1438 delegations" in out and "2026-08-22 12:00:00 UTC" in out


def test_passes_over_ipv6_with_the_packaged_zone(imrs_servers, capsys):
    """Transfers are allowed to 127.0.0.1 only: over ::1 the packaged zone is the reference."""
    good, _bad = imrs_servers
    status, out = run(capsys, f"[::1]:{good.port}", "--sample", "20", "--nxdomain", "5")
    assert status == 0, out
    assert out.startswith(f"imrs selftest [::1]:{good.port}\n"), out
    assert "reference: the zone packaged with imrs: serial 2026082201" in out
    assert "AXFR from the target failed" in out and "REFUSED" in out


def test_passes_against_nsd(nsd, capsys):
    status, out = run(capsys, target(nsd), "--zone", str(ROOT_ZONE), "--anchor", str(ANCHOR_DS))
    assert status == 0, out
    assert rule_counts(out, "tld-referral") == (2 * DELEGATIONS, 2 * DELEGATIONS, 0)
    assert rule_counts(out, "apex-dnskey") == (2, 2, 0)
    assert "PASS: all" in out


# --- failing ------------------------------------------------------------------------------------

def test_fails_against_nsd_serving_a_tampered_delegation(nsd_tampered, capsys):
    status, out = run(capsys, target(nsd_tampered), "--zone", str(ROOT_ZONE), "--anchor", str(ANCHOR_DS),
                      "--sample", "20", "--tld", "nl")
    assert status == 1, out
    failures = failing(out)
    assert len(failures) == 2, out  # nl. NS over UDP and over TCP, nothing else
    for line, transport in zip(sorted(failures, key=lambda f: f.split()[4]), ("tcp", "udp"), strict=True):
        assert line.split()[1:4] == ["tld-referral", "nl.", "NS"] and transport in line, line
        assert "authority: nl. NS differs from the zone" in line, line
        assert "not in the zone: ns4.dns-evil.nl." in line and "missing: ns4.dns.nl." in line, line
    assert "FAIL: 2 of" in out and "(tld-referral)" in out


def test_fails_against_imrs_serving_a_corrupted_signature(imrs_servers, capsys):
    """By default the transferred zone is the reference: it fails verification (a failed check,
    not a usage error) and the packaged zone is used instead."""
    _good, bad = imrs_servers
    status, out = run(capsys, target(bad), "--sample", "10", "--tld", "org")
    assert status == 1, out
    failures = failing(out)
    axfr = [f for f in failures if f.split()[1] == "axfr-zone"]
    # Verification stops at the first bad signature: the ZONEMD's, as its digest was recomputed.
    assert len(axfr) == 1 and "fails dnssec" in axfr[0] and "signature does not verify" in axfr[0], out
    assert "the zone packaged with imrs" in out and "the transferred zone failed verification" in out
    ds = [f for f in failures if f.split()[1:4] == ["tld-ds", "org.", "DS"]]
    referral = [f for f in failures if f.split()[1:4] == ["tld-referral", "org.", "NS"]]
    assert len(ds) == 2 and len(referral) == 2, out
    for line in ds + referral:
        assert "RRSIG org. DS (key 60546) does not validate" in line, line
    assert len(failures) == 5, out


def test_fails_against_imrs_with_tampered_signature_given_the_zone(imrs_servers, capsys):
    _good, bad = imrs_servers
    status, out = run(capsys, bad.host + f":{bad.port}", "--zone", str(ROOT_ZONE), "--anchor", str(ANCHOR_DS),
                      "--sample", "0", "--tld", "org", "--nxdomain", "2", "--transport", "udp")
    assert status == 1, out
    assert [f.split()[1:5] for f in failing(out)] == [["tld-referral", "org.", "NS", "udp"],
                                                     ["tld-ds", "org.", "DS", "udp"]], out


def test_unreachable_server_fails(capsys):
    port = proc.free_port("127.0.0.1")
    status, out = run(capsys, f"127.0.0.1:{port}", "--zone", "embedded", "--sample", "0", "--nxdomain", "1",
                      "--timeout", "0.5")
    assert status == 1, out
    assert len(failing(out)) == 8 and "without a response" in out, out  # 4 queries x 2 transports


def test_rules_catch_mutated_responses(nsd):
    """Real responses, each altered the way a broken server might, fail for the right reason."""
    reference, _ = selftest.load_reference(str(ROOT_ZONE), str(ANCHOR_DS), nsd.addr, time.time(), 4.0)

    queries: dict[selftest.Probe, bytes] = {}

    def ask(rule: str, qname: str, rdtype: str) -> tuple[selftest.Probe, dns.message.Message]:
        probe = selftest.Probe(rule, dns.name.from_text(qname), dns.rdatatype.from_text(rdtype), "tcp")
        queries[probe] = selftest.make_query(probe.qname, probe.rdtype)
        wire = tcp_ask(*nsd.addr, queries[probe])
        assert wire is not None
        return probe, dns.message.from_wire(wire)

    def reasons(probe: selftest.Probe, msg: dns.message.Message) -> str:
        return "; ".join(selftest.check_response(reference, probe, msg, time.time()))

    probe, msg = ask("tld-ds", "com.", "DS")
    assert reasons(probe, msg) == ""
    msg.flags &= ~dns.flags.AA
    assert reasons(probe, msg) == "AA bit not set"

    probe, msg = ask("tld-referral", "nl.", "NS")
    assert reasons(probe, msg) == ""
    msg.flags |= dns.flags.AA
    msg.additional = []
    assert reasons(probe, msg) == ("AA bit set in a referral; additional has no A or AAAA record of the 3 NS names "
                                   "(the zone has glue for 3 of them)")

    # A server that also serves the child zone answers for it: RSSAC047 [unt] skips the check.
    probe, msg = ask("tld-referral", "nl.", "NS")
    msg.flags |= dns.flags.AA
    msg.answer, msg.authority = [r for r in msg.authority if r.rdtype == dns.rdatatype.NS], []
    checker = selftest.Checker(reference, time.time())
    result = checker.evaluate(selftest.Exchange(probe, queries[probe], msg.to_wire()))
    assert result.skipped and result.passed and "authoritative for nl." in result.reason

    probe, msg = ask("apex-dnskey", ".", "DNSKEY")
    msg.answer = [r for r in msg.answer if r.rdtype != dns.rdatatype.RRSIG]
    assert reasons(probe, msg) == "answer: . DNSKEY is not signed (no RRSIG)"

    probe, msg = ask("nxdomain", "www.rssac047-test.qqqqqqqqqq.", "A")
    assert reasons(probe, msg) == ""
    msg.authority = [r for r in msg.authority if r.name != dns.name.root or r.rdtype == dns.rdatatype.SOA
                     or r.covers == dns.rdatatype.SOA]
    assert reasons(probe, msg) == "authority: no NSEC proves a wildcard (*.) does not exist"

    probe, msg = ask("tld-referral", "ae.", "NS")  # no DS: an NSEC proves it
    assert reasons(probe, msg) == ""
    probe, msg = ask("tld-no-ds", "ae.", "DS")
    assert reasons(probe, msg) == ""
    msg.authority = [r for r in msg.authority if dns.rdatatype.NSEC not in (r.rdtype, r.covers)]
    assert reasons(probe, msg) == "authority has no ae. NSEC RRset"


# --- usage and configuration errors ---------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["not-an-address"], "not-an-address"),
    (["127.0.0.1:1", "--zone", "/nonexistent/root.zone"], "no such file"),
    (["127.0.0.1:1", "--zone", str(ROOT_ZONE), "--anchor", "/nonexistent/anchor"], "no such file"),
    (["127.0.0.1:1", "--zone", str(ROOT_ZONE), "--anchor", "iana"], "does not verify"),
    (["127.0.0.1:1", "--zone", str(ROOT_ZONE), "--anchor", str(ANCHOR_DS), "--at", "20370101000000"], "expired"),
    (["127.0.0.1:1", "--zone", str(ROOT_ZONE), "--anchor", str(ANCHOR_DS), "--tld", "no-such-tld"],
     "not a delegation"),
    (["127.0.0.1:1", "--at", "tomorrow"], "YYYYMMDDHHMMSS"),
    (["127.0.0.1:1", "--concurrency", "0"], "--concurrency"),
])
def test_usage_errors_exit_2(capsys, args, message):
    status, out = run(capsys, *args)
    assert status == 2, out
    assert out.startswith("imrs selftest: error:") and message in out, out


def test_command_line_entry_point_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "imrs.selftest", "127.0.0.1:1", "--zone", str(tmp_path)],
                          env=imrs_env(), cwd=SRC, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "is a directory" in done.stderr and "Traceback" not in done.stderr, done.stderr


# --- pieces -------------------------------------------------------------------------------------

def test_nsec_coverage_in_canonical_order():
    name = dns.name.from_text
    assert selftest.nsec_covers(name("."), name("aaa."), name("*."))
    assert selftest.nsec_covers(name("nl."), name("no."), name("nm."))
    assert not selftest.nsec_covers(name("nl."), name("no."), name("www.rssac047-test.np."))
    assert selftest.nsec_covers(name("zw."), name("."), name("zz."))  # the last NSEC wraps
    assert not selftest.nsec_covers(name("zw."), name("."), name("zv."))


def test_latency_figures():
    lat = selftest.Latency.of([0.001 * i for i in range(1, 101)])
    assert lat is not None
    assert (lat.count, lat.minimum, lat.median, lat.p95, lat.maximum) == pytest.approx((100, 1, 50.5, 95, 100))
    assert selftest.Latency.of([]) is None
