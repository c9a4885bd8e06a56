"""Packet generators, client-side size limits and reply checks for tests/test_fuzz.py.

Everything here is deterministic given a ``random.Random`` (no wall-clock or os.urandom
input) and talks to 127.0.0.1 only.

* :class:`PacketFactory` -- random bytes, well-formed queries (every qtype, odd classes,
  CHAOS names, EDNS with assorted payload sizes/options), mutated queries (header bits,
  counts, compression pointers and loops, label lengths > 63, names > 255 octets, broken
  OPT records, several OPTs, OPT in the wrong section, TSIG-looking records, trailing
  garbage, bit flips, truncation, insertion, deletion) and truncation series.
* :func:`client_udp_limit` -- the largest UDP reply the client allowed, from the client's
  own view of its packet (512, or max(512, min(payload, 1232)) with a valid OPT record).
* :class:`Checker` -- checks one reply (parses with dnspython, QR=1, ID echoed, size),
  collects counts and failure examples.
* :class:`UdpDriver` -- a window of packets in flight on one connected UDP socket, closed
  by a "barrier" ``. SOA`` query: the server handles a socket's datagrams in order, so
  once the barrier's reply is in, every reply to the window is in as well.
* :func:`run_tcp_scripts` -- many TCP connections at once (one selector), each sending a
  scripted byte stream in timed chunks and reading framed replies.
"""

from __future__ import annotations

import collections
import errno
import itertools
import random
import select
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.name
import dns.rcode

HOST = "127.0.0.1"

QR, AA, TC, RD, RA, Z, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0040, 0x0020, 0x0010

T_A, T_NS, T_CNAME, T_SOA, T_NULL, T_PTR, T_MX, T_TXT = 1, 2, 5, 6, 10, 12, 15, 16
T_AAAA, T_SRV, T_DS, T_RRSIG, T_NSEC, T_DNSKEY, T_NSEC3 = 28, 33, 43, 46, 47, 48, 50
T_OPT, T_ZONEMD, T_SVCB, T_HTTPS, T_TKEY, T_TSIG = 41, 63, 64, 65, 249, 250
T_IXFR, T_AXFR, T_MAILB, T_MAILA, T_ANY, T_CAA = 251, 252, 253, 254, 255, 257

C_IN, C_CH, C_HS, C_NONE, C_ANY = 1, 3, 4, 254, 255

COMMON_QTYPES = [
    0, T_A, T_NS, T_CNAME, T_SOA, T_NULL, T_PTR, T_MX, T_TXT, T_AAAA, T_SRV, T_DS, T_RRSIG,
    T_NSEC, T_DNSKEY, T_NSEC3, T_OPT, T_ZONEMD, T_SVCB, T_HTTPS, T_TKEY, T_TSIG, T_IXFR,
    T_AXFR, T_MAILB, T_MAILA, T_ANY, T_CAA, 32768, 32769, 65280, 65534, 65535,
]
EDNS_PAYLOADS = [0, 1, 511, 512, 513, 1220, 1231, 1232, 1233, 1280, 1400, 1452, 4096, 65535]
CHAOS_NAMES = ["version.bind.", "hostname.bind.", "id.server.", "version.server.",
               "authors.bind.", "fortune.bind.", "bind.", "server.", "."]
UDP_LIMIT_CAP = 1232  # the server's edns-buffer-size (set in the test's configuration)
SOA_BARRIER_QNAME = b"\x00"


# ---------------------------------------------------------------------------------------
# wire building blocks


def name_wire(text: str) -> bytes:
    return dns.name.from_text(text).to_wire()


def labels_wire(labels: list[bytes], end: bytes = b"\x00") -> bytes:
    return b"".join(bytes([len(lab)]) + lab for lab in labels) + end


def header(qid: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return struct.pack("!HHHHHH", qid & 0xFFFF, flags & 0xFFFF, qd & 0xFFFF, an & 0xFFFF, ns & 0xFFFF, ar & 0xFFFF)


def rr(owner: bytes, rtype: int, rclass: int, ttl: int, rdata: bytes, rdlen: int | None = None) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl & 0xFFFFFFFF, len(rdata) if rdlen is None else rdlen) + rdata


def opt_rr(payload: int = 1232, version: int = 0, flags: int = 0, rdata: bytes = b"", ext_rcode: int = 0,
           owner: bytes = b"\x00", rdlen: int | None = None) -> bytes:
    return owner + struct.pack("!HHBBHH", T_OPT, payload, ext_rcode, version, flags,
                               len(rdata) if rdlen is None else rdlen) + rdata


def edns_option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def soa_query(qid: int, qname: bytes = SOA_BARRIER_QNAME) -> bytes:
    return header(qid, 0, 1, 0, 0, 0) + qname + struct.pack("!HH", T_SOA, C_IN)


def random_case(rng: random.Random, wire: bytes) -> bytes:
    return bytes(c ^ 0x20 if (65 <= c <= 90 or 97 <= c <= 122) and rng.random() < 0.5 else c for c in wire)


def zone_names(zonefile: Path) -> tuple[list[str], list[str]]:
    """(delegated TLDs, name server host names) of a root zone master file."""
    tlds: set[str] = set()
    hosts: set[str] = set()
    with open(zonefile, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            f = line.split()
            if len(f) >= 5 and f[3] == "NS":
                if f[0] != ".":
                    tlds.add(f[0])
                hosts.add(f[4])
    return sorted(tlds), sorted(hosts)


# ---------------------------------------------------------------------------------------
# the client's view of its own packet


def _skip_name(wire: bytes, pos: int) -> int:
    end = len(wire)
    while True:
        if pos >= end:
            raise ValueError("name past end")
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise ValueError("pointer past end")
            return pos + 2
        if length & 0xC0:
            raise ValueError("label type")
        pos += 1 + length


def client_udp_limit(wire: bytes) -> int:
    """512 unless the first additional record is a valid OPT (root owner, complete rdata,
    well-formed option list); then max(512, min(payload, 1232))."""
    try:
        if len(wire) < 12:
            return 512
        qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
        if ar == 0:
            return 512
        end = len(wire)
        pos = 12
        for _ in range(qd):
            pos = _skip_name(wire, pos) + 4
            if pos > end:
                return 512
        for _ in range(an + ns):
            pos = _skip_name(wire, pos)
            if pos + 10 > end:
                return 512
            pos += 10 + struct.unpack_from("!H", wire, pos + 8)[0]
            if pos > end:
                return 512
        if pos + 11 > end or wire[pos] != 0:
            return 512
        rtype, payload, _ext, _version, _flags, rdlen = struct.unpack_from("!HHBBHH", wire, pos + 1)
        if rtype != T_OPT:
            return 512
        cur, opt_end = pos + 11, pos + 11 + rdlen
        if opt_end > end:
            return 512
        while cur < opt_end:
            if cur + 4 > opt_end:
                return 512
            cur += 4 + struct.unpack_from("!H", wire, cur + 2)[0]
        if cur != opt_end:
            return 512
        return max(512, min(payload, UDP_LIMIT_CAP))
    except (ValueError, struct.error, IndexError):
        return 512


def question_of(wire: bytes) -> bytes | None:
    """The first question (name + type + class) exactly as sent, if it is uncompressed."""
    try:
        end = _skip_name(wire, 12)
    except (ValueError, IndexError):
        return None
    if wire[end - 1] != 0 or end + 4 > len(wire):
        return None
    return wire[12 : end + 4]


# ---------------------------------------------------------------------------------------
# packets


@dataclass
class Pkt:
    wire: bytes
    kind: str
    well_formed: bool = False  # a plain query: the server must answer it

    @property
    def answerable(self) -> bool:
        """The server is expected to answer (a query-shaped packet of a full header)."""
        return len(self.wire) >= 12 and not self.wire[2] & 0x80


class PacketFactory:
    """Seeded generator of odd, broken and well-formed DNS queries."""

    def __init__(self, rng: random.Random, tlds: list[str], hosts: list[str]):
        self.rng = rng
        self.tlds = tlds or ["com.", "net.", "org."]
        self.hosts = hosts or ["a.root-servers.net."]
        self._cache: dict[str, bytes] = {}
        self.struct_mutators = [
            self.m_flags, self.m_flags, self.m_counts, self.m_counts, self.m_qname_pointer,
            self.m_qname_pointer, self.m_label_len, self.m_long_name, self.m_edns, self.m_edns,
            self.m_edns, self.m_opt_elsewhere, self.m_multi_opt, self.m_tsig, self.m_trailing,
            self.m_extra_question, self.m_records, self.m_record_pointers, self.m_qtype_class,
        ]
        self.byte_mutators = [
            self.b_flip, self.b_flip, self.b_replace, self.b_replace, self.b_truncate,
            self.b_insert, self.b_delete, self.b_duplicate,
        ]

    # -- names ----------------------------------------------------------------------------
    def _wire(self, text: str) -> bytes:
        w = self._cache.get(text)
        if w is None:
            w = self._cache[text] = name_wire(text)
        return w

    def random_label(self, lo: int = 1, hi: int = 20, binary: bool = False) -> bytes:
        n = self.rng.randint(lo, hi)
        if binary:
            return bytes(self.rng.getrandbits(8) for _ in range(n))
        alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
        return bytes(self.rng.choice(alphabet) for _ in range(n))

    def qname(self) -> bytes:
        r = self.rng.random()
        rng = self.rng
        if r < 0.15:
            w = b"\x00"
        elif r < 0.35:
            w = self._wire(rng.choice(self.tlds))
        elif r < 0.50:
            w = labels_wire([self.random_label() for _ in range(rng.randint(1, 3))]) [:-1] + self._wire(rng.choice(self.tlds))
        elif r < 0.60:
            w = self._wire(rng.choice(self.hosts))
        elif r < 0.73:
            w = labels_wire([self.random_label(1, 30) for _ in range(rng.randint(1, 2))])
        elif r < 0.78:
            w = self._wire(rng.choice("abcdefghijklm") + ".root-servers.net.")
        elif r < 0.85:
            w = labels_wire([self.random_label(1, 63, binary=True) for _ in range(rng.randint(1, 4))])
        elif r < 0.89:
            w = self.max_name(255 - rng.choice([0, 0, 1, 2, 10]))
        elif r < 0.92:
            w = labels_wire([bytes([rng.choice(b"ab0")]) for _ in range(rng.randint(60, 127))])
        elif r < 0.95:
            w = self._wire(rng.choice(CHAOS_NAMES))
        else:
            w = self._wire(rng.choice(["arpa.", "root-servers.net.", "in-addr.arpa.", "xn--p1ai.", "nic.", "example."]))
        if rng.random() < 0.3:
            w = random_case(rng, w)
        return w

    def max_name(self, total: int) -> bytes:
        """An uncompressed name of ``total`` octets (2 <= total <= 255, or more)."""
        labels = []
        left = total - 1
        while left > 0:
            n = min(63, left - 1)
            if n < 1:  # a single octet left over cannot hold a label: shorten the last one
                labels[-1] = labels[-1][:-1]
                n = 1
            labels.append(bytes(self.rng.choice(b"abcdefghij") for _ in range(n)))
            left -= n + 1
        return labels_wire(labels)

    def long_name(self) -> bytes:
        """A name over 255 octets (uncompressed)."""
        return self.max_name(self.rng.choice([256, 257, 258, 300, 400, 1000]))

    def qtype(self) -> int:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(COMMON_QTYPES)
        return self.rng.randrange(65536)

    def qclass(self) -> int:
        r = self.rng.random()
        if r < 0.70:
            return C_IN
        if r < 0.80:
            return C_CH
        if r < 0.84:
            return C_HS
        if r < 0.88:
            return C_NONE
        if r < 0.93:
            return C_ANY
        return self.rng.randrange(65536)

    # -- EDNS -----------------------------------------------------------------------------
    def good_options(self) -> bytes:
        rng = self.rng
        out = []
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3])):
            k = rng.random()
            if k < 0.35:
                out.append(edns_option(3, b"" if rng.random() < 0.8 else self.random_label(1, 8)))  # NSID
            elif k < 0.55:
                out.append(edns_option(10, bytes(rng.getrandbits(8) for _ in range(rng.choice([8, 16, 24, 40])))))  # COOKIE
            elif k < 0.65:
                out.append(edns_option(12, b"\x00" * rng.randint(0, 300)))  # padding
            elif k < 0.75:
                out.append(edns_option(8, struct.pack("!HBB", 1, 24, 0) + bytes([192, 0, 2])))  # ECS
            elif k < 0.85:
                out.append(edns_option(15, struct.pack("!H", rng.randrange(30))))  # EDE (odd in a query)
            else:
                code = rng.randrange(65536)
                if code in (10, 11):  # COOKIE and keepalive have lengths of their own (above)
                    code = 65001
                out.append(edns_option(code, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))))
        return b"".join(out)

    def good_opt(self, version: int | None = None) -> bytes:
        rng = self.rng
        payload = rng.choice(EDNS_PAYLOADS) if rng.random() < 0.8 else rng.randrange(65536)
        if version is None:
            version = 0 if rng.random() < 0.9 else rng.choice([1, 2, 255, rng.randrange(256)])
        flags = 0x8000 if rng.random() < 0.6 else 0
        if rng.random() < 0.05:
            flags |= rng.randrange(0x8000)  # undefined EDNS flag bits (Z)
        return opt_rr(payload, version, flags, self.good_options())

    def bad_opt(self) -> bytes:
        rng = self.rng
        payload = rng.choice(EDNS_PAYLOADS)
        flags = rng.choice([0, 0x8000, rng.randrange(65536)])
        k = rng.randrange(9)
        if k == 0:  # option length runs past the OPT rdata
            rdata = struct.pack("!HH", 3, rng.randint(1, 200)) + b"x" * rng.randint(0, 3)
            return opt_rr(payload, 0, flags, rdata)
        if k == 1:  # 1..3 octets left over after the options
            return opt_rr(payload, 0, flags, self.good_options() + b"\x00\x03\x00"[: rng.randint(1, 3)])
        if k == 2:  # rdlen runs past the end of the message
            rdata = self.good_options()
            return opt_rr(payload, 0, flags, rdata, rdlen=len(rdata) + rng.randint(1, 1000))
        if k == 3:  # rdlen shorter than the options
            rdata = edns_option(3, b"") + edns_option(10, b"12345678")
            return opt_rr(payload, 0, flags, rdata, rdlen=rng.randint(0, len(rdata) - 1))
        if k == 4:  # not the root as owner
            return opt_rr(payload, 0, flags, self.good_options(), owner=self.qname() if rng.random() < 0.5 else b"\xc0\x0c")
        if k == 5:  # extended rcode bits set by the client
            return opt_rr(payload, 0, flags, self.good_options(), ext_rcode=rng.randint(1, 255))
        if k == 6:  # cut short: fewer than the 11 fixed octets
            return opt_rr(payload, 0, flags)[: rng.randint(1, 10)]
        if k == 7:  # huge option list of NSIDs
            return opt_rr(payload, 0, flags, edns_option(3, b"") * rng.randint(50, 300))
        return opt_rr(payload, rng.randrange(256), flags, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 30))))

    def tsig_record(self) -> bytes:
        rng = self.rng
        owner = self._wire(rng.choice(["key.", "tsig-key.example.", "hmac."])) if rng.random() < 0.8 else b"\xc0\x0c"
        alg = self._wire(rng.choice(["hmac-sha256.", "hmac-md5.sig-alg.reg.int.", "gss-tsig.", "x."]))
        mac = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 16, 32, 64])))
        other = b"" if rng.random() < 0.8 else b"\x00\x00" + bytes(6)
        rdata = alg + struct.pack("!HIH", 0, rng.getrandbits(32), 300) + struct.pack("!H", len(mac)) + mac \
            + struct.pack("!HHH", rng.getrandbits(16), rng.choice([0, 16, 17, 18, 22]), len(other)) + other
        if rng.random() < 0.2:
            rdata = rdata[: rng.randrange(len(rdata) + 1)]
        return rr(owner, T_TSIG, rng.choice([C_ANY, C_ANY, C_IN]), 0, rdata)

    def soa_record(self, owner: bytes = b"\xc0\x0c") -> bytes:
        rdata = self._wire("a.root-servers.net.") + self._wire("nstld.verisign-grs.com.") \
            + struct.pack("!IIIII", self.rng.choice([2026082200, 2026082201, 1, 0xFFFFFFFF]), 1800, 900, 604800, 86400)
        return rr(owner, T_SOA, C_IN, 86400, rdata)

    def random_record(self) -> bytes:
        rng = self.rng
        owner = self.qname() if rng.random() < 0.6 else rng.choice([b"\x00", b"\xc0\x0c", b"\xc0\x00", b"\xff\xff"])
        rtype = rng.choice(COMMON_QTYPES) if rng.random() < 0.7 else rng.randrange(65536)
        rdata = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 4, 16, rng.randint(0, 300)])))
        rdlen = None if rng.random() < 0.85 else rng.randrange(65536)
        return rr(owner, rtype, self.qclass(), rng.getrandbits(32), rdata, rdlen)

    # -- whole messages -------------------------------------------------------------------
    def parts(self) -> dict:
        """The pieces of a well-formed query; assemble() turns them into wire."""
        rng = self.rng
        qclass = self.qclass()
        qtype = self.qtype()
        qname = self.qname()
        if qclass == C_CH and rng.random() < 0.7:
            qname = random_case(rng, self._wire(rng.choice(CHAOS_NAMES)))
            qtype = rng.choice([T_TXT, T_TXT, T_TXT, T_ANY, T_A, T_SOA, T_NS, self.qtype()])
        flags = rng.choice([0, 0, RD, RD, RD | AD, CD, RD | CD, AD, RD | CD | AD])
        ns: list[bytes] = []
        if qtype == T_IXFR and rng.random() < 0.7:
            ns = [self.soa_record()]
        ar: list[bytes] = []
        if rng.random() < 0.65:
            ar = [self.good_opt()]
        return {"flags": flags, "qd": [qname + struct.pack("!HH", qtype, qclass)], "an": [], "ns": ns, "ar": ar,
                "counts": None, "trailing": b""}

    @staticmethod
    def assemble(p: dict) -> bytes:
        counts = p["counts"] or (len(p["qd"]), len(p["an"]), len(p["ns"]), len(p["ar"]))
        return header(0, p["flags"], *counts) + b"".join(p["qd"]) + b"".join(p["an"]) + b"".join(p["ns"]) \
            + b"".join(p["ar"]) + p["trailing"]

    def valid(self) -> Pkt:
        return Pkt(self.assemble(self.parts()), "valid", well_formed=True)

    def random_bytes(self) -> Pkt:
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            n = rng.randint(0, 20)
        elif r < 0.85:
            n = rng.randint(0, 600)
        else:
            n = rng.randint(601, 4096)
        body = rng.randbytes(n)
        if rng.random() < 0.3 and n >= 12:  # a query-looking header in front of the noise
            body = header(0, rng.choice([0, RD, rng.randrange(0x8000)]), 1, rng.choice([0, 0, 1]),
                          rng.choice([0, 0, 1]), rng.choice([0, 1, 2])) + body[12:]
        return Pkt(body, "random")

    def mutated(self) -> Pkt:
        rng = self.rng
        p = self.parts()
        n_struct = rng.choice([0, 1, 1, 1, 2, 2, 3])
        n_bytes = rng.choice([0, 0, 1, 1, 2]) if n_struct else rng.choice([1, 1, 2, 3, 4])
        names = []
        for _ in range(n_struct):
            m = rng.choice(self.struct_mutators)
            m(p)
            names.append(m.__name__[2:])
        b = bytearray(self.assemble(p))
        for _ in range(n_bytes):
            m = rng.choice(self.byte_mutators)
            m(b)
            names.append(m.__name__[2:])
        return Pkt(bytes(b), "mut:" + "+".join(sorted(set(names))))

    def truncations(self) -> list[Pkt]:
        """Every prefix of one query (with EDNS, IXFR authority or a TSIG record)."""
        p = self.parts()
        k = self.rng.randrange(4)
        if k == 0:
            p["ar"] = [self.good_opt()]
        elif k == 1:
            p["qd"] = [self.qname() + struct.pack("!HH", T_IXFR, C_IN)]
            p["ns"] = [self.soa_record()]
        elif k == 2:
            p["ar"] = [self.good_opt(), self.tsig_record()]
        wire = self.assemble(p)
        return [Pkt(wire[:n], "truncated") for n in range(len(wire) + 1)]

    def stream(self, n: int):
        """``n`` packets, a weighted mix of all kinds."""
        produced = 0
        rng = self.rng
        while produced < n:
            r = rng.random()
            if r < 0.12:
                batch = [self.random_bytes()]
            elif r < 0.37:
                batch = [self.valid()]
            elif r < 0.999:
                batch = [self.mutated()]
            else:
                batch = self.truncations()
            for pkt in batch[: n - produced]:
                yield pkt
                produced += 1

    # -- structural mutators (on parts) ----------------------------------------------------
    def _q0(self, p: dict) -> bytes:
        if not p["qd"]:
            p["qd"] = [self.qname() + struct.pack("!HH", self.qtype(), self.qclass())]
        return p["qd"][0]

    def m_flags(self, p: dict) -> None:
        rng = self.rng
        k = rng.randrange(6)
        if k == 0:
            p["flags"] = rng.randrange(65536)
        elif k == 1:
            p["flags"] = (p["flags"] & ~0x7800) | (rng.randrange(16) << 11)  # opcode
        elif k == 2:
            p["flags"] = (p["flags"] & ~0xF) | rng.randrange(16)  # rcode
        elif k == 3:
            p["flags"] ^= rng.choice([QR, AA, TC, RA, Z, AD, CD, RD])
        elif k == 4:
            p["flags"] |= rng.choice([TC, Z, AA, RA, Z | TC])
        else:
            p["flags"] = rng.choice([0x7800, 0x2800, 0x1000, 0x0800, 0x2000, 0x3000])  # STATUS/NOTIFY/UPDATE/DSO...

    def m_counts(self, p: dict) -> None:
        rng = self.rng
        real = [len(p["qd"]), len(p["an"]), len(p["ns"]), len(p["ar"])]
        vals = [0, 1, 2, 3, 255, 256, 65535]
        if rng.random() < 0.5:
            i = rng.randrange(4)
            real[i] = rng.choice(vals) if rng.random() < 0.7 else rng.randrange(65536)
        else:
            real = [rng.choice(vals) if rng.random() < 0.7 else rng.randrange(65536) for _ in range(4)]
        p["counts"] = tuple(real)

    def m_qname_pointer(self, p: dict) -> None:
        """Compression pointers in the question name: loops, forward, out of range, chains."""
        rng = self.rng
        q = self._q0(p)
        qtc = q[-4:]
        prefix = labels_wire([self.random_label(1, 10) for _ in range(rng.choice([0, 0, 1, 2]))], end=b"")
        at = 12 + len(prefix)  # offset of the pointer itself
        target = rng.choice([12, at, at, 0, 2, 11, at + 2, at + 4, 0x3FFF, rng.randrange(0x4000)])
        name = prefix + struct.pack("!H", 0xC000 | target)
        if rng.random() < 0.3:  # a chain of pointers leading back into itself
            name = prefix + struct.pack("!H", 0xC000 | (at + 2)) + struct.pack("!H", 0xC000 | at)
        p["qd"][0] = name + qtc
        if rng.random() < 0.3:  # a pointer target further on: a second name after the question
            p["trailing"] = labels_wire([b"tail"]) + p["trailing"]

    def m_label_len(self, p: dict) -> None:
        """A label length over 63 (0x40/0x80 label types) or running past the name."""
        rng = self.rng
        q = self._q0(p)
        qtc = q[-4:]
        bad = rng.choice([64, 65, 0x7F, 0x80, 0x81, 0xBF, 0x41, rng.randint(64, 191)])
        labels = [self.random_label(1, 8) for _ in range(rng.randint(0, 2))]
        tail = bytes([bad]) + self.random_label(0, 70)
        if rng.random() < 0.5:
            tail += b"\x00"
        p["qd"][0] = labels_wire(labels, end=b"") + tail + qtc

    def m_long_name(self, p: dict) -> None:
        q = self._q0(p)
        p["qd"][0] = self.long_name() + q[-4:]

    def m_edns(self, p: dict) -> None:
        rng = self.rng
        p["ar"] = [self.bad_opt() if rng.random() < 0.6 else self.good_opt()]

    def m_opt_elsewhere(self, p: dict) -> None:
        """OPT in the answer or authority section, or after another additional record."""
        rng = self.rng
        k = rng.randrange(3)
        opt = self.good_opt()
        if k == 0:
            p["an"].append(opt)
        elif k == 1:
            p["ns"].append(opt)
        else:
            p["ar"] = [self.random_record() if rng.random() < 0.5 else self.soa_record(), opt]

    def m_multi_opt(self, p: dict) -> None:
        rng = self.rng
        p["ar"] = [self.good_opt() if rng.random() < 0.7 else self.bad_opt() for _ in range(rng.randint(2, 4))]

    def m_tsig(self, p: dict) -> None:
        rng = self.rng
        k = rng.randrange(4)
        if k == 0:
            p["ar"] = [self.tsig_record()]
        elif k == 1:
            p["ar"] = [self.good_opt(), self.tsig_record()]
        elif k == 2:
            p["ar"] = [self.tsig_record(), self.good_opt()]  # TSIG not last
        else:
            p["ar"] = [self.good_opt(), self.tsig_record(), self.tsig_record()]

    def m_trailing(self, p: dict) -> None:
        rng = self.rng
        p["trailing"] += rng.randbytes(rng.choice([1, 2, 11, rng.randint(1, 200), rng.randint(200, 2000)]))

    def m_extra_question(self, p: dict) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            p["qd"].append(self.qname() + struct.pack("!HH", self.qtype(), self.qclass()))
        if rng.random() < 0.3:
            p["qd"] = []

    def m_records(self, p: dict) -> None:
        rng = self.rng
        sect = rng.choice(["an", "ns", "ar", "ns"])
        for _ in range(rng.randint(1, 3)):
            p[sect].append(self.random_record() if rng.random() < 0.7 else self.soa_record())
        if sect == "ns" and rng.random() < 0.5:  # make it an IXFR with a broken authority
            q = self._q0(p)
            p["qd"][0] = q[:-4] + struct.pack("!HH", T_IXFR, C_IN)

    def m_record_pointers(self, p: dict) -> None:
        """Records whose owner names point into themselves or past the end (IXFR authority)."""
        rng = self.rng
        qlen = sum(len(q) for q in p["qd"])
        start = 12 + qlen + sum(len(x) for x in p["an"])
        owner = struct.pack("!H", 0xC000 | rng.choice([start, start + 1, 0x3FFF, 12, rng.randrange(0x4000)]))
        if rng.random() < 0.5:
            owner = labels_wire([b"x"], end=b"") + struct.pack("!H", 0xC000 | start)
        rec = rr(owner, T_SOA, C_IN, 0, rng.randbytes(rng.randint(0, 40)))
        q = self._q0(p)
        p["qd"] = [q[:-4] + struct.pack("!HH", T_IXFR, C_IN)]
        p["ns"] = [rec] * rng.randint(1, 3)

    def m_qtype_class(self, p: dict) -> None:
        rng = self.rng
        q = self._q0(p)
        qtype = rng.choice([T_OPT, T_TSIG, T_TKEY, T_AXFR, T_IXFR, 0, 65535, T_MAILA, T_MAILB])
        p["qd"][0] = q[:-4] + struct.pack("!HH", qtype, self.qclass())

    # -- byte-level mutators (on the assembled wire) ----------------------------------------
    def b_flip(self, b: bytearray) -> None:
        if b:
            for _ in range(self.rng.randint(1, 8)):
                i = self.rng.randrange(len(b))
                b[i] ^= 1 << self.rng.randrange(8)

    def b_replace(self, b: bytearray) -> None:
        if b:
            for _ in range(self.rng.randint(1, 6)):
                b[self.rng.randrange(len(b))] = self.rng.choice([0, 0xFF, 0xC0, 0xC1, 0x3F, 0x40, 0x80, 0x29, self.rng.randrange(256)])

    def b_truncate(self, b: bytearray) -> None:
        del b[self.rng.randint(0, len(b)) :]

    def b_insert(self, b: bytearray) -> None:
        i = self.rng.randint(0, len(b))
        b[i:i] = self.rng.randbytes(self.rng.choice([1, 2, 4, self.rng.randint(1, 64)]))

    def b_delete(self, b: bytearray) -> None:
        if b:
            i = self.rng.randrange(len(b))
            del b[i : i + self.rng.choice([1, 2, 4, self.rng.randint(1, 32)])]

    def b_duplicate(self, b: bytearray) -> None:
        if b:
            i = self.rng.randrange(len(b))
            j = min(len(b), i + self.rng.randint(1, 64))
            b[j:j] = b[i:j]


# ---------------------------------------------------------------------------------------
# reply checks


@dataclass
class Checker:
    """Checks replies and collects counts; failures keep the first few examples."""

    stats: collections.Counter = field(default_factory=collections.Counter)
    rcodes: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    max_examples: int = 20

    def fail(self, what: str, query: bytes | None = None, reply: bytes | None = None) -> None:
        self.failure_count += 1
        self.stats["failures"] += 1
        if len(self.failures) < self.max_examples:
            msg = what
            if query is not None:
                msg += f"\n    query ({len(query)} octets): {query[:1500].hex()}"
            if reply is not None:
                msg += f"\n    reply ({len(reply)} octets): {reply[:300].hex()}"
            self.failures.append(msg)

    def check(self, transport: str, pkt: Pkt | None, query: bytes, reply: bytes, limit: int) -> dns.message.Message | None:
        """Check ``reply`` to ``query`` (the bytes sent, ID included); return the parsed reply."""
        self.stats[f"{transport}_replies"] += 1
        kind = pkt.kind if pkt is not None else "?"
        if len(reply) > limit:
            self.fail(f"{transport} reply of {len(reply)} octets exceeds the client's limit {limit} ({kind})", query, reply)
        try:
            msg = dns.message.from_wire(reply, keyring=False)  # parse TSIG error replies, not check them
        except Exception as exc:  # dnspython raises many types
            self.fail(f"{transport} reply does not parse: {type(exc).__name__}: {exc} ({kind})", query, reply)
            self.rcodes["(unparsable)"] += 1
            return None
        rcode = msg.rcode()
        self.rcodes[dns.rcode.to_text(rcode)] += 1
        if not msg.flags & QR:
            self.fail(f"{transport} reply has QR=0 ({kind})", query, reply)
        if len(query) >= 2 and reply[:2] != query[:2]:
            self.fail(f"{transport} reply ID {reply[:2].hex()} != query ID {query[:2].hex()} ({kind})", query, reply)
        if msg.flags & TC:
            self.stats[f"{transport}_tc"] += 1
        if pkt is not None and pkt.well_formed:
            if rcode == dns.rcode.FORMERR:
                self.fail(f"{transport}: FORMERR for a well-formed query", query, reply)
            if (reply[2] >> 3) & 0xF != 0:
                self.fail(f"{transport}: reply opcode is not QUERY", query, reply)
            q = question_of(query)
            rq = question_of(reply) if struct.unpack_from("!H", reply, 4)[0] else None
            if rq is not None and q is not None and rq.lower() != q.lower():
                self.fail(f"{transport}: reply question differs from the query's", query, reply)
        return msg

    def summary(self) -> str:
        s = dict(sorted(self.stats.items()))
        r = dict(self.rcodes.most_common())
        return f"counts: {s}\n    rcodes: {r}"


# ---------------------------------------------------------------------------------------
# UDP


class UdpDriver:
    """Windows of packets in flight on one connected UDP socket, each closed by a barrier."""

    def __init__(self, addr: tuple[str, int], checker: Checker, first_id: int = 1):
        if addr[0] != HOST:
            raise ValueError("fuzz traffic stays on 127.0.0.1")
        self.addr = addr
        self.checker = checker
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.connect(addr)
        self.sock.setblocking(False)
        self._ids = itertools.count(first_id)
        self.recent: dict[int, tuple[bytes, Pkt]] = {}  # earlier windows: late replies are still checked
        self.old_barriers: set[int] = set()
        self.server_gone = False

    def close(self) -> None:
        self.sock.close()

    def next_id(self) -> int:
        return next(self._ids) & 0xFFFF

    def _send(self, wire: bytes) -> None:
        for _ in range(200):
            try:
                self.sock.send(wire)
                return
            except (BlockingIOError, InterruptedError):
                select.select([], [self.sock], [], 0.01)
            except ConnectionRefusedError:
                self.server_gone = True
                self.checker.fail("UDP: connection refused (ICMP port unreachable): is the server gone?")
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    time.sleep(0.001)
                    continue
                raise
        self.checker.fail("UDP: could not send for 2 s")

    def window(self, pkts: list[Pkt], retry_unanswered: bool = True) -> int:
        """Send ``pkts`` and a barrier, collect and check replies; returns the reply count."""
        ck = self.checker
        outstanding: dict[int, tuple[bytes, Pkt]] = {}
        answered: set[int] = set()
        for pkt in pkts:
            wire = pkt.wire
            if len(wire) >= 2:
                qid = self.next_id()
                wire = qid.to_bytes(2, "big") + wire[2:]
                outstanding[qid] = (wire, pkt)
            ck.stats["udp_sent"] += 1
            ck.stats["udp_sent_well_formed" if pkt.well_formed else "udp_sent_other"] += 1
            self._send(wire)
        barrier_seen = False
        barriers = []
        replies = 0
        for attempt in range(4):
            bid = self.next_id()
            barriers.append(bid)
            self._send(soa_query(bid))
            deadline = time.monotonic() + 0.5 * (attempt + 1)
            while not barrier_seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                while True:
                    try:
                        data = self.sock.recv(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionRefusedError:
                        self.server_gone = True
                        ck.fail("UDP: connection refused (ICMP port unreachable): is the server gone?")
                        return replies
                    if len(data) < 2:
                        ck.fail("UDP: reply shorter than 2 octets", None, data)
                        continue
                    rid = int.from_bytes(data[:2], "big")
                    if rid in barriers:
                        if rid == bid:
                            barrier_seen = True
                        ck.check("udp", None, soa_query(rid), data, 512)
                    elif rid in outstanding:
                        if rid in answered:
                            ck.fail("UDP: two replies to one query", outstanding[rid][0], data)
                            continue
                        answered.add(rid)
                        replies += 1
                        wire, pkt = outstanding[rid]
                        ck.check("udp", pkt, wire, data, client_udp_limit(wire))
                    elif rid in self.recent:
                        ck.stats["udp_late_replies"] += 1
                        wire, pkt = self.recent[rid]
                        ck.check("udp", pkt, wire, data, client_udp_limit(wire))
                    elif rid in self.old_barriers:
                        ck.stats["udp_late_barriers"] += 1
                    else:
                        ck.fail(f"UDP: reply with an ID nobody asked for ({rid})", None, data)
            if barrier_seen:
                break
            ck.stats["udp_barrier_timeouts"] += 1
        self.old_barriers.update(barriers)
        if len(self.old_barriers) > 2000:
            self.old_barriers = set(barriers)
        if not barrier_seen:
            ck.fail("UDP: the server did not answer a `. SOA` barrier query within 5 s")
        self.recent = outstanding
        retry = []
        for qid, (wire, pkt) in outstanding.items():
            if qid in answered:
                continue
            if pkt.well_formed:
                if retry_unanswered:
                    retry.append(pkt)
                else:
                    ck.fail("UDP: a well-formed query got no answer (sent twice)", wire)
            elif pkt.answerable:
                ck.stats["udp_unanswered_answerable"] += 1
                if ck.stats["udp_unanswered_answerable"] <= 5:
                    ck.stats[f"udp_unanswered_example_{wire.hex()[:120]}"] += 1
        if retry:
            ck.stats["udp_retries"] += len(retry)
            replies += self.window(retry, retry_unanswered=False)
        return replies


# ---------------------------------------------------------------------------------------
# TCP


@dataclass
class TcpScript:
    """One TCP connection: byte chunks to send (with a pause before each), then an ending.

    ``frames`` lists the framed packets in order when the stream is well framed (replies are
    matched by ID, in order); None for a stream whose framing is garbage (replies are only
    checked to parse).  ``end``: "shutdown" (half-close, read to EOF), "barrier" (a final
    `. SOA` frame; close once its reply is in), "hold" (send, then keep the connection open
    and silent until the driver stops).
    """

    chunks: list[tuple[float, bytes]]
    frames: list[tuple[bytes, Pkt]] | None
    end: str = "shutdown"
    label: str = ""
    barrier_id: int | None = None
    expect_all_answered: bool = True  # every well-formed frame must get its reply


def frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def split_chunks(rng: random.Random, data: bytes, mode: str) -> list[tuple[float, bytes]]:
    """Cut ``data`` into writes: "whole", "random" cuts, "tiny" (1-3 octets) or "slow" (with pauses)."""
    if mode == "whole" or not data:
        return [(0.0, data)]
    out = []
    i = 0
    while i < len(data):
        if mode == "tiny":
            n = rng.randint(1, 3)
        else:
            n = rng.choice([1, 2, 3, rng.randint(1, 100), rng.randint(1, 2000)])
        pause = 0.0
        if mode == "slow" and rng.random() < 0.2:
            pause = rng.choice([0.001, 0.003, 0.01])
        out.append((pause, data[i : i + n]))
        i += n
    return out


@dataclass
class _Conn:
    script: TcpScript
    sock: socket.socket
    idx: int = 0
    next_send: float = 0.0
    sent_all: bool = False
    shut: bool = False
    buf: bytearray = field(default_factory=bytearray)
    replies: list[bytes] = field(default_factory=list)
    eof: bool = False
    reset: bool = False
    barrier_seen: bool = False
    done: bool = False
    pending: bytes = b""
    hold_until: float | None = None


def run_tcp_scripts(addr: tuple[str, int], scripts: list[TcpScript], checker: Checker,
                    concurrency: int = 16, deadline_s: float = 120.0, hold_grace: float = 0.3) -> None:
    """Run the scripts, at most ``concurrency`` connections at a time; check all replies."""
    if addr[0] != HOST:
        raise ValueError("fuzz traffic stays on 127.0.0.1")
    ck = checker
    sel = selectors.DefaultSelector()
    todo = list(reversed(scripts))
    live: list[_Conn] = []
    held: list[_Conn] = []
    t_end = time.monotonic() + deadline_s

    def open_next() -> None:
        script = todo.pop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5)
        try:
            s.connect(addr)
        except OSError as exc:
            ck.fail(f"TCP: connect failed: {exc} ({script.label})")
            s.close()
            return
        s.setblocking(False)
        c = _Conn(script, s, next_send=time.monotonic())
        live.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        ck.stats["tcp_connections"] += 1

    def finish(c: _Conn) -> None:
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        if c.script.end == "hold" and not c.eof and not c.reset:
            held.append(c)
        else:
            c.sock.close()
        c.done = True
        _check_conn(c, ck)

    while (todo or live) and time.monotonic() < t_end:
        while todo and len(live) < concurrency:
            open_next()
        now = time.monotonic()
        for c in list(live):
            # send what is due
            while not c.sent_all and now >= c.next_send:
                if not c.pending:
                    pause, data = c.script.chunks[c.idx]
                    c.pending = data
                try:
                    n = c.sock.send(c.pending) if c.pending else 0
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    c.reset = True
                    c.sent_all = True
                    break
                c.pending = c.pending[n:]
                if c.pending:
                    break
                c.idx += 1
                if c.idx >= len(c.script.chunks):
                    c.sent_all = True
                else:
                    c.next_send = now + c.script.chunks[c.idx][0]
            if c.sent_all and not c.shut and c.script.end == "shutdown" and not c.reset:
                try:
                    c.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                c.shut = True
            if c.sent_all and c.script.end == "hold" and c.hold_until is None:
                c.hold_until = now + hold_grace
            try:
                sel.modify(c.sock, selectors.EVENT_READ | (0 if c.sent_all else selectors.EVENT_WRITE), c)
            except (KeyError, ValueError):
                pass
        timeout = 0.05
        pending_times = [c.next_send for c in live if not c.sent_all]
        if pending_times:
            timeout = max(0.0, min(timeout, min(pending_times) - time.monotonic()))
        for key, events in sel.select(timeout):
            c = key.data
            if events & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(262144)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    c.reset = True
                    data = b""
                if data == b"":
                    c.eof = True
                elif data:
                    c.buf += data
                    _take_frames(c)
        now = time.monotonic()
        for c in list(live):
            end = c.script.end
            fin = c.eof or c.reset
            if not fin and end == "barrier" and c.barrier_seen:
                fin = True
            if not fin and end == "hold" and c.sent_all:
                if c.script.barrier_id is not None:
                    fin = c.barrier_seen
                else:
                    fin = c.hold_until is not None and now >= c.hold_until
            if fin:
                live.remove(c)
                finish(c)
    for c in live:
        ck.fail(f"TCP: connection did not finish within {deadline_s} s ({c.script.label}); "
                f"{len(c.replies)} replies, sent_all={c.sent_all}")
        sel.unregister(c.sock)
        c.sock.close()
    if todo:
        ck.fail(f"TCP: {len(todo)} scripts never ran (time limit)")
    sel.close()
    # held connections: the server may keep or close them; nothing may arrive
    for c in held:
        try:
            c.sock.setblocking(False)
            extra = c.sock.recv(65535)
            if extra:
                ck.fail(f"TCP: data on a held connection after its frames ({c.script.label})", None, extra)
        except (BlockingIOError, InterruptedError, OSError):
            pass
        c.sock.close()


def _take_frames(c: _Conn) -> None:
    buf = c.buf
    while len(buf) >= 2:
        n = (buf[0] << 8) | buf[1]
        if len(buf) < 2 + n:
            break
        msg = bytes(buf[2 : 2 + n])
        del buf[: 2 + n]
        c.replies.append(msg)
        if c.script.barrier_id is not None and len(msg) >= 2 and int.from_bytes(msg[:2], "big") == c.script.barrier_id:
            c.barrier_seen = True


def _check_conn(c: _Conn, ck: Checker) -> None:
    s = c.script
    if c.buf:
        ck.fail(f"TCP: {len(c.buf)} octets of an incomplete reply frame at the end ({s.label})", None, bytes(c.buf))
    if s.frames is None:
        for reply in c.replies:
            if s.barrier_id is not None and reply[:2] == s.barrier_id.to_bytes(2, "big"):
                ck.check("tcp", None, soa_query(s.barrier_id), reply, 65535)
            else:
                ck.check("tcp", None, b"", reply, 65535)
        return
    # well framed: replies come in order, matched by ID
    frames = list(s.frames)
    if s.barrier_id is not None:
        frames.append((soa_query(s.barrier_id), Pkt(soa_query(s.barrier_id), "barrier", True)))
    i = 0
    answered = set()
    for reply in c.replies:
        rid = reply[:2]
        j = i
        while j < len(frames) and not (len(frames[j][0]) >= 2 and frames[j][0][:2] == rid):
            j += 1
        if j >= len(frames):
            ck.fail(f"TCP: a reply that matches no later query (out of order or unknown ID) ({s.label})", None, reply)
            ck.check("tcp", None, b"", reply, 65535)
            continue
        wire, pkt = frames[j]
        ck.check("tcp", pkt, wire, reply, 65535)
        answered.add(j)
        i = j + 1
    if s.expect_all_answered and not c.reset:
        for j, (wire, pkt) in enumerate(frames):
            if pkt.well_formed and j not in answered:
                ck.fail(f"TCP: well-formed query #{j} of {len(frames)} got no answer ({s.label}; "
                        f"{len(c.replies)} replies, eof={c.eof})", wire)
    elif c.reset:
        ck.stats["tcp_resets"] += 1
    for j, (wire, pkt) in enumerate(frames):
        if j not in answered and pkt.answerable and not pkt.well_formed:
            ck.stats["tcp_unanswered_answerable"] += 1
