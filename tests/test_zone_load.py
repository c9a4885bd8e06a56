"""Loading master files: good zones, the embedded default, and errors that name file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import dns.name
import pytest

from imrs.zone.parse import EMBEDDED_ROOT, ZoneFileError, load_zone_file, parse_zone_text

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZONE = SHARED / "zones" / "testroot" / "root-2026082201.zone"

SMALL = """\
example. 3600 IN SOA ns.example. hostmaster.example. 7 3600 900 604800 300
example. 3600 IN NS ns.example.
ns.example. 3600 IN A 192.0.2.1
sub.example. 3600 IN NS ns.sub.example.
ns.sub.example. 3600 IN A 192.0.2.2
a.b.c.example. 3600 IN TXT "deep"
"""


def test_small_zone_without_origin_takes_it_from_the_soa():
    zone = parse_zone_text(SMALL, "small.zone")
    assert zone.origin == dns.name.from_text("example.")
    assert zone.serial == 7
    assert zone.delegations == {dns.name.from_text("sub.example.")}
    # b.c.example. and c.example. exist as empty non-terminals
    assert dns.name.from_text("c.example.") in zone.existing
    assert dns.name.from_text("x.example.") not in zone.existing
    assert zone.closest_encloser(dns.name.from_text("x.b.c.example.")) == dns.name.from_text("b.c.example.")
    assert zone.find_delegation(dns.name.from_text("www.ns.sub.example.")) == dns.name.from_text("sub.example.")
    assert not zone.secure


def test_embedded_root_zone():
    zone = load_zone_file(EMBEDDED_ROOT)
    assert zone.origin == dns.name.root
    assert zone.serial == 2026082201
    expected = sum(1 for line in ZONE.read_text().splitlines() if line.split()[3:4] == ["NS"] and line.split()[0] != ".")
    assert len(zone.delegations) == len({line.split()[0] for line in ZONE.read_text().splitlines()
                                         if line.split()[3:4] == ["NS"] and line.split()[0] != "."})
    assert expected > len(zone.delegations) > 1400
    assert zone.secure
    # canonical-order NSEC lookup: nosuchtld. falls between norton. and now.
    assert zone.covering_nsec(dns.name.from_text("nosuchtld.")).name == dns.name.from_text("norton.")
    assert zone.covering_nsec(dns.name.from_text("*.")).name == dns.name.root


def test_gzip_file(tmp_path):
    path = tmp_path / "small.zone.gz"
    path.write_bytes(gzip.compress(SMALL.encode()))
    assert load_zone_file(path).serial == 7


@pytest.mark.parametrize(
    "text, line, words",
    [
        (SMALL + "bad.example. 3600 IN A 999.1.1.1\n", 7, "malformed"),
        (SMALL + "x.example. 3600 IN NOSUCHTYPE foo\n", 7, "NOSUCHTYPE"),
        (SMALL + "x.example. 3600 IN MX 10\nlast.example. 3600 IN A 192.0.2.7\n", 7, ""),
        (SMALL.replace("ns.example. 3600 IN A 192.0.2.1", "ns.example. 3600 IN A 192.0.2.1 extra"), 3, ""),
        ("example. 3600 IN NS ns.example.\n", None, "SOA"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "broken.zone"
    path.write_text(text)
    with pytest.raises(ZoneFileError) as info:
        load_zone_file(path)
    error = info.value
    assert error.file == str(path)
    assert error.line == line
    assert str(path) in str(error)
    assert words in str(error)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ZoneFileError, match="no such file"):
        load_zone_file(tmp_path / "missing.zone")
    with pytest.raises(ZoneFileError, match="directory"):
        load_zone_file(tmp_path)
    binary = tmp_path / "binary.zone"
    binary.write_bytes(SMALL.encode() + b"\xff\xfe\n")
    with pytest.raises(ZoneFileError) as info:
        load_zone_file(binary)
    assert info.value.line == 7 and "UTF-8" in str(info.value)
