"""A cap on FORMERR and NOTIMP responses per second, whatever their sources.

Junk (a header alone, a question cut short, an unknown opcode...) gets a header-only FORMERR
or NOTIMP.  In a junk flood from spoofed sources every such response goes to a victim and
costs the server a send, which is several times what reading the query costs.  NSD caps
them: each server process sends at most about 100 a second (``ERROR_RATELIMIT`` in its
query.c) and drops the rest, whether RRL is on or off.  imrs does the same per worker, with
``[rrl] error-rate`` (default 100; 0 = no cap).  What counts is exactly a 12-octet response
with rcode FORMERR or NOTIMP: the answers to malformed queries.  A FORMERR that carries an
OPT record (a bad EDNS option, a question-less query with OPT) is not counted, as NSD does
not count it.  TCP is not limited: its sources cannot be spoofed.

The C loop (csrc/fastpath/errlimit.c, ``ErrorLimit``) and this class count the same way;
:func:`make_error_limit` gives the C one when the extension is built, so that the C loop
and the Python handler of one worker share one count.
"""

from __future__ import annotations

import time
from typing import Protocol

from imrs.answer import fastc
from imrs.answer.query import RCODE_FORMERR, RCODE_NOTIMP


class Limit(Protocol):
    rate: int
    dropped: int

    def allow(self, now: int | None = None) -> bool: ...


class ErrorLimit:
    """At most ``rate`` error responses in each second of the clock; 0 = no limit."""

    __slots__ = ("_count", "_second", "dropped", "rate")

    def __init__(self, rate: int):
        if rate < 0:
            raise ValueError("ErrorLimit: rate must be 0 (no limit) or more")
        self.rate = rate
        self.dropped = 0  # responses refused, in all
        self._second = -1
        self._count = 0

    def allow(self, now: int | None = None) -> bool:
        """Whether one more error response may go out now (``now``: whole seconds of the
        clock, ``int(time.time())`` by default); a refusal is counted in ``dropped``."""
        if self.rate == 0:
            return True
        second = int(time.time()) if now is None else now
        if second != self._second:
            self._second = second
            self._count = 0
        if self._count < self.rate:
            self._count += 1
            return True
        self.dropped += 1
        return False


def is_error(response: bytes) -> bool:
    """A header-only FORMERR or NOTIMP: what the limit counts."""
    return len(response) == 12 and (response[3] & 0xF) in (RCODE_FORMERR, RCODE_NOTIMP)


def make_error_limit(rate: int) -> Limit | None:
    """The limit for one worker (None for 0: no limit): the C one when the extension is
    built and on, so that the C loop can take it, else the Python one."""
    if rate == 0:
        return None
    c_type = getattr(fastc._fastpath, "ErrorLimit", None) if fastc.enabled() else None
    return c_type(rate) if c_type is not None else ErrorLimit(rate)
