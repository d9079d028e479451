"""Smart Charging messages end to end through engine + flash store (K01, K08-K13).

Runs on CPython and on the MicroPython unix port with a real ProfileStore in a
temporary directory; the RPC layer is replaced by direct handler calls.
"""

import json

from devtest import run, tmpdir

from chargepilot.smart import profiles as profiles_mod
from chargepilot.base import rfc3339
from chargepilot.ocpp import smartcharging as smart
from chargepilot.smart import config as station
from chargepilot.store import profilestore as store

NOW = rfc3339.parse("2025-06-01T12:00:00Z")


class Clock:
    def __init__(self, t=NOW):
        self.t = t

    def now(self):
        return self.t


class DM:
    def __init__(self, **kw):
        self.v = {"SmartChargingAvailable": True, "SmartChargingEnabled": True,
                  "ExternalControlSignalsEnabled": True, "LimitChangeSignificance": 100,
                  "NotifyChargingLimitWithSchedules": False}
        self.v.update(kw)

    def get(self, k):
        return self.v[k]


def make(root=None, evses=2, entries=6, **dm):
    root = root or tmpdir("smart")
    cfg = station.SmartConfig(evse_count=evses, max_entries=entries, max_stack_level=4,
                              max_periods=24, default_amps=320, default_watts=220800)
    sent = []

    async def call(action, payload):
        sent.append((action, payload))
        return {}

    wakes = []
    sc = smart.SmartCharging(cfg, profiles_mod.ProfileSet(entries), store.ProfileStore(root, entries),
                             Clock(), DM(**dm), call=call, changed=lambda: wakes.append(1))
    sc.load()
    sc.root = root
    sc.sent = sent
    sc.wakes = wakes
    return sc


def prof(pid, purpose="TxDefaultProfile", stack=0, limit=16.0, kind="Absolute", **extra):
    sched = {"id": 1, "chargingRateUnit": extra.pop("unit", "A"),
             "chargingSchedulePeriod": extra.pop("periods", [{"startPeriod": 0, "limit": limit}])}
    if kind != "Relative":
        sched["startSchedule"] = "2025-06-01T00:00:00Z"
    cp = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
          "chargingProfileKind": kind, "chargingSchedule": [sched]}
    cp.update(extra)
    return cp


def set_profile(sc, evse, cp):
    return run(sc.on_set_charging_profile({"evseId": evse, "chargingProfile": cp}))


def reload(sc):
    """A reboot: a new agent over the same flash."""
    return make(sc.root, sc.cfg.evse_count, sc.cfg.max_entries)


def test_accepted_profile_is_in_flash_and_survives_reboot():
    sc = make()
    cp = prof(7, periods=[{"startPeriod": 0, "limit": 13.7, "numberPhases": 1},
                          {"startPeriod": 3600, "limit": 6.0, "numberPhases": 3}],
              validTo="2026-01-01T00:00:00Z")
    cp["chargingSchedule"][0]["minChargingRate"] = 4.2
    assert set_profile(sc, 1, cp) == {"status": "Accepted"}
    assert sc.wakes, "the control loop must be woken"
    sc2 = reload(sc)
    assert sc2.profiles.ids() == [7]
    assert sc2.store.get(7)["chargingProfile"] == cp


def test_every_rejection_reason_is_reachable_and_stores_nothing():
    sc = make(entries=3)
    sc.cfg.start_transaction(1, "tx-1", NOW - 60)
    cases = [
        (9, prof(1), "UnknownEvse"),
        (0, prof(2, "TxProfile", transactionId="tx-1"), "InvalidValue"),
        (2, prof(3, "TxProfile"), "MissingParam"),
        (1, prof(4, "TxProfile", transactionId="other"), "TxNotFound"),
        (1, prof(5, stack=9), "InvalidStackLevel"),
        (1, prof(6, unit="kW"), "InvalidValue"),
        (1, prof(8, periods=[{"startPeriod": 5, "limit": 6}]), "InvalidSchedule"),
        (1, prof(9, periods=[{"startPeriod": 0, "limit": 6}] * 2), "InvalidSchedule"),
        (1, prof(10, periods=[{"startPeriod": i * 60, "limit": 6} for i in range(25)]),
         "TooManyElements"),
        (0, prof(11, "ChargingStationMaxProfile", kind="Relative"), "InvalidValue"),
        (1, prof(12, "ChargingStationExternalConstraints"), "InvalidValue"),
        (1, prof(13, kind="Recurring"), "MissingParam"),
        (1, prof(14, limit=6.25), "InvalidValue"),
    ]
    for evse, cp, reason in cases:
        r = set_profile(sc, evse, cp)
        assert r["status"] == "Rejected", (cp["id"], r)
        assert r["statusInfo"]["reasonCode"] == reason, (cp["id"], reason, r)
        assert r["statusInfo"]["additionalInfo"]
    assert sc.profiles.ids() == []
    assert reload(sc).profiles.ids() == []
    # Duplicate: same stack, purpose and EVSE, other id, overlapping validity.
    assert set_profile(sc, 1, prof(20))["status"] == "Accepted"
    r = set_profile(sc, 1, prof(21))
    assert r["statusInfo"]["reasonCode"] == "DuplicateProfile"
    # TxDefault on EVSE 0 with the same stack as one on EVSE 1 (K01.FR.52).
    r = set_profile(sc, 0, prof(22))
    assert r["statusInfo"]["reasonCode"] == "DuplicateProfile"
    # Capacity (Entries): two more fit, the third is refused before any write.
    assert set_profile(sc, 1, prof(23, stack=1))["status"] == "Accepted"
    assert set_profile(sc, 1, prof(24, stack=2))["status"] == "Accepted"
    r = set_profile(sc, 1, prof(25, stack=3))
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] in (
        "OutOfStorage", "TooManyElements")
    assert reload(sc).profiles.ids() == [20, 23, 24]


def test_unit_not_in_rate_unit_rejected():
    sc = make()
    sc.cfg.rate_units = (station.UNIT_A,)
    r = set_profile(sc, 1, prof(1, unit="W", limit=7000))
    assert r["statusInfo"]["reasonCode"] == "UnsupportedRateUnit"


def test_replacement_keeps_one_file_and_new_content():
    sc = make()
    assert set_profile(sc, 1, prof(5, limit=10))["status"] == "Accepted"
    assert set_profile(sc, 1, prof(5, limit=12))["status"] == "Accepted"
    sc2 = reload(sc)
    assert sc2.profiles.ids() == [5]
    lim = sc2.store.get(5)["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert lim[0]["limit"] == 12


def test_failed_flash_write_rejects_and_changes_nothing():
    sc = make()
    assert set_profile(sc, 1, prof(1, limit=10))["status"] == "Accepted"

    def broken(record):
        raise store.StoreError("could not write p1.json: OSError(28)")

    sc.store.put = broken
    r = set_profile(sc, 1, prof(1, limit=20))
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "InternalError"
    p = sc.profiles.get(1)
    assert p.periods[1] == 100  # still 10.0 A in RAM
    assert reload(sc).store.get(1)["chargingProfile"]["chargingSchedule"][0][
        "chargingSchedulePeriod"][0]["limit"] == 10


def test_reports_of_long_profiles_hold_one_profile_each():
    """Up to REPORT_CHUNK short profiles share a report; profiles whose periods
    add up to more than REPORT_PERIODS go in reports of their own."""
    sc = make(entries=6)

    def periods(n):
        return [{"startPeriod": 600 * i, "limit": 6 + i} for i in range(n)]

    sizes = {1: 2, 2: 20, 3: 4, 4: 24, 5: 1}
    for pid in sorted(sizes):
        cp = prof(pid, stack=pid - 1, periods=periods(sizes[pid]))
        assert set_profile(sc, 1, cp)["status"] == "Accepted", pid
    resp, after = run(sc.on_get_charging_profiles({"requestId": 8, "chargingProfile": {}}))
    assert resp == {"status": "Accepted"}
    run(after())
    reports = [p for a, p in sc.sent if a == "ReportChargingProfiles"]
    got = [[cp["id"] for cp in p["chargingProfile"]] for p in reports]
    assert got == [[1, 2], [3], [4], [5]], got
    assert [p["tbc"] for p in reports] == [True, True, True, False]
    for ids in got:
        assert len(ids) <= smart.REPORT_CHUNK
        assert len(ids) == 1 or sum(sizes[i] for i in ids) <= smart.REPORT_PERIODS


def test_disabled_and_unavailable():
    sc = make(SmartChargingEnabled=False)
    r = set_profile(sc, 1, prof(1))
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "NotEnabled"
    sc = make(SmartChargingAvailable=False)
    try:
        set_profile(sc, 1, prof(1))
    except Exception as e:
        assert getattr(e, "code", None) == "NotSupported"
    else:
        raise AssertionError("NotSupported expected")


def test_get_charging_profiles_reports_exactly_what_was_installed():
    sc = make(entries=6)
    sent = [prof(i, stack=i) for i in range(1, 5)]
    for cp in sent:
        assert set_profile(sc, 1, cp)["status"] == "Accepted"
    assert set_profile(sc, 0, prof(9, "ChargingStationMaxProfile", limit=25))["status"] == \
        "Accepted"
    r = run(sc.on_get_charging_profiles({"requestId": 4, "chargingProfile": {
        "chargingProfilePurpose": "TxDefaultProfile"}}))
    resp, after = r
    assert resp == {"status": "Accepted"}
    assert sc.sent == []  # reports go only after the response
    run(after())
    reports = [p for a, p in sc.sent if a == "ReportChargingProfiles"]
    assert [len(p["chargingProfile"]) for p in reports] == [3, 1]
    assert [p["tbc"] for p in reports] == [True, False]
    assert all(p["requestId"] == 4 and p["evseId"] == 1 and p["chargingLimitSource"] == "CSO"
               for p in reports)
    got = [cp for p in reports for cp in p["chargingProfile"]]
    assert got == sent
    # evseId 0 = profiles installed on the station itself (K09.FR.05)
    sc.sent[:] = []
    resp, after = run(sc.on_get_charging_profiles({"requestId": 5, "evseId": 0,
                                                   "chargingProfile": {}}))
    run(after())
    assert [cp["id"] for _a, p in sc.sent for cp in p["chargingProfile"]] == [9]
    # criteria that match nothing
    r = run(sc.on_get_charging_profiles({"requestId": 6, "chargingProfile": {
        "stackLevel": 3, "chargingLimitSource": ["EMS"]}}))
    assert r == {"status": "NoProfiles"}
    r = run(sc.on_get_charging_profiles({"requestId": 7, "chargingProfile": {
        "chargingProfileId": [2, 4]}}))
    run(r[1]())
    assert [cp["id"] for _a, p in sc.sent[-1:] for cp in p["chargingProfile"]] == [2, 4]


def test_clear_by_id_criteria_and_unknown():
    sc = make()
    for i, stack in ((1, 0), (2, 1), (3, 2)):
        set_profile(sc, 1, prof(i, stack=stack))
    set_profile(sc, 0, prof(4, "ChargingStationMaxProfile"))
    sc.set_external_limit(1, 100)
    ext = smart.external_id(1, 1)
    assert run(sc.on_clear_charging_profile({"chargingProfileId": 99})) == {"status": "Unknown"}
    assert run(sc.on_clear_charging_profile({"chargingProfileId": ext}))["status"] == "Unknown"
    assert run(sc.on_clear_charging_profile({"chargingProfileId": 2})) == {"status": "Accepted"}
    r = run(sc.on_clear_charging_profile({"chargingProfileCriteria": {
        "evseId": 1, "chargingProfilePurpose": "TxDefaultProfile"}}))
    assert r == {"status": "Accepted"}
    assert sc.profiles.ids() == [4] and sc.profiles.get_local(ext) is not None
    assert run(sc.on_clear_charging_profile({"chargingProfileCriteria": {"stackLevel": 3}})) == \
        {"status": "Unknown"}
    re = reload(sc)
    assert re.profiles.ids() == [4] and re.profiles.get_local(ext) is not None


def test_tx_profiles_go_when_the_transaction_ends_and_after_reboot():
    sc = make()
    sc.cfg.start_transaction(1, "tx-9", NOW)
    assert set_profile(sc, 1, prof(3, "TxProfile", transactionId="tx-9"))["status"] == \
        "Accepted"
    # Reboot while the transaction was running: it did not survive, nor does its profile.
    sc2 = reload(sc)
    assert sc2.profiles.ids() == []
    assert sc2.store.ids() == []
    # End of transaction deletes it from RAM and flash.
    sc = sc2
    sc.cfg.start_transaction(1, "tx-10", NOW)
    assert set_profile(sc, 1, prof(4, "TxProfile", transactionId="tx-10"))["status"] == \
        "Accepted"
    sc.end_transaction(1, "tx-10")
    assert 4 not in sc.profiles and sc.store.ids() == []


def test_composite_schedule_answers():
    sc = make()
    set_profile(sc, 0, prof(1, "ChargingStationMaxProfile", limit=20))
    set_profile(sc, 1, prof(2, periods=[{"startPeriod": 0, "limit": 10},
                                        {"startPeriod": 12 * 3600 + 600, "limit": 25}]))
    r = run(sc.on_get_composite_schedule({"evseId": 1, "duration": 1200,
                                          "chargingRateUnit": "A"}))
    assert r["status"] == "Accepted"
    s = r["schedule"]
    assert s["scheduleStart"] == "2025-06-01T12:00:00Z" and s["duration"] == 1200
    assert [(p["startPeriod"], p["limit"]) for p in s["chargingSchedulePeriod"]] == \
        [(0, 10), (600, 20)]
    r = run(sc.on_get_composite_schedule({"evseId": 3, "duration": 60}))
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "UnknownEvse"
    sc.cfg.rate_units = (station.UNIT_A,)
    r = run(sc.on_get_composite_schedule({"evseId": 1, "duration": 60,
                                          "chargingRateUnit": "W"}))
    assert r["statusInfo"]["reasonCode"] == "UnsupportedRateUnit"
    sc.clock.t = None
    r = run(sc.on_get_composite_schedule({"evseId": 1, "duration": 60}))
    assert r["status"] == "Rejected"


def test_external_limit_caps_notifies_and_persists():
    sc = make()
    pid = sc.set_external_limit(1, 80, source="EMS", grid_critical=True)
    assert pid < 0
    action, payload = sc.pending[(1, "EMS")]
    assert action == "NotifyChargingLimit"
    assert payload == {"chargingLimit": {"chargingLimitSource": "EMS", "isGridCritical": True},
                       "evseId": 1}
    run(sc.flush())
    assert sc.sent[-1] == (action, payload) and not sc.pending
    r, _ = sc.composite(1, 60, "A")
    assert r["schedule"]["chargingSchedulePeriod"][0]["limit"] == 8
    # A change below LimitChangeSignificance (10 %) is applied but not notified.
    sc.set_external_limit(1, 84)
    assert not sc.pending
    assert sc.composite(1, 60, "A")[0]["schedule"]["chargingSchedulePeriod"][0]["limit"] == 8.4
    # Survives a reboot.
    re = reload(sc)
    assert re.profiles.ids() == [] and re.profiles.get_local(pid) is not None
    assert sc.clear_external_limit(1, "EMS") is True
    assert sc.pending[(1, "EMS")] == ("ClearedChargingLimit",
                                     {"chargingLimitSource": "EMS", "evseId": 1})
    assert sc.clear_external_limit(1, "EMS") is False
    assert reload(sc).profiles.ids() == []


def test_external_limit_with_schedules_and_refusals():
    sc = make(NotifyChargingLimitWithSchedules=True)
    sc.set_external_limit(0, 300, source="SO", periods=[(0, 300), (600, 150)])
    action, payload = sc.pending[(0, "SO")]
    assert "evseId" not in payload
    assert payload["chargingSchedule"][0]["chargingSchedulePeriod"][1] == \
        {"startPeriod": 600, "limit": 15}
    for bad in ((5, 100, "EMS"), (1, 100, "CSO"), (1, -1, "EMS")):
        try:
            sc.set_external_limit(bad[0], bad[1], source=bad[2])
        except ValueError as e:
            assert str(e)
        else:
            raise AssertionError("accepted %r" % (bad,))
    off = make(ExternalControlSignalsEnabled=False)
    try:
        off.set_external_limit(1, 100)
    except ValueError as e:
        assert "disabled" in str(e)
    else:
        raise AssertionError("external limit accepted while disabled")


def test_corrupt_file_is_set_aside_and_reported_others_load():
    sc = make()
    set_profile(sc, 1, prof(1))
    set_profile(sc, 1, prof(2, stack=1))
    with open(sc.root + "/p2.json", "w") as f:
        f.write('{"v": 1, "evseId": 1, "sou')
    sc2 = reload(sc)
    assert sc2.profiles.ids() == [1]
    assert len(sc2.problems) == 1 and sc2.problems[0][0] == "p2.json"
    import os

    assert any(n.startswith("p2.json") and n.endswith(".bad") for n in os.listdir(sc.root))
    # reported once: the next boot finds nothing new
    assert reload(sc).problems == []


def test_report_payloads_are_json_serialisable():
    sc = make()
    set_profile(sc, 1, prof(1, limit=13.7))
    resp, after = run(sc.on_get_charging_profiles({"requestId": 1, "chargingProfile": {}}))
    run(after())
    text = json.dumps(sc.sent[0][1])
    assert "13.7" in text


def test_external_limit_notifications_go_through_the_durable_queue():
    # issue 11 item 4 (K11.FR.02): every Notify/Cleared generated offline is
    # queued, none merged away, in the order they happened
    from chargepilot.ocppj import outbox

    sc = make()
    queued = []
    sc.queue = lambda action, payload: queued.append((action, payload))
    sc.set_external_limit(1, 80, source="EMS")
    sc.set_external_limit(0, 300, source="SO")
    assert sc.clear_external_limit(1, "EMS") is True
    assert not sc.pending  # nothing waits in RAM any more
    assert [a for a, _p in queued] == ["NotifyChargingLimit", "NotifyChargingLimit",
                                       "ClearedChargingLimit"]
    assert queued[2][1] == {"chargingLimitSource": "EMS", "evseId": 1}
    # with a real outbox: a limit set and released while offline reaches the
    # CSMS as Notify then Cleared (before: only the Cleared), in flash
    ob = outbox.Outbox(sc.root + "-outbox", 8, check_fs=False)
    ob.load()
    sc = make()
    sc.queue = ob.put
    sc.set_external_limit(1, 80, source="EMS")
    sc.set_external_limit(0, 300, source="SO")
    sc.clear_external_limit(1, "EMS")
    sc.set_external_limit(1, 60, source="EMS")
    ob2 = outbox.Outbox(ob.root, 8, check_fs=False)
    assert ob2.load() == []  # a reboot
    got = [(a, p) for _n, a, p in ob2.items()]
    ems = {"chargingLimit": {"chargingLimitSource": "EMS"}, "evseId": 1}
    assert got == [("NotifyChargingLimit", ems),
                   ("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "SO"}}),
                   ("ClearedChargingLimit", {"chargingLimitSource": "EMS", "evseId": 1}),
                   ("NotifyChargingLimit", ems)], got
    # a refused put is logged, never raised into the caller
    ob2.max_count = 4
    sc.queue = ob2.put
    sc.set_external_limit(2, 100, source="Other")
    assert ob2.dropped == 1 and len(ob2) == 4


def csms_view_ok(items):
    """The rule, independent of the code: walking the queue as the CSMS
    receives it, every Cleared follows a Notify of the same (evse, source)
    since that pair's previous Cleared."""
    active = set()
    for _n, a, p in items:
        if a == "NotifyChargingLimit":
            active.add((p.get("evseId"), p["chargingLimit"]["chargingLimitSource"]))
        else:
            k = (p.get("evseId"), p["chargingLimitSource"])
            if k not in active:
                return False
            active.discard(k)
    return True


def test_full_outbox_never_delivers_a_cleared_without_its_notify():
    # The overflow policy (docs/store-format.md §8): the last slots are kept for
    # ClearedChargingLimit; a Notify refused for lack of room makes its Cleared
    # refused too.
    from chargepilot.ocppj import outbox

    ob = outbox.Outbox(tmpdir("smart") + "-outbox", 6, check_fs=False)
    ob.load()
    ob.reserve_for = ("ClearedChargingLimit",)
    ob.reserve_count = 2
    ob.reserve_bytes = 2 * 192
    sc = make()
    sc.queue = ob.put
    sc.set_external_limit(1, 80, source="EMS")
    sc.set_external_limit(2, 90, source="SO")
    sc.set_external_limit(1, 120, source="EMS")
    sc.set_external_limit(1, 160, source="EMS")  # 4 slots used: only the reserve is left
    sc.set_external_limit(0, 200, source="Other")  # refused
    assert ob.dropped == 1 and len(ob) == 4
    assert sc.clear_external_limit(0, "Other") is True  # its Notify was refused: no Cleared
    assert len(ob) == 4
    sc.clear_external_limit(1, "EMS")  # notified: its Cleared takes a reserved slot
    sc.clear_external_limit(2, "SO")  # the second reserved slot
    assert len(ob) == 6 and ob.dropped == 1
    items = list(ob.items())
    assert [a for _n, a, _p in items] == ["NotifyChargingLimit"] * 4 + ["ClearedChargingLimit"] * 2
    assert csms_view_ok(items)
    # and the same rule holds over a random walk of set/release against a small queue
    seed = [11]

    def pick(n):  # a small LCG (the same walk on both runtimes), high bits
        seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (seed[0] >> 16) % n

    pairs = [(1, "EMS"), (1, "SO"), (2, "Other"), (2, "EMS")]
    refused = 0
    for trial in range(4):
        ob = outbox.Outbox(tmpdir("smart") + "-ob%d" % trial, 5 + trial, check_fs=False)
        ob.load()
        ob.reserve_for = ("ClearedChargingLimit",)
        ob.reserve_count = 4
        ob.reserve_bytes = 4 * 192
        sc = make()
        sc.queue = ob.put
        delivered = []
        for _ in range(30):
            evse, src = pairs[pick(len(pairs))]
            if pick(2):
                try:
                    sc.set_external_limit(evse, 60 + 10 * pick(20), source=src)
                except ValueError:  # refused by the engine: nothing to notify
                    pass
            else:
                sc.clear_external_limit(evse, src)
            if pick(4) == 0 and len(ob):  # the CSMS takes one now and then
                delivered.append(ob.peek())
                ob.ack(ob.ids()[0])
        assert csms_view_ok(delivered + list(ob.items()))
        assert len(delivered) + len(ob) >= 4
        refused += ob.dropped
    assert refused >= 4, refused  # the walk did run into the bound


def test_external_limit_schedule_never_carries_an_invented_instant():
    # Issue 10 item 7: the schedule of a NotifyChargingLimit starts at the instant
    # the limit was set; while the clock is unset it waits (never 2020-01-01T00:00:00Z).
    sc = make(NotifyChargingLimitWithSchedules=True)
    tk = [1000]
    sc.clock._ticks_ms = lambda: tk[0]
    sc.set_external_limit(1, 200, source="EMS")
    _a, p = sc.pending[(1, "EMS")]
    assert p["chargingSchedule"][0]["startSchedule"] == "2025-06-01T12:00:00Z"
    sc.clock.t = None  # e.g. after a reboot, before BootNotification
    sc.set_external_limit(2, 100, source="SO")
    assert (2, "SO") not in sc.pending
    assert sc.clear_external_limit(1, "EMS") is True  # queued behind the held one
    assert sc.pending[(1, "EMS")][0] == "NotifyChargingLimit"
    tk[0] += 2500
    sc.poll()  # still unset: nothing moves
    assert (2, "SO") not in sc.pending
    sc.clock.t = NOW + 3600
    sc.poll()
    _a, p = sc.pending[(2, "SO")]
    # set 2.5 s before the clock read NOW + 1 h: whole seconds, never after the set
    assert p["chargingSchedule"][0]["startSchedule"] == rfc3339.format(NOW + 3600 - 3)
    assert sc.pending[(1, "EMS")][0] == "ClearedChargingLimit"
    for _k, (_a, p) in sc.pending.items():
        assert "2020-01-01T00:00:00Z" not in str(p)


def test_held_for_the_clock_and_bounded_still_no_cleared_alone():
    # The notifications held while the clock is unset are bounded (16, the
    # oldest goes): a Notify that goes makes its Cleared go too.
    from chargepilot.ocppj import outbox

    ob = outbox.Outbox(tmpdir("smart") + "-obc", 64, check_fs=False)
    ob.load()
    sc = make(NotifyChargingLimitWithSchedules=True)  # a Notify waits for the clock
    sc.queue = ob.put
    sc.clock._ticks_ms = lambda: 1000
    sc.clock.t = None  # after a reboot, before BootNotification
    sc.set_external_limit(1, 80, source="EMS")
    assert sc.clear_external_limit(1, "EMS") is True
    for i in range(15):  # 17 held: the first Notify goes
        sc.set_external_limit(2, 60 + 40 * (i % 2), source="Other")
    sc.clock.t = NOW
    sc.poll()
    items = list(ob.items())
    assert ("ClearedChargingLimit", 1) not in [(a, p.get("evseId")) for _n, a, p in items]
    assert csms_view_ok(items) and len(items) == 15, [a for _n, a, _p in items]
