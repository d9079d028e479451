"""store.ProfileStore on a real directory: round trip, no-op puts, one file
per change, bounds, record shape (both runtimes). Damaged files:
test_store_load.py; SettingsFile, framing, fscheck: test_store_settings.py.
(Split so that each module compiles in the 100K MicroPython test heap.)"""

import os

from devtest import raises, rmtree, tmpdir
from storetest import by_id, fresh, profile, read, rec

from chargepilot.store import profilestore as store


def test_roundtrip_negative_ids_and_names():
    d, s = fresh()
    try:
        given = [rec(5), rec(-3, evse=0, source="EMS", purpose="ChargingStationExternalConstraints"),
                 rec(1000000, evse=2, source="SO", n_periods=24)]
        given[0]["chargingProfile"]["description"] = "caf\u00e9 \u2603 \"q\"\n"
        for r in given:
            assert s.put(r) is True
        names = sorted(os.listdir(d + "/profiles"))
        # station-local limits (source EMS/SO/Other) have their own names: x<id>.json
        assert names == ["p5.json", "x-3.json", "x1000000.json"], names
        s2 = store.ProfileStore(d + "/profiles", 10)
        records, problems = s2.load()
        assert problems == []
        assert [r["chargingProfile"]["id"] for r in records] == [-3, 5, 1000000]
        got = by_id(records)
        for r in given:
            assert got[r["chargingProfile"]["id"]] == r
        assert s2.get(-3, True) == given[1] and s2.get(-3) is None
        assert s2.get(77) is None
        assert s2.ids() == [5] and s2.ids(True) == [-3, 1000000] and len(s2) == 3
        # The file is the documented format: a JSON record line + integrity line.
        data = read(d + "/profiles/p5.json")
        line1, line2, rest = data.split(b"\n")
        assert rest == b""
        import json

        obj = json.loads(line1)
        assert obj["v"] == 1 and obj["evseId"] == 1 and obj["source"] == "CSO"
        assert obj["chargingProfile"] == given[0]["chargingProfile"]
        assert line2 == ("#crc32=%08x len=%d" % (store.crc32(line1), len(line1))).encode()
    finally:
        rmtree(d)


def test_identical_put_writes_nothing():
    d, s = fresh()
    try:
        assert s.put(rec(7)) is True
        before = dict(s.counters)
        assert before["files"] == 1 and before["renames"] == 1 and before["bytes"] > 100
        data = read(d + "/profiles/p7.json")
        assert s.put(rec(7)) is False
        # Same content built in another key order is still identical.
        r = rec(7)
        cp = r["chargingProfile"]
        reordered = {}
        for k in ("chargingSchedule", "chargingProfileKind", "id", "stackLevel", "chargingProfilePurpose"):
            reordered[k] = cp[k]
        assert s.put({"chargingProfile": reordered, "source": "CSO", "evseId": 1}) is False
        assert s.counters == before
        assert read(d + "/profiles/p7.json") == data
        assert sorted(os.listdir(d + "/profiles")) == ["p7.json"]
    finally:
        rmtree(d)


def test_replace_rewrites_only_that_file():
    d, s = fresh()
    try:
        for pid in (1, 2, 3):
            s.put(rec(pid))
        others = (read(d + "/profiles/p1.json"), read(d + "/profiles/p3.json"))
        c0 = dict(s.counters)
        assert s.put(rec(2, limit=99)) is True
        assert s.counters["files"] == c0["files"] + 1
        assert s.counters["renames"] == c0["renames"] + 1
        assert s.counters["removes"] == c0["removes"]
        assert (read(d + "/profiles/p1.json"), read(d + "/profiles/p3.json")) == others
        assert s.get(2) == rec(2, limit=99)
        # a change of evseId or source alone is a change too
        assert s.put(rec(2, evse=3, limit=99)) is True
        # the same id from another source is another profile (its own id space)
        assert s.put(rec(2, evse=3, source="Other", limit=99)) is True
        assert s.get(2, True)["source"] == "Other" and s.get(2)["source"] == "CSO"
    finally:
        rmtree(d)


def test_remove_deletes_the_file():
    d, s = fresh()
    try:
        s.put(rec(1))
        s.put(rec(-1, source="EMS"))
        c0 = dict(s.counters)
        assert s.remove(-1) is False          # no CSMS profile -1
        assert s.remove(-1, True) is True
        assert s.counters["removes"] == c0["removes"] + 1
        assert s.counters["files"] == c0["files"]
        assert os.listdir(d + "/profiles") == ["p1.json"]
        assert s.remove(-1, True) is False
        assert s.remove(42) is False
        assert s.counters["removes"] == c0["removes"] + 1
        records, problems = store.ProfileStore(d + "/profiles", 10).load()
        assert records == [rec(1)] and problems == []
    finally:
        rmtree(d)


def test_bound_enforced_before_writing():
    d, s = fresh(max_entries=3)
    try:
        for pid in (1, 2, 3):
            s.put(rec(pid))
        c0 = dict(s.counters)
        e = raises(store.StoreFull, s.put, rec(4))
        assert "3 of 3" in str(e)
        assert isinstance(e, store.StoreError)
        assert s.counters == c0
        assert sorted(os.listdir(d + "/profiles")) == ["p1.json", "p2.json", "p3.json"]
        # replacing one that is stored is fine when full; so is add after remove
        assert s.put(rec(3, limit=50)) is True
        s.remove(1)
        assert s.put(rec(4)) is True
        raises(store.StoreFull, s.put, rec(5))
        assert s.ids() == [2, 3, 4]
        raises(store.StoreError, store.ProfileStore, d + "/x", 0)
    finally:
        rmtree(d)


def test_record_size_bound():
    d = tmpdir("store")
    try:
        s = store.ProfileStore(d, 5, max_record=1024)
        s.load()
        big = rec(9, n_periods=40)
        e = raises(store.RecordTooLarge, s.put, big)
        assert "limit 1024" in str(e)
        assert os.listdir(d) == [] and s.counters["files"] == 0
        assert s.put(rec(9, n_periods=2)) is True
        # the default bound is 8 KB (not allocated here: the 100K test heap
        # is too fragmented for two 8 KB buffers)
        assert store.MAX_RECORD == 8192
        assert store.ProfileStore(d, 5).max_record == 8192
        assert sorted(os.listdir(d)) == ["p9.json"]
    finally:
        rmtree(d)


def test_bad_records_rejected_with_clear_errors():
    d, s = fresh()
    try:
        cases = [
            ([], "must be an object"),
            ({"evseId": 1, "source": "CSO"}, "lacks 'chargingProfile'"),
            ({"evseId": True, "source": "CSO", "chargingProfile": profile(1)}, "evseId"),
            ({"evseId": 1, "source": "CSMS", "chargingProfile": profile(1)}, "source must be"),
            ({"evseId": 1, "source": "CSO", "chargingProfile": profile("1")}, "chargingProfile.id"),
            ({"evseId": 1, "source": "CSO", "chargingProfile": profile(True)}, "chargingProfile.id"),
            ({"evseId": 1, "source": "CSO", "chargingProfile": [1]}, "must be an object"),
            ({"evseId": 1, "source": "CSO", "chargingProfile": profile(1), "x": 1}, "unknown record field"),
            ({"evseId": 1, "source": "CSO", "chargingProfile": profile(10 ** 30)}, "too long"),
        ]
        for bad, words in cases:
            e = raises(store.BadRecord, s.put, bad)
            assert words in str(e), (words, str(e))
        assert os.listdir(d + "/profiles") == []
        raises(store.StoreError, store.ProfileStore(d, 3).put, rec(1))  # load() first
    finally:
        rmtree(d)


def test_csms_and_local_ids_never_share_a_file():
    # issue 10: a CSMS profile -6 and the local limit -6 are two files, also after a reboot
    d, s = fresh()
    try:
        local = rec(-6, evse=0, source="EMS", purpose="ChargingStationExternalConstraints")
        csms = rec(-6, evse=0, purpose="ChargingStationMaxProfile", limit=6)
        assert s.put(local) is True and s.put(csms) is True
        assert sorted(os.listdir(d + "/profiles")) == ["p-6.json", "x-6.json"]
        s2 = store.ProfileStore(d + "/profiles", 10)
        records, problems = s2.load()
        assert problems == [] and len(records) == 2
        assert s2.get(-6) == csms and s2.get(-6, True) == local
        assert s2.remove(-6) is True and s2.get(-6, True) == local
    finally:
        rmtree(d)


def test_local_limit_in_a_csms_file_name_is_moved_at_load():
    # flash written before issue 10: the local limit lived in p-6.json
    d, s = fresh()
    try:
        local = rec(-6, evse=0, source="EMS", purpose="ChargingStationExternalConstraints")
        s.put(local)
        os.rename(d + "/profiles/x-6.json", d + "/profiles/p-6.json")
        s2 = store.ProfileStore(d + "/profiles", 10)
        records, problems = s2.load()
        assert records == [local] and problems == []
        assert sorted(os.listdir(d + "/profiles")) == ["x-6.json"]
        assert s2.ids() == [] and s2.ids(True) == [-6]
        # now a CSMS profile -6 gets its own file and the local limit survives
        csms = rec(-6, evse=0, purpose="ChargingStationMaxProfile")
        assert s2.put(csms) is True
        records, problems = store.ProfileStore(d + "/profiles", 10).load()
        assert len(records) == 2 and problems == []
        # a move cut short (both files there) loads the limit once
        s3 = store.ProfileStore(d + "/profiles", 10)
        s3.load()
        s3.remove(-6)
        data = read(d + "/profiles/x-6.json")
        with open(d + "/profiles/p-6.json", "wb") as f:
            f.write(data)
        records, problems = store.ProfileStore(d + "/profiles", 10).load()
        assert records == [local] and problems == []
        assert sorted(os.listdir(d + "/profiles")) == ["x-6.json"]
        # a local-limit file holding a CSMS profile is set aside, not loaded as local
        data = read(d + "/profiles/x-6.json")
        s4 = store.ProfileStore(d + "/profiles", 10)
        s4.load()
        s4.put(csms)
        os.rename(d + "/profiles/p-6.json", d + "/profiles/x-7.json")
        records, problems = store.ProfileStore(d + "/profiles", 10).load()
        assert records == [local] and [n for n, _r in problems] == ["x-7.json"]
    finally:
        rmtree(d)
