"""RSSAC002 v5 daily reports (imrs.telemetry.rssac002, rssac002_merge, rssac002_cli and
unique_sources): the files written have exactly the spec's header and keys in L-root's layout
(byte for byte where L-root's numbers are fed in), bins are right at their edges, a known list
of counted traffic gives every number, two instances' files merge (sums, exact unions,
HyperLogLog within 3 %), and bad input is refused with a message that names the file.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import random
from pathlib import Path

import pytest
import yaml

from imrs.telemetry import rssac002 as r
from imrs.telemetry import rssac002_cli, rssac002_merge
from imrs.telemetry.rssac002 import DayCounters, Rssac002Error
from imrs.telemetry.unique_sources import SourceSet

SHARED = Path(__file__).resolve().parents[2] / "shared" / "rssac002"
DAY = datetime.date(2025, 6, 1)
SERVICE = "l.root-servers.net"
START = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)  # how PyYAML reads start-period
SPEC_KEYS = {
    "traffic-volume": [key for key, *_ in r.TRAFFIC_VOLUME_KEYS],
    "traffic-sizes": ["udp-request-sizes", "udp-response-sizes", "tcp-request-sizes", "tcp-response-sizes"],
    "unique-sources": ["num-sources-ipv4", "num-sources-ipv6", "num-sources-ipv6-aggregate"],
    "load-time": ["time"],
}

# (transport, source, request size, response size or None for no response, rcode)
EVENTS = [
    ("udp", "192.0.2.1", 40, 500, 0),
    ("udp", "192.0.2.1", 40, 500, 0),  # the same source again
    ("udp", "192.0.2.2", 15, 15, 1),
    ("udp", "198.51.100.7", 288, 1232, 3),
    ("tcp", "192.0.2.1", 287, 4096, 0),
    ("tcp", "2001:db8::1", 16, 4095, 3),
    ("tcp", "2001:db8::2", 30, None, None),  # dropped: a query, no response
    ("udp", "2001:db8::1", 64, 100, 3),
    ("udp", "2001:db8:0:1::1", 300, 4200, 16),  # BADVERS: an extended RCODE
    ("udp", "::ffff:203.0.113.9", 50, 60, 5),  # IPv4-mapped: counts as IPv4
]


def count(events, counters: DayCounters | None = None) -> DayCounters:
    counters = counters or DayCounters()
    for transport, source, request, response, rcode in events:
        counters.add_query(transport, source, request)
        if response is not None:
            counters.add_response(transport, source, response, rcode)
    return counters


def write(directory: Path, counters: DayCounters, **kwargs) -> dict[str, Path]:
    paths = r.write_day(directory, SERVICE, DAY, counters, **kwargs)
    return {p.name.removeprefix("l-root-20250601-").removesuffix(".yaml"): p for p in paths}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`imrs rssac002 ...` through the same parser wiring cli.py uses."""
    parser = argparse.ArgumentParser(prog="imrs")
    sub = parser.add_subparsers(dest="command", required=True)
    rssac002_cli.add_rssac002_commands(sub)
    code = rssac002_cli.rssac002_main(parser.parse_args(["rssac002", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def lroot_counters() -> DayCounters:
    """Counters holding L-root's published numbers for 2025-06-01."""
    counters = DayCounters()
    volume = load(SHARED / "l-root-20250601-traffic-volume.yaml")
    for key, kind, transport, family in r.TRAFFIC_VOLUME_KEYS:
        (counters.queries if kind == "queries" else counters.responses)[(transport, family)] = volume[key]
    counters.rcodes = {k: v for k, v in load(SHARED / "l-root-20250601-rcode-volume.yaml").items() if isinstance(k, int)}
    counters.load_times = dict(load(SHARED / "l-root-20250601-load-time.yaml")["time"])
    return counters


# --- format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "label"), [
    (0, "0-15"), (15, "0-15"), (16, "16-31"), (31, "16-31"), (271, "256-271"), (272, "272-287"),
    (287, "272-287"), (288, "288-"), (4095, "288-"), (65535, "288-"),
])
def test_request_bin_edges(size, label):
    assert r.bin_label(r.size_bin(size, r.REQUEST_OPEN_BIN), r.REQUEST_OPEN_BIN) == label


@pytest.mark.parametrize(("size", "label"), [
    (0, "0-15"), (15, "0-15"), (16, "16-31"), (287, "272-287"), (288, "288-303"), (4079, "4064-4079"),
    (4080, "4080-4095"), (4095, "4080-4095"), (4096, "4096-"), (65535, "4096-"),
])
def test_response_bin_edges(size, label):
    assert r.bin_label(r.size_bin(size, r.RESPONSE_OPEN_BIN), r.RESPONSE_OPEN_BIN) == label


def test_bin_labels_parse_back_and_bad_ones_are_refused():
    for bins, open_from in ((r.REQUEST_BINS, 288), (r.RESPONSE_BINS, 4096)):
        for index in range(bins):
            assert r.parse_bin_label(r.bin_label(index, open_from), open_from) == index
    for bad in ("16-32", "8-23", "300-", "288-303", "0-", "-15", "a-b", "4096-"):
        with pytest.raises(ValueError):
            r.parse_bin_label(bad, 288)
    with pytest.raises(ValueError):
        r.size_bin(-1, 288)


def test_written_files_have_exactly_the_spec_header_and_keys(tmp_path):
    files = write(tmp_path, count(EVENTS))
    assert sorted(files) == sorted([*r.METRICS, "unique-sources.sketch"])
    for metric in r.METRICS:
        path = files[metric]
        text = path.read_text()
        assert text.startswith("---\nversion: rssac002v5\nservice: l.root-servers.net\n"
                               f"start-period: 2025-06-01T00:00:00Z\nmetric: {metric}\n")
        assert text.endswith("\n") and "\t" not in text and "'" not in text and '"' not in text
        document = load(path)
        assert list(document)[:4] == ["version", "service", "start-period", "metric"]
        assert document["version"] == "rssac002v5"
        assert document["service"] == SERVICE
        assert document["start-period"] == START
        assert document["metric"] == metric
        body = list(document)[4:]
        if metric == "rcode-volume":
            assert body == [0, 1, 3, 5, 16]
        else:
            assert body == SPEC_KEYS[metric]
        for line in text.splitlines():  # nested maps: two spaces, one level
            assert line.startswith("#") or not line.startswith(" ") or (line.startswith("  ") and line[2] != " ")


def test_every_number_of_a_known_traffic_list(tmp_path):
    counters = count(EVENTS)
    counters.record_load_time(2025060100, 148.4)
    counters.record_load_time(2025060101, 153.5)
    files = write(tmp_path, counters)

    assert {k: v for k, v in load(files["traffic-volume"]).items() if k.startswith("dns-")} == {
        "dns-udp-queries-received-ipv4": 5,
        "dns-udp-queries-received-ipv6": 2,
        "dns-tcp-queries-received-ipv6": 2,
        "dns-tcp-queries-received-ipv4": 1,
        "dns-udp-responses-sent-ipv4": 5,
        "dns-udp-responses-sent-ipv6": 2,
        "dns-tcp-responses-sent-ipv6": 1,
        "dns-tcp-responses-sent-ipv4": 1,
    }
    sizes = load(files["traffic-sizes"])
    assert sizes["udp-request-sizes"] == {"0-15": 1, "32-47": 2, "48-63": 1, "64-79": 1, "288-": 2}
    assert sizes["udp-response-sizes"] == {"0-15": 1, "48-63": 1, "96-111": 1, "496-511": 2, "1232-1247": 1, "4096-": 1}
    assert sizes["tcp-request-sizes"] == {"16-31": 2, "272-287": 1}
    assert sizes["tcp-response-sizes"] == {"4080-4095": 1, "4096-": 1}
    # and laid out as L-root's archive has it: bins in order, empty ones left out
    assert files["traffic-sizes"].read_text().split("metric: traffic-sizes\n")[1] == (
        "udp-request-sizes:\n  0-15: 1\n  32-47: 2\n  48-63: 1\n  64-79: 1\n  288-: 2\n"
        "udp-response-sizes:\n  0-15: 1\n  48-63: 1\n  96-111: 1\n  496-511: 2\n  1232-1247: 1\n  4096-: 1\n"
        "tcp-request-sizes:\n  16-31: 2\n  272-287: 1\n"
        "tcp-response-sizes:\n  4080-4095: 1\n  4096-: 1\n"
    )
    assert {k: v for k, v in load(files["rcode-volume"]).items() if isinstance(k, int)} == {0: 3, 1: 1, 3: 3, 5: 1, 16: 1}
    sources = load(files["unique-sources"])
    assert (sources["num-sources-ipv4"], sources["num-sources-ipv6"], sources["num-sources-ipv6-aggregate"]) == (4, 3, 2)
    assert load(files["load-time"])["time"] == {2025060100: 148, 2025060101: 154}


def test_lroot_numbers_are_written_byte_for_byte_as_lroot_wrote_them(tmp_path):
    files = write(tmp_path, lroot_counters())
    for metric in ("traffic-volume", "rcode-volume", "load-time"):
        assert files[metric].read_bytes() == (SHARED / f"l-root-20250601-{metric}.yaml").read_bytes(), metric


def test_same_shape_as_the_lroot_files(tmp_path):
    """Our files for other numbers have L-root's keys in L-root's order (rcodes: the ones seen)."""
    counters = count(EVENTS)
    counters.record_load_time(2025060100, 1)
    files = write(tmp_path, counters)
    for metric in ("traffic-volume", "unique-sources", "load-time", "rcode-volume"):
        ours, theirs = load(files[metric]), load(SHARED / f"l-root-20250601-{metric}.yaml")
        if metric == "rcode-volume":
            assert list(ours)[:4] == list(theirs)[:4]
            assert all(isinstance(k, int) for k in list(ours)[4:]) and list(ours)[4:] == sorted(list(ours)[4:])
        else:
            assert list(ours) == list(theirs), metric
        for key in ours:
            assert type(ours[key]) is type(theirs.get(key, ours[key])), (metric, key)
    # unique-sources without the note differs from L-root's only in the numbers
    plain = write(tmp_path / "plain", counters, annotate=False)["unique-sources"].read_text()
    theirs = (SHARED / "l-root-20250601-unique-sources.yaml").read_text()
    assert [line.split(":")[0] for line in plain.splitlines()] == [line.split(":")[0] for line in theirs.splitlines()]


def test_strict_reader_agrees_with_pyyaml(tmp_path):
    written = write(tmp_path, count(EVENTS))
    for path in [*SHARED.glob("*.yaml"), *(p for p in written.values() if p.suffix == ".yaml")]:
        report = r.load_report(path)
        expected = load(path)
        assert report.metric == expected.pop("metric") and report.service == expected.pop("service")
        assert report.day == expected.pop("start-period").date()
        expected.pop("version")
        assert report.values == expected, path.name


def test_service_names_and_prefixes(tmp_path):
    assert r.default_prefix("l.root-servers.net") == "l-root"
    assert r.default_prefix("L.ROOT-SERVERS.NET.") == "l-root"
    assert r.default_prefix("imrs.example.net") == "imrs-example-net"
    paths = r.write_day(tmp_path, "1.example", DAY, DayCounters(), prefix="test", metrics=["load-time"])
    assert [p.name for p in paths] == ["test-20250601-load-time.yaml"]
    assert load(paths[0])["service"] == "1.example"  # quoted, else YAML would read a number
    assert load(paths[0])["time"] == {}
    assert r.load_report(paths[0]).service == "1.example"
    for bad in ("", "l root", "l.root-servers.net/x", "-x.example"):
        with pytest.raises(ValueError):
            r.normalize_service(bad)
    with pytest.raises(ValueError):
        r.write_day(tmp_path, SERVICE, DAY, DayCounters(), prefix="../up")


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    write(tmp_path, count(EVENTS))
    first = sorted(p.name for p in tmp_path.iterdir())
    write(tmp_path, count(EVENTS[:2]))  # rewrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == first
    assert not [name for name in first if name.startswith(".")]
    assert load(tmp_path / "l-root-20250601-traffic-volume.yaml")["dns-udp-queries-received-ipv4"] == 2


# --- counting -------------------------------------------------------------------------------


def test_worker_counters_merge_by_addition(tmp_path):
    workers = [count(EVENTS[:3]), count(EVENTS[3:7]), count(EVENTS[7:])]
    for seconds, worker in zip((140, 150, 145), workers, strict=True):
        worker.record_load_time(2025060100, seconds)
    total = DayCounters()
    for worker in workers:
        total += worker
    single = count(EVENTS)
    single.record_load_time(2025060100, 150)
    for metric in r.METRICS:
        assert r.metric_body(metric, total) == r.metric_body(metric, single), metric


def test_addresses_and_bad_arguments():
    counters = DayCounters()
    counters.add_query("udp", ipaddress.ip_address("192.0.2.1").packed, 40)
    counters.add_query("udp", ipaddress.ip_address("::ffff:192.0.2.1").packed, 40)
    counters.add_query("tcp", ipaddress.ip_address("2001:db8::5"), 40)
    assert counters.sources_ipv4.count() == 1 and counters.queries[("udp", 4)] == 2
    assert counters.sources_ipv6.count() == 1 and counters.queries[("tcp", 6)] == 1
    with pytest.raises(ValueError):
        counters.add_query("quic", "192.0.2.1", 40)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        counters.add_query("udp", "not an address", 40)
    with pytest.raises(ValueError):
        counters.add_response("udp", "192.0.2.1", 40, 4096)
    with pytest.raises(ValueError):
        counters.record_load_time(1, -1)
    assert counters.queries[("udp", 4)] == 2  # refused calls counted nothing
    counters.record_load_time(7, 10.4)
    counters.record_load_time(7, 9)
    assert counters.load_times == {7: 10}


# --- unique sources -------------------------------------------------------------------------


def random_ipv4(rng: random.Random, n: int) -> list[bytes]:
    return [rng.getrandbits(32).to_bytes(4, "big") for _ in range(n)]


def test_source_set_turns_into_a_sketch_past_its_threshold():
    sources = SourceSet(exact_threshold=100)
    items = random_ipv4(random.Random(1), 101)
    for item in items[:100]:
        sources.add(item)
        sources.add(item)
    assert sources.is_exact and sources.count() == 100
    sources.add(items[100])
    assert not sources.is_exact
    assert abs(sources.count() - 101) <= 3
    copy = SourceSet.from_json(json.loads(json.dumps(sources.to_json())))
    assert copy.count() == sources.count() and not copy.is_exact
    with pytest.raises(ValueError, match="precision 12 and 14"):
        _hll(12).update(_hll(14))


def _hll(precision: int) -> SourceSet:
    sources = SourceSet(exact_threshold=0, precision=precision)
    sources.add(b"\x01\x02\x03\x04")
    return sources


@pytest.mark.parametrize("n", [0, 1, 10, 1_000, 30_000, 50_000])
def test_hyperloglog_estimate_across_the_range(n):
    """Sketch-only counting (threshold 0): within 3 % from one source up, including the range
    where the classic estimator's small-range switch is biased."""
    sources = SourceSet(exact_threshold=0)
    for item in random_ipv4(random.Random(n), n):
        sources.add(item)
    assert abs(sources.count() - n) <= max(1, 0.03 * n)


def test_two_instances_merge_sums_exact_unions_and_load_times(tmp_path, capsys):
    a_events = EVENTS
    b_events = [*EVENTS[:4], ("udp", "192.0.2.50", 40, 500, 0), ("tcp", "2001:db8:0:2::9", 20, 300, 0)]
    a, b = count(a_events), count(b_events)
    a.record_load_time(2025060100, 148)
    a.record_load_time(2025060101, 154)
    b.record_load_time(2025060100, 160)
    b.record_load_time(2025060102, 20)
    write(tmp_path / "a", a)
    write(tmp_path / "b", b)

    merged = rssac002_merge.merge([tmp_path / "a", tmp_path / "b"])
    assert (merged.service, merged.day, merged.instances, merged.metrics) == (SERVICE, DAY, 2, r.METRICS)
    everything = count(a_events + b_events)
    for metric in ("traffic-volume", "traffic-sizes", "rcode-volume", "unique-sources"):
        assert r.metric_body(metric, merged.counters) == r.metric_body(metric, everything), metric
    assert merged.counters.queries[("udp", 4)] == 5 + 5
    assert merged.counters.rcodes == {0: 3 + 4, 1: 1 + 1, 3: 3 + 1, 5: 1, 16: 1}
    # overlapping exact sets: the exact union
    assert merged.counters.sources_ipv4.count() == 5  # 192.0.2.1, .2, .50, 198.51.100.7, 203.0.113.9
    assert merged.counters.sources_ipv6.count() == 4
    assert merged.counters.sources_ipv6_aggregate.count() == 3
    # two instances: the 95th percentile is the later of the two
    assert merged.counters.load_times == {2025060100: 160, 2025060101: 154, 2025060102: 20}

    code, out, err = run_cli(capsys, "merge", "--out", str(tmp_path / "all"), str(tmp_path / "a"), str(tmp_path / "b"))
    assert (code, err) == (0, "")
    assert "merged 2 instance(s)" in out
    assert load(tmp_path / "all" / "l-root-20250601-unique-sources.yaml")["num-sources-ipv4"] == 5
    assert load(tmp_path / "all" / "l-root-20250601-traffic-volume.yaml")["dns-tcp-queries-received-ipv6"] == 3
    assert load(tmp_path / "all" / "l-root-20250601-load-time.yaml")["time"] == merged.counters.load_times
    # the merged set merges again, with a third instance
    write(tmp_path / "c", count([("udp", "192.0.2.99", 40, 500, 0)]))
    again = rssac002_merge.merge([tmp_path / "all", tmp_path / "c"])
    assert again.counters.sources_ipv4.count() == 6 and again.counters.queries[("udp", 4)] == 11


def test_load_time_is_the_nearest_rank_percentile(tmp_path):
    for name, seconds in (("a", 10), ("b", 30), ("c", 20)):
        counters = DayCounters()
        counters.record_load_time(5, seconds)
        r.write_day(tmp_path / name, SERVICE, DAY, counters, metrics=["load-time"])
    inputs = [tmp_path / n for n in "abc"]
    assert rssac002_merge.merge(inputs).counters.load_times == {5: 30}
    assert rssac002_merge.merge(inputs, load_time_percentile=50).counters.load_times == {5: 20}
    assert rssac002_merge.percentile_nearest_rank(list(range(1, 21)), 95) == 19
    assert rssac002_merge.percentile_nearest_rank(list(range(1, 20)), 95) == 19
    assert rssac002_merge.percentile_nearest_rank([7], 95) == 7


def test_large_source_sets_estimate_and_merge_within_3_percent(tmp_path):
    rng = random.Random(2025)
    shared_sources = random_ipv4(rng, 20_000)
    a_sources = shared_sources + random_ipv4(rng, 40_000)
    b_sources = shared_sources + random_ipv4(rng, 40_000)
    truth_union = len(set(a_sources) | set(b_sources))
    for name, items in (("a", a_sources), ("b", b_sources)):
        counters = DayCounters()
        for item in items:
            counters.sources_ipv4.add(item)
        assert not counters.sources_ipv4.is_exact
        counters.sources_ipv6.add(b"\x20\x01\x0d\xb8" + bytes(12))
        counters.sources_ipv6_aggregate.add(b"\x20\x01\x0d\xb8" + bytes(4))
        files = write(tmp_path / name, counters)
        estimate = load(files["unique-sources"])["num-sources-ipv4"]
        assert abs(estimate - len(set(items))) <= 0.03 * len(set(items))
        note = files["unique-sources"].read_text()
        assert "num-sources-ipv4: HyperLogLog estimate (p=14, standard error 0.81 %)" in note
        assert "num-sources-ipv6: exact count" in note
    merged = rssac002_merge.merge([tmp_path / "a", tmp_path / "b"]).counters
    assert abs(merged.sources_ipv4.count() - truth_union) <= 0.03 * truth_union
    assert merged.sources_ipv6.count() == 1 and merged.sources_ipv6.is_exact


# --- refusals -------------------------------------------------------------------------------

GOOD_TEXT = (SHARED / "l-root-20250601-traffic-volume.yaml").read_text()


@pytest.mark.parametrize(("text", "message"), [
    (GOOD_TEXT.replace("rssac002v5", "rssac002v4"), "version 'rssac002v4', expected rssac002v5"),
    (GOOD_TEXT.replace("dns-udp-queries-received-ipv4: 8805708111\n", ""), "missing dns-udp-queries-received-ipv4"),
    (GOOD_TEXT + "dns-doh-queries: 5\n", "unexpected key(s) dns-doh-queries"),
    (GOOD_TEXT.replace(": 8805708111", ": 88057O8111"), "expected a count"),
    (GOOD_TEXT.replace(": 8805708111", ": -5"), "expected a count"),
    (GOOD_TEXT.replace("T00:00:00Z", "T12:00:00Z"), "not the start of a UTC day"),
    (GOOD_TEXT.replace("metric: traffic-volume", "metric: zone-size"), "not one imrs reads"),
    (GOOD_TEXT.replace("\nservice", "\n\tservice"), ":3: malformed YAML: tab"),
    (GOOD_TEXT + "---\nversion: rssac002v5\n", "a second YAML document"),
    (GOOD_TEXT.replace("dns-udp-queries-received-ipv4:", "dns-udp-queries-received-ipv4 ="), "expected 'key: value'"),
    (GOOD_TEXT + "dns-udp-queries-received-ipv4: 1\n", "appears twice"),
    (GOOD_TEXT.replace("service: l.root-servers.net", "service: 'l.root-servers.net"), "unterminated quoted string"),
    (GOOD_TEXT.replace("version: rssac002v5\n", ""), "missing version"),
    ("", "empty"),
    ("just some text\n", "expected 'key: value'"),
])
def test_malformed_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "l-root-20250601-traffic-volume.yaml"
    path.write_text(text)
    with pytest.raises(Rssac002Error) as info:
        r.load_report(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


@pytest.mark.parametrize(("body", "message"), [
    ("udp-request-sizes:\n  16-32: 1\n", "bins are 16 octets wide"),
    ("udp-request-sizes:\n  8-23: 1\n", "multiple of 16"),
    ("udp-request-sizes:\n  4096-: 1\n", "the only open bin is 288-"),
    ("udp-request-sizes:\n  0-15: 1\n   16-31: 2\n", "indented by 3 spaces"),
    ("udp-request-sizes:\n  0-15:\n    x: 1\n", "nest only one level"),
    ("udp-request-sizes: [1, 2]\n", "unsupported YAML"),
])
def test_bad_traffic_sizes_are_refused(tmp_path, body, message):
    path = tmp_path / "x-20250601-traffic-sizes.yaml"
    path.write_text("---\nversion: rssac002v5\nservice: l.root-servers.net\nstart-period: 2025-06-01T00:00:00Z\n"
                    "metric: traffic-sizes\n" + body
                    + "udp-response-sizes: {}\ntcp-request-sizes: {}\ntcp-response-sizes: {}\n")
    with pytest.raises(Rssac002Error, match=message):
        r.load_report(path)


def test_a_file_must_hold_what_its_name_says(tmp_path):
    wrong_metric = tmp_path / "l-root-20250601-rcode-volume.yaml"
    wrong_metric.write_text(GOOD_TEXT)
    with pytest.raises(Rssac002Error, match="holds metric traffic-volume, but its name says rcode-volume"):
        r.load_report(wrong_metric)
    wrong_day = tmp_path / "l-root-20250602-traffic-volume.yaml"
    wrong_day.write_text(GOOD_TEXT)
    with pytest.raises(Rssac002Error, match="start-period is 2025-06-01, but its name says 20250602"):
        r.load_report(wrong_day)


def test_merge_refusals(tmp_path, capsys):
    write(tmp_path / "a", count(EVENTS))
    write(tmp_path / "b", count(EVENTS))
    r.write_day(tmp_path / "b", SERVICE, datetime.date(2025, 6, 2), count(EVENTS))  # b holds two days
    with pytest.raises(Rssac002Error, match=r"is for 2025-06-02, not 2025-06-01 \(inputs cover 2025-06-01, 2025-06-02"):
        rssac002_merge.merge([tmp_path / "a", tmp_path / "b"])
    assert rssac002_merge.merge([tmp_path / "a", tmp_path / "b"], day=DAY).instances == 2  # --day picks from directories
    with pytest.raises(Rssac002Error, match="a: no RSSAC002 files .* for 2025-06-02"):
        rssac002_merge.merge([tmp_path / "a", tmp_path / "b"], day=datetime.date(2025, 6, 2))
    with pytest.raises(Rssac002Error, match=r"l-root-20250601-load-time.yaml: is for 2025-06-01, not 2025-06-02$"):
        rssac002_merge.merge([tmp_path / "b" / "l-root-20250602-load-time.yaml", tmp_path / "a" / "l-root-20250601-load-time.yaml"],
                day=datetime.date(2025, 6, 2))  # a file named explicitly is not filtered: refused

    r.write_day(tmp_path / "c", "k.root-servers.net", DAY, count(EVENTS))
    with pytest.raises(Rssac002Error, match="several services"):
        rssac002_merge.merge([tmp_path / "a", tmp_path / "c"])
    assert rssac002_merge.merge([tmp_path / "a", tmp_path / "c"], "x.example").service == "x.example"

    (tmp_path / "d").mkdir()
    for path in (tmp_path / "a").glob("*traffic*"):
        (tmp_path / "d" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(Rssac002Error, match="mismatched metrics: .*1 load-time.* 2 traffic-sizes"):
        rssac002_merge.merge([tmp_path / "a", tmp_path / "d"])

    write(tmp_path / "e", count(EVENTS), sketch=False)
    with pytest.raises(Rssac002Error, match=r"e/l-root-20250601-unique-sources.yaml: no sketch l-root-20250601-unique-sources.sketch"):
        rssac002_merge.merge([tmp_path / "a", tmp_path / "e"])

    stale = write(tmp_path / "f", count(EVENTS))["unique-sources.sketch"]
    stale.write_text(json.dumps(r.sketch_document(SERVICE, DAY, count(EVENTS[:1]))))
    with pytest.raises(Rssac002Error, match="num-sources-ipv4 counts 1, but .* says 4: a stale or foreign sketch"):
        rssac002_merge.merge([tmp_path / "f"])
    stale.write_text("{not json")
    with pytest.raises(Rssac002Error, match=r"f/l-root-20250601-unique-sources.sketch: not JSON"):
        rssac002_merge.merge([tmp_path / "f"])

    with pytest.raises(Rssac002Error, match="no such file or directory"):
        rssac002_merge.merge([tmp_path / "missing"])

    # on the command line: one line on stderr, no traceback, exit 1 (input) or 2 (usage)
    code, out, err = run_cli(capsys, "merge", "--out", str(tmp_path / "out"), str(tmp_path / "a"), str(tmp_path / "e"))
    assert code == 1 and out == "" and "no sketch" in err and "Traceback" not in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "merge", "--out", str(tmp_path / "out"), "--day", "2025-13-01", str(tmp_path / "a"))
    assert code == 2 and "error:" in err
    code, _, err = run_cli(capsys, "merge", "--out", str(tmp_path / "a"), str(tmp_path / "a"))
    assert code == 1 and "is an input" in err


def test_check_command(tmp_path, capsys):
    write(tmp_path / "ok", count(EVENTS))
    code, out, _ = run_cli(capsys, "check", str(tmp_path / "ok"), str(SHARED / "l-root-20250601-unique-sources.yaml"))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 6 and all(": OK " in line for line in lines)
    assert "sketch OK" in out and "no sketch (cannot be merged)" in out
    bad = tmp_path / "l-root-20250601-load-time.yaml"
    bad.write_text((SHARED / "l-root-20250601-load-time.yaml").read_text().replace("148", "soon"))
    code, out, _ = run_cli(capsys, "check", str(bad), str(SHARED / "l-root-20250601-load-time.yaml"))
    assert code == 1 and out.startswith(f"{bad}: time: 2025060100: expected a count") and ": OK load-time" in out
