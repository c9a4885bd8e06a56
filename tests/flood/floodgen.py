"""Load generator for the flood tests: DNS from many source addresses in 127.0.0.0/8.

Run it as its own process, pinned to one core, for a bounded time; it prints one JSON object
(what it sent, how fast, what came back) as its last line on stdout:

    cd tests && python -m flood.floodgen flood   --port 5300 --duration 5 --sources 500 --cpu 1
    cd tests && python -m flood.floodgen flood   --schedule 5300:0:4,5301:0:4 --gap 1 --cpu 1
    cd tests && python -m flood.floodgen flood   --schedule 5300+5301:0:4 --cpu 1
    cd tests && python -m flood.floodgen reflect --port 5300 --duration 3 --rate 20500 --cpu 1
    cd tests && python -m flood.floodgen legit   --port 5300 --duration 4 --rate 200 --cpu 1
    cd tests && python -m flood.floodgen tcphold --port 5300 --connections 3000 --duration 30
    cd tests && python -m flood.floodgen flood6  --host ::1 --port 5300 --duration 4 --cpu 1   # in a netns

flood    Spoofed queries, as root: a raw socket (IPPROTO_RAW, so IP_HDRINCL) takes whole
         IPv4+UDP packets with any source address and port (UDP checksum 0, allowed over
         IPv4; the kernel fills in the IP checksum, length and ID).  All packets are built
         before the clock starts, in one buffer with one prebuilt mmsghdr per packet, so the
         send loop is one sendmmsg(2) of up to 1024 packets per call and no Python work per
         packet: one core makes as many packets per second as the kernel's loopback path
         allows.  ``--rate 0`` is as fast as possible, otherwise paced; ``--adaptive`` slows
         down while the kernel drops datagrams on the server's sockets (/proc/net/udp).
         ``--sources N``: N sources in N distinct /24s; ``--distinct-sources N``: cycle
         through N distinct addresses (the source field is rewritten in place between
         passes over the buffer), up to ``--total`` packets.  The answers go to closed ports
         on loopback and are lost.  Without root: ordinary UDP sockets bound to a few 127.x
         addresses (``"spoofed": false`` in the report).
         Names: ``<random>.<random junk label>.`` (NXDOMAIN), ``<random>.<real TLD>.``
         (referrals), in shares set by ``--mix``, with assorted query types, half with EDNS
         (some DO), and malformed or odd messages (header only, cut question, other
         opcodes, QR set, QDCOUNT 2, random bytes).
flood6   The same junk over IPv6 to ::1 from --sources /56s (fd00:<i>::1), through a raw IPv6
         socket (the UDP checksum computed, as IPv6 requires), as fast as it can; only where
         replies to those sources cannot leave the machine (tests/flood/ipv6.py's namespace).
reflect  One source (the "victim"; an ordinary socket on its own address) sends one query
         (default ``. DNSKEY`` with DO and EDNS 1232) at a paced rate and counts the octets
         (DNS payload) sent and received back, the TC=1 answers, and the kernel's drop count
         on its own socket (a drop would make the received count too low: reported).
legit    A well-behaved client on its own address (default 127.77.0.1, its own /24) asks 20
         real-TLD questions (referrals and DS answers, so each rate-limit category sees a
         twentieth of the rate) at a modest paced rate, from ``--source-ports`` sockets in
         turn (a resolver's random ports), and counts the answers (matched by ID, QR set,
         question echoed, RCODE NOERROR, TC clear) that arrive within ``--deadline`` (1 s) of
         their query.
tcphold  Opens ``--connections`` TCP connections, each from its own source address, holds
         them idle, opens again (from new addresses, at up to ``--reopen-rate``/s) those the
         server closes; prints ``READY {...}`` once all were tried, its report on SIGTERM or
         after ``--duration``.

``--schedule PORT:RATE:SECONDS,...`` (flood and legit) runs segments one after the other, with
``--gap`` seconds between, each against its own port: given the same schedule and
``--start-at`` (CLOCK_REALTIME seconds; everything is prepared before it), a flood and a
legitimate client take turns against several servers in step.  A segment's PORT may be
several ports joined by ``+`` (``5300+5301:0:4``): the flood deals its packets out to them in
turn and the legitimate client asks each the same queries at ``--rate``, so that servers are measured side by
side under the same flood; each port is reported in an entry of its own.  Only ever sends to
127.0.0.0/8 (and refuses anything else).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

VLEN = 1024  # packets per sendmmsg (UIO_MAXIOV)
STRIDE = 256  # octets per packet slot in the buffer (a multiple of 4: the source is rewritten in place)
MMSGHDR = 64  # sizeof(struct mmsghdr) on 64-bit Linux

# --------------------------------------------------------------------------- sendmmsg via ctypes


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _libc():
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        raise RuntimeError("floodgen needs 64-bit Linux (sendmmsg)")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    libc.sendmmsg.restype = ctypes.c_int
    return libc


class PacketPool:
    """``count`` packet slots in one buffer, each with its own iovec and mmsghdr, so that
    ``send(fd, i, n)`` hands packets i..i+n-1 to the kernel in one call.

    ``dest`` is a sockaddr for every header (a raw socket needs one), or None for a
    connected socket."""

    def __init__(self, count: int, dest: bytes | None = None):
        self.count = count
        self.libc = _libc()
        self.buf = ctypes.create_string_buffer(count * STRIDE)
        self.iov = (_Iovec * count)()
        self.hdrs = (ctypes.c_char * (count * MMSGHDR))()
        self.dest = ctypes.create_string_buffer(dest, len(dest)) if dest else None
        base = ctypes.addressof(self.buf)
        iov_base = ctypes.addressof(self.iov)
        self.view = memoryview(self.buf).cast("B")
        self.words = self.view.cast("I")  # for rewriting source addresses in place
        self._iov_q = memoryview(self.iov).cast("B").cast("Q")
        hq = memoryview(self.hdrs).cast("B").cast("Q")
        name = ctypes.addressof(self.dest) if self.dest else 0
        namelen = len(dest) if dest else 0
        for i in range(count):
            self._iov_q[2 * i] = base + i * STRIDE
            h = i * 8  # struct msghdr: name@0 namelen@8 iov@16 iovlen@24 control@32 controllen@40 flags@48; msg_len@56
            hq[h] = name
            hq[h + 1] = namelen
            hq[h + 2] = iov_base + i * 16
            hq[h + 3] = 1
        self.hdr_addr = ctypes.addressof(self.hdrs)

    def set(self, i: int, packet: bytes) -> None:
        if len(packet) > STRIDE:
            raise ValueError(f"packet of {len(packet)} octets does not fit a {STRIDE}-octet slot")
        self.view[i * STRIDE : i * STRIDE + len(packet)] = packet
        self._iov_q[2 * i + 1] = len(packet)

    def length(self, i: int) -> int:
        return self._iov_q[2 * i + 1]

    def get(self, i: int) -> bytes:
        return bytes(self.view[i * STRIDE : i * STRIDE + self.length(i)])

    def send(self, fd: int, i: int, n: int) -> int:
        """sendmmsg of packets i..i+n-1; how many went, or -errno."""
        r = self.libc.sendmmsg(fd, self.hdr_addr + i * MMSGHDR, n, 0)
        return r if r >= 0 else -ctypes.get_errno()


# --------------------------------------------------------------------------- DNS and IP wire


TYPES = {"A": 1, "NS": 2, "SOA": 6, "NULL": 10, "MX": 15, "TXT": 16, "AAAA": 28, "DS": 43,
         "DNSKEY": 48, "ANY": 255, "CAA": 257}
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def name_wire(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode()
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def dns_query(qid: int, name: str | bytes, qtype: int, *, edns: int | None = None, do: bool = False,
              flags: int = 0, qdcount: int = 1) -> bytes:
    qname = name if isinstance(name, bytes) else name_wire(name)
    wire = struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, 1 if edns else 0) + qname + struct.pack("!HH", qtype, 1)
    if edns:
        wire += b"\x00" + struct.pack("!HHBBHH", 41, edns, 0, 0, 0x8000 if do else 0, 0)
    return wire


def ip_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    total = 28 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip6_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv6 header and a UDP datagram with its checksum (IPv6 requires one, and the kernel
    does not fill it in for a raw socket)."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!I3xB", length, socket.IPPROTO_UDP)
    checksum = _checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    return (struct.pack("!IHBB", 6 << 28, length, socket.IPPROTO_UDP, 64) + s + d
            + struct.pack("!HHHH", sport, dport, length, checksum) + payload)


def rand_label(rng: random.Random, lo: int = 4, hi: int = 12) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(rng.randint(lo, hi)))


JUNK_TYPES = [1, 28, 16, 15, 255, 10, 6, 2, 43, 48, 257, 99, 65, 64, 13]
REAL_TLDS = ["com", "net", "org", "de", "uk", "nl", "fr", "jp", "br", "ru", "cn", "au", "it", "info", "io", "ca",
             "se", "ch", "pl", "eu", "arpa", "edu", "gov", "in", "es"]


def junk_payload(rng: random.Random, tlds: list[str], mix: tuple[float, ...] = (0.6, 0.3, 0.1)) -> bytes:
    """One flood query: mostly random-subdomain names, some malformed or odd messages.

    ``mix`` = shares of (NXDOMAIN names, referral names, malformed/odd messages)."""
    qid = rng.randrange(65536)
    edns = 1232 if rng.random() < 0.5 else None
    do = edns is not None and rng.random() < 0.5
    r = rng.random() * sum(mix)
    if r < mix[0]:  # NXDOMAIN: x8f3k2.<junk label>.
        return dns_query(qid, f"{rand_label(rng)}.{rand_label(rng, 3, 20)}", rng.choice(JUNK_TYPES), edns=edns, do=do)
    if r < mix[0] + mix[1]:  # referral: <random>.<real tld>.
        return dns_query(qid, f"{rand_label(rng)}.{rng.choice(tlds)}", rng.choice(JUNK_TYPES), edns=edns, do=do)
    kind = rng.randrange(7)
    good = dns_query(qid, f"{rand_label(rng)}.{rand_label(rng)}", 1, edns=edns, do=do)
    if kind == 0:
        return good[:12]  # header only, QDCOUNT 1
    if kind == 1:
        return good[: 12 + rng.randint(1, 6)]  # question cut short
    if kind == 2:
        return struct.pack("!H", qid) + struct.pack("!H", rng.choice([1, 2, 3, 6, 15]) << 11) + good[4:]  # other opcodes
    if kind == 3:
        return good[:2] + b"\x80\x00" + good[4:]  # a "response" (QR set): must be ignored
    if kind == 4:
        return dns_query(qid, f"{rand_label(rng)}.com", 1, qdcount=2)  # QDCOUNT 2, one question
    if kind == 5:
        return dns_query(qid, f"{rand_label(rng)}.net", rng.randrange(65536))  # any type number
    return os.urandom(rng.randint(1, 80))


def _check_dst(host: str) -> None:
    if not host.startswith("127.") and host != "::1":
        raise SystemExit(f"floodgen: refusing to send to {host!r}: loopback (127.0.0.0/8, ::1) only")


def _addr(index: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", (127 << 24) | index))


def spread_sources(n: int, first_octet: int = 100) -> list[str]:
    """n source addresses in n distinct /24s: 127.<100..>.<b>.<random host>, skipping .0 and .255."""
    rng = random.Random(n)
    out = []
    for i in range(n):
        a, b = first_octet + i // 256, i % 256
        if a > 254:
            raise ValueError("too many /24s")
        out.append(f"127.{a}.{b}.{rng.randint(1, 254)}")
    return out


def distinct_source(k: int, first_octet: int = 100, octets: int = 150) -> int:
    """The k-th of many distinct sources, as the 24-bit host part of 127.0.0.0/8: consecutive k
    go to different /24s (127.<first_octet .. first_octet+octets-1>.<b>.x), so a million
    sources cover 38,400 prefixes with 26 or 27 hosts each."""
    prefixes = octets * 256
    p, host = k % prefixes, k // prefixes
    if host > 253:
        raise ValueError("too many distinct sources for the address range")
    return ((first_octet + p // 256) << 16) | ((p % 256) << 8) | (host + 1)


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def wait_until(start_at: float | None) -> None:
    if start_at:
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)


def can_spoof() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
        return True
    except PermissionError:
        return False


# --------------------------------------------------------------------------- modes


def parse_schedule(a: argparse.Namespace) -> list[tuple[tuple[int, ...], int, float]]:
    """[(ports, rate, seconds)]: ``--schedule PORTS:RATE:SECONDS,...`` or one segment from
    ``--port/--rate/--duration``.  Segments follow one another with ``--gap`` seconds between.
    PORTS is one port, or several joined by ``+``: the segment's traffic is dealt out among
    them in turn (packet k to the k-th port, round robin), so that servers on those ports get
    the same flood at the same time, side by side; each is reported apart."""
    if not a.schedule:
        return [((a.port,), a.rate or 0, a.duration)]
    out = []
    for item in a.schedule.split(","):
        ports, rate, seconds = item.split(":")
        out.append((tuple(int(p) for p in ports.split("+")), int(rate), float(seconds)))
    return out


def segment_starts(t0: float, schedule: list[tuple[tuple[int, ...], int, float]], gap: float) -> list[float]:
    starts, t = [], t0
    for _ports, _rate, seconds in schedule:
        starts.append(t)
        t += seconds + gap
    return starts


def _junk_names(a: argparse.Namespace) -> tuple[list[str], tuple[float, ...]]:
    """The flood's real TLDs (--tlds, --tld-file) and its shares of name kinds (--mix)."""
    tlds = REAL_TLDS if not a.tlds else [t for t in a.tlds.split(",") if t]
    if a.tld_file:
        with open(a.tld_file) as fh:
            tlds = fh.read().split()
    return tlds, tuple(float(x) for x in a.mix.split(","))


def run_flood(a: argparse.Namespace) -> dict:
    _check_dst(a.host)
    schedule = parse_schedule(a)
    rng = random.Random(a.seed)
    tlds, mix = _junk_names(a)
    spoof = can_spoof() and not a.no_raw
    distinct = a.distinct_sources
    sources = spread_sources(a.sources) if not distinct else None
    count = a.pool
    if distinct:
        count = min(count, distinct)
    port0 = schedule[0][0][0]
    if spoof:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE (root)
        pool = PacketPool(count, struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0)
                          + socket.inet_aton(a.host) + b"\x00" * 8)
        socks = [sock]
        for i in range(count):
            src = _addr(distinct_source(i)) if distinct else sources[i % len(sources)]
            pool.set(i, ip_udp(src, rng.randint(1024, 65535), a.host, port0, junk_payload(rng, tlds, mix)))
    else:  # no root: ordinary sockets on a few addresses, the pool cycles through them
        if distinct:
            raise SystemExit("floodgen: --distinct-sources needs root (raw socket)")
        socks = []
        for src in sources[: min(len(sources), 16)]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            socks.append(s)
        pool = PacketPool(count)
        for i in range(count):
            pool.set(i, junk_payload(rng, tlds, mix))
    pin(a.cpu)
    wait_until(a.start_at)
    base = time.monotonic()
    starts = segment_starts(base, schedule, a.gap)
    fds = [s.fileno() for s in socks]
    halves = pool.view.cast("H")
    words = pool.words
    step = STRIDE // 4
    total_sent = 0
    passes = 0
    i = 0
    segments = []
    for (ports, rate, seconds), seg_start in zip(schedule, starts):
        port = ports[0]
        if spoof:  # aim the pool at this segment's ports (UDP destination port at octet 22), in turn
            values = [socket.htons(p) for p in ports]
            for j in range(count):
                halves[j * (STRIDE // 2) + 11] = values[j % len(values)]
        elif len(ports) > 1:
            raise SystemExit("floodgen: several ports at once need root (raw socket)")
        else:
            for s in socks:
                s.connect((a.host, port))
        delay = seg_start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.monotonic()
        deadline = t0 + seconds
        total_limit = a.total or 0
        sent = errors = calls = 0
        sock_i = 0
        batch = VLEN if not rate else max(1, min(VLEN, rate // 200))
        # --adaptive: follow what the server reads.  Every 0.1 s, if the kernel dropped datagrams
        # on the server's sockets (its receive buffers were full), slow down by a quarter; if
        # not, speed up by 5 %, up to the rate asked for.
        cur = float(rate)
        next_due = t0
        next_check = t0 + 0.1
        drops_start = [port_drops(p) for p in ports]
        last_drops = drops_start[0]
        read_start = udp_read()
        i_start, passes_start = i, passes
        backoffs = 0
        rate_low = cur
        while True:
            now = time.monotonic()
            if now >= deadline or (total_limit and sent >= total_limit):
                break
            if rate:
                if a.adaptive and now >= next_check:
                    drops = port_drops(port)
                    if drops > last_drops:
                        cur = max(a.min_rate, cur * 0.75)
                        backoffs += 1
                        rate_low = min(rate_low, cur)
                    else:
                        cur = min(float(rate), cur * 1.05)
                    last_drops = drops
                    next_check = now + 0.1
                if next_due > now:
                    time.sleep(min(next_due - now, deadline - now, 0.01))
                    continue
                if a.adaptive:
                    next_due = max(next_due, now - 0.02)  # after a stall, no burst to catch up
            n = min(batch, count - i)
            if total_limit:
                n = min(n, total_limit - sent)
            r = pool.send(fds[sock_i], i, n)
            calls += 1
            if r < 0:
                errors += 1
                if -r not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EINTR):
                    raise OSError(-r, os.strerror(-r))
                if -r == errno.ENOBUFS:
                    time.sleep(0)
                r = 1 if -r == errno.ECONNREFUSED else 0  # refused: that datagram is gone
            sent += r
            i += r
            if rate:
                next_due += r / cur
            if not spoof:
                sock_i = (sock_i + 1) % len(fds)
            if i >= count:
                i = 0
                passes += 1
                if distinct:  # next pass over the buffer: the next `count` distinct sources
                    first = passes * count
                    for j in range(count):
                        words[j * step + 3] = socket.htonl((127 << 24) | distinct_source((first + j) % distinct))
        elapsed = time.monotonic() - t0
        total_sent += sent
        # One entry per port: what was aimed at it (slots k of the pool with k % n its turn),
        # what the kernel dropped on its sockets (their buffers full), and how fast its server
        # read.  With one port: the datagrams read from UDP sockets meanwhile (all sockets, but
        # the flood's server is the only busy one during its segment; the legitimate client's
        # few hundred answers a second count too).  With several: what each port's sockets took
        # in (aimed less dropped: in a flood that outruns the servers, what each read, less the
        # few thousand left in its buffer).
        read = udp_read() - read_start
        first = passes_start * count + i_start
        for n, p in enumerate(ports):
            mine = _turns(first, first + sent, count, n, len(ports))
            dropped = port_drops(p) - drops_start[n]
            entry = {"port": p, "target_rate": rate, "sent": mine, "seconds": round(elapsed, 3),
                     "rate": _per_second(mine, elapsed), "send_errors": errors, "calls": calls,
                     "server_drops": dropped,
                     "read_rate": _per_second(read if len(ports) == 1 else mine - dropped, elapsed)}
            if len(ports) > 1:
                entry.update({"ports": list(ports), "read_rate_all": _per_second(read, elapsed)})
            if a.adaptive:
                entry.update({"adaptive_backoffs": backoffs, "adaptive_rate_low": round(rate_low)})
            segments.append(entry)
    for s in socks:
        s.close()
    out = {"mode": "flood", "spoofed": spoof, "sent": total_sent, "segments": segments, "pool": count,
           "sources": distinct or (len(sources) if spoof else min(len(sources), 16)),
           "distinct_sent": min(total_sent, distinct) if distinct else None}
    if len(segments) == 1:
        out.update({k: segments[0][k] for k in ("seconds", "rate", "send_errors", "calls")})
    return out


def run_flood6(a: argparse.Namespace) -> dict:
    """The junk flood over IPv6, to ::1 only (in the network namespace tests/flood/ipv6.py
    makes): a raw IPv6 socket (as root) sends --sources sources, each in its own /56
    (fd00:<i>::1), as fast as it can for --duration seconds, in sendmmsg calls of prebuilt
    packets as flood does."""
    if a.host != "::1":
        raise SystemExit(f"floodgen: refusing to send to {a.host!r}: ::1 only")
    rng = random.Random(a.seed)
    tlds, mix = _junk_names(a)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE (root)
    count = a.pool
    # struct sockaddr_in6 of ::1: family, port 0 (a raw socket's), flow info, address, scope
    pool = PacketPool(count, struct.pack("=H", socket.AF_INET6) + bytes(6)
                      + socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    for i in range(count):
        src = f"fd00:{i % a.sources + 1:x}::1"
        pool.set(i, ip6_udp(src, rng.randint(1024, 65535), "::1", a.port, junk_payload(rng, tlds, mix)))
    pin(a.cpu)
    wait_until(a.start_at)
    fd, sent, errors, i = sock.fileno(), 0, 0, 0
    t0 = time.monotonic()
    deadline = t0 + a.duration
    while time.monotonic() < deadline:
        n = pool.send(fd, i, min(VLEN, count - i))
        if n > 0:
            sent += n
            i = (i + n) % count
        else:
            errors += 1
    seconds = time.monotonic() - t0
    sock.close()
    return {"mode": "flood6", "sent": sent, "seconds": round(seconds, 3), "rate": _per_second(sent, seconds),
            "send_errors": errors}


def _per_second(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds else 0


def _turns(start: int, end: int, count: int, n: int, k: int) -> int:
    """Packets n-th in turn (slot % k == n) among the pool positions start..end-1 (positions
    run on over passes: slot = position % count)."""
    def before(pos: int) -> int:  # such packets at positions 0..pos-1
        full, rest = divmod(pos, count)
        per_pass = (count - n + k - 1) // k if n < count else 0
        partial = (rest - n + k - 1) // k if n < rest else 0
        return full * per_pass + partial

    return before(end) - before(start)


def udp_read() -> int:
    """Datagrams read from UDP sockets on this machine since boot (/proc/net/snmp, Udp
    InDatagrams, which the kernel counts as an application receives them)."""
    with open("/proc/net/snmp") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:]))["InDatagrams"])


def port_drops(port: int) -> int:
    """Datagrams the kernel dropped (receive buffer full) on the UDP sockets bound to ``port``
    (any address): the last field of /proc/net/udp, summed over the sockets (one per worker
    with SO_REUSEPORT).  Per socket, so other traffic on the machine does not count."""
    total = 0
    want = f":{port:04X}"
    with open("/proc/net/udp") as fh:
        for line in fh:
            f = line.split()
            if len(f) > 12 and f[1].endswith(want):
                total += int(f[-1])
    return total


def _udp_drops(sock: socket.socket) -> int | None:
    """The kernel's count of datagrams dropped on this socket (last field of /proc/net/udp)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    try:
        with open("/proc/net/udp") as fh:
            for line in fh:
                f = line.split()
                if len(f) > 12 and f[9] == inode:
                    return int(f[-1])
    except OSError:
        pass
    return None


def run_reflect(a: argparse.Namespace) -> dict:
    _check_dst(a.host)
    qtype = TYPES[a.qtype]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind((a.source, 0))
    sock.connect((a.host, a.port))
    sock.setblocking(False)
    count = 4096
    pool = PacketPool(count)
    rng = random.Random(a.seed)
    for i in range(count):
        pool.set(i, dns_query(rng.randrange(65536), a.qname, qtype, edns=a.edns or None, do=a.do))
    by_id = {pool.get(i)[:2]: i for i in range(count)}
    fd = sock.fileno()
    buf = bytearray(65536)
    pin(a.cpu)
    wait_until(a.start_at)
    rate = a.rate
    batch = max(1, min(256, rate // 400))
    sent = sent_bytes = recv_n = recv_bytes = tc = full = 0
    sizes: dict[int, int] = {}
    tc_query = None
    i = 0
    t0 = time.monotonic()
    deadline = t0 + a.duration

    def drain() -> None:
        nonlocal recv_n, recv_bytes, tc, full, tc_query
        while True:
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            recv_n += 1
            recv_bytes += n
            sizes[n] = sizes.get(n, 0) + 1
            if n >= 4 and buf[2] & 0x02:
                tc += 1
                if tc_query is None and bytes(buf[:2]) in by_id:
                    tc_query = pool.get(by_id[bytes(buf[:2])]).hex()
            else:
                full += 1

    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        due = t0 + sent / rate
        if due > now:
            drain()
            if due - time.monotonic() > 0.0005:
                select.select([sock], [], [], min(due - time.monotonic(), 0.002))
            continue
        n = min(batch, count - i)
        r = pool.send(fd, i, n)
        if r < 0:
            if -r in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR, errno.ECONNREFUSED):
                drain()
                continue
            raise OSError(-r, os.strerror(-r))
        for j in range(i, i + r):
            sent_bytes += pool.length(j)
        sent += r
        i = (i + r) % count
        drain()
    elapsed = time.monotonic() - t0
    end = time.monotonic() + a.linger  # answers still on their way
    while time.monotonic() < end:
        drain()
        select.select([sock], [], [], 0.05)
    drain()
    drops = _udp_drops(sock)
    sock.close()
    common = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {"mode": "reflect", "sent": sent, "sent_bytes": sent_bytes, "seconds": round(elapsed, 3),
            "rate": round(sent / elapsed) if elapsed else 0, "received": recv_n, "received_bytes": recv_bytes,
            "tc": tc, "full": full, "drops": drops, "tc_query": tc_query, "sizes": common,
            "amplification": round(recv_bytes / sent_bytes, 4) if sent_bytes else None}


LEGIT_QUESTIONS = [
    ("com", "NS"), ("net", "NS"), ("org", "NS"), ("www.example.de", "A"), ("org", "DS"),
    ("www.bbc.co.uk", "AAAA"), ("nl", "DS"), ("www.wikipedia.org", "A"), ("example.jp", "MX"),
    ("fr", "NS"), ("www.google.com", "A"), ("mail.example.net", "MX"), ("se", "DS"), ("ch", "NS"),
    ("www.example.it", "A"), ("example.pl", "NS"), ("eu", "DS"), ("www.example.br", "AAAA"),
    ("www.example.ca", "A"), ("example.au", "TXT"),
]


class _LegitSegment:
    """One segment of the legitimate client against one server: its sockets (one source port
    each, used in turn), queries in flight, counts."""

    def __init__(self, socks: list[socket.socket], deadline: float):
        self.socks = socks
        self.deadline = deadline
        self.pending: dict[int, tuple[float, bytes]] = {}
        self.sent = 0
        self.c = {"answered": 0, "late": 0, "tc": 0, "error_rcode": 0, "bad": 0}
        self.latencies: list[float] = []

    def send(self, wire: bytes) -> None:
        self.pending[(wire[0] << 8) | wire[1]] = (time.monotonic(), wire)
        sock = self.socks[self.sent % len(self.socks)]
        self.sent += 1
        try:
            sock.send(wire)
        except (BlockingIOError, ConnectionRefusedError):
            pass

    def drain(self, buf: bytearray) -> None:
        for sock in self.socks:
            self._drain(sock, buf)

    def _drain(self, sock: socket.socket, buf: bytearray) -> None:
        c = self.c
        now = time.monotonic()
        while True:
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            if n < 12:
                c["bad"] += 1
                continue
            entry = self.pending.pop((buf[0] << 8) | buf[1], None)
            if entry is None or not buf[2] & 0x80:
                c["bad"] += 1
                continue
            t_sent, wire = entry
            question_end = wire.index(b"\x00", 12) + 5
            if buf[2] & 0x02:
                c["tc"] += 1
            elif (buf[3] & 0x0F) != 0:
                c["error_rcode"] += 1
            elif bytes(buf[12:question_end]).lower() != wire[12:question_end].lower():
                c["bad"] += 1
            elif now - t_sent > self.deadline:
                c["late"] += 1
            else:
                c["answered"] += 1
                self.latencies.append(now - t_sent)

    def percentile_ms(self, p: float) -> float | None:
        lat = sorted(self.latencies)
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None


def run_legit(a: argparse.Namespace) -> dict:
    """A well-behaved client: paced queries, answers matched by ID within the deadline.

    With a schedule, it asks during each flood segment (``--margin`` seconds after its start
    until as long before its end) and reports each segment apart."""
    _check_dst(a.host)
    schedule = parse_schedule(a)
    windows = [(ports, seconds - 2 * a.margin) for ports, _rate, seconds in schedule]
    n_total = sum(int(a.rate * w) + 1 for _p, w in windows)
    if n_total > 65536:
        raise SystemExit("legit: too many queries for unique IDs")
    rng = random.Random(a.seed)
    ids = list(range(n_total))
    rng.shuffle(ids)
    wires = []
    for k, qid in enumerate(ids):
        name, qtype = LEGIT_QUESTIONS[k % len(LEGIT_QUESTIONS)]
        wires.append(dns_query(qid, name, TYPES[qtype], edns=1232 if k % 2 else None, do=bool(k % 4 == 1)))
    buf = bytearray(65536)
    pin(a.cpu)
    wait_until(a.start_at)
    starts = segment_starts(time.monotonic(), schedule, a.gap)
    segments = []
    next_wire = 0
    for (ports, window), seg_start in zip(windows, starts):
        # --source-ports sockets per server port (several ports: the servers side by side, each
        # asked the same query at once, at --rate, whose turn is first changing every time);
        # each reported apart
        segs = []
        for port in ports:
            own = []
            for _ in range(a.source_ports):
                sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((a.source, 0))
                sock.connect((a.host, port))
                sock.setblocking(False)
                own.append(sock)
            segs.append(_LegitSegment(own, a.deadline))
        socks = [sock for seg in segs for sock in seg.socks]
        delay = seg_start + a.margin - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n_seg = int(a.rate * window) + 1
        t0 = time.monotonic()
        sent = 0
        while sent < n_seg:
            now = time.monotonic()
            due = t0 + sent / a.rate
            if due > now:
                for seg in segs:
                    seg.drain(buf)
                select.select(socks, [], [], max(0.0, min(due - time.monotonic(), 0.01)))
                continue
            wire = wires[next_wire]
            next_wire += 1
            first = sent % len(segs)
            for seg in segs[first:] + segs[:first]:
                seg.send(wire)
            sent += 1
            for seg in segs:
                seg.drain(buf)
        elapsed = time.monotonic() - t0
        end = time.monotonic() + a.deadline + 0.1
        while time.monotonic() < end and any(seg.pending for seg in segs):
            select.select(socks, [], [], 0.05)
            for seg in segs:
                seg.drain(buf)
        for port, seg in zip(ports, segs):
            seg.drain(buf)
            for sock in seg.socks:
                sock.close()
            segments.append({"port": port, "sent": seg.sent, **seg.c,
                             "share": round(seg.c["answered"] / seg.sent, 4) if seg.sent else 0.0,
                             "unanswered": len(seg.pending), "seconds": round(elapsed, 3),
                             "rate": round(seg.sent / elapsed) if elapsed else 0,
                             "latency_ms_p50": seg.percentile_ms(0.5), "latency_ms_p99": seg.percentile_ms(0.99)})
    out = {"mode": "legit", "segments": segments}
    if len(segments) == 1:
        out.update(segments[0])
    return out


def run_tcphold(a: argparse.Namespace) -> dict:
    """Open ``--connections`` TCP connections, each from its own source address, and hold them
    idle (nothing is ever sent) for ``--duration`` seconds.  Prints ``READY {json}`` once every
    connection has been tried; connections the server closes are opened again (from a new
    address) at up to ``--reopen-rate`` per second, to keep the pressure on."""
    import resource

    _check_dst(a.host)
    want = a.connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    pin(a.cpu)
    ep = select.epoll()
    conns: dict[int, tuple[socket.socket, float, bool]] = {}  # fd -> (socket, connect started, established)
    c = {"attempts": 0, "established": 0, "closed_by_server": 0, "connect_failed": 0, "connect_timeouts": 0,
         "reopened": 0, "bind_failed": 0}
    next_source = 0
    closed_since: list[float] = []  # when a connection was lost (to reopen)

    def open_one() -> bool:
        nonlocal next_source
        src = _addr(distinct_source(next_source, first_octet=20, octets=30))
        next_source += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((src, 0))
        except OSError:
            c["bind_failed"] += 1
            s.close()
            return False
        c["attempts"] += 1
        err = s.connect_ex((a.host, a.port))
        if err not in (0, errno.EINPROGRESS):
            c["connect_failed"] += 1
            s.close()
            return False
        conns[s.fileno()] = (s, time.monotonic(), False)
        ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP)
        return True

    def drop(fd: int) -> None:
        s, _t, _ok = conns.pop(fd)
        ep.unregister(fd)
        s.close()

    def poll(timeout: float) -> None:
        for fd, ev in ep.poll(timeout):
            if fd not in conns:
                continue
            s, t, ok = conns[fd]
            if not ok:
                if ev & (select.EPOLLERR | select.EPOLLHUP) or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    c["connect_failed"] += 1
                    drop(fd)
                    closed_since.append(time.monotonic())
                    continue
                if ev & select.EPOLLOUT:
                    conns[fd] = (s, t, True)
                    c["established"] += 1
                    ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP)
                    ok = True
            if ok and ev & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP):
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # EOF or reset: the server let go of it
                    c["closed_by_server"] += 1
                    drop(fd)
                    closed_since.append(time.monotonic())

    def expire_connects() -> None:
        now = time.monotonic()
        for fd, (s, t, ok) in list(conns.items()):
            if not ok and now - t > a.connect_timeout:
                c["connect_timeouts"] += 1
                drop(fd)
                closed_since.append(now)

    def open_count() -> int:
        return sum(1 for _s, _t, ok in conns.values() if ok)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))  # stop holding, report
    t_begin = time.monotonic()
    wait_until(a.start_at)
    t0 = time.monotonic()
    while c["attempts"] < a.connections and time.monotonic() - t0 < a.duration:
        in_flight = sum(1 for _s, _t, ok in conns.values() if not ok)
        for _ in range(max(0, a.burst - in_flight)):
            if c["attempts"] >= a.connections:
                break
            open_one()
        poll(0.01)
        expire_connects()
    settle = time.monotonic() + a.connect_timeout
    while any(not ok for _s, _t, ok in conns.values()) and time.monotonic() < settle:
        poll(0.05)
        expire_connects()
    poll(0.2)
    ready = {"open": open_count(), "seconds_to_open": round(time.monotonic() - t0, 3), **c}
    print("READY " + json.dumps(ready), flush=True)
    peak = low = open_count()
    deadline = t0 + a.duration
    tokens = 0.0
    last = time.monotonic()
    samples = []
    next_sample = time.monotonic()
    while time.monotonic() < deadline and not stop:
        poll(0.02)
        expire_connects()
        now = time.monotonic()
        if a.reopen_rate:
            tokens = min(tokens + (now - last) * a.reopen_rate, a.reopen_rate)
            while closed_since and tokens >= 1:
                closed_since.pop(0)
                tokens -= 1
                if open_one():
                    c["reopened"] += 1
        last = now
        n = open_count()
        peak, low = max(peak, n), min(low, n)
        if now >= next_sample:
            samples.append((round(now - t0, 2), n))
            next_sample = now + 0.5
    out = {"mode": "tcphold", "ready": ready, "open_at_end": open_count(), "open_peak": peak, "open_low": low,
           "seconds": round(time.monotonic() - t_begin, 3), **c, "samples": samples}
    for s, _t, _ok in list(conns.values()):
        s.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flood.floodgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["flood", "flood6", "reflect", "legit", "tcphold"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--schedule", default="", help="flood/legit: PORT:RATE:SECONDS,... segments one after another")
    ap.add_argument("--gap", type=float, default=1.0, help="flood/legit: seconds between schedule segments")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=0, help="packets/s (flood: 0 = as fast as possible)")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this core")
    ap.add_argument("--start-at", type=float, default=None, help="CLOCK_REALTIME second to start at")
    ap.add_argument("--seed", type=int, default=1)
    # flood
    ap.add_argument("--sources", type=int, default=500, help="flood: sources, each in its own /24")
    ap.add_argument("--distinct-sources", type=int, default=0, help="flood: cycle through this many addresses")
    ap.add_argument("--total", type=int, default=0, help="flood: stop after this many packets")
    ap.add_argument("--pool", type=int, default=65536, help="flood: packets prebuilt")
    ap.add_argument("--tlds", default="", help="flood: comma-separated real TLDs for <random>.<tld> names")
    ap.add_argument("--tld-file", default="", help="flood: file with TLDs (whitespace-separated)")
    ap.add_argument("--no-raw", action="store_true", help="flood: ordinary sockets even as root")
    ap.add_argument("--mix", default="0.6,0.3,0.1", help="flood: shares of NXDOMAIN names, referral names, malformed")
    ap.add_argument("--adaptive", action="store_true",
                    help="flood: slow down while the server's sockets drop datagrams (--rate is the ceiling)")
    ap.add_argument("--min-rate", type=float, default=5000.0, help="flood: --adaptive never goes below this")
    # reflect / legit
    ap.add_argument("--source", default=None, help="reflect/legit: own address")
    ap.add_argument("--qname", default=".")
    ap.add_argument("--qtype", default="DNSKEY", choices=sorted(TYPES))
    ap.add_argument("--edns", type=int, default=1232)
    ap.add_argument("--do", type=int, default=1)
    ap.add_argument("--linger", type=float, default=1.0, help="reflect: seconds to keep reading after the last query")
    ap.add_argument("--deadline", type=float, default=1.0, help="legit: an answer counts if it comes within this")
    ap.add_argument("--source-ports", type=int, default=1,
                    help="legit: sockets (source ports) per server, used in turn, as a resolver spreads its queries")
    ap.add_argument("--margin", type=float, default=0.5, help="legit: start this long after a segment begins, end as long before")
    # tcphold
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--burst", type=int, default=256, help="tcphold: connects in flight at once")
    ap.add_argument("--connect-timeout", type=float, default=3.0)
    ap.add_argument("--reopen-rate", type=float, default=200.0, help="tcphold: reopen closed connections at up to this rate")
    a = ap.parse_args(argv)
    if not a.port and not a.schedule:
        ap.error("--port or --schedule is required")
    a.do = bool(a.do)
    if a.mode == "flood":
        out = run_flood(a)
    elif a.mode == "flood6":
        out = run_flood6(a)
    elif a.mode == "tcphold":
        out = run_tcphold(a)
    elif a.mode == "reflect":
        a.source = a.source or "127.66.0.1"
        a.rate = a.rate or 25000
        out = run_reflect(a)
    else:
        a.source = a.source or "127.77.0.1"
        a.rate = a.rate or 200
        out = run_legit(a)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
