"""The last known good version of each zone, kept on disk across restarts and failures.

Each managed zone has a directory under the state directory holding ``zone.bin`` (the newest
verified version: every record in wire format, with a SHA-256 of the content so a damaged file
is noticed), ``state.json`` (when the zone was last refreshed, for expiry after a restart) and
``status.json`` (what the keeper sees now: for the operator and health checks).
Both are replaced atomically: written to a temporary file, flushed to disk, then renamed over
the old one, and the directory flushed, so a crash or kill at any moment leaves either the old
or the new file, never a mix.  A loaded file is verified again before it is served.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass

from imrs.zone.records import Record, ZoneRecords, name_to_text

_MAGIC = b"IMRS-ZONE 1\n"
_HEADER = struct.Struct("!HHIH")  # type, class, TTL, RDATA length (owner precedes it)


class StoreError(Exception):
    """A saved zone cannot be read back (missing, truncated, damaged)."""


@dataclass(frozen=True)
class ZoneState:
    """What is remembered about a zone besides its records."""

    serial: int
    #: wall-clock time of the last successful refresh (new version, or SOA showed no change)
    refreshed_at: float
    #: where the saved version came from
    source: str = ""


def zone_dir(state_dir: str, origin: bytes) -> str:
    text = name_to_text(origin).rstrip(".") or "root"
    return os.path.join(state_dir, text.lower().replace("/", "_"))


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a reader (or a restart after a crash) sees the old file
    or the whole new one, never a part."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def encode_zone(zone: ZoneRecords) -> bytes:
    parts = []
    pack = _HEADER.pack
    for owner, rdtype, rdclass, ttl, rdata in zone.records:
        parts.append(owner)
        parts.append(pack(rdtype, rdclass, ttl, len(rdata)))
        parts.append(rdata)
    body = b"".join(parts)
    header = json.dumps(
        {"origin": zone.origin.hex(), "records": len(zone.records), "sha256": hashlib.sha256(body).hexdigest(),
         "source": zone.source},
    ).encode()
    return _MAGIC + header + b"\n" + body


def decode_zone(data: bytes, path: str) -> ZoneRecords:
    if not data.startswith(_MAGIC):
        raise StoreError(f"{path}: not a saved imrs zone")
    end = data.find(b"\n", len(_MAGIC))
    try:
        header = json.loads(data[len(_MAGIC) : end])
        origin = bytes.fromhex(header["origin"])
        count = int(header["records"])
        digest = header["sha256"]
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{path}: damaged header") from None
    body = memoryview(data)[end + 1 :]
    if end < 0 or hashlib.sha256(body).hexdigest() != digest:
        raise StoreError(f"{path}: content does not match its checksum (truncated or damaged)")
    records = []
    i = 0
    unpack = _HEADER.unpack_from
    try:
        for _ in range(count):
            start = i
            while body[i]:
                i += 1 + body[i]
            i += 1
            owner = bytes(body[start:i])
            rdtype, rdclass, ttl, length = unpack(body, i)
            i += _HEADER.size
            records.append(Record(owner, rdtype, rdclass, ttl, bytes(body[i : i + length])))
            i += length
    except (IndexError, struct.error):
        raise StoreError(f"{path}: truncated") from None
    if i != len(body):
        raise StoreError(f"{path}: {len(body) - i} unexpected bytes after the last record")
    return ZoneRecords(origin, tuple(records), str(header.get("source", path)))


class ZoneStore:
    """Saves and loads the last known good version of one zone."""

    def __init__(self, state_dir: str, origin: bytes):
        self.directory = zone_dir(state_dir, origin)
        self.zone_path = os.path.join(self.directory, "zone.bin")
        self.state_path = os.path.join(self.directory, "state.json")

    def save(self, zone: ZoneRecords, state: ZoneState) -> None:
        """Save a verified version, then its state (a crash between leaves a consistent pair:
        the state's serial tells whether it belongs to the saved zone)."""
        write_atomically(self.zone_path, encode_zone(zone))
        self.save_state(state)

    def save_state(self, state: ZoneState) -> None:
        write_atomically(self.state_path, json.dumps(state.__dict__).encode())

    def save_status(self, status: dict) -> None:
        """The keeper's view of the zone (serving/expired, serial, last error, counters), for
        the operator and health checks: ``status.json`` beside the saved zone."""
        write_atomically(os.path.join(self.directory, "status.json"),
                          json.dumps(status, indent=1, sort_keys=True).encode())

    def load(self) -> tuple[ZoneRecords, ZoneState | None] | None:
        """The saved version and its state; None when nothing was saved yet."""
        try:
            with open(self.zone_path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.zone_path}: {exc.strerror or exc}") from None
        zone = decode_zone(data, self.zone_path)
        state = None
        try:
            with open(self.state_path, "rb") as fh:
                raw = json.loads(fh.read())
            state = ZoneState(int(raw["serial"]), float(raw["refreshed_at"]), str(raw.get("source", "")))
        except (OSError, ValueError, KeyError, TypeError):
            state = None  # no usable state: treat the saved zone as refreshed long ago
        if state is not None and state.serial != zone.serial:
            state = None
        return zone, state
