"""The last-known-good store: round trip, damage is noticed, a kill mid-save loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.zone
import pytest

from imrs.zone.records import records_from_dnspython_zone
from imrs.zone.store import StoreError, ZoneState, ZoneStore, decode_zone, encode_zone

SHARED = Path(__file__).resolve().parents[2] / "shared" / "zones" / "testroot"


@pytest.fixture(scope="module")
def zones():
    return [
        records_from_dnspython_zone(dns.zone.from_file(str(SHARED / f"root-{serial}.zone"), origin=".", relativize=False))
        for serial in ("2026082200", "2026082201")
    ]


def test_round_trip(tmp_path, zones):
    store = ZoneStore(str(tmp_path), zones[0].origin)
    assert store.load() is None
    store.save(zones[0], ZoneState(zones[0].serial, 1234.5, "ixfr://127.0.0.1:53"))
    zone, state = store.load()
    assert zone.records == zones[0].records
    assert zone.origin == zones[0].origin
    assert state == ZoneState(2026082200, 1234.5, "ixfr://127.0.0.1:53")
    assert [p for p in os.listdir(store.directory) if p.startswith(".tmp-")] == []


def test_state_of_another_serial_is_ignored(tmp_path, zones):
    store = ZoneStore(str(tmp_path), zones[0].origin)
    store.save(zones[1], ZoneState(zones[1].serial, 99.0))
    store.save_state(ZoneState(zones[0].serial, 50.0))
    zone, state = store.load()
    assert zone.serial == zones[1].serial and state is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "trailing"])
def test_damage_is_noticed(tmp_path, zones, damage):
    data = bytearray(encode_zone(zones[0]))
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-100:]
    elif damage == "garbage":
        data = bytearray(b"not a zone at all\n")
    else:
        data += b"\x00"
    with pytest.raises(StoreError) as excinfo:
        decode_zone(bytes(data), "zone.bin")
    assert "zone.bin" in str(excinfo.value)


_SAVER = """
import sys, time
from imrs.zone.store import ZoneState, ZoneStore, decode_zone
zones = [decode_zone(open(p, 'rb').read(), p) for p in sys.argv[2:4]]
store = ZoneStore(sys.argv[1], zones[0].origin)
print('ready', flush=True)
i = 0
while True:
    z = zones[i % 2]
    store.save(z, ZoneState(z.serial, time.time()))
    i += 1
"""


def test_kill_during_save_keeps_a_whole_version(tmp_path, zones):
    files = []
    for zone in zones:  # the saver reads the versions in the store's own format: quick to load
        path = tmp_path / f"{zone.serial}.bin"
        path.write_bytes(encode_zone(zone))
        files.append(str(path))
    state_dir = tmp_path / "state"
    serials = {z.serial: z.records for z in zones}
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(state_dir), *files], stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(0.3 + 0.17 * round_)  # land the kill at a different point each round
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        loaded = ZoneStore(str(state_dir), zones[0].origin).load()
        assert loaded is not None, "a save interrupted by a kill left no zone"
        zone, _state = loaded
        assert zone.records == serials[zone.serial]
