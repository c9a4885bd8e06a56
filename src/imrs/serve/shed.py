"""Shedding under overload: the busiest client prefixes lose their queries first.

When a flood outruns a worker, its UDP socket's receive queue fills and the kernel drops
what arrives next, whoever sent it: a real client loses the same fraction of its queries as
the flood.  (NSD and Knot leave it at that: under the junk flood of tests/test_flood.py NSD
answers 25-50 % of a modest client's queries.)  imrs gives each client prefix (the RRL prefix
lengths, /24 and /56 by default) an equal share of what the worker can answer, and a prefix
that asks less than its share is answered in full: max-min fairness.  Only a worker that is
behind its socket sheds (its queue long, and the kernel dropping datagrams for a full queue),
so a server that keeps up never loses a query to it; a client with many queries in flight
(dnsperf, a busy resolver) is not shed either, as long as the worker keeps up with it.

The work is csrc/fastpath/shed.c (``Shedder``, one per UDP socket, used by the C loop):

- it counts queries per prefix in windows of 100 ms and measures how many the worker reads
  and answers in a window (over the time it was busy, at most what it did in the last window
  it was busy throughout: bursts overstate it when another process wants the core); at each
  window's end the share is the water level of the prefixes' averages that fits a fraction of
  that (lowered after a window in which the queue still overflowed); a prefix's average is the
  mean of its count in the window (scaled up by what an overflowing queue and the filter let
  through) and its average the window before, as one window's count moves with a resolver's
  bursts;
- where the kernel allows it (bpf(2): root or CAP_BPF), an eBPF socket filter (IPv4 or
  IPv6, as the socket is) drops a busy prefix's datagrams before they are queued, keeping
  each with the probability share / its average: reading a datagram only to drop it would
  still cost about a third of answering it.  A prefix is busy once its average is over twice its share, and
  stays so until it is at its share or less, so that a client near its share is not thinned
  for the noise in the counts; when the prefixes between one and two shares would not fit
  whole in the capacity kept in reserve, the busiest of them are busy too;
- in user space, while behind, a query from a prefix already over its share and a quarter
  in this window is dropped unanswered (when the kernel refuses the filter; with
  the filter, over twice its share), but one whose average was within its share may burst to
  four shares;
- a queue filling past half between two windows' ends (another process took the CPU) halves
  what the filter keeps at once, and again while it grows, before the queue overflows and the
  kernel drops at random.

``[rrl] shed = false`` turns it off.  The pure-Python loops (without the C extension) do not
shed.  What it does shows in the metrics: queries shed in user space, datagrams the filter
dropped, and the kernel's drops for a full queue while shedding.
"""

from __future__ import annotations

import logging
import os

from imrs.answer import fastc
from imrs.config import RrlConfig

log = logging.getLogger("imrs.shed")


def make_shedder(rrl: RrlConfig, fd: int) -> object | None:
    """The Shedder of the UDP socket `fd`, for the C loop; None when shedding is off or the C
    extension is not built.  Where the kernel refuses the filter (not root, no CAP_BPF, an old
    kernel), shedding is done in user space only, which the log says (once per socket)."""
    c_type = getattr(fastc._fastpath, "Shedder", None) if fastc.enabled() else None
    if not rrl.shed or c_type is None:
        return None
    shedder = c_type(rrl.ipv4_prefix, rrl.ipv6_prefix, fd)
    if shedder.filter_errno:
        log.info("UDP shedding without the kernel filter (%s): a flood's shed queries are still read",
                 os.strerror(shedder.filter_errno))
    return shedder
