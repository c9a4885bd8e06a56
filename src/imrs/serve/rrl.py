"""Response rate limiting (RRL), after NSD's rrl.c and Knot's RRL.

`RateLimiter.decide` looks at every UDP response just before it is sent and says SEND, DROP
or SLIP (send `slip_response(response)` instead: a truncated copy, so that a real client
behind a spoofed-looking flood retries over TCP).

Buckets.  A response is accounted in the bucket of (client prefix, category, imputed name
[, qtype]).  The prefix is the source address masked to ``ipv4_prefix`` / ``ipv6_prefix``
bits (an IPv4-mapped IPv6 address counts as IPv4).  The category and the name are read from
the response wire (NSD ``rrl_classify``; Knot ``rrl_clsid``):

=========  ===============================================  ==============================
category   response                                         imputed name
=========  ===============================================  ==============================
nxdomain   RCODE NXDOMAIN                                   the zone: owner of the SOA in
                                                            the authority section (NSD:
                                                            the zone apex)
error      any other non-zero RCODE, or a response that     none: one bucket per prefix
           does not parse
referral   NOERROR, no answer, AA clear, an NS record in    owner of the NS RRset: the
           the authority section (NSD: delegation_domain)   delegation point
nodata     any other NOERROR without answers                the zone (SOA owner)
large      NOERROR with answers, for qtype ANY, RRSIG or    qname (all these qtypes of a
           DNSKEY (NSD's any, rrsig and dnskey types), or   name share one bucket)
           1024 octets or more (Knot's RRL_PSIZE_LARGE)
positive   any other NOERROR with answers                   qname and qtype
=========  ===============================================  ==============================

Names are compared without regard to case.  The size rule applies to answers only: a signed
root referral is over 1024 octets, and is a referral.

Accounting (NSD ``rrl_update``).  Time runs in whole-second steps of the clock.  A bucket
keeps ``count``, the responses in the current step, and a smoothed rate folded in at each
step change, ``r = r/2 + count``, halved once more for each further step without traffic and
forgotten after 16 (NSD ``rrl_attenuate_bucket``): ``r`` is about twice the recent responses
per second, a debt that decays by half each second.  Each response is counted first, then
limited when ``max(r, count + r/2) >= 2 * rate`` (NSD's limit is twice the rate, as its ``r``
is, and ``rrl_update`` returns that maximum; tests/test_rrl.py checks every decision against a
model of it); so a steady ``rate`` per second passes, a flood passes up to ``2 * rate - 1`` in
its first second, and a bucket whose smoothed rate has reached the limit is limited from the
first response of the next second.  As in NSD, every response counts, limited or not: a
source that keeps flooding at twice the rate or more is blocked entirely but for the slips,
and sends nothing big back to a spoofed victim.

Table.  The buckets live in preallocated ``array`` columns of ``table_size`` slots.  A bucket's
key is SipHash-2-4, under a secret drawn per process, of what identifies it (so that sources
cannot aim at one another's slots); a different key landing in a used slot takes it over, as
in NSD, so memory never grows with the number of sources.  With
the gate below, 56 octets a slot: 11.2 MB for the default 200,000.

Gate.  Most sources send far less than the rate, and classifying a response (parsing its
wire to the SOA or NS owner) costs more than the rest of the decision.  So a second table, of
prefixes only (``table_size`` slots, two-way set-associative), counts every response of a
prefix with the same smoothing.  While a prefix's whole traffic stays within
``count + r/2 <= rate`` (this response counted), none of its buckets can be at its limit (a
bucket counts part of the prefix's responses, so its own r/2 stays under ``rate`` and its
count + r/2 within ``rate``, where its limit is ``2 * rate``) and the response is sent
without classification.  Once a prefix is over that, each of its responses is
classified and accounted in its bucket.  A prefix new to its gate
slot (first seen, or back after another prefix took the slot) starts with the largest debt,
r/2 = ``rate``, so the rest of that second is checked in full: losing a slot to a colliding
source never lets a flooding prefix through unchecked.  Buckets do not see the responses sent
before their prefix went over in the current second, so a known quiet prefix that bursts may
pass up to ``3 * rate`` in one bucket in that first second; from the next second on a flooding
prefix is accounted in full.

Slip (BIND's and Knot's counter, not NSD's random draw): among the limited responses of a
bucket, every ``slip``-th is SLIP, the others DROP; 0 drops all, 1 slips all.

Logging (logger ``imrs.rrl``, INFO), as NSD: when a bucket starts being limited, and when it
stops (its smoothed rate back under the limit, checked at its next response and once a second
for up to `TRACKED` limited buckets; or its slot taken by another bucket).  At most
`LOG_LINES` lines per `LOG_WINDOW` seconds; the others are counted in
``stats.log_suppressed`` and summed up when the window ends.  With ``log_only`` the same
decisions are made, counted (``stats.log_only_would_limit``) and logged, but every response is
sent; the accounting is that of the enforcing mode, so the counts say what it would have done.

The hot path is the gate: in C (``imrs._fastpath.RrlGate``, over these same array columns,
called by the C UDP loop without entering Python) when the extension is built, else a closure
over the tables (see `RateLimiter._decide`), written for CPython 3.11: no attribute lookups,
integer ``+ - * %`` and comparisons only, unsigned array columns.  Both make the same
decisions (tests/test_rrl.py runs on both); what is over the gate is Python (`_account`).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from array import array
from collections.abc import Callable

from siphash24 import siphash24

from imrs.answer import fastc
from imrs.config import RrlConfig

log = logging.getLogger("imrs.rrl")

SEND, DROP, SLIP = 0, 1, 2

# categories (part of a bucket's key)
POSITIVE, LARGE, NXDOMAIN, NODATA, REFERRAL, ERROR = 1, 2, 3, 4, 5, 6
CATEGORY_NAMES = {POSITIVE: "positive", LARGE: "large", NXDOMAIN: "nxdomain", NODATA: "nodata",
                  REFERRAL: "referral", ERROR: "error"}

#: A positive response of this many octets or more is "large" (Knot's RRL_PSIZE_LARGE).
LARGE_SIZE = 1024
#: Query types whose answers are "large" whatever their size (NSD's any, rrsig, dnskey).
LARGE_QTYPES = frozenset((255, 46, 48))
#: Steps without traffic after which a rate is forgotten (NSD rrl_attenuate_bucket).
_FORGET_STEPS = 16
#: At most this many log lines per window of this many seconds.
LOG_LINES = 20
LOG_WINDOW = 10
#: Limited buckets watched once a second so that their end is logged even without traffic.
TRACKED = 1024

_TYPE_NS, _TYPE_SOA, _TYPE_OPT = 2, 6, 41
_NO_QTYPE = -1
_EMPTY = 0  # the key of an unused bucket slot (a key is odd)


class RrlStats:
    """Counters of the rate limiter.  Read as attributes (``stats.limited``) or `as_dict`.

    Each is kept where it is counted: in `own` (Python code) plus, for the hot path's
    counters, what ``counts()`` reports (the closure's cells, or the C gate's fields)."""

    #: responses: seen by decide(), exempt ones included; classified: those that went through
    #: the buckets (their prefix over the gate); limited = dropped + slipped (0 in log-only
    #: mode, where log_only_would_limit counts them); blocks / unblocks: buckets starting /
    #: ending being limited; collisions: bucket slots taken over by another bucket.
    FIELDS = ("responses", "classified", "limited", "dropped", "slipped", "exempt",
              "log_only_would_limit", "blocks", "unblocks", "collisions", "log_suppressed")

    def __init__(self, counts: Callable[[], dict[str, int]] = dict) -> None:
        self.own = dict.fromkeys(self.FIELDS, 0)
        self._counts = counts

    def __getattr__(self, name: str) -> int:
        if name in RrlStats.FIELDS:
            return self.own[name] + self._counts().get(name, 0)
        raise AttributeError(name)

    def as_dict(self) -> dict[str, int]:
        counted = self._counts()
        return {name: self.own[name] + counted.get(name, 0) for name in self.FIELDS}


class RateLimiter:
    """The response rate limiter of one serving loop (not thread-safe)."""

    def __init__(self, config: RrlConfig, clock: Callable[[], float] = time.monotonic,
                 native: bool | None = None, secret: bytes | None = None):
        """native: decide in C (imrs._fastpath.RrlGate: the same decisions on the same
        tables); None: when the extension is built and enabled.  secret: the 16-octet key of
        the bucket hash (default: random)."""
        self.config = config
        self._clock = clock
        self._rate = config.rate
        self._limit = 2 * config.rate  # NSD's rrl_ratelimit: its smoothed rate is 2x qps
        self._slip = config.slip
        self._log_only = config.log_only
        self._sh4 = 32 - config.ipv4_prefix
        self._sh6 = 128 - config.ipv6_prefix
        self._ex4, self._ex6 = _exempt_tables(config.exempt)
        size = max(1, int(config.table_size))
        self._size = size
        #: the SipHash-2-4 key of bucket keys, secret so that sources cannot aim at one
        #: another's slots (tests give a fixed one, to have the same slots in every run)
        self._secret = os.urandom(16) if secret is None else bytes(secret)
        if len(self._secret) != 16:
            raise ValueError("the RRL secret is 16 octets")
        # The gate, per prefix, two-way (a prefix lives in slot j or j ^ 1 of an even-sized
        # table): a word (the prefix's gate key * 2**16 + the step mod 2**16), r/2 + the
        # responses of the step so far, and r/2.  The gate key of an IPv4 prefix is its
        # number; of an IPv6 prefix, 30 bits of its hash.  Prefixes with the same gate key
        # share an entry: their sum is more traffic, never less, so that can only send a
        # response through the buckets, never let one pass unchecked.  (Unsigned columns:
        # array stores those without PyArg_Parse.)
        gsize = size + (size & 1)
        self._gword = array("Q", bytes(8 * gsize))
        self._gused = array("Q", bytes(8 * gsize))
        self._ghalf = array("Q", bytes(8 * gsize))
        # The buckets: key (EMPTY in an unused slot), step, responses sent in the step, r/2,
        # limited responses in the current episode (0: not limited).
        self._bkey = array("Q", bytes(8 * size))
        self._bstamp = array("q", bytes(8 * size))
        self._bcount = array("I", bytes(4 * size))
        self._bhalf = array("I", bytes(4 * size))
        self._blimited = array("Q", bytes(8 * size))
        # limited buckets to watch: (slot, key, description); bounded by TRACKED
        self._tracked: list[tuple[int, int, str]] = []
        self._log_window: int | None = None
        self._log_left = LOG_LINES
        self._suppressed_in_window = 0
        self._counts: Callable[[], dict[str, int]] = dict
        self.stats = RrlStats(lambda: self._counts())
        #: the C gate when deciding in C (serve/udp.py hands it to the C loop), else None
        self.gate = None
        if native is None:
            native = fastc.enabled() and hasattr(fastc._fastpath, "RrlGate")
        if config.rate <= 0:  # off: the caller should not even ask
            self.decide = _always_send  # type: ignore[method-assign]
        elif native:
            self.gate = fastc._fastpath.RrlGate(
                (self._gword, self._gused, self._ghalf),
                (self._bkey, self._bstamp, self._bcount, self._bhalf, self._blimited),
                self._rate, self._slip, self._log_only, self._sh4, self._sh6,
                tuple((plen, net) for plen, nets in self._ex4.items() for net in nets),
                tuple((plen, net >> 64, net & (2**64 - 1)) for plen, nets in self._ex6.items() for net in nets),
                self._secret, self._tick, self._blocked, self._unblocked,
                None if clock is time.monotonic else clock)
            self.decide = self.gate.decide  # type: ignore[method-assign]
            self._counts = self.gate.counts
        else:
            self.decide = self._decide()  # type: ignore[method-assign]

    def decide(self, peer: bytes, query: bytes, response: bytes) -> int:  # replaced in __init__
        """peer: the packed source address (4 octets IPv4, 16 octets IPv6, as in the
        sockaddr); query: the query wire (unused: the response's question is read instead);
        response: the response wire about to be sent over UDP.  Returns SEND, DROP or SLIP."""
        raise NotImplementedError  # pragma: no cover - each instance has its closure

    def memory(self) -> int:
        """Octets held by the tables (fixed at construction)."""
        return sum(col.itemsize * len(col) for col in (
            self._gword, self._gused, self._ghalf,
            self._bkey, self._bstamp, self._bcount, self._bhalf, self._blimited))

    # -- the hot path ----------------------------------------------------------------------

    def _decide(self) -> Callable[[bytes, bytes, bytes], int]:
        clock = self._clock
        rate = self._rate
        sh4 = self._sh4
        ex4 = self._ex4
        gword, gused, ghalf = self._gword, self._gused, self._ghalf
        gsize = len(gword)
        from_bytes = int.from_bytes
        account = self._account
        gate_key6 = self._gate_key6
        tick = self._tick
        n = exempt = 0
        # the current step and its bounds: most calls compare two floats instead of making
        # an int of the time
        now = step = 0
        lo = hi = 0.0

        def counts() -> dict[str, int]:
            return {"responses": n, "exempt": exempt}

        self._counts = counts

        # (CPython 3.11 has fast paths for int + - * and comparisons; & ^ << // cost more)
        def decide(peer: bytes, query: bytes, response: bytes) -> int:
            nonlocal n, exempt, now, step, lo, hi
            n += 1
            t = clock()
            if not lo <= t < hi:
                now = math.floor(t)
                lo = float(now)
                hi = lo + 1.0
                step = now % 65536
                tick(now)
            if len(peer) == 4:
                if ex4:
                    g = from_bytes(peer)
                    if _exempt(g, ex4, 32):
                        exempt += 1
                        return SEND
                    g >>= sh4
                else:
                    g = from_bytes(peer) >> sh4
            else:
                g = gate_key6(peer)
                if g < 0:
                    exempt += 1
                    return SEND
            j = g % gsize
            word = g * 65536 + step
            w = gword[j]
            if w != word:
                if w // 65536 != g:  # not in the first slot of its pair: the other, or new
                    j ^= 1
                    w2 = gword[j]
                    if w2 // 65536 != g:  # new: of the pair, take the slot stepped least
                        # lately, the first on a tie
                        if (step - w2) % 65536 <= (step - w) % 65536:
                            j ^= 1
                        # it starts with the largest debt any of its buckets can have (a
                        # bucket's r/2 never exceeds the rate): the gate never owes less than
                        # a bucket, and the rest of this step is checked in full
                        gword[j] = word
                        ghalf[j] = rate
                        gused[j] = rate + 1
                        return account(g, peer, now, response)
                    w = w2
                if w != word:  # this prefix, a new step
                    h = ghalf[j]
                    h = _fold(h, gused[j] - h, (step - w) % 65536)
                    gword[j] = word
                    ghalf[j] = h
                    gused[j] = u = h + 1
                    if u <= rate:
                        return SEND
                    return account(g, peer, now, response)
            u = gused[j] + 1  # this prefix, this step
            gused[j] = u
            if u <= rate:
                return SEND
            return account(g, peer, now, response)

        return decide

    # -- the slow path ---------------------------------------------------------------------

    def _gate_key6(self, peer: bytes) -> int:
        """The gate key of a 16-octet (or odd) address: the IPv4 one for an IPv4-mapped
        address, else 30 bits of the prefix's hash; -1 if the address is exempt."""
        a = int.from_bytes(peer)
        if len(peer) == 16 and a >> 32 == 0xFFFF:  # IPv4-mapped: count it as IPv4
            a &= 0xFFFFFFFF
            if self._ex4 and _exempt(a, self._ex4, 32):
                return -1
            return a >> self._sh4
        if self._ex6 and _exempt(a, self._ex6, 128):
            return -1
        return hash(a >> self._sh6) & 0x3FFFFFFF

    def _bucket_key(self, peer: bytes, cat: int, name: bytes, qtype: int) -> int:
        """A bucket's key (odd, never `_EMPTY`): SipHash-2-4 under the secret of the prefix
        (family octet and masked address; an IPv4-mapped address is IPv4), the category, the
        qtype (+1; 0: none) and the name, as imrs._fastpath.RrlGate computes it."""
        a = int.from_bytes(peer)
        if len(peer) == 4 or (len(peer) == 16 and a >> 32 == 0xFFFF):
            prefix = b"\x04" + ((a & 0xFFFFFFFF) >> self._sh4 << self._sh4).to_bytes(4)
        else:
            prefix = b"\x06" + (a >> self._sh6 << self._sh6).to_bytes(16)
        data = prefix + bytes((cat,)) + (qtype + 1).to_bytes(3) + name
        return int.from_bytes(siphash24(data, key=self._secret).digest(), "little") | 1

    def _account(self, g: int, peer: bytes, now: int, response: bytes) -> int:
        """The decision for a response of a prefix over the gate (`g`: its gate key): by the
        response's bucket.  (imrs._fastpath.RrlGate does the same in C.)"""
        own = self.stats.own
        own["classified"] += 1
        cat, name, qtype = classify(response)
        key = self._bucket_key(peer, cat, name, qtype)
        i = key % self._size
        bkey, bstamp, bcount, bhalf, blimited = self._bkey, self._bstamp, self._bcount, self._bhalf, self._blimited
        if bkey[i] != key:  # a new bucket, here or in the place of another one
            if bkey[i] != _EMPTY:
                own["collisions"] += 1
                # (if that one was limited, _tick reports its end)
            bkey[i] = key
            bstamp[i] = now
            bcount[i] = 1
            bhalf[i] = 0
            blimited[i] = 0
            return SEND
        t = bstamp[i]
        if t == now:
            c = bcount[i]
            h = bhalf[i]
        else:
            h = _fold(bhalf[i], bcount[i], now - t)
            bhalf[i] = h
            bstamp[i] = now
            c = 0
            if blimited[i] and h < self._rate:  # NSD: "unblock" when the rate is back under
                self._unblocked(now, i, key, peer, response)
        if h < self._rate and c + h + 1 < self._limit:  # NSD: limited when max(r, count + r/2) >= 2 * rate
            bcount[i] = c + 1
            return SEND
        # limited, and counted all the same, as NSD counts every response: a source that keeps
        # flooding stays limited (it gets slips only), instead of a steady `rate` of full answers
        bcount[i] = c + 1
        n = blimited[i] + 1
        blimited[i] = n
        if n == 1:
            self._blocked(now, i, key, peer, response)
        if self._log_only:
            own["log_only_would_limit"] += 1
            return SEND
        own["limited"] += 1
        if self._slip and n % self._slip == 0:
            own["slipped"] += 1
            return SLIP
        own["dropped"] += 1
        return DROP

    def _blocked(self, now: int, i: int, key: int, peer: bytes, response: bytes) -> None:
        """A bucket starts being limited: count, watch and log it (rare: once an episode)."""
        self.stats.own["blocks"] += 1
        description = self._describe(peer, response)
        if len(self._tracked) < TRACKED:
            self._tracked.append((i, key, description))
        self._log(now, "rrl: block %s%s", description, " (log-only)" if self._log_only else "")

    def _unblocked(self, now: int, i: int, key: int, peer: bytes, response: bytes) -> None:
        """A limited bucket's rate is back under the limit, seen at its next response."""
        self._unblock(now, i, key, self._describe(peer, response))

    def _unblock(self, now: int, i: int, key: int, description: str, why: str = "") -> None:
        self.stats.own["unblocks"] += 1
        count = self._blimited[i] if self._bkey[i] == key else 0
        if self._bkey[i] == key:
            self._blimited[i] = 0
        self._log(now, "rrl: unblock %s%s%s", description,
                  f" after {count} limited" if count else "", why)

    def _tick(self, now: int) -> None:
        """Once a step: end the watched limited buckets whose rate is back under the limit
        (or whose slot another bucket took), and close the log window."""
        if self._tracked:
            keep = []
            for i, key, description in self._tracked:
                if self._bkey[i] != key:
                    self._unblock(now, i, key, description, " (its slot was taken by another bucket)")
                elif not self._blimited[i]:
                    pass  # ended at its own next response
                elif self._bstamp[i] != now and _fold(self._bhalf[i], self._bcount[i],
                                                      now - self._bstamp[i]) < self._rate:
                    self._unblock(now, i, key, description)
                else:
                    keep.append((i, key, description))
            self._tracked = keep
        self._log_roll(now)

    def _describe(self, peer: bytes, response: bytes) -> str:
        cat, name, _ = classify(response)
        qtype = _qtype_of(response)
        return (f"{CATEGORY_NAMES.get(cat, '?')} {_name_text(name) if cat != ERROR else '-'}"
                f" for {self._prefix_text(peer)} (from {_address_text(peer)}"
                f"{f' type {qtype}' if qtype >= 0 else ''})")

    def _log(self, now: int, fmt: str, *args: object) -> None:
        self._log_roll(now)
        if self._log_left > 0:
            self._log_left -= 1
            log.info(fmt, *args)
        else:
            self.stats.own["log_suppressed"] += 1
            self._suppressed_in_window += 1

    def _log_roll(self, now: int) -> None:
        window = now // LOG_WINDOW
        if window != self._log_window:
            self._log_window = window
            self._log_left = LOG_LINES
            if self._suppressed_in_window:
                log.info("rrl: %d more log lines suppressed (at most %d every %d s)",
                         self._suppressed_in_window, LOG_LINES, LOG_WINDOW)
                self._suppressed_in_window = 0

    def _prefix_text(self, peer: bytes) -> str:
        a = int.from_bytes(peer)
        if len(peer) == 4 or (len(peer) == 16 and a >> 32 == 0xFFFF):
            a &= 0xFFFFFFFF
            return f"{ipaddress.IPv4Address(a >> self._sh4 << self._sh4)}/{32 - self._sh4}"
        if len(peer) == 16:
            return f"{ipaddress.IPv6Address(a >> self._sh6 << self._sh6)}/{128 - self._sh6}"
        return peer.hex()


def _always_send(peer: bytes, query: bytes, response: bytes) -> int:
    return SEND


def _fold(half: int, count: int, elapsed: int) -> int:
    """r/2 after `elapsed` steps, from r/2 and the count of the last step with traffic:
    r = r/2 + count once, then halved for each step without traffic (NSD rrl_update and
    rrl_attenuate_bucket); forgotten after 16 steps, or if the clock went back."""
    if elapsed == 1:
        return (half + count) >> 1
    if elapsed <= 0 or elapsed > _FORGET_STEPS:
        return 0
    return (half + count) >> elapsed


def _exempt_tables(cidrs: tuple[str, ...]) -> tuple[dict[int, frozenset[int]], dict[int, frozenset[int]]]:
    """{prefix length: the networks' numbers shifted right by their host bits}, IPv4 and IPv6
    (an IPv4-mapped IPv6 network is an IPv4 one)."""
    v4: dict[int, set[int]] = {}
    v6: dict[int, set[int]] = {}
    for text in cidrs:
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.network_address.ipv4_mapped:
            net = ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
        table = v4 if net.version == 4 else v6
        table.setdefault(net.prefixlen, set()).add(int(net.network_address) >> (net.max_prefixlen - net.prefixlen))
    return ({n: frozenset(s) for n, s in v4.items()}, {n: frozenset(s) for n, s in v6.items()})


def _exempt(address: int, table: dict[int, frozenset[int]], bits: int) -> bool:
    for plen, nets in table.items():
        if address >> (bits - plen) in nets:
            return True
    return False


# -- reading the response wire ---------------------------------------------------------------

def classify(response: bytes) -> tuple[int, bytes, int]:
    """(category, imputed name as lower-case uncompressed wire, qtype or -1) of a response."""
    r = response
    try:
        rcode = r[3] & 0x0F
        if rcode and rcode != 3:
            return ERROR, b"", _NO_QTYPE
        # the question: one uncompressed name, as ever, read in line; anything else in general
        qend = 0
        if r[4] == 0 and r[5] == 1:
            o = 12
            n = r[o]
            while 0 < n < 0x40:
                o += n + 1
                n = r[o]
            if n == 0:
                qend = o + 1
                o = qend + 4
                if qend - 12 > 255:
                    raise IndexError("question name longer than 255 octets")
            else:
                o = _skip_name(r, 12) + 4
        else:
            o = 12
            for _ in range((r[4] << 8) | r[5]):
                o = _skip_name(r, o) + 4
        if o > len(r):
            raise IndexError("truncated question")
        if rcode:
            return NXDOMAIN, _soa_owner(r, o, (r[6] << 8) | r[7]), _NO_QTYPE
        if r[6] or r[7]:
            if r[4] or r[5]:
                qname = r[12:qend].lower() if qend else _read_name(r, 12)
                qtype = (r[o - 4] << 8) | r[o - 3]
            else:
                qname, qtype = b"", _NO_QTYPE
            if qtype in LARGE_QTYPES or len(r) >= LARGE_SIZE:
                return LARGE, qname, _NO_QTYPE
            return POSITIVE, qname, qtype
        if not r[2] & 0x04 and (r[8] or r[9]):
            # a referral: the first authority record is the NS RRset, its owner most often a
            # pointer into the question
            b = r[o]
            if b >= 0xC0 and r[o + 2] == 0 and r[o + 3] == _TYPE_NS:
                p = ((b & 0x3F) << 8) | r[o + 1]
                if 12 <= p < qend:
                    return REFERRAL, r[p:qend].lower(), _NO_QTYPE
            name = _ns_owner(r, o)
            if name is not None:
                return REFERRAL, name, _NO_QTYPE
        return NODATA, _soa_owner(r, o, 0), _NO_QTYPE
    except IndexError:  # a malformed response
        return ERROR, b"", _NO_QTYPE


def _skip_name(r: bytes, o: int) -> int:
    """The offset after the (possibly compressed) name at `o`."""
    n = r[o]
    while n:
        if n >= 0xC0:
            return o + 2
        o += n + 1
        n = r[o]
    return o + 1


def _read_name(r: bytes, o: int) -> bytes:
    """The name at `o`, uncompressed, in lower case."""
    parts = []
    hops = length = 0
    n = r[o]
    while n:
        if n >= 0xC0:
            hops += 1
            if hops > 64:
                raise IndexError("compression loop")
            o = ((n & 0x3F) << 8) | r[o + 1]
        else:
            length += n + 1
            if length > 254:
                raise IndexError("name too long")
            parts.append(r[o:o + n + 1])
            o += n + 1
        n = r[o]
    parts.append(b"\x00")
    return b"".join(parts).lower()


def _skip_records(r: bytes, o: int, count: int) -> int:
    """The offset after `count` records from `o` (owners most often a pointer or the root)."""
    for _ in range(count):
        b = r[o]
        if b >= 0xC0:
            e = o + 2
        elif b == 0:
            e = o + 1
        else:
            e = _skip_name(r, o)
        o = e + 10 + ((r[e + 8] << 8) | r[e + 9])
    return o


def _soa_owner(r: bytes, o: int, an: int) -> bytes:
    """The owner of the first SOA record in the authority section, "the zone"; b"" if none.
    `o` is the offset after the question, `an` the number of answer records to skip."""
    if an:
        o = _skip_records(r, o, an)
    return _owner_of_first(r, o, (r[8] << 8) | r[9], _TYPE_SOA) or b""


def _ns_owner(r: bytes, o: int) -> bytes | None:
    """The owner of the first NS record in the authority section (`o`: its start, there
    being no answers), None if there is none."""
    return _owner_of_first(r, o, (r[8] << 8) | r[9], _TYPE_NS)


def _owner_of_first(r: bytes, o: int, count: int, rrtype: int) -> bytes | None:
    """The owner of the first record of type `rrtype` (< 256) among `count` from `o`."""
    for _ in range(count):
        b = r[o]
        if b >= 0xC0:
            e = o + 2
        elif b == 0:
            e = o + 1
        else:
            e = _skip_name(r, o)
        if r[e + 1] == rrtype and r[e] == 0:
            return b"\x00" if b == 0 else _read_name(r, o)
        o = e + 10 + ((r[e + 8] << 8) | r[e + 9])
    return None


def _qtype_of(response: bytes) -> int:
    try:
        if not (response[4] or response[5]):
            return _NO_QTYPE
        o = _skip_name(response, 12)
        return (response[o] << 8) | response[o + 1]
    except IndexError:
        return _NO_QTYPE


def _name_text(name: bytes) -> str:
    if not name:
        return "?"
    labels, o = [], 0
    while o < len(name) and name[o]:
        labels.append(name[o + 1:o + 1 + name[o]].decode("ascii", "backslashreplace"))
        o += name[o] + 1
    return ".".join(labels) + "."


def _address_text(peer: bytes) -> str:
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return peer.hex()


def slip_response(response: bytes) -> bytes:
    """The truncated form of `response`: TC set, the question kept, no answer nor authority
    records, and of the additional section only the OPT record (kept as it was).  The bare
    header (TC set, all counts 0) if the response does not parse."""
    r = response
    if len(r) < 12:
        raise ValueError("not a DNS message: shorter than a header")
    header = bytearray(r[:12])
    header[2] |= 0x02  # TC
    try:
        o = 12
        for _ in range((r[4] << 8) | r[5]):
            o = _skip_name(r, o) + 4
        question_end = o
        if question_end > len(r):
            raise IndexError("truncated question")
        opt = b""
        if r[10] or r[11]:
            start = _last_opt(r, question_end)
            if start >= 0:
                opt = r[start:]
            else:  # walk the records to the OPT
                o = _skip_records(r, o, ((r[6] << 8) | r[7]) + ((r[8] << 8) | r[9]))
                for _ in range((r[10] << 8) | r[11]):
                    b = r[o]
                    e = o + 2 if b >= 0xC0 else o + 1 if b == 0 else _skip_name(r, o)
                    end = e + 10 + ((r[e + 8] << 8) | r[e + 9])
                    if end > len(r):
                        break
                    if b == 0 and r[e] == 0 and r[e + 1] == _TYPE_OPT:
                        opt = r[o:end]
                        break
                    o = end
    except IndexError:
        header[4:12] = bytes(8)
        return bytes(header)
    header[6:12] = b"\x00\x00\x00\x00\x00\x01" if opt else bytes(6)
    return bytes(header) + r[12:question_end] + opt


def _last_opt(r: bytes, after: int) -> int:
    """The offset of the OPT record if it is the last record of the message, as servers (imrs
    among them) write it, else -1 (then the caller walks the records).  Not found by walking
    but as the first OPT header after the question: a root owner, type OPT, EDNS version 0,
    no flag but DO; it must then have the RDLENGTH that ends the message.  The first: what
    follows the OPT's header is its options, which a client can choose in part (its cookie),
    so a decoy there comes later and is never looked at; zone data before the OPT looking
    like such a header, and ending the message, is a 2**-55 event."""
    end = len(r)
    pos = after - 1
    for _ in range(16):
        pos = r.find(b"\x00\x00\x29", pos + 1)
        if pos < 0 or pos + 11 > end:
            return -1
        if r[pos + 6] == 0 and not r[pos + 7] & 0x7F:  # an OPT header
            return pos if ((r[pos + 9] << 8) | r[pos + 10]) == end - pos - 11 else -1
    return -1
