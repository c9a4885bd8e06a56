"""Send a query corpus to two DNS servers and compare the responses.

exchange()      fast bulk sender: plain non-blocking sockets and one selector.
                UDP: N connected sockets with one query in flight each (a fresh
                socket after a timeout, so late answers can't be mistaken);
                TCP: N connections with one query in flight each (reconnect on close).
normalize()     a response as comparable fields, parsed with dnspython.
fast_view()     the same header fields plus a strict canonical form of the
                sections, without dnspython (see the comment there).
compare_pair()  the field-by-field differences of two responses to one query:
                header fields from fast_view, sections decided by the canonical
                form and, when they differ, described by dnspython (normalize).
differential()  all of it, returning a Report with per-category counts, the
                kinds of difference ("signatures") with examples; differences
                matched by an allow-list entry are counted apart.

Compared: rcode (incl. extended), opcode, each header flag (QR AA TC RD RA Z AD
CD, one Diff per bit: "flags.CD"), EDNS presence/version/DO/payload/other flag
bits/options, the question (with the letter case as echoed), and the answer/
authority/additional sections as sets of RRsets keyed by (owner lower-cased,
class, type, covered type) with TTL and the sorted canonical rdata.  Header
counts are compared too when the sections are equal (catches duplicated
records).  When either UDP response has TC=1, only header, question and EDNS
are compared (the TCP run compares everything).  Entries in "structure" mode
(CHAOS identity queries) compare sections by owner/class/type/count only.
"""

from __future__ import annotations

import collections
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .corpus import Entry
from .proc import _check_local

TIMEOUT = "<timeout>"
CLOSED = "<connection closed>"


# ---------------------------------------------------------------------------
# bulk exchange


class _Slot:
    __slots__ = ("job", "sock", "idx", "tries", "deadline", "buf", "used")

    def __init__(self, job):
        self.job = job
        self.sock = None
        self.idx = -1
        self.tries = 0
        self.deadline = 0.0
        self.buf = b""
        self.used = 0  # queries answered on the current TCP connection


class _Job:
    def __init__(self, addr, transport, wires, slots, timeout, tries, max_timeouts):
        self.addr = addr
        self.transport = transport
        self.wires = wires
        self.nslots = slots
        self.timeout = timeout
        self.max_tries = tries
        self.max_timeouts = max_timeouts
        self.next = 0
        self.results: list[bytes | str | None] = [None] * len(wires)
        self.timeouts = 0
        self.retries = 0
        self.reconnects = 0
        self.aborted = False


SKIPPED = "<not sent: server stopped answering>"


def exchange(jobs: Sequence[tuple[tuple[str, int], str]], wires: Sequence[bytes], *,
             udp_slots: int = 24, tcp_slots: int = 8, udp_timeout: float = 1.5, udp_tries: int = 3,
             tcp_timeout: float = 5.0, tcp_tries: int = 2, max_timeouts: int | None = None) -> list[list[bytes | str]]:
    """Send every wire message to every (addr, transport) job; all jobs run concurrently.

    Returns, per job, a list of response wire messages in corpus order, or
    TIMEOUT / CLOSED / "<error ...>" markers.  A job that has more than
    max_timeouts (default: 200 or 2 % of the queries) unanswered queries is
    abandoned; its remaining queries are marked SKIPPED."""
    if max_timeouts is None:
        max_timeouts = max(200, len(wires) // 50)
    sel = selectors.DefaultSelector()
    js: list[_Job] = []
    for addr, transport in jobs:
        _check_local(addr[0])
        if transport not in ("udp", "tcp"):
            raise ValueError(transport)
        udp = transport == "udp"
        js.append(_Job(addr, transport, wires, udp_slots if udp else tcp_slots,
                       udp_timeout if udp else tcp_timeout, udp_tries if udp else tcp_tries, max_timeouts))

    active: set[_Slot] = set()

    def close(slot: _Slot) -> None:
        if slot.sock is not None:
            try:
                sel.unregister(slot.sock)
            except (KeyError, ValueError):
                pass
            slot.sock.close()
            slot.sock = None

    def new_socket(slot: _Slot) -> None:
        job = slot.job
        close(slot)
        fam = socket.AF_INET6 if ":" in job.addr[0] else socket.AF_INET
        if job.transport == "udp":
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.connect(job.addr)
        else:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(job.timeout)
            try:
                s.connect(job.addr)
            except OSError:
                s.close()
                raise
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        slot.sock = s
        slot.buf = b""
        slot.used = 0
        sel.register(s, selectors.EVENT_READ, slot)

    def send(slot: _Slot) -> None:
        job = slot.job
        wire = job.wires[slot.idx]
        try:
            if job.transport == "udp":
                slot.sock.send(wire)
            else:
                data = struct.pack("!H", len(wire)) + wire
                n = slot.sock.send(data)
                if n != len(data):  # tiny queries: the socket buffer always has room
                    slot.sock.setblocking(True)
                    slot.sock.sendall(data[n:])
                    slot.sock.setblocking(False)
        except OSError:
            pass  # noticed as timeout / close
        slot.deadline = time.monotonic() + job.timeout

    def finish(slot: _Slot, result: bytes | str) -> None:
        slot.job.results[slot.idx] = result
        start_next(slot)

    def start_next(slot: _Slot) -> None:
        job = slot.job
        while True:
            if job.aborted or job.next >= len(job.wires):
                active.discard(slot)
                close(slot)
                return
            slot.idx = job.next
            job.next += 1
            slot.tries = 1
            if slot.sock is None:
                try:
                    new_socket(slot)
                except OSError as e:
                    job.results[slot.idx] = f"<error connect: {e}>"
                    continue
            send(slot)
            return

    def retry_or_fail(slot: _Slot, marker: str) -> None:
        job = slot.job
        if marker == CLOSED and slot.used and not slot.buf:
            # the server closed an idle, already used connection: not this query's fault
            job.reconnects += 1
        elif slot.tries < job.max_tries:
            slot.tries += 1
            job.retries += 1
        else:
            if marker == TIMEOUT:
                job.timeouts += 1
                if job.timeouts > job.max_timeouts and not job.aborted:
                    job.aborted = True
                    for i in range(job.next, len(job.wires)):
                        job.results[i] = SKIPPED
                    job.next = len(job.wires)
            close(slot)
            return finish(slot, marker)
        try:
            new_socket(slot)
        except OSError as e:
            return finish(slot, f"<error connect: {e}>")
        send(slot)

    for job in js:
        for _ in range(min(job.nslots, len(wires))):
            slot = _Slot(job)
            active.add(slot)
            start_next(slot)

    while active:
        now = time.monotonic()
        nearest = min(s.deadline for s in active)
        events = sel.select(timeout=max(0.0, nearest - now))
        for key, _mask in events:
            slot: _Slot = key.data
            if slot not in active or slot.sock is not key.fileobj:
                continue
            job = slot.job
            wire = job.wires[slot.idx]
            if job.transport == "udp":
                try:
                    data = slot.sock.recv(65535)
                except BlockingIOError:
                    continue
                except OSError:  # ICMP port unreachable etc.
                    retry_or_fail(slot, "<error: port unreachable>")
                    continue
                if data[:2] != wire[:2]:
                    continue  # not ours
                finish(slot, data)
            else:
                try:
                    data = slot.sock.recv(65535)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    retry_or_fail(slot, CLOSED)
                    continue
                slot.buf += data
                if len(slot.buf) >= 2:
                    n = struct.unpack("!H", slot.buf[:2])[0]
                    if len(slot.buf) >= 2 + n:
                        resp = slot.buf[2:2 + n]
                        extra = slot.buf[2 + n:]
                        slot.buf = b""
                        slot.used += 1
                        if resp[:2] != wire[:2] or extra:
                            close(slot)
                            finish(slot, f"<error: unexpected TCP data: answer ID {resp[:2].hex()}, "
                                         f"{len(extra)} extra octets>")
                            continue
                        finish(slot, resp)
        now = time.monotonic()
        for slot in [s for s in active if s.deadline <= now]:
            retry_or_fail(slot, TIMEOUT)
    sel.close()
    return [job.results for job in js]  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# normalisation


@dataclass
class View:
    ok: bool
    error: str = ""
    msg: dns.message.Message | None = None
    fields: dict[str, object] = field(default_factory=dict)
    # section -> {(owner, class, type, covers): (ttl, (canonical rdata...))}
    sections: dict[str, dict[tuple, tuple]] = field(default_factory=dict)
    # (section, key) -> display text
    display: dict[tuple, str] = field(default_factory=dict)
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    tc: bool = False


SECTIONS = ("answer", "authority", "additional")
HEADER_FLAGS = [("QR", dns.flags.QR), ("AA", dns.flags.AA), ("TC", dns.flags.TC), ("RD", dns.flags.RD),
                ("RA", dns.flags.RA), ("Z", 0x0040), ("AD", dns.flags.AD), ("CD", dns.flags.CD)]


def _flags_text(flags: int) -> str:
    return " ".join(n for n, bit in HEADER_FLAGS if flags & bit) or "-"


def _type_text(rdtype: int, covers: int) -> str:
    t = dns.rdatatype.to_text(rdtype)
    return f"{t}({dns.rdatatype.to_text(covers)})" if covers else t


def normalize(wire: bytes | str | None, mode: str = "full") -> View:
    if wire is None or isinstance(wire, str):
        return View(ok=False, error=wire or "<no response>")
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=False, one_rr_per_rrset=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is a result
        return View(ok=False, error=f"<unparseable: {type(e).__name__}: {e}; {len(wire)} octets {wire[:64].hex()}>")
    v = View(ok=True, msg=msg)
    v.counts = struct.unpack("!HHHH", wire[4:12])
    v.tc = bool(msg.flags & dns.flags.TC)
    f = v.fields
    f["rcode"] = dns.rcode.to_text(msg.rcode())
    f["opcode"] = dns.opcode.to_text(msg.opcode())
    f["flags"] = _flags_text(msg.flags)
    if msg.edns < 0:
        f["edns"] = "none"
    else:
        f["edns"] = "present"
        f["edns.version"] = msg.edns
        f["edns.do"] = bool(msg.ednsflags & dns.flags.DO)
        f["edns.payload"] = int(msg.payload)
        f["edns.zflags"] = f"{msg.ednsflags & 0xFFFF & ~dns.flags.DO:#06x}"
        f["edns.options"] = " ".join(f"{int(o.otype)}:{o.to_wire().hex()}" for o in msg.options) or "-"
    f["question"] = " ".join(f"{rr.name.to_text()}/{dns.rdataclass.to_text(rr.rdclass)}/{dns.rdatatype.to_text(rr.rdtype)}"
                             for rr in msg.question) or "-"
    for sname in SECTIONS:
        d: dict[tuple, tuple] = {}
        for rrset in getattr(msg, sname):
            owner = rrset.name.to_text().lower()
            key = (owner, dns.rdataclass.to_text(rrset.rdclass), _type_text(rrset.rdtype, rrset.covers))
            if mode == "structure":
                val = (len(rrset),)
            else:
                val = (rrset.ttl, tuple(sorted(rd.to_digestable() for rd in rrset)))
            if key in d:  # the same RRset split over the section: merge
                old = d[key]
                val = (old[0] + val[0],) if mode == "structure" else (min(old[0], val[0]), tuple(sorted(old[1] + val[1])))
            d[key] = val
            first = rrset[0].to_text() if len(rrset) else ""
            if len(first) > 60:
                first = first[:57] + "..."
            v.display[(sname, key)] = f"{' '.join(key[:1])} {rrset.ttl} {key[1]} {key[2]} {first}" + (
                f" (+{len(rrset) - 1} more)" if len(rrset) > 1 else "")
        v.sections[sname] = d
    return v


# ---------------------------------------------------------------------------
# fast strict wire canonicalisation (decides "equal" without dnspython)
#
# dnspython's from_wire costs ~0.6 ms for a referral; 160k responses would take
# minutes.  fast_view() parses a message strictly (every octet accounted for,
# compression pointers only backwards, names <= 255 octets) into the same
# header fields as normalize() plus, per section, the sorted multiset of
# (owner lower-cased, class, type, TTL, canonical rdata).  Equal multisets
# imply equal dnspython views (the multiset is at least as discriminating), so
# responses are only parsed with dnspython when their sections differ; the
# difference is then described (and decided) by the dnspython comparison.
# Anything fast_view can't handle (TSIG, several OPTs, bad compression...)
# goes to dnspython directly.  test_fast_view_agrees_with_dnspython checks
# the header fields agree with normalize().

# types whose rdata may carry compressed names (RFC 3597 s4): name positions
_NAME_RDATA = {2: "n", 3: "n", 4: "n", 5: "n", 6: "nn", 7: "n", 8: "n", 9: "n", 12: "n", 14: "nn", 15: "2n"}


class _Bad(Exception):
    pass


def _name(wire: bytes, off: int) -> tuple[list[bytes], int]:
    """Labels (case kept) and the offset after the name in place."""
    labels: list[bytes] = []
    end = -1
    total = 1
    limit = off
    hops = 0
    while True:
        if off >= len(wire):
            raise _Bad("name runs off the end")
        n = wire[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(wire):
                raise _Bad("truncated pointer")
            ptr = ((n & 0x3F) << 8) | wire[off + 1]
            if end < 0:
                end = off + 2
            if ptr >= limit:
                raise _Bad("forward compression pointer")
            limit = ptr
            off = ptr
            hops += 1
            if hops > 127:
                raise _Bad("pointer loop")
            continue
        if n & 0xC0:
            raise _Bad("extended label type")
        label = wire[off + 1:off + 1 + n]
        if len(label) != n:
            raise _Bad("label runs off the end")
        labels.append(label)
        total += n + 1
        if total > 255:
            raise _Bad("name too long")
        off += n + 1
    return labels, (end if end >= 0 else off)


def _lname(labels: list[bytes]) -> bytes:
    return b".".join(lab.lower() for lab in labels) + b"."


@dataclass
class FastView:
    fields: dict[str, object]
    canon: tuple[tuple, tuple, tuple]
    tc: bool
    counts: tuple[int, int, int, int]


_NAME_TEXT_CACHE: dict[tuple, str] = {}


def fast_view(wire: bytes | str | None, mode: str = "full") -> FastView | None:
    if not isinstance(wire, bytes) or len(wire) < 12:
        return None
    try:
        return _fast_view(wire, mode)
    except (_Bad, IndexError, struct.error, dns.exception.DNSException, ValueError):
        return None


def _fast_view(wire: bytes, mode: str) -> FastView:
    _id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", wire, 0)
    off = 12
    qtext = []
    for _ in range(qd):
        labels, off = _name(wire, off)
        qt, qc = struct.unpack_from("!HH", wire, off)
        off += 4
        key = tuple(labels)
        txt = _NAME_TEXT_CACHE.get(key)
        if txt is None:
            txt = dns.name.Name(labels + [b""]).to_text()
            if len(_NAME_TEXT_CACHE) < 100000:
                _NAME_TEXT_CACHE[key] = txt
        qtext.append(f"{txt}/{dns.rdataclass.to_text(qc)}/{dns.rdatatype.to_text(qt)}")
    secs: list[list[tuple]] = [[], [], []]
    opt = None
    structure = mode == "structure"
    for si, count in enumerate((an, ns, ar)):
        out = secs[si]
        for _ in range(count):
            labels, off = _name(wire, off)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", wire, off)
            off += 10
            rstart, rend = off, off + rdlen
            if rend > len(wire):
                raise _Bad("rdata runs off the end")
            if rtype == 41:
                if si != 2 or opt is not None or labels:
                    raise _Bad("OPT placement")
                opt = (rclass, ttl, wire[rstart:rend])
                off = rend
                continue
            if rtype == 250:
                raise _Bad("TSIG: leave to dnspython")
            covers = 0
            if rtype == 46:
                if rdlen < 2:
                    raise _Bad("short RRSIG")
                covers = struct.unpack_from("!H", wire, rstart)[0]
            if structure:
                out.append((_lname(labels), rclass, rtype, covers))
                off = rend
                continue
            layout = _NAME_RDATA.get(rtype)
            if layout is None:
                rdata = wire[rstart:rend]
            else:
                parts = []
                p = rstart
                for item in layout:
                    if item == "n":
                        nl, p = _name(wire, p)
                        parts.append(_lname(nl))
                    else:
                        parts.append(wire[p:p + 2])
                        p += 2
                if rtype == 6:
                    parts.append(wire[p:p + 20])
                    p += 20
                if p != rend:
                    raise _Bad("rdata length mismatch")
                rdata = b"\x00".join(parts)
            out.append((_lname(labels), rclass, rtype, covers, ttl, rdata))
            off = rend
    if off != len(wire):
        raise _Bad("trailing octets")
    f: dict[str, object] = {}
    rcode = flags & 0xF
    if opt is not None:
        rcode |= (opt[1] >> 24) << 4
    f["rcode"] = dns.rcode.to_text(rcode)
    f["opcode"] = dns.opcode.to_text((flags >> 11) & 0xF)
    f["flags"] = _flags_text(flags)
    if opt is None:
        f["edns"] = "none"
    else:
        payload, ttl, odata = opt
        f["edns"] = "present"
        f["edns.version"] = (ttl >> 16) & 0xFF
        f["edns.do"] = bool(ttl & dns.flags.DO)
        f["edns.payload"] = payload
        f["edns.zflags"] = f"{ttl & 0xFFFF & ~dns.flags.DO:#06x}"
        opts = []
        p = 0
        while p < len(odata):
            code, olen = struct.unpack_from("!HH", odata, p)
            if p + 4 + olen > len(odata):
                raise _Bad("bad EDNS option")
            opts.append((code, odata[p + 4:p + 4 + olen]))
            p += 4 + olen
        if any(code in (8, 9, 10, 3, 15, 12, 11, 5, 6, 7, 14) for code, _ in opts):
            # options dnspython parses into typed objects: let it render them
            f["edns.options"] = " ".join(
                f"{int(o.otype)}:{o.to_wire().hex()}" for o in
                (dns.edns.option_from_wire(code, data, 0, len(data)) for code, data in opts)) or "-"
        else:
            f["edns.options"] = " ".join(f"{code}:{data.hex()}" for code, data in opts) or "-"
    f["question"] = " ".join(qtext) or "-"
    canon = tuple(tuple(sorted(sec)) for sec in secs)
    return FastView(f, canon, bool(flags & dns.flags.TC), (qd, an, ns, ar))


# ---------------------------------------------------------------------------
# comparison


@dataclass
class Diff:
    field: str   # rcode, opcode, flags, edns, edns.payload, question, answer, authority, additional, counts, response
    a: str
    b: str
    sig: str = ""  # what kind of difference, for grouping (defaults to "field: a -> b")

    def signature(self) -> str:
        return self.sig or f"{self.field}: {self.a} -> {self.b}"


class Pair:
    """Two responses to one query; dnspython views are made on demand.

    `zone` is the zone file both servers load (for allow-list predicates)."""

    def __init__(self, wa: bytes | str | None, wb: bytes | str | None, mode: str = "full", zone=None):
        self.wa, self.wb, self.mode, self.zone = wa, wb, mode, zone
        self._va: View | None = None
        self._vb: View | None = None

    @property
    def va(self) -> View:
        if self._va is None:
            self._va = normalize(self.wa, self.mode)
        return self._va

    @property
    def vb(self) -> View:
        if self._vb is None:
            self._vb = normalize(self.wb, self.mode)
        return self._vb


def _section_diff(sname: str, va: View, vb: View) -> Diff | None:
    da, db = va.sections.get(sname, {}), vb.sections.get(sname, {})
    if da == db:
        return None
    only_a = [va.display[(sname, k)] for k in sorted(da.keys() - db.keys())]
    only_b = [vb.display[(sname, k)] for k in sorted(db.keys() - da.keys())]
    changed_a, changed_b = [], []
    for k in sorted(da.keys() & db.keys()):
        if da[k] != db[k]:
            ta, tb = da[k], db[k]
            what = []
            if ta[0] != tb[0]:
                what.append("ttl")
            if ta[1:] != tb[1:]:
                what.append("rdata")
            changed_a.append(f"[{'/'.join(what)}] {va.display[(sname, k)]}")
            changed_b.append(f"[{'/'.join(what)}] {vb.display[(sname, k)]}")

    def fmt(only, changed):
        parts = [f"only: {x}" for x in only] + [f"differs: {x}" for x in changed]
        if len(parts) > 4:
            parts = parts[:4] + [f"... ({len(parts) - 4} more)"]
        return "; ".join(parts) or "-"

    def types(keys):
        return ",".join(sorted({k[2] for k in keys})) or "-"

    changed = [k for k in da.keys() & db.keys() if da[k] != db[k]]
    sig = (f"{sname}: only-a[{types(da.keys() - db.keys())}] only-b[{types(db.keys() - da.keys())}] "
           f"changed[{types(changed)}]")
    return Diff(sname, fmt(only_a, changed_a), fmt(only_b, changed_b), sig)


def _counts_text(c: tuple[int, int, int, int]) -> str:
    return "qd=%d an=%d ns=%d ar=%d" % c


def compare(va: View, vb: View, transport: str) -> list[Diff]:
    """Compare two dnspython views."""
    if not va.ok or not vb.ok:
        if va.ok == vb.ok and va.error == vb.error:
            return []
        sa = va.error if not va.ok else f"{va.fields['rcode']} {va.fields['flags']}"
        sb = vb.error if not vb.ok else f"{vb.fields['rcode']} {vb.fields['flags']}"
        return [Diff("response", sa, sb, f"response: {sa.split(';')[0][:60]} -> {sb.split(';')[0][:60]}")]
    diffs = _field_diffs(va.fields, vb.fields)
    if transport == "udp" and (va.tc or vb.tc):
        return diffs
    sec = [d for d in (_section_diff(s, va, vb) for s in SECTIONS) if d]
    diffs += sec
    if not sec and va.counts != vb.counts:
        diffs.append(Diff("counts", _counts_text(va.counts), _counts_text(vb.counts), "counts: differ (duplicate RRs?)"))
    return diffs


def _field_diffs(fa: dict, fb: dict) -> list[Diff]:
    diffs = []
    for k in dict.fromkeys(list(fa) + list(fb)):
        a, b = fa.get(k, "-"), fb.get(k, "-")
        if a == b:
            continue
        if k == "question":
            diffs.append(Diff(k, str(a), str(b), "question: differs"))
        elif k == "flags":
            # one difference per header bit, so each can be judged (and allow-listed) on its own
            sa, sb = set(str(a).split()), set(str(b).split())
            for name, _bit in HEADER_FLAGS:
                if (name in sa) != (name in sb):
                    diffs.append(Diff(f"flags.{name}", str(a), str(b),
                                      f"flags.{name}: {'set' if name in sa else 'clear'} -> "
                                      f"{'set' if name in sb else 'clear'}"))
        else:
            diffs.append(Diff(k, str(a), str(b)))
    return diffs


def compare_pair(pair: Pair, transport: str) -> list[Diff]:
    """Compare two responses: fast strict canonical form first, dnspython for differences."""
    fa, fb = fast_view(pair.wa, pair.mode), fast_view(pair.wb, pair.mode)
    if fa is None or fb is None:
        return compare(pair.va, pair.vb, transport)
    diffs = _field_diffs(fa.fields, fb.fields)
    if transport == "udp" and (fa.tc or fb.tc):
        return diffs
    if fa.canon == fb.canon:
        return diffs
    va, vb = pair.va, pair.vb
    if not va.ok or not vb.ok:
        return diffs + compare(va, vb, transport)
    sec = [d for d in (_section_diff(s, va, vb) for s in SECTIONS) if d]
    if not sec:
        if va.counts != vb.counts:
            sec = [Diff("counts", _counts_text(va.counts), _counts_text(vb.counts), "counts: differ (duplicate RRs?)")]
        else:  # same RRsets for dnspython, yet different RRs on the wire (e.g. TTLs within an RRset)
            for i, sname in enumerate(SECTIONS):
                if fa.canon[i] != fb.canon[i]:
                    ca, cb = set(fa.canon[i]), set(fb.canon[i])
                    sec.append(Diff(sname + "-wire", repr(sorted(ca - cb))[:300], repr(sorted(cb - ca))[:300],
                                    f"{sname}-wire: RRs differ within equal RRsets"))
    return diffs + sec


# ---------------------------------------------------------------------------
# the allow-list


@dataclass(frozen=True)
class KnownDifference:
    name: str
    reason: str
    # (entry, transport, diff, pair) -> True if this difference is the documented one;
    # pair.wa / pair.wb are the raw responses, pair.va / pair.vb dnspython views (lazy)
    applies: Callable[[Entry, str, Diff, "Pair"], bool]


# ---------------------------------------------------------------------------
# report


@dataclass
class Example:
    entry: Entry
    transport: str
    diff: Diff


@dataclass
class Report:
    a_name: str
    b_name: str
    transports: tuple[str, ...]
    n_entries: int = 0
    seconds_exchange: float = 0.0
    seconds_compare: float = 0.0
    stats: dict[str, collections.Counter] = field(default_factory=dict)       # category -> counters
    unlisted: dict[tuple[str, str, str], list[Example]] = field(default_factory=dict)  # (cat, transport, field)
    unlisted_counts: collections.Counter = field(default_factory=collections.Counter)
    allowed_counts: collections.Counter = field(default_factory=collections.Counter)  # known.name -> n
    allowed_examples: dict[str, list[Example]] = field(default_factory=dict)
    job_info: list[str] = field(default_factory=list)
    max_examples: int = 3
    # signature -> count, categories, examples
    sig_counts: collections.Counter = field(default_factory=collections.Counter)
    sig_cats: dict[str, collections.Counter] = field(default_factory=dict)
    sig_examples: dict[str, list[Example]] = field(default_factory=dict)

    @property
    def n_unlisted(self) -> int:
        return sum(self.unlisted_counts.values())

    @property
    def n_queries_with_unlisted(self) -> int:
        return sum(c["differ"] for c in self.stats.values())

    def record(self, entry: Entry, transport: str, identical: bool, diffs: list[Diff],
               allowed: list[tuple[KnownDifference, Diff]]) -> None:
        c = self.stats.setdefault(entry.category, collections.Counter())
        c[f"{transport}"] += 1
        if identical:
            c["identical"] += 1
        if diffs:
            c["differ"] += 1
        elif allowed:
            c["allowed"] += 1
        for d in diffs:
            sig = d.signature()
            self.sig_counts[sig] += 1
            self.sig_cats.setdefault(sig, collections.Counter())[f"{entry.category}/{transport}"] += 1
            sx = self.sig_examples.setdefault(sig, [])
            if len(sx) < self.max_examples:
                sx.append(Example(entry, transport, d))
            key = (entry.category, transport, d.field)
            self.unlisted_counts[key] += 1
            ex = self.unlisted.setdefault(key, [])
            if len(ex) < self.max_examples:
                ex.append(Example(entry, transport, d))
        for kd, d in allowed:
            self.allowed_counts[kd.name] += 1
            ex = self.allowed_examples.setdefault(kd.name, [])
            if len(ex) < self.max_examples:
                ex.append(Example(entry, transport, d))

    def format_signatures(self, max_sigs: int = 60) -> str:
        a, b = self.a_name, self.b_name
        out = [f"{len(self.sig_counts)} kinds of unlisted difference (a={a}, b={b}):"]
        for sig, n in self.sig_counts.most_common(max_sigs):
            cats = self.sig_cats[sig]
            cat_txt = ", ".join(f"{c} {k}" for c, k in sorted(((c, k) for k, c in cats.items()), reverse=True)[:8])
            if len(cats) > 8:
                cat_txt += f", ... ({len(cats)} category/transport pairs)"
            out.append(f"  x{n:<6} {sig}")
            out.append(f"           in: {cat_txt}")
            for ex in self.sig_examples[sig]:
                out.append(f"           q: {ex.entry.desc} [{ex.transport}] (#{ex.entry.idx})")
                out.append(f"              {a}: {ex.diff.a[:400]}")
                out.append(f"              {b}: {ex.diff.b[:400]}")
        if len(self.sig_counts) > max_sigs:
            out.append(f"  ... {len(self.sig_counts) - max_sigs} more kinds")
        return "\n".join(out)

    def format(self, verbose_categories: bool = True, per_category: bool = False) -> str:
        a, b = self.a_name, self.b_name
        out = [f"differential {a} (reference) vs {b}: {self.n_entries} queries x {'+'.join(self.transports)}; "
               f"exchange {self.seconds_exchange:.1f}s, compare {self.seconds_compare:.1f}s"]
        out += [f"  {line}" for line in self.job_info]
        if verbose_categories:
            fams: dict[str, collections.Counter] = {}
            for cat, c in self.stats.items():
                fams.setdefault(cat.split("/")[0], collections.Counter()).update(c)
            out.append(f"  {'family':<16}{'queries':>8}{'byte-identical':>16}{'differ':>8}{'allowed':>8}")
            for fam, c in sorted(fams.items()):
                n = sum(c[t] for t in self.transports)
                out.append(f"  {fam:<16}{n:>8}{c['identical']:>16}{c['differ']:>8}{c['allowed']:>8}")
        if self.unlisted_counts:
            out.append(f"UNLISTED DIFFERENCES: {self.n_unlisted} field differences in "
                       f"{self.n_queries_with_unlisted} responses")
            out.append(self.format_signatures())
        if self.unlisted_counts and per_category:
            out.append("per category:")
            for key, n in sorted(self.unlisted_counts.items(), key=lambda kv: (-kv[1], kv[0])):
                cat, transport, fld = key
                out.append(f"  [{cat} {transport} {fld}] x{n}")
                for ex in self.unlisted[key]:
                    out.append(f"      q: {ex.entry.desc}  (#{ex.entry.idx})")
                    out.append(f"        {a}: {ex.diff.a}")
                    out.append(f"        {b}: {ex.diff.b}")
        if not self.unlisted_counts:
            out.append("no unlisted differences")
        if self.allowed_counts:
            out.append("allowed (documented in known_differences.py):")
            for name, n in self.allowed_counts.most_common():
                ex = self.allowed_examples[name][0]
                out.append(f"  {name}: x{n}  e.g. {ex.entry.desc} [{ex.transport}] {ex.diff.field}: "
                           f"{a}={ex.diff.a} {b}={ex.diff.b}")
        return "\n".join(out)


def differential(entries: Sequence[Entry], a: tuple[str, tuple[str, int]], b: tuple[str, tuple[str, int]], *,
                 transports: Iterable[str] = ("udp", "tcp"), known: Sequence[KnownDifference] = (),
                 max_examples: int = 3, method: str = "auto", zone=None, **exchange_kw) -> Report:
    """Run `entries` against servers a=(name, addr) and b=(name, addr) and compare.

    method "auto": byte-identical responses are equal outright, others go through
    compare_pair (strict fast canonical form; dnspython for what differs);
    "dnspython": every response is parsed and compared with dnspython only."""
    if method not in ("auto", "dnspython"):
        raise ValueError(method)
    transports = tuple(transports)
    wires = [e.wire for e in entries]
    jobs = [(a[1], t) for t in transports] + [(b[1], t) for t in transports]
    t0 = time.monotonic()
    results = exchange(jobs, wires, **exchange_kw)
    t1 = time.monotonic()
    rep = Report(a[0], b[0], transports, n_entries=len(entries), max_examples=max_examples)
    rep.seconds_exchange = t1 - t0
    nt = len(transports)
    for ti, transport in enumerate(transports):
        ra, rb = results[ti], results[nt + ti]
        for who, res in ((a[0], ra), (b[0], rb)):
            bad = sum(1 for r in res if isinstance(r, str))
            if bad:
                rep.job_info.append(f"{who}/{transport}: {bad} queries without a response")
        for e, wa, wb in zip(entries, ra, rb):
            if method == "auto" and isinstance(wa, bytes) and wa == wb:
                rep.record(e, transport, True, [], [])
                continue
            pair = Pair(wa, wb, e.mode, zone)
            diffs = compare_pair(pair, transport) if method == "auto" else compare(pair.va, pair.vb, transport)
            unlisted, allowed = [], []
            for d in diffs:
                kd = next((k for k in known if k.applies(e, transport, d, pair)), None)
                if kd is None:
                    unlisted.append(d)
                else:
                    allowed.append((kd, d))
            rep.record(e, transport, False, unlisted, allowed)
    rep.seconds_compare = time.monotonic() - t1
    return rep
