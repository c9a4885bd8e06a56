"""Shedding under overload (serve/shed.py, csrc/fastpath/shed.c): when a worker falls behind
its UDP socket, every client prefix gets an equal share of what the worker can answer, and a
prefix asking less than its share keeps all of its answers.

The Shedder is driven here with a clock of its own (``admit(peer, behind, now_ms)``) and a
measured capacity of its own (``busy(ns, datagrams)``), so that each window's share can be
checked against a brute-force max-min computation; the kernel filter is checked with real
datagrams on a real socket (as root).  The flood test (tests/test_flood.py) shows the whole
under a real flood.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import pytest

from imrs.answer import fastc
from imrs.config import ConfigError, RrlConfig, load_config
from imrs.serve.shed import make_shedder

Shedder = getattr(fastc._fastpath, "Shedder", None)
pytestmark = pytest.mark.skipif(Shedder is None, reason="the C extension is not built")

WINDOW_MS = 100
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # bind an address no interface has (linux/in.h)
WINDOW_NS = WINDOW_MS * 1_000_000


def _v4(a: int, b: int, c: int = 0, d: int = 1) -> bytes:
    return bytes([a, b, c, d])


def _window(s, t0: int, counts: dict[bytes, int], behind: bool = True, capacity: int | None = None) -> dict[bytes, int]:
    """One window from t0 (ms): each peer's queries spread over it, interleaved; what was
    admitted, per peer.  `capacity`: the worker read this many in the whole window's time."""
    admitted = dict.fromkeys(counts, 0)
    order = [peer for peer, n in counts.items() for _ in range(n)]
    random.Random(t0).shuffle(order)
    for i, peer in enumerate(order):
        now = t0 + (i * WINDOW_MS) // max(1, len(order))
        admitted[peer] += s.admit(peer, behind, now)
    if capacity is not None:
        s.busy(WINDOW_NS, capacity)
    return admitted


def _max_min_share(counts: list[int], capacity: int) -> int | None:
    """The largest T with sum(min(c, T)) <= capacity, by brute force; None: all fit."""
    if sum(counts) <= capacity:
        return None
    t = 1
    while sum(min(c, t + 1) for c in counts) <= capacity:
        t += 1
    return t


def test_the_share_is_the_max_min_water_level():
    rng = random.Random(5)
    for trial in range(30):
        s = Shedder(24, 56)
        peers = [_v4(10, i) for i in range(rng.randint(2, 40))]
        counts = {peer: rng.randint(1, 400) for peer in peers}
        # (a window that read fewer than 256 datagrams does not count: too few to measure)
        capacity = rng.randint(256, max(256, sum(counts.values())))
        _window(s, 0, counts)  # counting starts here (behind): this window is not whole
        _window(s, 100, counts, capacity=capacity)
        s.admit(peers[0], True, 200)  # the next window: the share is set from the last
        # the fill aimed at after a window without overflow (no socket: never any)
        expected = _max_min_share(list(counts.values()), capacity * s.fill // 100)
        assert s.share == expected, (trial, s.fill, capacity, sorted(counts.values()))


def test_a_few_very_busy_prefixes_get_a_level_above_the_histogram():
    """Counts of 4,095 or more share the histogram's last bin; a level above that is still the
    max-min one when those prefixes all ask more than it."""
    s = Shedder(24, 56)
    counts = {_v4(10, 1): 10_000, _v4(10, 2): 12_000, **{_v4(192, 0, i): 10 for i in range(5)}}
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=20_000)
    s.admit(_v4(10, 1), True, 200)
    assert s.share == _max_min_share(list(counts.values()), 20_000 * s.fill // 100) > 4095


def test_a_window_busy_throughout_bounds_the_capacity():
    """Short bursts overstate what a worker keeps up when another process wants its core too:
    what it read in a window it was busy throughout bounds the capacity the share is set from,
    the bound creeping up by 2 % a window after it."""
    s = Shedder(24, 56)
    counts = {**{_v4(10, i): 10 for i in range(10)}, **{_v4(11, i): 200 for i in range(10)}}
    first = _v4(10, 0)
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=1000)  # busy throughout: 1,000 read
    s.admit(first, True, 200)
    assert s.share == _max_min_share(list(counts.values()), 1000 * s.fill // 100)
    _window(s, 200, counts)
    s.busy(WINDOW_NS // 5, 1000)  # the same 1,000 read in bursts of 20 ms in all: 5,000 a window
    s.admit(first, True, 300)
    # the capacity measured is (3 * 1000 + 5000) / 4 = 2000; the bound 1000 * 1.02
    assert s.share == _max_min_share(list(counts.values()), int(1020 * s.fill / 100))
    assert s.share != _max_min_share(list(counts.values()), 2000 * s.fill // 100)


def test_a_light_prefix_keeps_every_query_and_busy_ones_their_share():
    s = Shedder(24, 56)
    heavy = {_v4(10, i): 60 for i in range(20)}
    light = _v4(192, 0, 2, 7)
    counts = {**heavy, light: 10}
    seen = []
    for w in range(12):
        admitted = _window(s, w * WINDOW_MS, counts, capacity=600)
        seen.append((s.share, admitted))
    assert all(admitted[light] == 10 for _share, admitted in seen)
    shares = [share for share, _ in seen[2:]]
    assert all(share is not None and 10 < share < 60 for share in shares), shares
    for share, admitted in seen[2:]:
        # each busy prefix is held to the share and a quarter (behind all the time: shed in
        # user space; no prefix is shed for asking about its share)
        assert all(admitted[peer] == share + share // 4 for peer in heavy), (share, admitted)
    assert s.shed == sum(60 - admitted[p] for _share, admitted in seen for p in heavy)


def test_a_burst_from_a_prefix_within_its_share_is_not_shed():
    """A prefix whose average is within its share may ask up to four shares in one window (a
    resolver's queries come in bursts); a prefix new in the window is held to its share and a
    quarter, and one whose average is over its share too."""
    s = Shedder(24, 56)
    heavy = {_v4(10, i): 60 for i in range(20)}
    steady, new = _v4(192, 0, 2, 7), _v4(198, 51, 100, 1)
    for w in range(6):
        _window(s, w * WINDOW_MS, {**heavy, steady: 10}, capacity=600)
    first = _v4(10, 0)
    s.admit(first, True, 6 * WINDOW_MS)  # the next window begins: its share is set
    share = s.share
    assert share is not None and 10 < share and 4 * share < 200, share
    burst = 3 * share
    admitted = _window(s, 6 * WINDOW_MS, {**heavy, first: 59, steady: burst, new: burst}, capacity=600)
    assert admitted[steady] == burst
    assert admitted[new] == share + share // 4
    assert all(admitted[peer] == share + share // 4 for peer in heavy if peer != first)
    # its average after the burst, (10 + 3 shares) / 2, is under twice the share: still light
    s.admit(first, True, 7 * WINDOW_MS)
    assert s.share is not None and (10 + burst) // 2 < 2 * s.share
    admitted = _window(s, 7 * WINDOW_MS, {**heavy, first: 59, steady: 10}, capacity=600)
    assert admitted[steady] == 10


def test_a_worker_that_keeps_up_sheds_nothing():
    s = Shedder(24, 56)
    counts = {**{_v4(10, i): 80 for i in range(20)}, _v4(192, 0, 2, 7): 10}
    for w in range(10):
        admitted = _window(s, w * WINDOW_MS, counts, behind=False, capacity=100)
        assert admitted == counts
    assert s.share is None and s.shed == 0 and s.windows_behind == 0


def test_shedding_stops_after_the_flood():
    s = Shedder(24, 56)
    counts = {_v4(10, i): 60 for i in range(20)}
    for w in range(5):
        _window(s, w * WINDOW_MS, counts, capacity=600)
    assert s.share is not None
    quiet = {_v4(10, 1): 2}
    for w in range(5, 40):
        admitted = _window(s, w * WINDOW_MS, quiet, behind=False, capacity=2)
        assert admitted == quiet
    assert s.share is None


def test_prefixes_are_the_configured_lengths():
    s = Shedder(16, 48)
    # 10.1.x.x is one /16: two addresses in it share one count
    counts = {_v4(10, 1, 0, 1): 300, _v4(10, 1, 200, 9): 300, _v4(10, 2, 0, 1): 300}
    for w in range(4):
        _window(s, w * WINDOW_MS, counts, capacity=600)
    # two prefixes, of 600 and 300 queries
    assert s.share == _max_min_share([600, 300], 600 * s.fill // 100)
    v6 = bytes.fromhex("20010db8000100ff" + "00" * 8)
    same_48 = bytes.fromhex("20010db80001ff00" + "11" * 8)
    s6 = Shedder(24, 48)
    for w in range(4):
        _window(s6, w * WINDOW_MS, {v6: 300, same_48: 300, _v4(10, 2): 300}, capacity=600)
    assert s6.share == _max_min_share([600, 300], 600 * s6.fill // 100)


def test_memory_is_fixed_whatever_the_sources():
    s = Shedder(24, 56)
    size = s.__sizeof__()
    rng = random.Random(3)
    for w in range(3):
        for i in range(100_000):  # far more prefixes than the table counts
            s.admit(rng.randbytes(4), True, w * WINDOW_MS + i // 1000)
        s.busy(WINDOW_NS, 10_000)
    assert s.__sizeof__() == size < 400_000


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        Shedder(33, 56)
    with pytest.raises(ValueError):
        Shedder(24, 129)
    s = Shedder(24, 56)
    with pytest.raises(TypeError):
        s.admit(b"\x01\x02\x03", True, 0)


# ------------------------------------------------------------------------------- kernel filter


def _count_from(sock: socket.socket, seconds: float) -> dict[str, int]:
    got: dict[str, int] = {}
    end = time.monotonic() + seconds
    sock.settimeout(0.05)
    while time.monotonic() < end:
        try:
            _data, (host, *_port) = sock.recvfrom(2048)
        except TimeoutError:
            continue
        got[host] = got.get(host, 0) + 1
    return got


def test_the_kernel_filter_thins_a_busy_prefix_to_its_share():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("127.0.0.1", 0))
    s = Shedder(24, 56, server.fileno())
    if not s.kernel_filter:
        assert os.geteuid() != 0, f"root, yet the kernel refused the filter: {os.strerror(s.filter_errno)}"
        pytest.skip(f"the kernel refused the filter ({os.strerror(s.filter_errno)}): needs root or CAP_BPF")
    busy, quiet = "127.9.0.7", "127.10.0.7"
    counts = {socket.inet_aton(busy): 1000, socket.inet_aton(quiet): 50}
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=300)
    s.admit(socket.inet_aton(quiet), False, 200)  # the window ends: the filter is written
    share = s.share
    assert share is not None and share < 300 and s.filtered_prefixes == 1
    senders = {}
    for host in (busy, quiet):
        senders[host] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders[host].bind((host, 0))
    sent = {busy: 4000, quiet: 400}
    for host, n in sent.items():
        for _ in range(n):
            senders[host].sendto(b"x" * 40, server.getsockname())
    got = _count_from(server, 1.0)
    for sock in (server, *senders.values()):
        sock.close()
    kept = share / 1000  # it asked 1000 in a window, its share `share`
    assert got.get(quiet) == sent[quiet]
    expected = sent[busy] * kept
    sd = (sent[busy] * kept * (1 - kept)) ** 0.5
    assert abs(got.get(busy, 0) - expected) < 5 * sd + 5, (got, expected, share)
    assert s.filtered == sent[busy] - got.get(busy, 0)


def _v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


@pytest.mark.parametrize(("bits", "busy", "quiet"), [
    # a /56: two hosts of one busy /56, and the /56 next to it
    (56, ("fd00:1:0:705::1", "fd00:1:0:7aa::2"), "fd00:1:0:800::1"),
    # a /96, longer than 64 bits: the filter folds the low half into the key as the table does
    (96, ("fd00:1:0:7:0:1:0:1", "fd00:1:0:7:0:1:ffff:2"), "fd00:1:0:7:0:2::1"),
])
def test_the_kernel_filter_thins_a_busy_ipv6_prefix_and_keeps_ipv4_on_a_dual_stack_socket(bits, busy, quiet):
    """The IPv6 filter: a busy prefix's datagrams (from two of its hosts) thinned to its share,
    a quiet prefix next to it (differing only past /64, for a /96) untouched, and the IPv4
    datagrams a dual-stack socket gets left to user space.  The senders bind addresses no
    interface has (IP_FREEBIND); their datagrams still go over loopback only."""
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("::", 0))
    port = server.getsockname()[1]
    s = _filter_or_skip(server, v6_bits=bits)
    counts = {_v6(busy[0]): 500, _v6(busy[1]): 500, _v6(quiet): 50, _v6("::ffff:127.9.0.7"): 1000}
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=300)
    s.admit(_v6(quiet), False, 200)  # the window ends: the filter is written
    share = s.share
    assert share is not None and share < 300 and s.filtered_prefixes == 1  # the IPv6 one only
    senders = {}
    for host in (*busy, quiet):
        senders[host] = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        senders[host].setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        senders[host].bind((host, 0))
    senders["127.9.0.7"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    senders["127.9.0.7"].bind(("127.9.0.7", 0))
    sent = {busy[0]: 2000, busy[1]: 2000, quiet: 400, "127.9.0.7": 400}
    for host, n in sent.items():
        to = ("127.0.0.1", port) if "." in host else ("::1", port)
        for _ in range(n):
            senders[host].sendto(b"x" * 40, to)
    got = _count_from(server, 1.0)
    for sock in (server, *senders.values()):
        sock.close()
    got = {_v6(host): n for host, n in got.items()}  # by address, whatever the spelling
    assert got.get(_v6(quiet)) == sent[quiet], got
    assert got.get(_v6("::ffff:127.9.0.7")) == sent["127.9.0.7"], got
    kept = share / 1000  # the prefix asked 1000 in a window, its share `share`
    busy_sent = sent[busy[0]] + sent[busy[1]]
    busy_got = sum(got.get(_v6(host), 0) for host in busy)
    sd = (busy_sent * kept * (1 - kept)) ** 0.5
    assert abs(busy_got - busy_sent * kept) < 5 * sd + 5, (got, busy_sent * kept, share)
    assert min(got.get(_v6(host), 0) for host in busy) > 0, got
    assert s.filtered == busy_sent - busy_got


def _filter_or_skip(server: socket.socket, v6_bits: int = 56):
    s = Shedder(24, v6_bits, server.fileno())
    if not s.kernel_filter:
        assert os.geteuid() != 0, f"root, yet the kernel refused the filter: {os.strerror(s.filter_errno)}"
        pytest.skip(f"the kernel refused the filter ({os.strerror(s.filter_errno)}): needs root or CAP_BPF")
    return s


def test_the_filter_takes_prefixes_over_twice_their_share_and_keeps_them_until_they_ask_their_share():
    """A client asking a little over its share is not thinned (the share moves with the noise
    in the counts); a busy prefix is, and stays thinned while it asks more than its share,
    although that is under twice the share.  What the filter keeps of it is its share over its
    average: its estimates (what it was read, over what the filter kept), each window's
    averaged with the average before."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("127.0.0.1", 0))
    s = _filter_or_skip(server)
    busy, near = socket.inet_aton("127.9.0.7"), socket.inet_aton("127.10.0.7")
    light = {_v4(127, 20 + i): 60 for i in range(10)}
    counts = {busy: 1000, near: 100, **light}
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=865)
    s.admit(_v4(127, 20), False, 200)  # the window ends: the share is set, the filter written
    share = s.share
    assert share == _max_min_share(list(counts.values()), 865 * s.fill // 100)
    assert share + share // 4 < counts[near] <= 2 * share, share  # what the case is about
    assert s.filtered_prefixes == 1
    # Windows in which the busy prefix asks about one and a half shares: what the filter lets
    # through of it is what the worker reads, scaled up by what was kept (in 32-bit fixed
    # point, as the filter's map has it); its average comes down towards that.
    average = 1000  # its first window: no average before
    for w in range(2, 10):
        keep = (share << 32) // average
        read = max(1, round(1.5 * share * keep / 2**32))
        _window(s, w * WINDOW_MS, {busy: read, near: 100, **light}, capacity=865)
        s.admit(_v4(127, 20), False, (w + 1) * WINDOW_MS)
        average = (average + (read << 32) // keep) // 2
        share = s.share
        assert share is not None and share < counts[near] <= 2 * share, share
        assert s.filtered_prefixes == 1  # the busy prefix still, and not the near one
    assert share < average < 2 * share, (share, average)  # it asks under twice its share now
    senders = {}
    for name, addr in (("busy", busy), ("near", near)):
        senders[name] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders[name].bind((socket.inet_ntoa(addr), 0))
        for _ in range(300):
            senders[name].sendto(b"x" * 40, server.getsockname())
    got = _count_from(server, 0.5)
    for sock in (server, *senders.values()):
        sock.close()
    assert got.get("127.10.0.7") == 300, got
    kept = share / average
    sd = (300 * kept * (1 - kept)) ** 0.5
    assert abs(got.get("127.9.0.7", 0) - 300 * kept) < 5 * sd + 5, (got, kept)


def test_prefixes_a_little_over_their_share_are_thinned_when_they_do_not_fit_whole():
    """A flood whose every prefix asks under twice its share: letting them through whole would
    overrun the worker, so the busiest enter the filter (down to what the capacity kept in
    reserve takes of the rest)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    s = _filter_or_skip(server)
    middling = {_v4(127, 30, i): 24 for i in range(50)}
    busiest = {_v4(127, 31, i): 30 for i in range(50)}
    counts = {**middling, **busiest}
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=2000)
    s.admit(_v4(127, 30, 0), False, 200)
    share = s.share
    target = 2000 * s.fill // 100
    assert share == _max_min_share(list(counts.values()), target) and 30 <= 2 * share, share
    # whole, they would take sum(counts) = 2,700 of 2,000; the share leaves 2,000 - 100 * share
    # over, which the middling ones' excess fits and the busiest ones' does not
    assert 50 * (24 - share) <= 2000 - 100 * share < 50 * (30 - share) + 50 * (24 - share)
    assert s.filtered_prefixes == 50
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.30.0.1", 0))
    for _ in range(100):
        sender.sendto(b"x" * 40, server.getsockname())
    assert _count_from(server, 0.3).get("127.30.0.1") == 100  # a middling prefix: not thinned
    sender.close()
    server.close()


def test_an_overflowing_queue_does_not_make_the_prefixes_look_smaller():
    """The kernel dropped datagrams for a full queue: every prefix's count is scaled up by
    them, or the flood would look smaller than it is and the filter let more of it through."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    s = Shedder(24, 56, server.fileno())
    counts = {**{_v4(10, i): 10 for i in range(10)}, **{_v4(11, i): 70 for i in range(10)}}
    first = _v4(10, 0)
    _window(s, 0, counts)  # counting from here
    s.admit(first, True, 100)  # the window from 100 ms begins
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(2000):  # the small queue overflows
        sender.sendto(b"x" * 40, server.getsockname())
    sender.close()
    _window(s, 100, {**counts, first: counts[first] - 1}, capacity=800)
    s.admit(first, True, 200)
    server.close()
    overflow = s.overflow
    assert overflow > 1000, overflow
    scale = (800 + overflow) / 800
    # the first shares do not lower the fill for an overflow (the flood's start filled the queue)
    assert s.fill == 80
    assert s.share == _max_min_share([int(c * scale) for c in counts.values()], 800 * s.fill // 100)
    assert s.share != _max_min_share(list(counts.values()), 800 * s.fill // 100)


def _filtered_busy_prefix(server: socket.socket):
    """A Shedder on `server` whose filter thins 127.9.0.7's prefix (it asked 1000 in a window
    that could take 300); the share set at 200 ms."""
    s = _filter_or_skip(server)
    busy, quiet = socket.inet_aton("127.9.0.7"), socket.inet_aton("127.10.0.7")
    counts = {busy: 1000, quiet: 50}
    _window(s, 0, counts)
    _window(s, 100, counts, capacity=300)
    s.admit(quiet, False, 200)
    assert s.share is not None and s.filtered_prefixes == 1
    return s


def test_a_window_too_quiet_to_measure_keeps_the_share_and_loosens_the_filter():
    """The filter holding a flood back too hard (or the flood pausing) can leave a window with
    too little read to measure: the share and the filter stay (emptying it would let the whole
    flood in), the filter keeping twice as much of the busy prefix."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("127.0.0.1", 0))
    s = _filtered_busy_prefix(server)
    share = s.share
    _window(s, 200, {socket.inet_aton("127.10.0.7"): 5}, behind=False, capacity=5)
    s.admit(socket.inet_aton("127.10.0.7"), False, 300)
    assert s.share == share and s.filtered_prefixes == 1
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.9.0.7", 0))
    for _ in range(4000):
        busy.sendto(b"x" * 40, server.getsockname())
    got = _count_from(server, 0.5).get("127.9.0.7", 0)
    busy.close()
    server.close()
    kept = 2 * share / 1000  # it asked 1000 in a window, its share `share`: doubled
    sd = (4000 * kept * (1 - kept)) ** 0.5
    assert abs(got - 4000 * kept) < 5 * sd + 5, (got, kept)


def _meminfo(sock: socket.socket) -> tuple[int, int]:
    """The receive queue's size and its limit, in octets (SO_MEMINFO)."""
    alloc, rcvbuf = struct.unpack("2I", sock.getsockopt(socket.SOL_SOCKET, 55, 36)[:8])
    return alloc, rcvbuf


def _fill_until(server: socket.socket, sender: socket.socket, full) -> None:
    """1,000-octet datagrams from sender until full(queue, limit) holds of server's queue."""
    for _ in range(5000):
        if full(*_meminfo(server)):
            break
        sender.sendto(b"x" * 1000, server.getsockname())
    assert full(*_meminfo(server)), _meminfo(server)


def test_a_queue_over_half_full_halves_what_the_filter_keeps():
    """Between two windows' ends, a queue filling past half (the worker got less of the CPU
    than its share was set for) tightens the filter at once, and again while it grows or is
    nearly full, at most once in 10 ms (a queue that long but draining needs no more)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 10)
    server.bind(("127.0.0.1", 0))
    s = _filtered_busy_prefix(server)
    kept = s.share / 1000
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.10.0.7", 0))
    _fill_until(server, quiet, lambda queue, limit: queue * 2 > limit)  # past half full
    assert s.behind(server, 210) and s.brakes == 1
    assert s.behind(server, 215) and s.brakes == 1  # not again within 10 ms
    assert s.behind(server, 230) and s.brakes == 1  # nor while the queue is no longer
    quiet.sendto(b"x" * 1000, server.getsockname())
    assert s.behind(server, 231) and s.brakes == 2  # longer: halved again
    # nearly full: halved on every look, at most once in 10 ms
    _fill_until(server, quiet, lambda queue, limit: queue * 8 >= limit * 7)
    assert s.behind(server, 242) and s.brakes == 3
    assert s.behind(server, 253) and s.brakes == 4
    server.setblocking(False)
    try:
        while server.recv(2048):
            pass
    except BlockingIOError:
        pass
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.9.0.7", 0))
    for _ in range(4000):
        busy.sendto(b"x" * 40, server.getsockname())
    got = _count_from(server, 0.5).get("127.9.0.7", 0)
    for sock in (server, quiet, busy):
        sock.close()
    expected = 4000 * kept / 16
    sd = (4000 * kept / 16 * (1 - kept / 16)) ** 0.5
    assert abs(got - expected) < 5 * sd + 5, (got, expected, kept)


def test_the_filter_goes_once_shedding_stops():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    s = Shedder(24, 56, server.fileno())
    if not s.kernel_filter:
        pytest.skip("the kernel refused the filter")
    busy = socket.inet_aton("127.9.0.7")
    _window(s, 0, {busy: 1000, _v4(127, 11): 50})
    _window(s, 100, {busy: 1000, _v4(127, 11): 50}, capacity=300)
    s.admit(busy, False, 200)
    assert s.filtered_prefixes == 1
    for w in range(3, 30):
        _window(s, w * WINDOW_MS, {_v4(127, 11): 2}, behind=False, capacity=2)
    assert s.share is None and s.filtered_prefixes == 0
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.9.0.7", 0))
    for _ in range(200):
        sender.sendto(b"x" * 40, server.getsockname())
    assert _count_from(server, 0.5).get("127.9.0.7") == 200
    sender.close()
    server.close()


# ------------------------------------------------------------------------------------- wiring


def test_make_shedder_and_the_config(tmp_path):
    assert RrlConfig().shed is True
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        shedder = make_shedder(RrlConfig(), sock.fileno())
        assert isinstance(shedder, Shedder)
        assert shedder.kernel_filter or os.geteuid() != 0  # IPv6 too, as root
        assert make_shedder(RrlConfig(shed=False), sock.fileno()) is None
    finally:
        sock.close()
    path = tmp_path / "imrs.toml"
    path.write_text("[rrl]\nshed = false\n")
    assert load_config(path).rrl.shed is False
    path.write_text("[rrl]\nshed = 3\n")
    with pytest.raises(ConfigError):
        load_config(path)
