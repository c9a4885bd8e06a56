"""NOTIFY received (RFC 1996): accepted from the configured addresses, which start a refresh.

NOTIFY is rare and its sender matters, so it is handled apart from the query path, with the
peer's address: a NOTIFY for a zone we keep, from an allowed address, is acknowledged
(NOERROR, AA, the question echoed, RFC 1996 section 4.7) and wakes that zone's keeper; one from
anybody else is REFUSED (as NSD does).  A NOTIFY for a zone we do not keep is left to the
responder, which answers it as before.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from imrs.answer.query import OPCODE_NOTIFY

log = logging.getLogger("imrs.notify")

_REFUSED = 5
_QR_AA = 0x8400


class NotifyReceiver:
    """Answers NOTIFY for kept zones; ``targets`` maps an origin (lowercased wire) to the
    allowed networks and the callback taking the announced serial (or None)."""

    def __init__(self, targets: Mapping[bytes, tuple[Sequence[ipaddress._BaseNetwork], Callable[[int | None], None]]]):
        self.targets = dict(targets)
        self.accepted = 0
        self.refused = 0
        self._last_refused_log = 0.0

    @staticmethod
    def is_notify(wire: bytes) -> bool:
        return len(wire) >= 12 and (wire[2] >> 3) & 0xF == OPCODE_NOTIFY and not wire[2] & 0x80

    def handle(self, wire: bytes, peer: str) -> bytes | None:
        """The reply to a NOTIFY, or None to let the responder answer it."""
        parsed = _parse_notify(wire)
        if parsed is None:
            return None
        origin, question_end, serial = parsed
        target = self.targets.get(origin)
        if target is None:
            return None
        networks, wake = target
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return None
        flags = (int.from_bytes(wire[2:4], "big") & 0x7910) | _QR_AA  # opcode and RD kept
        if not any(address in net for net in networks):
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refused_log > 10:
                self._last_refused_log = now
                log.warning("NOTIFY for %s from %s refused: not an allowed address", _text(origin), peer)
            return wire[:2] + (flags | _REFUSED).to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + wire[12:question_end]
        self.accepted += 1
        log.info("NOTIFY for %s from %s%s: checking now", _text(origin), peer, f" (serial {serial})" if serial is not None else "")
        wake(serial)
        return wire[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + wire[12:question_end]


def _text(origin: bytes) -> str:
    from imrs.zone.records import name_to_text

    return name_to_text(origin)


def _parse_notify(wire: bytes) -> tuple[bytes, int, int | None] | None:
    """(origin, end of question, serial from the answer SOA if any), or None if malformed."""
    import dns.exception
    import dns.message
    import dns.rdatatype

    if int.from_bytes(wire[4:6], "big") != 1:
        return None
    i = 12
    try:
        while wire[i]:
            if wire[i] & 0xC0:
                return None  # the question name is never compressed
            i += 1 + wire[i]
        i += 1
        question_end = i + 4
        if question_end > len(wire) or int.from_bytes(wire[i : i + 2], "big") != dns.rdatatype.SOA:
            return None
        origin = wire[12:i].lower()
        serial = None
        try:
            message = dns.message.from_wire(wire, ignore_trailing=True)
            for rrset in message.answer:
                if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                    serial = rrset[0].serial
        except (dns.exception.DNSException, ValueError):
            pass  # the SOA in the answer is a hint only (RFC 1996 section 3.7)
        return origin, question_end, serial
    except IndexError:
        return None
