"""What the fast path compiles on first use, and the shortcuts that make building it fast.

A snapshot build renders only the common answers (referrals, NXDOMAINs and the apex, over
IPv4, DO clear and set); DS answers at delegations, IPv6 variants and the referrals for glue
owners are rendered when first asked for, possibly by several data-plane threads at once.
Those answers must be the reference path's bytes too.  The build also plans DO clear and set
in one pass and writes some RDATA without dnspython: both are checked against the slow way.
"""

from __future__ import annotations

import threading
from pathlib import Path

import dns.message
import dns.name
import dns.rdatatype
import pytest

from imrs.answer.compiled import _UNRENDERED
from imrs.answer.engine import plan_answer, plan_answer_pair
from imrs.answer.respond import AnswerOptions
from imrs.answer.wireformat import wire_rrset
from imrs.serve.snapshot import build_snapshot
from imrs.zone.parse import load_zone_file

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"


@pytest.fixture(scope="module")
def zone():
    return load_zone_file(ZONE)


def _queries(name: str, rdtype: str) -> list[bytes]:
    out = [dns.message.make_query(name, rdtype, use_edns=False).to_wire()]
    for payload in (512, 1232, 4096):
        for do in (False, True):
            out.append(dns.message.make_query(name, rdtype, use_edns=0, payload=payload, want_dnssec=do).to_wire())
    return out


def _glue_owners(compiled, count: int) -> list[str]:
    """Some names that share a delegation's glue-owner entry (none asked about yet)."""
    wires = sorted(wire for wire, entry in compiled.names.items() if entry.referral is not None)
    step = max(1, len(wires) // count)
    return [dns.name.from_wire(wire, 0)[0].to_text() for wire in wires[::step][:count]]


def test_rare_answers_are_compiled_on_first_use_and_equal_the_reference(zone):
    snap = build_snapshot([zone], AnswerOptions())
    compiled, reference = snap.compiled, snap.reference
    com = compiled.names[b"\x03com\x00"]
    ds_class = com.exact[dns.rdatatype.DS]
    assert ds_class.variants is _UNRENDERED  # not rendered by the build
    assert com.below.variants[2] is None and com.below.variants[3] is None  # no IPv6 yet
    owners = _glue_owners(compiled, 12)
    assert len(owners) == 12
    for owner in owners:
        entry = compiled.names[dns.name.from_text(owner).to_wire()]
        assert entry.owners == {}  # no class made for any glue owner yet
    questions = [("com.", "DS"), ("nic.aaa.", "DS"), ("com.", "A"), ("www.example.com.", "AAAA")]
    questions += [(owner, rdtype) for owner in owners for rdtype in ("A", "AAAA", "DS")]
    questions += [("below." + owner, "A") for owner in owners[:4]]
    for name, rdtype in questions:
        for wire in _queries(name, rdtype):
            for tcp in (False, True):
                for ipv6 in (False, True):
                    fast = compiled.answer(wire, tcp, ipv6)
                    assert fast is not None, (name, rdtype, tcp, ipv6)
                    assert fast == reference.respond(wire, tcp, ipv6), (name, rdtype, wire.hex(), tcp, ipv6)
    assert all(variant is not None for variant in ds_class.variants)
    assert all(variant is not None for variant in com.below.variants)
    for owner in owners:
        assert compiled.names[dns.name.from_text(owner).to_wire()].owners  # made on first use


def test_first_use_from_many_threads_at_once_gives_the_same_bytes(zone):
    """The data plane reads without locks: racing first uses must agree with the reference."""
    snap = build_snapshot([zone], AnswerOptions())
    compiled, reference = snap.compiled, snap.reference
    owners = _glue_owners(compiled, 20)
    wires = [wire for name in ["com.", "net.", "org.", "nic.aaa."] + owners for wire in _queries(name, "DS")]
    wires += [wire for name in owners for wire in _queries(name, "A")]
    expected = {(wire, ipv6): reference.respond(wire, False, ipv6) for wire in wires for ipv6 in (False, True)}
    start = threading.Barrier(4)
    failures: list[tuple] = []

    def ask(offset: int) -> None:
        start.wait()
        for i in range(len(wires)):
            wire = wires[(i + offset) % len(wires)]
            for ipv6 in (False, True):
                if compiled.answer(wire, False, ipv6) != expected[(wire, ipv6)]:
                    failures.append((wire.hex(), ipv6))

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


def test_plan_answer_pair_equals_two_plan_answer_calls(zone):
    snap = build_snapshot([zone], AnswerOptions(), compile_answers=False)
    zones = snap.zones
    names = [".", "com.", "www.example.com.", "nic.aaa.", "a.nic.aaa.", "zzzzzz.", "aaaaaa.", "x.y.nosuchtld.",
             "a.root-servers.net.", "root-servers.net."] + [str(name) for name in sorted(zone.nodes)[:: max(1, len(zone.nodes) // 40)]]
    types = ["A", "AAAA", "NS", "DS", "SOA", "DNSKEY", "NSEC", "RRSIG", "ANY", "TXT", "TYPE65534"]
    for text in names:
        qname = dns.name.from_text(text)
        for rdtype in types:
            qtype = dns.rdatatype.from_text(rdtype)
            for ipv6 in (False, True):
                pair = plan_answer_pair(zones, qname, qtype, 1, ipv6)
                for do in (0, 1):
                    single = plan_answer(zones, qname, qtype, 1, bool(do), ipv6)
                    got = pair[do]
                    assert (got.rcode, got.aa, got.kind, got.delegation, got.anchor, got.zone) == (
                        single.rcode, single.aa, single.kind, single.delegation, single.anchor, single.zone), (text, rdtype, do)
                    assert [(e.section, e.rrsets, e.sigs if do else None, e.in_domain_glue) for e in got.entries] == [
                        (e.section, e.rrsets, e.sigs if do else None, e.in_domain_glue) for e in single.entries], (text, rdtype, do)


def _uncompressed(parts) -> bytes:
    out = b""
    for part in parts:
        if type(part) is bytes:
            out += part
        else:
            labels, _keys = part
            out += b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    return out


def test_wire_rrsets_hold_what_dnspython_writes(zone):
    """Every record of the root zone: our RDATA octets (names uncompressed) are dnspython's."""
    checked = 0
    for node in zone.nodes.values():
        for rrset in list(node.rrsets.values()) + list(node.sigs.values()):
            owner, records = wire_rrset(rrset)
            assert b"".join(bytes((len(label),)) + label for label in owner[0]) + b"\x00" == rrset.name.to_wire()
            for rd, (_fixed, parts) in zip(rrset, records):
                assert _uncompressed(parts) == rd.to_wire(), (rrset.name, rrset.rdtype)
                checked += 1
    assert checked > 20000
