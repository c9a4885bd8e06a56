"""Tests for imrs.config: TOML configuration -> Settings, with precise errors."""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imrs
from imrs.config import (
    DEFAULT_LISTEN,
    ConfigError,
    ConfigIssue,
    ListenAddress,
    Settings,
    ZoneConfig,
    check_config_main,
    default_settings,
    load_config,
    parse_listen,
    summarize,
    with_overrides,
)

V4 = socket.AF_INET
V6 = socket.AF_INET6


def write(directory: Path, text: str | bytes, name: str = "imrs.toml") -> Path:
    path = directory / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def load_text(directory: Path, text: str | bytes) -> Settings:
    return load_config(write(directory, text))


def errors_of(directory: Path, text: str | bytes) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_text(directory, text)
    return info.value.errors


def single_error(directory: Path, text: str | bytes) -> ConfigIssue:
    errors = errors_of(directory, text)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


@pytest.fixture
def zdir(tmp_path: Path) -> Path:
    (tmp_path / "root.zone").write_text(". 86400 IN SOA a. b. 1 2 3 4 5\n")
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.zone").write_text("")
    return tmp_path


# ---------------------------------------------------------------- valid files


FULL = """\
# imrs configuration
[server]
listen = ["127.0.0.1:5300", "[::1]:5300", "0.0.0.0:53"]
edns-buffer-size = 1400
tcp-idle-timeout = 2.5
tcp-max-connections = 50
tcp-max-queries-per-connection = 100
identity = "l1.example"
version = "imrs test"
hide-identity = true
hide-version = false
nsid = "l1.example"
log-level = "DEBUG"

[[zone]]
file = "root.zone"
name = "."

[[zone]]
file = "zones/example.zone"
name = "example"
"""


def test_full_valid_file(zdir: Path) -> None:
    s = load_text(zdir, FULL)
    assert s == Settings(
        listen=(
            ListenAddress("127.0.0.1", 5300, V4),
            ListenAddress("::1", 5300, V6),
            ListenAddress("0.0.0.0", 53, V4),
        ),
        zones=(
            ZoneConfig(str(zdir / "root.zone"), "."),
            ZoneConfig(str(zdir / "zones" / "example.zone"), "example."),
        ),
        edns_buffer_size=1400,
        tcp_idle_timeout=2.5,
        tcp_max_connections=50,
        tcp_max_queries_per_connection=100,
        identity="l1.example",
        version="imrs test",
        hide_identity=True,
        hide_version=False,
        nsid=b"l1.example",
        log_level="debug",
    )
    assert isinstance(s.tcp_idle_timeout, float)


def test_settings_are_frozen() -> None:
    s = default_settings()
    with pytest.raises(AttributeError):
        s.edns_buffer_size = 4096  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.listen[0].port = 1  # type: ignore[misc]


def test_defaults(tmp_path: Path) -> None:
    s = default_settings()
    assert s == Settings()
    assert s.listen == (ListenAddress("127.0.0.1", 5300, V4), ListenAddress("::1", 5300, V6))
    assert s.listen == DEFAULT_LISTEN
    assert s.zones == ()
    assert s.edns_buffer_size == 1232
    assert s.tcp_idle_timeout == 10.0
    assert s.tcp_max_connections == 1000
    assert s.tcp_max_queries_per_connection == 0
    assert s.identity == socket.gethostname()
    assert s.version == "imrs " + imrs.__version__
    assert (s.hide_identity, s.hide_version, s.nsid, s.log_level) == (False, False, None, "info")
    # an empty file, a comment-only file and an empty [server] give the defaults
    assert load_text(tmp_path, "") == s
    assert load_text(tmp_path, "# nothing\n\n") == s
    assert load_text(tmp_path, "[server]\n") == s


def test_timeout_integer_becomes_float(tmp_path: Path) -> None:
    s = load_text(tmp_path, "[server]\ntcp-idle-timeout = 10\n")
    assert s.tcp_idle_timeout == 10.0 and isinstance(s.tcp_idle_timeout, float)


def test_single_listen_string_accepted(tmp_path: Path) -> None:
    s = load_text(tmp_path, '[server]\nlisten = "[::]:53"\n')
    assert s.listen == (ListenAddress("::", 53, V6),)


def test_zone_paths_resolved_against_config_dir(zdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = zdir / "etc"
    sub.mkdir()
    (zdir / "other").mkdir()
    monkeypatch.chdir(zdir / "other")  # cwd must not matter
    cfg = write(sub, '[[zone]]\nfile = "../root.zone"\n')
    s = load_config(cfg)
    assert s.zones == (ZoneConfig(str(zdir / "root.zone"), None),)
    # a relative config path works too
    monkeypatch.chdir(zdir)
    assert load_config(os.path.join("etc", "imrs.toml")).zones == s.zones


def test_absolute_zone_path(zdir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("elsewhere")
    cfg = write(other, f'[[zone]]\nfile = "{zdir / "root.zone"}"\n')
    assert load_config(cfg).zones == (ZoneConfig(str(zdir / "root.zone")),)


def test_inline_and_dotted_forms(zdir: Path) -> None:
    text = 'server.edns-buffer-size = 4096\nzone = [{ file = "root.zone", name = "." }]\n'
    s = load_text(zdir, text)
    assert s.edns_buffer_size == 4096
    assert s.zones == (ZoneConfig(str(zdir / "root.zone"), "."),)
    s = load_text(zdir, '[server]\n"log-level" = "warning"\n')
    assert s.log_level == "warning"


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    s = load_text(tmp_path, b"\xef\xbb\xbf[server]\nidentity = \"\xc3\xa9\"\n")
    assert s.identity == "\u00e9"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"l1.example"', b"l1.example"),
        ('"0x6e73"', b"ns"),
        ('"0X6E73"', b"ns"),
        ('"0x00ff"', b"\x00\xff"),
        ('"x"', b"x"),
        ('"abc 123!"', b"abc 123!"),
    ],
)
def test_nsid_text_and_hex(tmp_path: Path, value: str, expected: bytes) -> None:
    assert load_text(tmp_path, f"[server]\nnsid = {value}\n").nsid == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"0x"', "no digits"),
        ('"0x6e7"', "odd number"),
        ('"0xzz"', "only 0-9"),
        ('""', "must not be empty"),
        ('"caf\u00e9"', "must be ASCII"),
        ('"' + "a" * 256 + '"', "at most 255"),
        ("0x6e73", "expected a string"),
    ],
)
def test_nsid_errors(tmp_path: Path, value: str, fragment: str) -> None:
    e = single_error(tmp_path, f"[server]\n\nnsid = {value}\n")
    assert (e.line, e.key) == (3, "server.nsid")
    assert fragment in e.message


# --------------------------------------------------------- listen parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5300", ListenAddress("127.0.0.1", 5300, V4)),
        ("0.0.0.0:53", ListenAddress("0.0.0.0", 53, V4)),
        ("[::1]:5300", ListenAddress("::1", 5300, V6)),
        ("[::]:53", ListenAddress("::", 53, V6)),
        ("[2001:DB8:0:0::1]:1", ListenAddress("2001:db8::1", 1, V6)),
        ("192.0.2.1:65535", ListenAddress("192.0.2.1", 65535, V4)),
        ("192.0.2.1", ListenAddress("192.0.2.1", 53, V4)),
        ("[::1]", ListenAddress("::1", 53, V6)),
        ("  10.0.0.1:53 ", ListenAddress("10.0.0.1", 53, V4)),
    ],
)
def test_parse_listen_ok(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:65536", "out of range"),
        ("[::1]:70000", "out of range"),
        ("127.0.0.1:" + "9" * 5000, "out of range"),
        ("127.0.0.1:", "missing port"),
        ("127.0.0.1:-1", "not a decimal"),
        ("127.0.0.1:+53", "not a decimal"),
        ("127.0.0.1:5x", "not a decimal"),
        ("127.0.0.1:\u0665\u0663", "not a decimal"),
        ("[::1]:", "missing port"),
        ("::1:53", "must be written in brackets"),
        ("::1", "must be written in brackets"),
        ("[::1", "missing ']'"),
        ("[::1]53", "unexpected"),
        ("[127.0.0.1]:53", "not a valid IPv6"),
        ("localhost:53", "not a valid IPv4"),
        ("256.0.0.1:53", "not a valid IPv4"),
        ("1.2.3:53", "not a valid IPv4"),
        ("", "empty"),
        ("   ", "empty"),
        ("a:b:c", "expected IPv4:PORT"),
    ],
)
def test_parse_listen_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen(text)
    assert fragment in str(info.value)


def test_listen_address_str_roundtrip() -> None:
    for text in ("127.0.0.1:5300", "[::1]:53", "[2001:db8::1]:1"):
        address = parse_listen(text)
        assert str(address) == text
        assert parse_listen(str(address)) == address
    assert parse_listen("[::1]:5300").sockaddr == ("::1", 5300)


# ------------------------------------------------- errors with exact lines


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        # wrong types
        ('[server]\nedns-buffer-size = "1232"\n', 2, "server.edns-buffer-size", "expected an integer, got string"),
        ("[server]\n\ntcp-max-connections = true\n", 3, "server.tcp-max-connections", "got boolean true"),
        ("[server]\ntcp-max-connections = 1.5\n", 2, "server.tcp-max-connections", "got float"),
        ('[server]\ntcp-idle-timeout = "10"\n', 2, "server.tcp-idle-timeout", "expected a number"),
        ("[server]\ntcp-idle-timeout = false\n", 2, "server.tcp-idle-timeout", "got boolean"),
        ('[server]\nhide-version = "yes"\n', 2, "server.hide-version", "expected a boolean"),
        ("[server]\nhide-identity = 1\n", 2, "server.hide-identity", "expected a boolean"),
        ("[server]\nidentity = 42\n", 2, "server.identity", "expected a string"),
        ("[server]\nversion = [1]\n", 2, "server.version", "got array"),
        ("[server]\nlog-level = 1979-05-27\n", 2, "server.log-level", "got date"),
        ("[server]\nlisten = 5300\n", 2, "server.listen", "expected an array"),
        ("server = 1\n", 1, "server", "expected a table"),
        ('zone = "root.zone"\n', 1, "zone", "array of tables"),
        ('[zone]\nfile = "root.zone"\n', 1, "zone", "[[zone]] instead of [zone]"),
        ("zone = [1]\n", 1, "zone[0]", "expected a table"),
        ("[[zone]]\nfile = 7\n", 2, "zone[0].file", "expected a string"),
        ('[[zone]]\nfile = "root.zone"\nname = 1\n', 3, "zone[0].name", "expected a string"),
        # out of range
        ("[server]\nedns-buffer-size = 511\n", 2, "server.edns-buffer-size", "between 512 and 4096, got 511"),
        ("[server]\nedns-buffer-size = 4097\n", 2, "server.edns-buffer-size", "between 512 and 4096"),
        ("[server]\ntcp-idle-timeout = 0\n", 2, "server.tcp-idle-timeout", "greater than 0"),
        ("[server]\ntcp-idle-timeout = -1.5\n", 2, "server.tcp-idle-timeout", "greater than 0"),
        ("[server]\ntcp-idle-timeout = inf\n", 2, "server.tcp-idle-timeout", "greater than 0"),
        ("[server]\ntcp-idle-timeout = nan\n", 2, "server.tcp-idle-timeout", "greater than 0"),
        ("[server]\ntcp-idle-timeout = 86401\n", 2, "server.tcp-idle-timeout", "at most 86400"),
        ("[server]\ntcp-max-connections = 0\n", 2, "server.tcp-max-connections", "at least 1"),
        ("[server]\ntcp-max-queries-per-connection = -1\n", 2, "server.tcp-max-queries-per-connection", "at least 0"),
        ('[server]\nlog-level = "verbose"\n', 2, "server.log-level", "unknown log level"),
        ('[server]\nlog-level = "warn"\n', 2, "server.log-level", "did you mean 'warning'?"),
        ('[server]\nidentity = "' + "x" * 256 + '"\n', 2, "server.identity", "at most 255 octets"),
        # bad listen addresses: the element's own line in a multi-line array
        ('[server]\nlisten = [\n  "127.0.0.1:53",\n  "[::1]:0",\n]\n', 4, "server.listen[1]", "out of range"),
        ('[server]\nlisten = ["localhost:53"]\n', 2, "server.listen[0]", "not a valid IPv4"),
        ('[server]\nlisten = ["::1:53"]\n', 2, "server.listen[0]", "brackets"),
        ('[server]\nlisten = ["127.0.0.1:53", 53]\n', 2, "server.listen[1]", "got integer 53"),
        ('[server]\nlisten = ["127.0.0.1:53", "127.0.0.1:53"]\n', 2, "server.listen[1]", "duplicate"),
        ("[server]\nlisten = []\n", 2, "server.listen", "at least one"),
        # unknown sections / keys, with suggestions
        ("[srever]\nlisten = []\n", 1, "srever", "unknown section; did you mean 'server'?"),
        ('[[zones]]\nfile = "x"\n', 1, "zones", "did you mean 'zone'?"),
        ("[logging]\nlevel = 1\n", 1, "logging", "unknown section"),
        ("foo = 1\n", 1, "foo", "unknown top-level key"),
        ('\nlisten = ["127.0.0.1:53"]\n', 2, "listen", "under [server]"),
        ('[server]\nlisen = ["127.0.0.1:53"]\n', 2, "server.lisen", "did you mean 'listen'?"),
        ("[server]\nedns_buffer_size = 1232\n", 2, "server.edns_buffer_size", "did you mean 'edns-buffer-size'?"),
        ("[server]\nzzz = 1\n", 2, "server.zzz", "unknown key"),
        ("[server.extra]\na = 1\n", 1, "server.extra", "unknown key"),
        ('[server]\n"odd key" = 1\n', 2, 'server."odd key"', "unknown key"),
        ('[[zone]]\nfile = "root.zone"\nnmae = "."\n', 3, "zone[0].nmae", "did you mean 'name'?"),
        # zones
        ('[[zone]]\nname = "."\n', 1, "zone[0]", "needs 'file', 'sources' or both"),
        ('[[zone]]\nfile = "nope.zone"\n', 2, "zone[0].file", "zone file does not exist"),
        ('[[zone]]\nfile = "zones"\n', 2, "zone[0].file", "not a regular file"),
        ('[[zone]]\nfile = ""\n', 2, "zone[0].file", "empty"),
        ('[[zone]]\nfile = "a\\u0000b"\n', 2, "zone[0].file", "cannot access"),
        ('[[zone]]\nfile = "root.zone"\nname = "a..b"\n', 3, "zone[0].name", "empty label"),
        ('[[zone]]\nfile = "root.zone"\nname = ""\n', 3, "zone[0].name", "empty zone name"),
        ('[[zone]]\nfile = "root.zone"\nname = "' + "a" * 64 + '"\n', 3, "zone[0].name", "longer than 63"),
        (
            '[[zone]]\nfile = "root.zone"\nname = "."\n\n[[zone]]\nfile = "root.zone"\nname = "."\n',
            7,
            "zone[1].name",
            "more than once",
        ),
    ],
)
def test_error_line_key_message(zdir: Path, text: str, line: int, key: str, fragment: str) -> None:
    e = single_error(zdir, text)
    assert e.file == str(zdir / "imrs.toml")
    assert (e.line, e.key) == (line, key), str(e)
    assert fragment in e.message, e.message
    assert str(e) == f"{zdir / 'imrs.toml'}:{line}: key '{key}': {e.message}"


def test_zone_array_counting_picks_the_right_header(zdir: Path) -> None:
    text = (
        "[[zone]]\n"  # 1
        'file = "root.zone"\n'  # 2
        "\n"
        "[server]\n"  # 4
        "identity = 'x'\n"
        "\n"
        "[[zone]]\n"  # 7
        "# no file here\n"
        'name = "example."\n'  # 9
        "\n"
        "[[zone]]\n"  # 11
        'file = "zones/example.zone"\n'
        'nam = "x"\n'  # 13
    )
    errors = errors_of(zdir, text)
    assert [(e.line, e.key) for e in errors] == [(7, "zone[1]"), (13, "zone[2].nam")]


def test_unreadable_zone_file(zdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = zdir / "root.zone"
    if os.geteuid() == 0:  # root can read anything: simulate the denial
        import imrs.config

        monkeypatch.setattr(imrs.config.os, "access", lambda path, mode: False)
    target.chmod(0)
    try:
        e = single_error(zdir, '[[zone]]\nfile = "root.zone"\n')
    finally:
        target.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert (e.line, e.key) == (2, "zone[0].file")
    assert "not readable" in e.message


def test_dotted_and_quoted_keys_are_located(tmp_path: Path) -> None:
    text = (
        "title = 'x'\n"  # 1: unknown top-level key
        "[server]\n"  # 2
        "  'log-level' = 'loud'  # comment = 1\n"  # 3
        'identity = """\n'  # 4
        "hide-version = 1\n"  # 5: inside a string, not a key
        '"""\n'
        "hide-version = 2\n"  # 7
        '"tcp" . idle = 3\n'  # 8: dotted key creates server.tcp
    )
    errors = errors_of(tmp_path, text)
    assert [(e.line, e.key) for e in errors] == [
        (1, "title"),
        (3, "server.log-level"),
        (7, "server.hide-version"),
        (8, "server.tcp"),
    ]
    e = single_error(tmp_path, '\n\nserver.edns-buffer-size = "big"\n')
    assert (e.line, e.key) == (3, "server.edns-buffer-size")


def test_inline_table_zone_lines(zdir: Path) -> None:
    text = 'zone = [\n  { file = "root.zone" },\n  { name = "x", fiel = "root.zone" },\n]\n'
    errors = errors_of(zdir, text)
    assert [(e.line, e.key) for e in errors] == [(3, "zone[1]"), (3, "zone[1].fiel")]
    assert "did you mean 'file'?" in errors[1].message


# ------------------------------------------------------ file-level errors


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[server]\nlisten = \n", 2, "Invalid value"),
        ("[server]\nedns-buffer-size = 1232\nedns-buffer-size = 1400\n", 3, "Cannot overwrite"),
        ('[server]\nidentity = "a\nversion = "b"\n', 2, "Illegal character"),
        ("[server]\n[server]\n", 2, "Cannot declare"),
        ("[server\n", 1, "Expected ']'"),
        ('\n\nidentity = """abc\n\n', 3, "Unterminated string"),
        ("[server]\nlog-level = 1979-02-30\n", 2, "Invalid date"),
    ],
)
def test_toml_syntax_errors(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    e = single_error(tmp_path, text)
    assert (e.line, e.key) == (line, None)
    assert e.message.startswith("TOML syntax error: ")
    assert fragment in e.message
    assert str(e).startswith(f"{tmp_path / 'imrs.toml'}:{line}: TOML syntax error: ")


def test_toml_errors_tomllib_leaks(tmp_path: Path) -> None:
    # tomllib raises plain ValueError / RecursionError for these
    e = single_error(tmp_path, "[server]\ntcp-max-connections = " + "1" * 5000 + "\n")
    assert e.message.startswith("TOML syntax error")
    e = single_error(tmp_path, "x = " + "[" * 5000 + "\n")
    assert e.message.startswith("TOML syntax error")


def test_not_utf8(tmp_path: Path) -> None:
    e = single_error(tmp_path, b'[server]\n\nidentity = "caf\xe9"\n')
    assert (e.line, e.key) == (3, None)
    assert "not valid UTF-8" in e.message and "0xe9" in e.message and "column 16" in e.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    e = info.value
    assert (e.file, e.line, e.key) == (str(tmp_path / "absent.toml"), None, None)
    assert "cannot read file" in e.message
    assert str(e) == f"{tmp_path / 'absent.toml'}: {e.message}"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "cannot read file" in info.value.message


def test_unreadable_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")
    if os.geteuid() == 0:  # root can read anything: simulate the denial
        import imrs.config

        def denied(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(imrs.config, "open", denied, raising=False)
    path.chmod(0)
    try:
        with pytest.raises(ConfigError) as info:
            load_config(path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert "cannot read file: Permission denied" in info.value.message


# ---------------------------------------------------------- many errors


def test_all_errors_are_reported_in_file_order(zdir: Path) -> None:
    text = """\
[server]
listen = ["127.0.0.1:5300",
  "[::1]:99999",
  5]
edns-buffer-size = 100
tcp-idle-timeout = "10"
lisen = 1
nsid = "0x6e7"
log-level = "inf"

[[zone]]
file = "root.zone"
name = "."

[[zone]]
nmae = "x"

[[zone]]
file = "nope.zone"

[zones]
x = 1
"""
    path = write(zdir, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    got = [(e.line, e.key) for e in err.errors]
    assert got == [
        (3, "server.listen[1]"),
        (4, "server.listen[2]"),
        (5, "server.edns-buffer-size"),
        (6, "server.tcp-idle-timeout"),
        (7, "server.lisen"),
        (8, "server.nsid"),
        (9, "server.log-level"),
        (15, "zone[1]"),
        (16, "zone[1].nmae"),
        (19, "zone[2].file"),
        (21, "zones"),
    ]
    # the exception's own fields are those of the first issue
    assert (err.file, err.line, err.key) == (str(path), 3, "server.listen[1]")
    assert err.message == err.errors[0].message
    lines = str(err).splitlines()
    assert len(lines) == len(err.errors)
    assert all(line.startswith(f"{path}:") for line in lines)
    assert lines[4] == f"{path}:7: key 'server.lisen': unknown key; did you mean 'listen'?"


def test_config_error_api() -> None:
    e = ConfigError("f.toml", 3, "server.listen", "bad")
    assert str(e) == "f.toml:3: key 'server.listen': bad"
    assert e.errors == [ConfigIssue("f.toml", 3, "server.listen", "bad")]
    assert str(ConfigError("f.toml", None, None, "gone")) == "f.toml: gone"
    assert str(ConfigError("f.toml", 2, None, "syntax")) == "f.toml:2: syntax"
    issues = [ConfigIssue("a", 1, "k", "m1"), ConfigIssue("a", None, None, "m2")]
    e = ConfigError.from_issues(issues)
    assert str(e) == "a:1: key 'k': m1\na: m2"
    copy = pickle.loads(pickle.dumps(e))
    assert isinstance(copy, ConfigError) and copy.errors == issues
    with pytest.raises(ValueError):
        ConfigError.from_issues([])


# ---------------------------------------------------------- overrides


def test_with_overrides(zdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = load_text(zdir, FULL)
    assert with_overrides(base) == base
    s = with_overrides(base, listen=["[::]:53", "0.0.0.0:53"])
    assert s.listen == (ListenAddress("::", 53, V6), ListenAddress("0.0.0.0", 53, V4))
    assert s.zones == base.zones and s.identity == base.identity
    assert with_overrides(base, listen="10.1.1.1:8053").listen == (ListenAddress("10.1.1.1", 8053, V4),)
    pre = ListenAddress("127.0.0.1", 0, V4)  # port 0 allowed when constructed directly
    assert with_overrides(base, listen=[pre]).listen == (pre,)

    monkeypatch.chdir(zdir)
    s = with_overrides(base, zones=["root.zone"])
    assert s.zones == (ZoneConfig(str(zdir / "root.zone"), None),)
    assert s.listen == base.listen
    s = with_overrides(default_settings(), zones=Path("zones/example.zone"), listen=["[::1]:1"])
    assert s.zones == (ZoneConfig(str(zdir / "zones" / "example.zone")),)
    assert s.listen == (ListenAddress("::1", 1, V6),)
    assert with_overrides(base, zones=[]).zones == ()
    z = ZoneConfig("/anything", "example.")
    assert with_overrides(base, zones=[z]).zones == (z,)


def test_with_overrides_errors(zdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(zdir)
    with pytest.raises(ConfigError) as info:
        with_overrides(default_settings(), listen=["localhost:53", "[::1]:53", "[::1]:53"], zones=["missing.zone", ""])
    err = info.value
    assert [(e.file, e.line, e.key) for e in err.errors] == [
        ("<command line>", None, "--listen"),
        ("<command line>", None, "--listen"),
        ("<command line>", None, "--zone"),
        ("<command line>", None, "--zone"),
    ]
    assert "not a valid IPv4" in err.errors[0].message
    assert "duplicate" in err.errors[1].message
    assert "does not exist" in err.errors[2].message
    assert str(err).splitlines()[0].startswith("<command line>: key '--listen': ")
    with pytest.raises(ConfigError, match="at least one"):
        with_overrides(default_settings(), listen=[])


# ---------------------------------------------------------- check-config


def test_check_config_ok(zdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(zdir, FULL)
    assert check_config_main(str(path)) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"{path}: OK"
    assert len(lines) == 2
    assert "127.0.0.1:5300, [::1]:5300, 0.0.0.0:53" in lines[1]
    assert f"{zdir / 'root.zone'} (.)" in lines[1]
    assert err == ""


def test_check_config_default_zone_summary(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(write(tmp_path, ""), stdout=out, stderr=err) == 0
    assert "embedded root zone" in out.getvalue()
    assert summarize(default_settings()) == "listen 127.0.0.1:5300, [::1]:5300; zones: embedded root zone"


def test_check_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[server]\nedns-buffer-size = 1\nfoo = 2\n")
    assert check_config_main(path) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:2: key 'server.edns-buffer-size': must be between 512 and 4096, got 1",
        f"{path}:3: key 'server.foo': unknown key",
    ]
    assert "Traceback" not in err


def test_check_config_missing_and_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(tmp_path / "nope.toml") == 1
    assert check_config_main(write(tmp_path, b"\x00\xff\xfe[[[")) == 1
    assert check_config_main(str(tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 3 and "Traceback" not in err


# ------------------------------------------------------ property tests

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_never_crashes(path: Path, data: bytes) -> Settings | ConfigError:
    path.write_bytes(data)
    try:
        return load_config(path)
    except ConfigError as exc:
        assert exc.errors
        nlines = data.count(b"\n") + 1
        for issue in exc.errors:
            assert issue.file == str(path)
            assert issue.line is None or 1 <= issue.line <= nlines, (issue, nlines)
            assert issue.message
            str(issue)
        return exc


@PROPERTY
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(tmp_path: Path, data: bytes) -> None:
    check_never_crashes(tmp_path / "random.toml", data)


@PROPERTY
@given(st.text(alphabet=st.sampled_from(list('[]{}=.,"\'#\n \t-_:0x1ae\\zoneserverlisten')), max_size=300))
def test_toml_ish_text_never_crashes(tmp_path: Path, text: str) -> None:
    check_never_crashes(tmp_path / "random.toml", text.encode())


KEYS = ["listen", "edns-buffer-size", "tcp-idle-timeout", "tcp-max-connections",
        "tcp-max-queries-per-connection", "identity", "version", "hide-identity",
        "hide-version", "nsid", "log-level", "file", "name", "bogus"]
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "nan" if f != f else ("inf" if f == float("inf") else "-inf" if f == float("-inf") else repr(f))
    ),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.sampled_from(['"127.0.0.1:5300"', '"[::1]:53"', '"::1"', '"0x6e73"', '"0x"', '"info"',
                     '"root.zone"', '"missing.zone"', '"."', '""', '"example."', "1979-05-27"]),
    st.text(max_size=20).map(json.dumps),  # JSON string escapes are valid TOML
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"))
SECTIONS = st.sampled_from(["[server]", "[[zone]]", "[zone]", "[srever]", "", "[server.sub]"])


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        header = draw(SECTIONS)
        if header:
            lines.append(header)
        for _ in range(draw(st.integers(0, 5))):
            lines.append(f"{draw(st.sampled_from(KEYS))} = {draw(VALUES)}")
        lines.append("")
    return "\n".join(lines)


@PROPERTY
@given(toml_documents())
def test_generated_documents_give_settings_or_located_errors(zdir: Path, text: str) -> None:
    path = zdir / "gen.toml"
    result = check_never_crashes(path, text.encode())
    if isinstance(result, ConfigError) and not result.message.startswith("TOML syntax error"):
        raw_lines = text.split("\n")
        for issue in result.errors:
            assert issue.key is not None and issue.line is not None, issue
            last = issue.key.rsplit(".", 1)[-1]
            if not last.endswith("]"):
                # the reported line really is where that key is written
                assert last in raw_lines[issue.line - 1], (issue, raw_lines[issue.line - 1])


@PROPERTY
@given(st.data())
def test_mutated_valid_file_never_crashes(zdir: Path, data: st.DataObject) -> None:
    base = FULL.encode()
    pos = data.draw(st.integers(0, len(base)))
    cut = data.draw(st.integers(0, 10))
    insert = data.draw(st.binary(max_size=8) | st.sampled_from([b"\n", b"[", b'"', b"=", b"]]", b"'''", b"\xff"]))
    mutated = base[:pos] + insert + base[pos + cut :]
    check_never_crashes(zdir / "mutated.toml", mutated)


# -- zones kept fresh from sources (issue 3) ------------------------------------------------


def test_managed_zone_keys(tmp_path: Path) -> None:
    anchor = tmp_path / "root.ds"
    anchor.write_text(". IN DS 20326 8 2 e06d44b80b8f1d39a95c0b0d7c65d08458e880409bbc683457104237c7f8ec8d\n")
    path = write(tmp_path, f"""
[server]
state-dir = "state"

[[tsig-key]]
name = "xfr-key"
algorithm = "hmac-sha512"
secret = "c2VjcmV0LXNlY3JldA=="

[[zone]]
name = "."
sources = ["ixfr://192.0.2.1:5353?tsig=xfr-key", "https://www.internic.net/domain/root.zone", "/var/lib/root.zone"]
anchor = "{anchor}"
require-zonemd = true
signature-margin = 86400
refresh-min = 30
refresh-max = 600
expire-max = 5
expire-min = 2
allow-notify = ["192.0.2.1", "2001:db8::/32"]
notify = ["127.0.0.1:5399"]
allow-transfer = ["127.0.0.0/8", "10.0.0.0/8 key xfr-key"]
on-expiry = "SERVFAIL"
check-sources = true
""")
    settings = load_config(path)
    assert settings.state_dir == str(tmp_path / "state")
    assert [(k.name, k.algorithm, k.secret) for k in settings.tsig_keys] == [("xfr-key.", "hmac-sha512", b"secret-secret")]
    zone = settings.zones[0]
    assert zone.managed and zone.file is None
    assert zone.sources[0] == "ixfr://192.0.2.1:5353?tsig=xfr-key"
    assert zone.anchor == str(anchor)
    assert zone.require_zonemd and zone.check_sources
    assert zone.signature_margin == 86400.0
    assert zone.refresh == (30, 600) and zone.expire == (2, 5) and zone.retry == ZoneConfig.retry
    assert zone.allow_notify == ("192.0.2.1", "2001:db8::/32")
    assert zone.allow_transfer == ("127.0.0.0/8", "10.0.0.0/8 key xfr-key")
    assert zone.on_expiry == "servfail"


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        ('sources = ["gopher://x"]', "zone[0].sources", "unknown scheme 'gopher'"),
        ('sources = ["ixfr://not-an-ip:53"]', "zone[0].sources", "not-an-ip"),
        ('sources = ["relative/path.zone"]', "zone[0].sources", "absolute path"),
        ('sources = ["axfr://127.0.0.1:53?tsig=nokey"]', "zone[0].sources", "TSIG key 'nokey.' is not defined"),
        ('sources = ["/x"]\nallow-notify = ["300.1.1.1"]', "zone[0].allow-notify", "not an IP address"),
        ('sources = ["/x"]\nallow-transfer = ["10.0.0.0/8 nokey"]', "zone[0].allow-transfer", "CIDR key NAME"),
        ('sources = ["/x"]\nnotify = ["127.0.0.1:99999"]', "zone[0].notify", "out of range"),
        ('sources = ["/x"]\non-expiry = "explode"', "zone[0].on-expiry", "refuse, servfail, drop"),
        ('sources = ["/x"]\nrefresh-min = 100\nrefresh-max = 10', "zone[0]", "refresh-min (100) is greater"),
        ('sources = ["/x"]\nexpire-max = 0', "zone[0].expire-max", "must be between 1"),
        ('sources = ["/x"]\nanchor = "/no/such/anchor"', "zone[0].anchor", "anchor file does not exist"),
        ('sources = ["/x"]\nrequire-zonemd = "yes"', "zone[0].require-zonemd", "boolean"),
    ],
)
def test_managed_zone_errors(tmp_path: Path, body: str, key: str, fragment: str) -> None:
    path = write(tmp_path, f'[[zone]]\nname = "."\n{body}\n')
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    issues = excinfo.value.errors
    assert any(issue.key == key and fragment in issue.message for issue in issues), [str(i) for i in issues]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('name = "k"\nsecret = "!!notbase64"', "not valid base64"),
        ('name = "k"\nalgorithm = "md5"\nsecret = "YQ=="', "unknown TSIG algorithm"),
        ('secret = "YQ=="', "missing required key 'name'"),
        ('name = "k"\nsecret = "YQ=="\ncolour = "red"', "unknown key 'colour'"),
    ],
)
def test_tsig_key_errors(tmp_path: Path, body: str, fragment: str) -> None:
    path = write(tmp_path, f"[[tsig-key]]\n{body}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert any(fragment in issue.message and issue.key == "tsig-key[0]" for issue in excinfo.value.errors)


def test_rfc8806_keyword(tmp_path: Path) -> None:
    from imrs.serve.server import zone_sources
    from imrs.zone.sources import RFC8806_ROOT_SOURCES

    path = write(tmp_path, '[[zone]]\nname = "."\nsources = ["RFC8806"]\n')
    zone = load_config(path).zones[0]
    assert zone_sources(zone) == RFC8806_ROOT_SOURCES
    assert "https://www.internic.net/domain/root.zone" in RFC8806_ROOT_SOURCES
    bad = write(tmp_path, '[[zone]]\nname = "example."\nsources = ["rfc8806"]\n')
    with pytest.raises(ConfigError, match="sources of the root zone"):
        load_config(bad)
