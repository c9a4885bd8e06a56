"""The cap on FORMERR and NOTIMP responses (imrs.serve.errlimit, csrc/fastpath/errlimit.c):
the same decisions in Python and C, what counts, and a real server on each of its three UDP
loops sending no more of them a second than ``[rrl] error-rate`` allows, while it answers
everything else."""

from __future__ import annotations

import random
import socket
import time

import pytest
from serverproc import ROOT_ZONE, ServerProc, query

from imrs.answer import fastc
from imrs.config import ConfigError, RrlConfig, load_config
from imrs.serve.errlimit import ErrorLimit, is_error, make_error_limit

NATIVE = fastc.enabled() and hasattr(fastc._fastpath, "ErrorLimit")
KINDS = [ErrorLimit] + ([fastc._fastpath.ErrorLimit] if NATIVE else [])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__module__)
def test_at_most_rate_a_second_then_afresh(kind):
    limit = kind(3)
    assert [limit.allow(100) for _ in range(5)] == [True, True, True, False, False]
    assert limit.dropped == 2
    assert [limit.allow(101) for _ in range(4)] == [True, True, True, False]
    assert limit.allow(100)  # another second, even an earlier one (the clock went back): counted afresh
    assert limit.dropped == 3 and limit.rate == 3


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__module__)
def test_rate_zero_allows_everything(kind):
    limit = kind(0)
    assert all(limit.allow(7) for _ in range(10_000)) and limit.dropped == 0


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__module__)
def test_a_negative_rate_is_refused(kind):
    with pytest.raises(ValueError):
        kind(-1)


@pytest.mark.skipif(not NATIVE, reason="the C extension is not built")
def test_python_and_c_decide_alike():
    rng = random.Random(9)
    for rate in (1, 2, 7, 100):
        py, c = ErrorLimit(rate), fastc._fastpath.ErrorLimit(rate)
        second = 1_000
        for _ in range(20_000):
            if rng.random() < 1 / (2 * rate):  # seconds of about 2 x rate calls: some refused in each
                second += rng.choice((1, 2, -1))
            assert py.allow(second) == c.allow(second)
        assert py.dropped == c.dropped > 0


def test_the_default_clock_is_whole_seconds_of_time():
    limit = ErrorLimit(1)
    now = int(time.time())
    assert limit.allow()
    if int(time.time()) == now:  # still the same second: the second one is refused
        assert not limit.allow(now)


def test_make_error_limit():
    assert make_error_limit(0) is None
    limit = make_error_limit(5)
    assert limit.rate == 5
    assert type(limit).__name__ == "ErrorLimit"
    if NATIVE:
        assert type(limit) is fastc._fastpath.ErrorLimit  # the C loop takes only this one


def test_what_counts_as_an_error_response():
    header = bytearray(b"\x12\x34\x80\x00" + b"\x00" * 8)
    for rcode, counted in ((0, False), (1, True), (2, False), (3, False), (4, True), (5, False), (9, False)):
        header[3] = rcode
        assert is_error(bytes(header)) is counted, rcode
    header[3] = 1
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    assert not is_error(bytes(header[:11]) + b"\x01" + opt)  # FORMERR with our OPT record: not counted
    assert not is_error(bytes(header) + b"\x00")


# --------------------------------------------------------------------------- a real server

def _formerr_query(i: int) -> bytes:
    return i.to_bytes(2, "big") + b"\x00\x00\x00\x01" + b"\x00" * 6  # QDCOUNT 1, no question


def _notimp_query(i: int) -> bytes:
    return i.to_bytes(2, "big") + bytes([5 << 3, 0]) + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x06\x00\x01"


def _opt_only_query(i: int) -> bytes:
    """QDCOUNT 0 and an OPT record: FORMERR with our OPT record (not counted)."""
    return i.to_bytes(2, "big") + b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


def _burst(port: int) -> dict[str, int] | None:
    """150 FORMERR, 50 NOTIMP and 20 OPT-only queries and 30 good ones, interleaved, from one
    socket early in one second of the clock; what came back by kind.  None: the sending
    crossed into the next second (the cap would have started afresh), try again."""
    wires = ([("formerr", _formerr_query(i)) for i in range(150)] + [("notimp", _notimp_query(1000 + i)) for i in range(50)]
             + [("opt-only", _opt_only_query(2000 + i)) for i in range(20)]
             + [("good", query("com.", "NS", qid=3000 + i)) for i in range(30)])
    random.Random(4).shuffle(wires)
    kind_of = {w[:2]: kind for kind, w in wires}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        s.connect(("127.0.0.1", port))
        s.settimeout(1.0)
        while time.time() % 1 > 0.2:  # start early in a second: the server has 0.7 s and more for 250 queries
            time.sleep(0.02)
        began = time.time()
        for _, wire in wires:
            s.send(wire)
        if time.time() - int(began) > 0.3:
            return None
        got: dict[str, int] = {}
        try:
            while True:
                reply = s.recv(4096)
                kind = kind_of[reply[:2]]
                got[kind] = got.get(kind, 0) + 1
        except TimeoutError:
            pass
    return got


LOOPS = {"c": {}, "batched": {"IMRS_NO_FASTC": "1"}, "plain": {"IMRS_NO_FASTC": "1", "IMRS_NO_BATCHIO": "1"}}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_caps_error_responses_and_answers_the_rest(tmp_path, loop):
    """error-rate 40 (RRL off): of one second's 200 junk queries 40 get FORMERR or NOTIMP,
    the rest nothing; the good queries and the FORMERRs with an OPT record are all answered;
    the drops are counted."""
    server = ServerProc(tmp_path, ["--zone", str(ROOT_ZONE), "--workers", "1"], config="[rrl]\nerror-rate = 40\n",
                        env=LOOPS[loop], name=f"errcap-{loop}")
    server.start().wait_ready()
    try:
        for _ in range(5):
            got = _burst(server.port)
            if got is not None:
                break
            time.sleep(1.1)  # the cap of the second just used is spent: wait for a fresh one
        assert got is not None, "no burst fitted in one second"
    finally:
        server.stop()
    assert got.get("good") == 30 and got.get("opt-only") == 20, got
    assert got.get("formerr", 0) + got.get("notimp", 0) == 40, got
    assert server.stats().get("errors_limited", 0) >= 160


def test_error_rate_zero_answers_every_junk_query(tmp_path):
    server = ServerProc(tmp_path, ["--zone", str(ROOT_ZONE), "--workers", "1"], config="[rrl]\nerror-rate = 0\n",
                        name="errcap-off")
    server.start().wait_ready()
    try:
        got = _burst(server.port) or _burst(server.port)
    finally:
        server.stop()
    assert got == {"formerr": 150, "notimp": 50, "opt-only": 20, "good": 30}


def test_config_error_rate(tmp_path):
    assert RrlConfig().error_rate == 100  # NSD's cap
    path = tmp_path / "imrs.toml"
    path.write_text("[rrl]\nerror-rate = 7\n")
    assert load_config(path).rrl.error_rate == 7
    path.write_text("[rrl]\nerror-rate = -1\n")
    with pytest.raises(ConfigError, match="error-rate"):
        load_config(path)
