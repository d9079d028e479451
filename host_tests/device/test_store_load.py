"""ProfileStore.load(): damaged files are set aside (renamed, never
deleted) and reported once, leftover .tmp files are cleaned, the bound holds
(both runtimes)."""

import os

from devtest import raises, rmtree
from storetest import by_id, fresh, profile, read, rec, write

from chargepilot.store import atomic, profilestore as store


def _damage_cases(good):
    import json

    def framed(obj):
        return store.frame(json.dumps(obj).encode())

    wrong_v = {"v": 2, "evseId": 1, "source": "CSO", "chargingProfile": profile(13)}
    wrong_id = {"v": 1, "evseId": 1, "source": "CSO", "chargingProfile": profile(99)}
    no_src = {"v": 1, "evseId": 1, "chargingProfile": profile(15)}
    flipped = good.replace(b'"limit":160', b'"limit":161')
    assert flipped != good
    return [
        ("p11.json", good[: len(good) // 2], "truncated"),
        ("p12.json", b"\x00\xff garbage \x13" * 5, "integrity"),
        ("p13.json", framed(wrong_v), "version 2"),
        ("p14.json", framed(wrong_id), "holds profile id 99"),
        ("p15.json", framed(no_src), "lacks 'source'"),
        ("p16.json", store.frame(b'{"v": 1, "evseId": '), "not valid JSON"),
        ("p17.json", flipped, "checksum mismatch"),
        ("p18.json", b"", "empty"),
        ("pabc.json", good, "file name"),
        ("p018.json", good, "file name"),
        ("p19.json", None, "too large"),
    ]


def test_damaged_files_set_aside_reported_once_others_load():
    d, s = fresh()
    root = d + "/profiles"
    try:
        s.put(rec(1))
        s.put(rec(-2, source="EMS"))
        s.put(rec(10))
        good = read(root + "/p10.json")
        cases = _damage_cases(good)
        for name, data, _ in cases:
            if data is None:  # 3000 bytes, written in pieces
                with open(root + "/" + name, "wb") as f:
                    for _ in range(10):
                        f.write(b"x" * 300)
            else:
                write(root + "/" + name, data)
        write(root + "/notes.txt", b"not ours")
        s2 = store.ProfileStore(root, 10, max_record=2048)
        records, problems = s2.load()
        assert by_id(records) == {1: rec(1), -2: rec(-2, source="EMS"), 10: rec(10)}
        reported = {}
        for name, reason in problems:
            reported[name] = reason
        assert len(problems) == len(cases), problems
        for name, data, words in cases:
            assert words in reported[name], (name, reported[name])
            # set aside, byte for byte, never deleted
            if data is None:
                assert atomic.size(root + "/" + name + ".bad") == 3000
            else:
                assert read(root + "/" + name + ".bad") == data
            assert not atomic.exists(root + "/" + name)
        assert read(root + "/notes.txt") == b"not ours"
        # reported once: the next boot loads the same and reports nothing
        records2, problems2 = store.ProfileStore(root, 10).load()
        assert problems2 == [] and by_id(records2) == by_id(records)
        assert s2.bad_files() == sorted(n + ".bad" for n, _, _ in cases)
        # the id of a set-aside file is free again; a second damage of it
        # does not overwrite the first .bad
        write(root + "/p11.json", b"again")
        _, p3 = store.ProfileStore(root, 10).load()
        assert [n for n, _ in p3] == ["p11.json"]
        assert read(root + "/p11.json.1.bad") == b"again"
        assert read(root + "/p11.json.bad") == good[: len(good) // 2]
    finally:
        rmtree(d)


def test_leftover_tmp_cleaned_not_reported():
    d, s = fresh()
    root = d + "/profiles"
    try:
        s.put(rec(4))
        write(root + "/p4.json.tmp", b"half a new vers")
        write(root + "/p5.json.tmp", b"")
        s2 = store.ProfileStore(root, 10)
        records, problems = s2.load()
        assert records == [rec(4)] and problems == []
        assert os.listdir(root) == ["p4.json"]
        assert s2.counters["removes"] == 2
    finally:
        rmtree(d)


def test_more_files_than_the_bound_are_set_aside():
    d, s = fresh(max_entries=5)
    root = d + "/profiles"
    try:
        for pid in (-1, 1, 2, 3, 4):
            s.put(rec(pid))
        s3 = store.ProfileStore(root, 3)
        records, problems = s3.load()
        assert [r["chargingProfile"]["id"] for r in records] == [-1, 1, 2]
        assert sorted(n for n, _ in problems) == ["p3.json", "p4.json"]
        assert "max_entries=3" in problems[0][1]
        assert read(root + "/p4.json.bad")  # kept, not deleted
        raises(store.StoreFull, s3.put, rec(8))
    finally:
        rmtree(d)


def test_put_over_a_damaged_file_replaces_it():
    d, s = fresh()
    root = d + "/profiles"
    try:
        s.put(rec(3))
        write(root + "/p3.json", b"rot")
        raises(store.StoreError, s.get, 3)
        assert s.put(rec(3)) is True
        assert s.get(3) == rec(3)
    finally:
        rmtree(d)
