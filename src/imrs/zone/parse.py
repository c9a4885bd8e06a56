"""Master files → flat records (:func:`load_zone_records`) → ZoneData (:func:`load_zone_file`).

Plain one-RR-per-line files (root zones as published) go through the fast reader in
:mod:`imrs.zone.fastparse`; every other file, and every file with an error, through dnspython,
so both give the same records.  Every failure becomes a :class:`ZoneFileError` that names the
file and, where known, the line.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import re
import zlib

import dns.exception
import dns.name
import dns.zone

from imrs.zone.data import (
    ZoneData,
    ZoneDataError,
    build_zone_data_from_records,
    paused_gc,
)
from imrs.zone.fastparse import fast_zone_records
from imrs.zone.records import ZoneRecords, records_from_dnspython_zone

#: The embedded default: the newest test root zone, shipped inside the package.
EMBEDDED_ROOT = "embedded:root.zone"


class ZoneFileError(Exception):
    """A zone file could not be read or parsed."""

    def __init__(self, file: str, line: int | None, message: str):
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")


_LINE_RE = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<msg>.*)$", re.DOTALL)


_ORIGIN_RE = re.compile(r"^\$ORIGIN\s+(\S+)", re.MULTILINE | re.IGNORECASE)
_SOA_OWNER_RE = re.compile(r"^(\S*\.)\s.*?\bSOA\b", re.MULTILINE | re.IGNORECASE)


def guess_origin(text: str) -> str | None:
    """The zone's origin when the file has no $ORIGIN: the owner of its first SOA record."""
    match = _SOA_OWNER_RE.search(text)
    return match.group(1) if match else None


def _check_owners_in_zone(text: str, source: str, origin: str) -> None:
    """dnspython skips records outside the zone without a word; name the first one instead.
    (Absolute owner names only: relative ones are inside by construction.)"""
    suffix = origin.lower()
    if suffix == ".":
        return  # everything is inside the root zone
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line[0] in " \t;$(":
            continue
        owner = line.split(None, 1)[0].lower()
        if owner.endswith(".") and owner != suffix and not owner.endswith("." + suffix):
            raise ZoneFileError(source, number, f"{owner} is outside the zone {origin}")


def _from_text(text: str, source: str, origin: str | None) -> dns.zone.Zone:
    return dns.zone.from_text(
        text,
        origin=dns.name.from_text(origin) if origin else None,
        relativize=False,
        filename=source,
        check_origin=True,
    )


def _culprit_line(text: str, source: str, origin: str | None, line: int) -> int:
    """The line at fault: dnspython names the next line when a record's data is found bad
    only after its end of line was read.  If the text before ``line`` already fails, the
    fault is on the line before."""
    if line <= 1:
        return line
    prefix = "".join(text.splitlines(keepends=True)[: line - 1])
    try:
        _from_text(prefix, source, origin)
    except dns.exception.SyntaxError:
        return line - 1
    except dns.exception.DNSException:
        pass
    return line


def _parse_with_dnspython(text: str, source: str, origin: str | None) -> ZoneRecords:
    """The general path: any master file dnspython reads, errors mapped to file and line."""
    if origin is None:
        origin = guess_origin(text)
        if origin is None and "$ORIGIN" not in text.upper():
            raise ZoneFileError(
                source, None, "cannot tell which zone this is: no SOA with an absolute owner name, and no $ORIGIN"
            )
    directive = _ORIGIN_RE.search(text)
    apex = origin or (directive.group(1) if directive else None)
    if apex is not None and apex.endswith("."):
        _check_owners_in_zone(text, source, apex)
    try:
        zone = _from_text(text, source, origin)
    except dns.exception.SyntaxError as exc:
        match = _LINE_RE.match(str(exc))
        if match:
            raise ZoneFileError(source, _culprit_line(text, source, origin, int(match["line"])), match["msg"]) from None
        raise ZoneFileError(source, None, str(exc)) from None
    except dns.zone.NoSOA:
        raise ZoneFileError(source, None, "no SOA record at the zone apex") from None
    except dns.zone.NoNS:
        raise ZoneFileError(source, None, "no NS RRset at the zone apex") from None
    except dns.exception.DNSException as exc:
        raise ZoneFileError(source, None, str(exc) or type(exc).__name__) from None
    except (UnicodeError, ValueError) as exc:
        raise ZoneFileError(source, None, str(exc)) from None
    return records_from_dnspython_zone(zone, source)


def parse_zone_records(text: str, source: str, origin: str | None = None) -> ZoneRecords:
    """Parse master-file text into flat records; ``source`` names it in errors.

    The fast reader handles the plain one-RR-per-line form of root zone files; anything
    else, and every file with an error, goes through dnspython (same records, same errors)."""
    apex = origin if origin is not None else guess_origin(text)
    with paused_gc():
        if apex is not None:
            records = fast_zone_records(text, source, apex)
            if records is not None:
                return records
        return _parse_with_dnspython(text, source, origin)


def zone_data_from_records(zone: ZoneRecords) -> ZoneData:
    """Records -> ZoneData, with ZoneDataError mapped to ZoneFileError."""
    try:
        return build_zone_data_from_records(zone)
    except ZoneDataError as exc:
        raise ZoneFileError(zone.source, None, str(exc).removeprefix(f"{zone.source}: ")) from None


def parse_zone_text(text: str, source: str, origin: str | None = None) -> ZoneData:
    """Parse master-file text into ZoneData; ``source`` names it in errors."""
    return zone_data_from_records(parse_zone_records(text, source, origin))


def read_zone_source(path: str) -> str:
    """The text of a zone file (plain or gzip), or of the embedded default."""
    try:
        if path == EMBEDDED_ROOT:
            blob = importlib.resources.files("imrs").joinpath("data/root.zone.gz").read_bytes()
            return gzip.decompress(blob).decode("utf-8")
        with open(path, "rb") as fh:
            blob = fh.read()
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        return blob.decode("utf-8")
    except FileNotFoundError:
        raise ZoneFileError(path, None, "no such file") from None
    except IsADirectoryError:
        raise ZoneFileError(path, None, "is a directory, not a zone file") from None
    except PermissionError:
        raise ZoneFileError(path, None, "permission denied") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ZoneFileError(path, None, f"cannot read: {exc}") from None
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        raise ZoneFileError(path, line, "not UTF-8 text") from None


def load_zone_records(path: str | os.PathLike, origin: str | None = None) -> ZoneRecords:
    """Read and parse one master file into flat records (``EMBEDDED_ROOT`` for the shipped
    root zone); what the control plane verifies and stores."""
    path = os.fspath(path)
    text = read_zone_source(path)
    if origin is None and path == EMBEDDED_ROOT:
        origin = "."
    return parse_zone_records(text, path, origin)


def load_zone_file(path: str | os.PathLike, origin: str | None = None) -> ZoneData:
    """Read and parse one master file (``EMBEDDED_ROOT`` for the shipped root zone)."""
    return zone_data_from_records(load_zone_records(path, origin))

