"""imrs must answer like NSD 4.6.1 on the same root zone.

The corpus (tests/peers/corpus.py, ~20k queries) goes to a real NSD and to
imrs over UDP and TCP; every response pair is compared (tests/peers/compare.py)
and any difference not documented in tests/peers/known_differences.py fails.
The self-check tests prove the comparator neither invents differences
(NSD vs NSD) nor misses them (NSD on two zone versions).

Run:  .venv/bin/python -m pytest tests/peers -q
The per-category summary is printed in the "imrs vs NSD differential" section.
"""

from __future__ import annotations

import random

import pytest

import dns.message

from .compare import compare, compare_pair, differential, fast_view, normalize, Pair, exchange
from .corpus import build_corpus
from .known_differences import KNOWN_DIFFERENCES
from .nsd_server import NsdUnavailable, find_nsd

NEW = "root-2026082201.zone"
OLD = "root-2026082101.zone"
OLD_NEXT = "root-2026082102.zone"


def _imrs_vs_nsd(zonefile, seed, nsd_factory, imrs_factory, peers_report, report_path):
    corpus = build_corpus(zonefile, seed)
    assert len(corpus) >= 20000
    nsd = nsd_factory(zonefile)
    imrs = imrs_factory(zonefile)
    rep = differential(corpus, ("nsd", nsd.addr), ("imrs", imrs.addr), known=KNOWN_DIFFERENCES, zone=zonefile)
    rep.job_info.insert(0, f"zone {zonefile.name}, seed {seed}, imrs startup {imrs.startup_seconds:.1f}s")
    report_path.write_text(rep.format(per_category=True) + "\n")
    rep.job_info.append(f"full report: {report_path}")
    peers_report(rep)
    assert imrs.alive(), "imrs died during the differential run"
    assert rep.n_unlisted == 0, "imrs differs from NSD:\n" + rep.format(verbose_categories=False)


def test_imrs_matches_nsd(testroot, nsd_factory, imrs_factory, peers_report, tmp_path):
    _imrs_vs_nsd(testroot / NEW, 20260822, nsd_factory, imrs_factory, peers_report,
                 tmp_path / "differential-report.txt")


def test_imrs_matches_nsd_older_zone_fresh_corpus(testroot, nsd_factory, imrs_factory, peers_report, tmp_path):
    _imrs_vs_nsd(testroot / OLD, 20260821, nsd_factory, imrs_factory, peers_report,
                 tmp_path / "differential-report.txt")


# ---------------------------------------------------------------------------
# self-checks of the comparator


def test_comparator_nsd_vs_nsd_has_no_differences(testroot, nsd_factory):
    """Two NSDs on the same zone (one with round-robin rdata order) never differ,
    with the dnspython comparison and with the fast path."""
    zone = testroot / NEW
    sample = random.Random(500).sample(build_corpus(zone, 77), 500)
    a = nsd_factory(zone)
    b = nsd_factory(zone, extra_conf={"round-robin": "yes"})
    for method in ("dnspython", "auto"):
        rep = differential(sample, ("nsd", a.addr), ("nsd-rr", b.addr), method=method)
        assert rep.n_unlisted == 0, rep.format()
        assert not rep.job_info, rep.job_info  # every query answered


def test_comparator_catches_zone_differences(testroot, nsd_factory):
    """NSD on 2026082101 vs 2026082102: the ru./tatar./xn--p1ai. DS rollovers and the
    SOA serial must show up; unchanged delegations must not."""
    corpus = build_corpus(testroot / OLD, 3)
    changed = {"ru.", "tatar.", "xn--p1ai."}
    ds = [e for e in corpus if e.category == "tld/DS" and e.desc.split()[0].lower() in changed]
    soa = [e for e in corpus if e.category == "apex/SOA"]
    control = [e for e in corpus if e.category in ("tld/NS", "tld/DS")
               and e.desc.split()[0].lower() in {"com.", "org.", "uk.", "de."} and "+do" not in e.desc]
    assert len(ds) == 6 and soa and control
    a = nsd_factory(testroot / OLD)
    b = nsd_factory(testroot / OLD_NEXT)
    for method in ("auto", "dnspython"):
        rep = differential(ds + soa + control, ("old", a.addr), ("new", b.addr), method=method)
        # answer section differs for every DS query, on both transports
        ds_diffs = sum(n for (cat, _t, fld), n in rep.unlisted_counts.items() if cat == "tld/DS" and fld == "answer")
        assert ds_diffs == 2 * len(ds), rep.format()
        examples = [ex for (cat, _t, fld), exs in rep.unlisted.items() if cat == "tld/DS" for ex in exs]
        assert any("DS 51575" in ex.diff.a and "DS 26734" in ex.diff.b for ex in examples), rep.format()
        soa_diffs = sum(n for (cat, _t, fld), n in rep.unlisted_counts.items() if cat == "apex/SOA")
        assert soa_diffs >= len(soa), rep.format()
        assert not any(cat in ("tld/NS",) for (cat, _t, _f) in rep.unlisted_counts), rep.format()
        assert rep.stats["tld/NS"]["differ"] == 0


def test_fast_view_agrees_with_dnspython(testroot, nsd_factory):
    """The fast canonical form yields the same header fields as dnspython, and
    both comparison paths agree on which responses differ."""
    sample = random.Random(9).sample(build_corpus(testroot / OLD, 9), 800)
    a = nsd_factory(testroot / OLD)
    b = nsd_factory(testroot / OLD_NEXT)
    ra_udp, ra_tcp, rb_udp, rb_tcp = exchange([(a.addr, "udp"), (a.addr, "tcp"), (b.addr, "udp"), (b.addr, "tcp")],
                                              [e.wire for e in sample])
    n_diff = 0
    for transport, ra, rb in (("udp", ra_udp, rb_udp), ("tcp", ra_tcp, rb_tcp)):
        for e, wa, wb in zip(sample, ra, rb):
            fv = fast_view(wa, e.mode)
            va = normalize(wa, e.mode)
            assert fv is not None, e.desc
            assert fv.fields == va.fields, e.desc
            slow = compare(va, normalize(wb, e.mode), transport)
            fast = compare_pair(Pair(wa, wb, e.mode), transport)
            assert [(d.field, d.a, d.b) for d in fast] == [(d.field, d.a, d.b) for d in slow], e.desc
            n_diff += bool(slow)
    assert n_diff > 0  # the SOA/ZONEMD/DS changes are in the sample


def test_corpus_is_deterministic_and_covers_the_brief(testroot):
    zone = testroot / NEW
    c1 = build_corpus(zone, 1)
    c2 = build_corpus(zone, 1)
    c3 = build_corpus(zone, 2)
    assert [e.wire for e in c1] == [e.wire for e in c2]
    assert [e.wire for e in c1] != [e.wire for e in c3]
    assert len(c1) >= 20000
    cats = {e.category.split("/")[0] for e in c1}
    assert {"tld", "apex", "nx", "deep", "chaos", "class", "qtype-unknown", "qtype-meta", "flags",
            "edns", "opcode"} <= cats
    assert sum(e.category.startswith("nx/") for e in c1) >= 2000
    msgs = [dns.message.from_wire(e.wire) for e in c1]
    mixed = sum(any(ch.isupper() for ch in m.question[0].name.to_text()) for m in msgs)
    assert mixed >= 0.10 * len(c1)
    payloads = {m.payload if m.edns >= 0 else None for m in msgs}
    assert {None, 512, 1232, 4096} <= payloads
    assert any(m.edns == 1 for m in msgs)
    assert any(m.question[0].rdtype == 666 for m in msgs)
    assert any(m.question[0].rdtype == 65280 for m in msgs)


def test_missing_nsd_is_a_clear_failure(tmp_path):
    with pytest.raises(NsdUnavailable, match="apt-get install nsd"):
        find_nsd(search_path=str(tmp_path))
