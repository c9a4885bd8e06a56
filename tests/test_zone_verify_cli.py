"""`imrs zone verify`: exit 0 and one line for authentic files, 1 and the failed check for
tampered copies (one character changed in a DS, an RRSIG, a glue address), 2 for files that
cannot be checked at all.  A few runs go through `python -m imrs` as an operator would; the
rest call the same `main()` in-process to keep the file fast.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from imrs.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "zones"
TESTROOT = SHARED / "testroot"
AUTHENTIC = SHARED / "authentic"
TEST_DS = str(TESTROOT / "root.ds")
AUTHENTIC_DS = str(AUTHENTIC / "root.ds")
AUTHENTIC_ZONE = AUTHENTIC / "root-2017082100.zone"
AT_2017 = "20170821120000"
SRC = Path(__file__).resolve().parents[1] / "src"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imrs", "zone", "verify", *args],
        check=False, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["zone", "verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def tampered_copy(tmp_path: Path, source: Path, line_re: str, edit) -> Path:
    """A copy of ``source`` with the first line matching ``line_re`` passed through ``edit``."""
    lines = source.read_text().splitlines(keepends=True)
    pattern = re.compile(line_re)
    for i, line in enumerate(lines):
        if pattern.search(line):
            changed = edit(line)
            assert changed != line
            lines[i] = changed
            break
    else:
        raise AssertionError(f"no line matches {line_re}")
    path = tmp_path / source.name
    path.write_text("".join(lines))
    return path


def swap_char(text: str, index: int) -> str:
    """``text`` with the character at ``index`` replaced by a digit: valid in hex and base64,
    and different whatever the case rules (a hex "b" -> "B" would change nothing)."""
    replacement = "0" if text[index] != "0" else "1"
    return text[:index] + replacement + text[index + 1 :]


def change_last_field_char(line: str, offset: int) -> str:
    """Change one character ``offset`` characters into the last field of a record line."""
    start = len(line.rstrip()) - len(line.rstrip().split()[-1])
    return swap_char(line, start + offset)


# --- accepted ----------------------------------------------------------------------------------

def test_accepts_a_testroot_version_as_a_command():
    result = run_cli(str(TESTROOT / "root-2026082201.zone"), "--anchor", TEST_DS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{TESTROOT / 'root-2026082201.zone'}: OK serial 2026082201, 24884 records, 2793 signatures")
    assert "ZONEMD SHA-384 verified" in lines[0] and "via anchor 13631" in lines[0]
    assert result.stderr == ""


@pytest.mark.parametrize("version", ["2026082101", "2026082102", "2026082200"])
def test_accepts_the_other_testroot_versions(capsys, version):
    code, out, _err = run_main(capsys, str(TESTROOT / f"root-{version}.zone"), "--anchor", TEST_DS, "--require-zonemd")
    assert code == 0 and f": OK serial {version}," in out


def test_accepts_the_authentic_2017_zone_at_its_time():
    result = run_cli(str(AUTHENTIC_ZONE), "--anchor", AUTHENTIC_DS, "--at", AT_2017)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK serial 2017082100," in result.stdout and "via anchor 19036" in result.stdout


def test_default_anchor_is_ianas(capsys):
    code, out, _err = run_main(capsys, str(AUTHENTIC_ZONE), "--at", AT_2017)
    assert code == 0, out
    code, out, _err = run_main(capsys, str(TESTROOT / "root-2026082201.zone"))
    assert code == 1
    assert "REJECTED: dnssec: . DNSKEY: no key matches the trust anchor" in out and "20326" in out


def test_anchor_none_skips_dnssec(capsys):
    code, out, _err = run_main(capsys, str(TESTROOT / "root-2026082201.zone"), "--anchor", "none")
    assert code == 0 and "DNSSEC not checked" in out and "ZONEMD SHA-384 verified" in out


# --- rejected ----------------------------------------------------------------------------------

def test_rejects_a_changed_ds_digest(tmp_path):
    path = tampered_copy(tmp_path, TESTROOT / "root-2026082201.zone", r"^abbvie\. \d+ IN DS ",
                         lambda line: change_last_field_char(line, 10))
    result = run_cli(str(path), "--anchor", TEST_DS)
    assert result.returncode == 1
    assert result.stdout == f"{path}: REJECTED: dnssec: RRSIG for abbvie. DS (key 60546): signature does not verify\n"
    assert "Traceback" not in result.stderr


def test_rejects_a_changed_rrsig(tmp_path, capsys):
    path = tampered_copy(tmp_path, TESTROOT / "root-2026082201.zone", r"^org\. \d+ IN RRSIG NSEC ",
                         lambda line: change_last_field_char(line, 5))
    code, out, _err = run_main(capsys, str(path), "--anchor", TEST_DS)
    assert code == 1
    assert out == f"{path}: REJECTED: dnssec: RRSIG for org. NSEC (key 60546): signature does not verify\n"


def test_rejects_a_changed_glue_address(tmp_path, capsys):
    path = tampered_copy(tmp_path, TESTROOT / "root-2026082201.zone", r"^a\.gtld-servers\.net\. \d+ IN A ",
                         lambda line: line.replace("192.5.6.30", "192.5.6.31"))
    code, out, _err = run_main(capsys, str(path), "--anchor", TEST_DS)
    assert code == 1
    assert out == f"{path}: REJECTED: zonemd: ZONEMD SHA-384: digest does not match the zone's content\n"


def test_rejects_a_changed_ds_in_the_authentic_zone(tmp_path, capsys):
    path = tampered_copy(tmp_path, AUTHENTIC_ZONE, r"^NET\.\s+\d+\s+IN\s+DS\s",
                         lambda line: change_last_field_char(line, 3))
    code, out, _err = run_main(capsys, str(path), "--anchor", AUTHENTIC_DS, "--at", AT_2017)
    assert code == 1
    assert out == f"{path}: REJECTED: dnssec: RRSIG for net. DS (key 15768): signature does not verify\n"


def test_rejects_the_authentic_zone_today(capsys):
    code, out, _err = run_main(capsys, str(AUTHENTIC_ZONE), "--anchor", AUTHENTIC_DS)
    assert code == 1 and "REJECTED: dnssec:" in out and "expired 2017-09-10" in out


def test_require_zonemd_and_margin(capsys):
    code, out, _err = run_main(capsys, str(AUTHENTIC_ZONE), "--anchor", AUTHENTIC_DS, "--at", AT_2017, "--require-zonemd")
    assert code == 1 and "REJECTED: zonemd: no ZONEMD record at the apex ., and one is required" in out
    code, out, _err = run_main(capsys, str(AUTHENTIC_ZONE), "--anchor", AUTHENTIC_DS, "--at", AT_2017,
                               "--margin", str(30 * 86400))
    assert code == 1 and "within the required margin" in out


def test_previous_serial(capsys):
    zone = str(TESTROOT / "root-2026082200.zone")
    code, out, _err = run_main(capsys, zone, "--anchor", TEST_DS, "--previous-serial", "2026082201")
    assert code == 1 and "REJECTED: sanity: serial 2026082200 is not newer than the current 2026082201" in out


# --- cannot check: exit 2, a message, no traceback ------------------------------------------------

@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/root.zone"], "no such file"),
        ([str(AUTHENTIC_ZONE), "--at", "2017-08-21"], "expected YYYYMMDDHHMMSS"),
        ([str(AUTHENTIC_ZONE), "--at", "20171321120000"], "not a valid date"),
        ([str(AUTHENTIC_ZONE), "--at", "20170231120000"], "not a valid date"),
        ([str(AUTHENTIC_ZONE), "--anchor", "/nonexistent/anchor"], "no such file"),
        ([str(AUTHENTIC_ZONE), "--margin", "-5"], "must not be negative"),
    ],
)
def test_usage_errors(capsys, args, message):
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_unparsable_zone_and_anchor(tmp_path):
    bad_zone = tmp_path / "bad.zone"
    bad_zone.write_text(". 86400 IN SOA a. b. 1 2 3 4 5\n. 86400 IN A not-an-address\n")
    result = run_cli(str(bad_zone), "--anchor", "none")
    assert result.returncode == 2 and "bad.zone:2" in result.stderr and "Traceback" not in result.stderr
    bad_anchor = tmp_path / "anchor.txt"
    bad_anchor.write_text("this is not an anchor\n")
    result = run_cli(str(AUTHENTIC_ZONE), "--anchor", str(bad_anchor))
    assert result.returncode == 2 and "anchor.txt" in result.stderr and "Traceback" not in result.stderr


def test_argument_errors_exit_2():
    result = run_cli()
    assert result.returncode == 2 and "usage:" in result.stderr
    result = subprocess.run([sys.executable, "-m", "imrs", "zone", "--help"], check=False, capture_output=True, text=True,
                            timeout=60, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "verify" in result.stdout
