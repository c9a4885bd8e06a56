"""Sending NOTIFY (RFC 1996) to downstreams when a zone has a new version.

A downstream (NSD, BIND, unbound with an auth-zone) that takes the zone from us checks its
SOA timers only now and then; a NOTIFY makes it ask at once.  Each target gets a NOTIFY over
UDP (opcode 4, AA, the zone's SOA as question and the new SOA in the answer section),
retransmitted on timeout until it answers with the same ID and question, or ``retries`` are
spent.  Outcomes are reported per target, never raised: a downstream that is down must not
disturb serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.tsig

from imrs.zone.records import Record, name_length, name_to_text, soa_serial

log = logging.getLogger("imrs.notify")

OPCODE_NOTIFY = 4
TYPE_SOA = 6
CLASS_IN = 1
AA = 0x0400

Target = tuple[str, int]


def notify_wire(origin: bytes, soa: Record, qid: int, tsig: dns.tsig.Key | None = None) -> bytes:
    """The NOTIFY message: header (opcode NOTIFY, AA), question ORIGIN SOA IN, answer the SOA."""
    flags = (OPCODE_NOTIFY << 11) | AA
    wire = (struct.pack("!HHHHHH", qid, flags, 1, 1, 0, 0) + origin + struct.pack("!HH", TYPE_SOA, CLASS_IN)
            + b"\xc0\x0c" + struct.pack("!HHIH", TYPE_SOA, soa.rdclass, soa.ttl, len(soa.rdata)) + soa.rdata)
    if tsig is None:
        return wire
    msg = dns.message.from_wire(wire)
    msg.use_tsig(tsig)
    return msg.to_wire()


def _check_reply(reply: bytes, sent: bytes, tsig: dns.tsig.Key | None) -> str | None:
    """The outcome for a datagram that answers ``sent`` ("ok", "NOTAUTH", ...), or None when it
    is not an answer to it (other ID, other question, not a response)."""
    if len(reply) < 12 or reply[:2] != sent[:2] or not reply[2] & 0x80:
        return None
    if (reply[2] >> 3) & 0xF != OPCODE_NOTIFY:
        return None
    qend = 12 + name_length(sent, 12) + 4
    qd = struct.unpack_from("!H", reply, 4)[0]
    if qd and reply[12:qend].lower() != sent[12:qend].lower():
        return None
    rcode = reply[3] & 0xF
    if rcode != 0:
        return dns.rcode.to_text(rcode)
    if tsig is not None:
        try:
            request = dns.message.from_wire(sent, keyring={tsig.name: tsig})
            dns.message.from_wire(reply, keyring={tsig.name: tsig}, request_mac=request.mac)
        except Exception as exc:  # noqa: BLE001 - any TSIG failure is an outcome to report
            return f"TSIG check failed: {type(exc).__name__}"
    return "ok"


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, sent: bytes, tsig: dns.tsig.Key | None):
        self.sent = sent
        self.tsig = tsig
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        outcome = _check_reply(data, self.sent, self.tsig)
        if outcome is not None and not self.done.done():
            self.done.set_result(outcome)

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable: keep retrying until the retries are spent


async def _notify_one(origin: bytes, soa: Record, target: Target, tsig: dns.tsig.Key | None,
                      timeout: float, retries: int) -> str:
    host, port = target
    loop = asyncio.get_running_loop()
    qid = int.from_bytes(os.urandom(2), "big")
    wire = notify_wire(origin, soa, qid, tsig)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Exchange(wire, tsig), remote_addr=(host, port), family=family)
    except OSError as exc:
        return f"cannot send: {exc.strerror or exc}"
    try:
        for _attempt in range(1 + retries):
            transport.sendto(wire)
            try:
                return await asyncio.wait_for(asyncio.shield(protocol.done), timeout)
            except TimeoutError:
                continue
        return "timeout"
    finally:
        transport.close()


async def send_notify(
    origin: bytes,
    soa: Record,
    targets: Sequence[Target],
    *,
    tsig: dns.tsig.Key | None = None,
    timeout: float = 2.0,
    retries: int = 5,
) -> dict[Target, str]:
    """NOTIFY every target at once; the outcome per target: "ok" (NOERROR), the rcode's name
    (NOTAUTH, REFUSED, ...), "timeout" after ``retries`` retransmissions, or why it could
    not be sent."""
    zone = name_to_text(origin)
    serial = soa_serial(soa.rdata)
    outcomes = await asyncio.gather(*(_notify_one(origin, soa, t, tsig, timeout, retries) for t in targets))
    result = dict(zip(targets, outcomes))
    for (host, port), outcome in result.items():
        if outcome == "ok":
            log.info("NOTIFY %s serial %d to %s port %d: acknowledged", zone, serial, host, port)
        else:
            log.warning("NOTIFY %s serial %d to %s port %d: %s", zone, serial, host, port, outcome)
    return result
