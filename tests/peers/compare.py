"""Send a query corpus to two DNS servers and compare the responses.

exchange()   -- fast bulk sender: plain non-blocking sockets and one selector;
                UDP: N connected sockets with one query in flight each
                (a fresh socket after a timeout, so late answers can't be mistaken);
                TCP: N connections with one query in flight each (reconnect on close).
normalize()  -- a response as comparable fields (dnspython parses the wire).
compare()    -- the field-by-field differences of two responses to one query.
differential() -- all of it, returning a Report with per-category counts and
                examples; known (allow-listed) differences are counted apart.

Compared: rcode (incl. extended), opcode, header flags (QR AA TC RD RA AD CD
and Z), EDNS presence/version/DO/payload/other flag bits/options, the question
(with the letter case as echoed), and the answer/authority/additional sections
as sets of RRsets keyed by (owner lower-cased, class, type, covered type) with
TTL and the sorted canonical rdata.  Header counts are compared too when the
sections are equal (this catches duplicated records).  When either UDP
response has TC=1 only header, question and EDNS are compared.
"""

from __future__ import annotations

import collections
import errno
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import dns.exception
import dns.flags
import dns.message
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
    __slots__ = ("job", "sock", "idx", "tries", "deadline", "buf")

    def __init__(self, job):
        self.job = job
        self.sock = None
        self.idx = -1
        self.tries = 0
        self.deadline = 0.0
        self.buf = b""


class _Job:
    def __init__(self, addr, transport, wires, slots, timeout, tries):
        self.addr = addr
        self.transport = transport
        self.wires = wires
        self.nslots = slots
        self.timeout = timeout
        self.max_tries = tries
        self.next = 0
        self.results: list[bytes | str | None] = [None] * len(wires)
        self.done = 0
        self.timeouts = 0
        self.retries = 0


def exchange(jobs: Sequence[tuple[tuple[str, int], str]], wires: Sequence[bytes], *,
             udp_slots: int = 24, tcp_slots: int = 8, udp_timeout: float = 1.5, udp_tries: int = 3,
             tcp_timeout: float = 5.0, tcp_tries: int = 2) -> list[list[bytes | str]]:
    """Send every wire message to every (addr, transport) job; all jobs run concurrently.

    Returns, per job, a list of response wire messages in corpus order, or
    TIMEOUT / CLOSED / "<error ...>" markers."""
    sel = selectors.DefaultSelector()
    js: list[_Job] = []
    for addr, transport in jobs:
        _check_local(addr[0])
        if transport not in ("udp", "tcp"):
            raise ValueError(transport)
        udp = transport == "udp"
        js.append(_Job(addr, transport, wires, udp_slots if udp else tcp_slots,
                       udp_timeout if udp else tcp_timeout, udp_tries if udp else tcp_tries))

    active: set[_Slot] = set()

    def new_socket(slot: _Slot) -> None:
        job = slot.job
        if slot.sock is not None:
            try:
                sel.unregister(slot.sock)
            except (KeyError, ValueError):
                pass
            slot.sock.close()
            slot.sock = None
        fam = socket.AF_INET6 if ":" in job.addr[0] else socket.AF_INET
        if job.transport == "udp":
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.connect(job.addr)
        else:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(job.timeout)
            s.connect(job.addr)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        slot.sock = s
        slot.buf = b""
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
        job = slot.job
        job.results[slot.idx] = result
        job.done += 1
        start_next(slot)

    def start_next(slot: _Slot) -> None:
        job = slot.job
        if job.next >= len(job.wires):
            active.discard(slot)
            if slot.sock is not None:
                sel.unregister(slot.sock)
                slot.sock.close()
                slot.sock = None
            return
        slot.idx = job.next
        job.next += 1
        slot.tries = 1
        if slot.sock is None:
            try:
                new_socket(slot)
            except OSError as e:
                job.results[slot.idx] = f"<error connect: {e}>"
                job.done += 1
                return start_next(slot)
        send(slot)

    def retry_or_fail(slot: _Slot, marker: str) -> None:
        job = slot.job
        if slot.tries < job.max_tries:
            slot.tries += 1
            job.retries += 1
            try:
                new_socket(slot)
            except OSError as e:
                return finish(slot, f"<error connect: {e}>")
            send(slot)
        else:
            if marker == TIMEOUT:
                job.timeouts += 1
            try:
                new_socket(slot)
            except OSError:
                pass
            finish(slot, marker)

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
                        slot.buf = slot.buf[2 + n:]
                        if resp[:2] != wire[:2]:
                            retry_or_fail(slot, f"<error: TCP answer with ID {resp[:2].hex()}>")
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
        f["edns.payload"] = msg.payload
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
# comparison


@dataclass
class Diff:
    field: str   # rcode, opcode, flags, edns, edns.payload, question, answer, authority, additional, counts, response
    a: str
    b: str


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

    return Diff(sname, fmt(only_a, changed_a), fmt(only_b, changed_b))


def compare(va: View, vb: View, transport: str) -> list[Diff]:
    if not va.ok or not vb.ok:
        if va.ok == vb.ok and va.error == vb.error:
            return []
        sa = va.error if not va.ok else f"{va.fields['rcode']} {va.fields['flags']}"
        sb = vb.error if not vb.ok else f"{vb.fields['rcode']} {vb.fields['flags']}"
        return [Diff("response", sa, sb)]
    diffs = []
    keys = list(dict.fromkeys(list(va.fields) + list(vb.fields)))
    for k in keys:
        a, b = va.fields.get(k, "-"), vb.fields.get(k, "-")
        if a != b:
            diffs.append(Diff(k, str(a), str(b)))
    if transport == "udp" and (va.tc or vb.tc):
        return diffs
    sec = [d for d in (_section_diff(s, va, vb) for s in SECTIONS) if d]
    diffs += sec
    if not sec and va.counts != vb.counts:
        diffs.append(Diff("counts", "qd=%d an=%d ns=%d ar=%d" % va.counts, "qd=%d an=%d ns=%d ar=%d" % vb.counts))
    return diffs


# ---------------------------------------------------------------------------
# the allow-list


@dataclass(frozen=True)
class KnownDifference:
    name: str
    reason: str
    # (entry, transport, diff, view_a, view_b) -> True if this difference is the documented one
    applies: Callable[[Entry, str, Diff, View, View], bool]


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

    def format(self, verbose_categories: bool = True) -> str:
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
            for key, n in sorted(self.unlisted_counts.items(), key=lambda kv: (-kv[1], kv[0])):
                cat, transport, fld = key
                out.append(f"  [{cat} {transport} {fld}] x{n}")
                for ex in self.unlisted[key]:
                    out.append(f"      q: {ex.entry.desc}  (#{ex.entry.idx})")
                    out.append(f"        {a}: {ex.diff.a}")
                    out.append(f"        {b}: {ex.diff.b}")
        else:
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
                 max_examples: int = 3, force_parse: bool = False, **exchange_kw) -> Report:
    """Run `entries` against servers a=(name, addr) and b=(name, addr) and compare.

    Byte-identical responses are equal without parsing unless force_parse."""
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
            if isinstance(wa, bytes) and wa == wb and not force_parse:
                rep.record(e, transport, True, [], [])
                continue
            va, vb = normalize(wa, e.mode), normalize(wb, e.mode)
            diffs = compare(va, vb, transport)
            unlisted, allowed = [], []
            for d in diffs:
                kd = next((k for k in known if k.applies(e, transport, d, va, vb)), None)
                if kd is None:
                    unlisted.append(d)
                else:
                    allowed.append((kd, d))
            rep.record(e, transport, False, unlisted, allowed)
    rep.seconds_compare = time.monotonic() - t1
    return rep
