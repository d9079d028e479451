"""Helpers for the store tests (both runtimes): sample records and files."""

import os

from devtest import tmpdir

from chargepilot.store import profilestore as store


def profile(pid, n_periods=3, limit=160, purpose="TxDefaultProfile", stack=0):
    periods = []
    for i in range(n_periods):
        periods.append({"startPeriod": i * 900, "limit": limit + i})
    return {
        "id": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "startSchedule": "2026-01-01T00:00:00Z",
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": periods,
            }
        ],
    }


def rec(pid, evse=1, source="CSO", **kw):
    return {"evseId": evse, "source": source, "chargingProfile": profile(pid, **kw)}


def by_id(records):
    out = {}
    for r in records:
        out[r["chargingProfile"]["id"]] = r
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def fresh(max_entries=10):
    """A new temp dir and a loaded, empty store in `<dir>/profiles`."""
    d = tmpdir("store")
    s = store.ProfileStore(d + "/profiles", max_entries)
    records, problems = s.load()
    assert records == [] and problems == []
    return d, s


def listdir(path):
    return sorted(os.listdir(path))
