"""UDP: receive, answer, send — the hot loop.

The socket is non-blocking and watched by the event loop; each wake-up drains up to
``BATCH`` datagrams, so under load one select() call serves many packets.  Nothing here may
raise into the loop: a failure to answer one packet is counted and logged (rate-limited),
and the next packet is served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from imrs.answer import fastc
from imrs.serve import batchio
from imrs.serve.errlimit import Limit, is_error
from imrs.serve.notify_in import NotifyReceiver
from imrs.serve.rrl import SEND, SLIP, RateLimiter, slip_response
from imrs.serve.snapshot import Snapshot, SnapshotHolder
from imrs.serve.traffic import TrafficCounters
from imrs.telemetry.dnstap import DnstapWriter

log = logging.getLogger("imrs.udp")

# The C loop and the C answer, when built and not turned off (IMRS_NO_FASTC=1)
udp_drain = getattr(fastc._fastpath, "udp_drain", None) if fastc.enabled() else None
c_answer = fastc._fastpath.answer if udp_drain is not None else None

BATCH = 512  # datagrams per wake-up before yielding to TCP and timers
RECV_SIZE = 65535  # a datagram is never cut short: a cut query could parse as another


class UdpListener:
    """One UDP socket bound to one address."""

    def __init__(self, sock: socket.socket, holder: SnapshotHolder, stats: ServeStats,
                 notify: NotifyReceiver | None = None, rrl: RateLimiter | None = None,
                 cookie_check: Callable[[bytes, bytes], bool] | None = None,
                 traffic: TrafficCounters | None = None, tap: DnstapWriter | None = None,
                 error_limit: Limit | None = None, shedder: object | None = None):
        self.sock = sock
        #: the socket's Shedder (serve/shed.py), for the C loop: when the queries outrun the
        #: worker, the busiest prefixes lose theirs first; None: off
        self.shedder = shedder
        #: dnstap (telemetry/dnstap.py): every query and response logged, sampled as configured;
        #: it takes the Python handler for every datagram (the C loop still receives and sends)
        self.tap = tap
        host, port = sock.getsockname()[:2]
        wildcard = host in ("0.0.0.0", "::")
        self._local = (b"" if wildcard else socket.inet_pton(sock.family, host.split("%")[0]), port)
        #: the worker's traffic counters (queries, responses, sizes, rcodes...); None: not kept
        self.traffic = traffic
        self.notify = notify
        self.holder = holder
        self.stats = stats
        self.rrl = rrl
        #: the worker's cap on header-only FORMERR and NOTIMP responses (serve/errlimit.py)
        self.error_limit = error_limit
        #: whether a query carries a valid server cookie from the peer (exempt from RRL)
        self.cookie_check = cookie_check
        self.ipv6 = sock.family == socket.AF_INET6
        self._last_error_log = 0.0
        self._batch: batchio.BatchSocket | None = None
        self.rrl_exempt_cookie = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock.setblocking(False)
        if udp_drain is not None and batchio.AVAILABLE:
            loop.add_reader(self.sock.fileno(), self._drain_c)
            path = "C loop (recvmmsg/sendmmsg)"
        elif batchio.AVAILABLE:
            self._batch = batchio.BatchSocket(self.sock.fileno())
            loop.add_reader(self.sock.fileno(), self._drain_batched)
            path = "batched Python loop (recvmmsg/sendmmsg)"
        else:
            loop.add_reader(self.sock.fileno(), self._drain)
            path = "plain Python loop (recvfrom/sendto)"
        log.debug("UDP on %s: %s", self.sock.getsockname()[:2], path)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def counters(self) -> dict[str, int]:
        counters = {"rrl_exempt_cookie": self.rrl_exempt_cookie} if self.rrl is not None else {}
        if self.shedder is not None:
            counters["udp_shed"] = self.shedder.shed
            counters["udp_filtered"] = self.shedder.filtered
            counters["udp_overflow"] = self.shedder.overflow
        return counters

    def _handler(self, snapshot: Snapshot, c_tried: bool = False) -> Callable[[bytes, bytes, int], bytes | None]:
        """``handle(wire, peer, port)``: the response to send for one datagram (None: nothing), from
        `snapshot`, rate limiting applied; it never raises.  One per drain, so the per-packet
        work finds everything in local variables; every loop below uses it.  ``c_tried``: the
        caller (the C loop) ran the C answer first, and comes here only when it declined."""
        ipv6 = self.ipv6
        notify = self.notify
        is_notify = NotifyReceiver.is_notify
        decide = self.rrl.decide if self.rrl is not None else None
        fast = c_answer if snapshot.compiled is not None and not snapshot.unavailable and not c_tried else None
        compiled = snapshot.compiled
        if c_tried:
            def answer(wire: bytes, tcp: bool, ipv6: bool, peer: bytes) -> bytes | None:
                return snapshot.answer(wire, tcp, ipv6, peer, c_tried=True)
        else:
            answer = snapshot.answer
        limited = self._limited
        error_limit = self.error_limit
        tap = self.tap
        local, local_port = self._local

        def handle(wire: bytes, peer: bytes, port: int) -> bytes | None:
            try:
                response = None
                if notify is not None and is_notify(wire):
                    response = notify.handle(wire, _peer_text(peer))
                if response is None:
                    # the C half of the fast path, else the whole of Snapshot.answer
                    response = fast(compiled, wire, False, ipv6) if fast is not None else None
                    if response is None:
                        response = answer(wire, False, ipv6, peer)
                if response is not None and error_limit is not None and is_error(response) and not error_limit.allow():
                    response = None  # over the error cap: no answer, and nothing for RRL
                if response is not None and decide is not None:
                    verdict = decide(peer, wire, response)
                    if verdict != SEND:
                        response = limited(verdict, wire, peer, response)
                if tap is not None:
                    tap.log_exchange(wire, response, peer, port, local=local, local_port=local_port)
                return response
            except Exception:  # noqa: BLE001 - a bug must not stop the server: count it, log it, go on
                self._internal_error()
                return None

        return handle

    def _limited(self, verdict: int, wire: bytes, peer: bytes, response: bytes) -> bytes | None:
        """A response RRL limits: sent anyway for a query with a valid server cookie (the
        source is proven, not spoofed), else truncated (slip) or dropped."""
        if self.cookie_check is not None and self.cookie_check(wire, peer):
            self.rrl_exempt_cookie += 1
            return response
        return slip_response(response) if verdict == SLIP else None

    def _drain(self) -> None:
        """The portable path: one recvfrom and one sendto per datagram."""
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        family = self.sock.family
        handle = self._handler(self.holder.current)
        traffic = self.traffic
        ipv6 = self.ipv6
        received = sent = 0
        try:
            for _ in range(BATCH):
                try:
                    wire, addr = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # e.g. ICMP port unreachable reported on the socket
                began = time.monotonic()
                received += 1
                peer = socket.inet_pton(family, addr[0].split("%")[0])
                if traffic is not None:
                    traffic.query(wire, False, ipv6)
                    traffic.source(peer)
                response = handle(wire, peer, addr[1])
                if response is not None:
                    if traffic is not None:
                        traffic.response(response, False, ipv6)
                    try:
                        sendto(response, addr)
                        sent += 1
                    except OSError:
                        self.stats.send_errors += 1
                if traffic is not None:
                    traffic.latency(time.monotonic() - began, False)
        finally:
            self.stats.udp_received += received
            self.stats.udp_sent += sent

    def _drain_c(self) -> None:
        """The loop in C (imrs._fastpath.udp_drain: recvmmsg; per datagram the C answer and the
        C rate-limit gate, or the handler for what they leave to Python; sendmmsg)."""
        snapshot = self.holder.current
        compiled = snapshot.compiled if not snapshot.unavailable else None
        gate = self.rrl.gate if self.rrl is not None else None
        traffic = self.traffic.values if self.traffic is not None else None
        sources = self.traffic.c_sources if self.traffic is not None else None
        tlds = self.traffic.tlds if sources is not None else None  # the C TopLabels with the C SourceCounter
        if compiled is None or (self.rrl is not None and gate is None) or self.tap is not None:
            # no C answer for this snapshot, a Python decider, or dnstap: all through the handler
            received, sent, errors = udp_drain(self.sock.fileno(), self._handler(snapshot), self.ipv6, BATCH,
                                               None, None, None, traffic, sources, tlds, None, self.shedder)
        else:
            received, sent, errors = udp_drain(self.sock.fileno(), self._handler(snapshot, c_tried=True),
                                               self.ipv6, BATCH, compiled, gate, self._limited, traffic, sources, tlds,
                                               self.error_limit, self.shedder)
        self.stats.udp_received += received
        self.stats.udp_sent += sent
        self.stats.internal_errors += errors

    def _drain_batched(self) -> None:
        """recvmmsg/sendmmsg through ctypes: up to VLEN datagrams per system call each way."""
        batch = self._batch
        stats = self.stats
        offset, size = (8, 16) if self.ipv6 else (4, 4)
        step = batchio.SOCKADDR_SIZE
        for _ in range(BATCH // batchio.VLEN):
            try:
                wires = batch.receive()
            except OSError:
                return
            if not wires:
                return
            began = time.monotonic()
            stats.udp_received += len(wires)
            names = batch.peers()
            handle = self._handler(self.holder.current)
            traffic = self.traffic
            responses = []
            for i, wire in enumerate(wires):
                peer = names[i * step + offset : i * step + offset + size]
                if traffic is not None:
                    traffic.query(wire, False, self.ipv6)
                    traffic.source(peer)
                response = handle(wire, peer, int.from_bytes(names[i * step + 2 : i * step + 4], "big"))
                if response is not None and traffic is not None:
                    traffic.response(response, False, self.ipv6)
                responses.append(response)
            stats.udp_sent += batch.reply(responses)
            if traffic is not None:
                traffic.latency(time.monotonic() - began, False, len(wires))
            # Not back to the event loop on a short batch: what came in meanwhile is read with
            # one more system call, cheaper than a turn of the loop (with several workers each
            # sees a share of the load, and short batches are the rule).

    def _internal_error(self) -> None:
        self.stats.internal_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.exception("internal error answering a UDP query (further ones are counted, logged every 10 s)")


def _peer_text(peer: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(peer) == 16 else socket.AF_INET, peer)


class ServeStats:
    """Plain counters the listeners bump (exported by the telemetry work later)."""

    __slots__ = ("internal_errors", "send_errors", "tcp_connections", "tcp_queries", "tcp_refused", "tcp_timeouts", "udp_received", "udp_sent")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
