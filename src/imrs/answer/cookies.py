"""DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018).

A :class:`CookieJar` makes and checks server cookies; the answer paths
(:class:`imrs.answer.respond.Responder` and the compiled fast path) call
:meth:`CookieJar.response_option` once per query that carries a COOKIE option, and rate
limiting asks :meth:`CookieJar.valid_server_cookie` about the queries it would limit.

Server cookie (RFC 9018 section 4): Version 1, Reserved 0, a 32-bit Timestamp (seconds) and
Hash = SipHash-2-4(Client Cookie | Version | Reserved | Timestamp | Client-IP, secret).  A
received one is valid when its version is 1, its hash matches one of the accepted secrets
(the Reserved octets as received are hashed) and its timestamp is at most one hour in the
past and at most five minutes in the future (RFC 1982 arithmetic on the 32 bits).

What a response carries (as NSD does): a valid cookie made with the current secret and
less than half an hour old is echoed as received; anything else (only a client cookie, an
invalid one, one made with an older secret or older than half an hour) gets a fresh one.

Secrets, current first:

* ``config.secret``: that one, then ``config.previous_secrets``;
* ``config.secret_file``: the file's (re-read when it changes, looked at at most once a
  second; a file that cannot be read keeps the last good set and logs a warning), then
  ``config.previous_secrets``;
* otherwise derived from ``master`` and the epoch ``int(now // rotate_interval)``:
  HMAC-SHA256(master, "imrs dns cookie secret" | epoch)[:16] for this epoch, then the
  previous epoch's.  Processes given the same master agree without talking to each other,
  and a cookie stays valid into the next epoch (not the one after).

Every time comes from the jar's clock (``time.time`` unless another is given), also the
once-a-second look at the secret file.

Hashing (SipHash through the ``siphash24`` package) costs more than answering a plain query
from the fast path, so the jar remembers, per set of secrets (bounded, dropped with them),
the cookies it found valid and the responses of those it echoes: a resolver sends the same
server cookie for half an hour, and it is checked once.  Only a client cookie alone, an
invalid cookie or a renewal makes a hash per query.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import struct
import time
from collections.abc import Callable

from siphash24 import siphash24

from imrs.config import CookieConfig, read_cookie_secrets

log = logging.getLogger("imrs.cookies")

EDNS_OPTION_COOKIE = 10  # RFC 7873
EDNS_OPTION_KEEPALIVE = 11  # RFC 7828
RCODE_BADCOOKIE = 23  # extended: 1 in the OPT record, 7 in the header

COOKIE_INVALID = 0  # no server cookie, or not one of ours, or out of its time window
COOKIE_VALID = 1  # ours and in time, but made with an older secret or half an hour old: renew
COOKIE_ECHO = 2  # ours, current secret, less than half an hour old: echo it as received

MAX_AGE = 3600  # RFC 9018 section 4.3: one hour in the past
MAX_AHEAD = 300  # ... and five minutes in the future
RENEW_AGE = 1800  # older than half an hour: a fresh one in the response

_OPTION_HEAD = struct.pack("!HH", EDNS_OPTION_COOKIE, 24)  # our COOKIE: client 8 + server 16
#: the length of the COOKIE option every response to a cookie query carries (code and length too)
COOKIE_OPTION_LENGTH = 4 + 24
_VERSION_RESERVED = b"\x01\x00\x00\x00"
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_DERIVE_LABEL = b"imrs dns cookie secret"
_VALID_CACHE_LIMIT = 65536  # cookies found valid (their hash), kept to skip hashing them again

_MODE_FIXED, _MODE_FILE, _MODE_DERIVED = 0, 1, 2

#: What became of the queries with a COOKIE option, counted in `CookieJar.counts` (indices):
#: only a client cookie; a valid server cookie (echoed or renewed); a server cookie that is
#: not valid (not ours, out of its time window, another shape); a malformed option (FORMERR);
#: and, of the last two kinds and client-only ones over UDP with ``require``, BADCOOKIE sent.
COOKIE_RESULTS = ("client_only", "valid", "invalid", "malformed", "badcookie")
RESULT_CLIENT_ONLY, RESULT_VALID, RESULT_INVALID, RESULT_MALFORMED, RESULT_BADCOOKIE = range(5)


class _Keys:
    """The secrets in force from ``start`` until ``end`` (then they are looked at again):
    the current one (makes cookies), the accepted ones (check them, current first), the
    cookies found valid with them (option data + address -> index of the secret), and the
    responses of the cookies to echo (option data + address as received -> (from, until,
    the response's option)): a resolver sends the same cookie for half an hour."""

    __slots__ = ("accepted", "current", "echo", "end", "start", "tag", "valid")

    def __init__(self, tag: object, secrets: tuple[bytes, ...], start: float = -math.inf, end: float = math.inf):
        self.tag = tag  # the epoch (derived secrets) or the file's signature
        self.current = secrets[0]
        self.accepted = secrets
        self.start = start
        self.end = end
        self.valid: dict[bytes, int] = {}
        self.echo: dict[bytes, tuple[float, float, tuple[bytes, bool]]] = {}


class CookieJar:
    """Makes and checks server cookies; safe to share between threads."""

    def __init__(self, config: CookieConfig, master: bytes, clock: Callable[[], float] = time.time):
        if len(master) < 16:
            raise ValueError("the cookie master secret needs 16 octets or more")
        self.config = config
        self.require = config.require
        self._clock = clock
        self._master = bytes(master)
        self._previous = tuple(config.previous_secrets)
        self._interval = config.rotate_interval if config.rotate_interval > 0 else 86400.0
        self._bad_signature: tuple[int, int, int] | None = None  # a secret file that did not read
        #: per COOKIE_RESULTS: the answer paths count each query with a COOKIE option once
        #: (response_option counts the first three; the answer paths the last two)
        self.counts = [0] * len(COOKIE_RESULTS)
        now = clock()
        if config.secret is not None:
            self._mode = _MODE_FIXED
            self._keys = _Keys(None, _unique((config.secret, *self._previous)))
        elif config.secret_file is not None:
            self._mode = _MODE_FILE
            signature = _file_signature(config.secret_file)
            secrets = read_cookie_secrets(config.secret_file)  # ValueError: the caller's to report
            self._keys = _Keys(signature, _unique(secrets + self._previous), now, now + 1.0)
        else:
            self._mode = _MODE_DERIVED
            self._keys = self._derived(int(now // self._interval))

    # -- secrets ---------------------------------------------------------------------------
    def _derived(self, epoch: int) -> _Keys:
        secrets = _unique((self.derive_secret(epoch), self.derive_secret(epoch - 1), *self._previous))
        return _Keys(epoch, secrets, epoch * self._interval, (epoch + 1) * self._interval)

    def derive_secret(self, epoch: int) -> bytes:
        """The secret of rotation epoch ``epoch`` (derived mode)."""
        message = _DERIVE_LABEL + epoch.to_bytes(8, "big", signed=True)
        return hmac.new(self._master, message, hashlib.sha256).digest()[:16]

    def keys(self, now: float) -> _Keys:
        """The secrets in force at ``now`` (rotating or re-reading them when due)."""
        keys = self._keys
        if keys.start <= now < keys.end:
            return keys
        return self._refresh(now)

    def _refresh(self, now: float) -> _Keys:
        if self._mode == _MODE_DERIVED:
            keys = self._keys = self._derived(int(now // self._interval))
            return keys
        # The secret file, looked at once a second (also when the clock went back).
        keys = self._keys
        path = self.config.secret_file
        assert path is not None
        signature = _file_signature(path)
        if signature != keys.tag and signature != self._bad_signature:
            try:
                secrets = read_cookie_secrets(path)
            except ValueError as exc:
                self._bad_signature = signature  # warn once per change, not every second
                log.warning("cookie secrets not re-read, the last good ones stay in use: %s", exc)
            else:
                self._bad_signature = None
                log.info("cookie secrets re-read from %s (%d)", path, len(secrets))
                keys = self._keys = _Keys(signature, _unique(secrets + self._previous), now, now + 1.0)
                return keys
        keys.start, keys.end = now, now + 1.0  # the same secrets (and cache) for another second
        return keys

    @property
    def current_secret(self) -> bytes:
        return self.keys(self._clock()).current

    # -- cookies ---------------------------------------------------------------------------
    @staticmethod
    def make_server_cookie(client: bytes, peer: bytes, now: float, secret: bytes) -> bytes:
        """The 16-octet server cookie for ``client`` (8 octets) and the packed address ``peer``
        (4 or 16 octets), timestamped ``now``, with ``secret`` (RFC 9018 section 4)."""
        head = _VERSION_RESERVED + (int(now) & 0xFFFFFFFF).to_bytes(4, "big")
        return head + siphash24(client + head + peer, key=secret).digest()

    def server_cookie(self, client: bytes, peer: bytes, now: float | None = None) -> bytes:
        """A fresh server cookie for ``client`` from ``peer`` with the current secret."""
        if now is None:
            now = self._clock()
        return self.make_server_cookie(client, _unmap(peer), now, self.keys(now).current)

    def check(self, cookie: bytes, peer: bytes, now: float | None = None) -> int:
        """COOKIE_INVALID, COOKIE_VALID or COOKIE_ECHO for the option data ``cookie`` (client
        cookie and server cookie) received from ``peer``.  (Not counted: rate limiting asks.)"""
        if now is None:
            now = self._clock()
        return self._check(cookie, _unmap(peer), now, self.keys(now))

    @staticmethod
    def _check(cookie: bytes, peer: bytes, now: float, keys: _Keys) -> int:
        if len(cookie) != 24 or cookie[8] != 1:
            return COOKIE_INVALID  # only our own shape: 8 + 16 octets, version 1
        age = ((int(now) & 0xFFFFFFFF) - ((cookie[12] << 24) | (cookie[13] << 16) | (cookie[14] << 8) | cookie[15])) & 0xFFFFFFFF
        if age & 0x80000000:  # ahead of us (RFC 1982)
            if 0x100000000 - age > MAX_AHEAD:
                return COOKIE_INVALID
            age = 0
        elif age > MAX_AGE:
            return COOKIE_INVALID
        key = cookie + peer
        index = keys.valid.get(key)
        if index is None:
            index = _verify(cookie, peer, keys, key)
            if index < 0:
                return COOKIE_INVALID
        return COOKIE_ECHO if index == 0 and age < RENEW_AGE else COOKIE_VALID

    def response_option(self, cookie: bytes, peer: bytes) -> tuple[bytes, bool]:
        """For a query's COOKIE option data ``cookie`` (8 or 16..40 octets) from ``peer``: the
        COOKIE option (code, length, data) for the response, and whether the query's server
        cookie was valid.  The answer paths' one call per cookie query, made once they answer
        (it counts the result): :meth:`check` and :meth:`make_server_cookie` written out, as
        this runs per packet."""
        now = self._clock()
        keys = self._keys
        if not keys.start <= now < keys.end:
            keys = self._refresh(now)
        if len(cookie) == 24:
            echo = keys.echo.get(cookie + peer)
            if echo is not None and echo[0] <= now < echo[1]:
                self.counts[RESULT_VALID] += 1
                return echo[2]  # the common case: a cookie seen before, echoed again
        raw_peer = peer
        if len(peer) == 16 and peer[:12] == _V4_MAPPED:
            peer = peer[12:]
        now32 = int(now) & 0xFFFFFFFF
        valid = False
        if len(cookie) == 24 and cookie[8] == 1:
            timestamp = int.from_bytes(cookie[12:16], "big")
            age = (now32 - timestamp) & 0xFFFFFFFF
            if age <= MAX_AGE or age >= 0x100000000 - MAX_AHEAD:
                key = cookie + peer
                index = keys.valid.get(key)
                if index is None:
                    index = _verify(cookie, peer, keys, key)
                if index == 0 and (age < RENEW_AGE or age > MAX_AGE):  # (the latter: ahead of us)
                    result = (_OPTION_HEAD + cookie, True)
                    # Echoed as it is from now until half an hour after its timestamp (the
                    # time the 32 bits stand for, the nearest to now).
                    signed_age = ((now32 - timestamp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                    echo = keys.echo
                    if len(echo) >= _VALID_CACHE_LIMIT:
                        echo.clear()
                    echo[cookie + raw_peer] = (now, float(int(now) - signed_age + RENEW_AGE), result)
                    self.counts[RESULT_VALID] += 1
                    return result
                valid = index >= 0
        self.counts[RESULT_VALID if valid else RESULT_CLIENT_ONLY if len(cookie) == 8 else RESULT_INVALID] += 1
        client = cookie[:8]
        head = _VERSION_RESERVED + now32.to_bytes(4, "big")
        return _OPTION_HEAD + client + head + siphash24(client + head + peer, key=keys.current).digest(), valid

    def valid_server_cookie(self, query_wire: bytes, peer: bytes, now: float | None = None) -> bool:
        """Does the query carry a valid server cookie from ``peer``?  (For rate limiting,
        which exempts such queries; it parses the query, so call it only when it matters.)"""
        cookie = find_edns_option(query_wire, EDNS_OPTION_COOKIE)
        if cookie is None or len(cookie) != 24:
            return False
        return self.check(cookie, peer, now) != COOKIE_INVALID


def _verify(cookie: bytes, peer: bytes, keys: _Keys, key: bytes) -> int:
    """The index of the accepted secret that made ``cookie``'s hash, -1 if none (the time
    window is the caller's); a match is remembered under ``key`` (cookie + peer)."""
    message = cookie[:16] + peer
    mac = cookie[16:]
    for index, secret in enumerate(keys.accepted):
        if hmac.compare_digest(siphash24(message, key=secret).digest(), mac):
            valid = keys.valid
            if len(valid) >= _VALID_CACHE_LIMIT:
                valid.clear()
            valid[key] = index
            return index
    return -1


def make_cookie_jar(config: CookieConfig, master: bytes, clock: Callable[[], float] = time.time) -> CookieJar | None:
    """The jar for ``config``, or None when cookies are off."""
    return CookieJar(config, master, clock) if config.enabled else None


def keepalive_option(timeout: int) -> bytes:
    """The edns-tcp-keepalive option (RFC 7828) with TIMEOUT ``timeout`` (100 ms units)."""
    return struct.pack("!HHH", EDNS_OPTION_KEEPALIVE, 2, max(0, min(int(timeout), 0xFFFF)))


def find_edns_option(wire: bytes, code: int) -> bytes | None:
    """The data of the first option ``code`` of a query's OPT record (the first record of the
    additional section after the question and any authority records), None if none."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", wire, 4)
        if qdcount != 1 or not arcount:
            return None
        pos = _skip_name(wire, 12) + 4
        for _ in range(ancount + nscount):
            pos = _skip_name(wire, pos)
            (rdlen,) = struct.unpack_from("!H", wire, pos + 8)
            pos += 10 + rdlen
        if wire[pos] != 0 or struct.unpack_from("!H", wire, pos + 1)[0] != 41:
            return None
        (rdlen,) = struct.unpack_from("!H", wire, pos + 9)
        cur, end = pos + 11, pos + 11 + rdlen
        if end > len(wire):
            return None
        while cur + 4 <= end:
            ocode, olen = struct.unpack_from("!HH", wire, cur)
            cur += 4
            if cur + olen > end:
                return None
            if ocode == code:
                return wire[cur : cur + olen]
            cur += olen
    except (IndexError, struct.error):
        return None
    return None


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length & 0xC0:
            raise IndexError("bad label type")
        pos += length + 1


def _unmap(peer: bytes) -> bytes:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack socket's view)."""
    return peer[12:] if len(peer) == 16 and peer[:12] == _V4_MAPPED else peer


def _unique(secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(secrets))


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def new_master() -> bytes:
    """16 random octets for a jar's master (give the same to every worker process)."""
    return os.urandom(16)
