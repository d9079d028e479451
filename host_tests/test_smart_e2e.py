"""Smart charging (K01, K08-K13) end to end: the agent on both runtimes, the
bundled CSMS over loopback, the station's flash in a tmp dir.

Every frame the station sends (its CALLs and its answers to CSMS CALLs) is
validated against the official OCPP 2.0.1 JSON schemas at the end of each
test (`rig` fixture: check_agent_frames, plus: no CALLERROR from the station,
every CSMS CALL answered, every ReportChargingProfiles sequence ends with
exactly one tbc=false). Profiles are compared with what the CSMS put on the
wire, as canonical JSON (so 16 vs 16.0 or a lost field is a difference).
"""

import datetime
import json
import os
import signal
import time

import pytest

from chargepilot.ocpp import smartcharging as smart
from csms_fixture import RUNTIMES, agent_factory, check_agent_frames, csms_factory  # noqa: F401
from chargepilot.store import recfile  # noqa: E402 (settings.json is a framed record)

FAST = {"RetryBackOffWaitMinimum": "0", "RetryBackOffRandomRange": "0", "MessageTimeout": "5"}
UTC = datetime.timezone.utc
EXT_EVSE1_EMS = -6  # smart.external_id(1, EMS): -(1 * 4 + 1) - 1 (K11.FR.06)


# ------------------------------------------------------------ helpers

def rfc(t):
    return datetime.datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unrfc(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def canon(x):
    return json.dumps(x, sort_keys=True)


def var(component, variable, instance=None, value=None):
    v = {"name": variable}
    if instance:
        v["instance"] = instance
    item = {"component": {"name": component}, "variable": v}
    if value is not None:
        item["attributeValue"] = value
    return item


def sc(name, instance=None, value=None):
    return var("SmartChargingCtrlr", name, instance, value)


def prof(pid, stack, purpose, periods, kind="Absolute", unit="A", start=None, **extra):
    """A ChargingProfileType; periods = [(startPeriod, limit)] or period dicts."""
    per = [q if isinstance(q, dict) else {"startPeriod": q[0], "limit": q[1]} for q in periods]
    sched = {"id": 1, "chargingRateUnit": unit, "chargingSchedulePeriod": per}
    if start is not None:
        sched["startSchedule"] = start
    for k in ("duration", "minChargingRate"):
        if k in extra:
            sched[k] = extra.pop(k)
    cp = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
          "chargingProfileKind": kind, "chargingSchedule": [sched]}
    cp.update(extra)
    return cp


class Rig:
    """One CSMS and the agents (restarts) of one station, on one runtime."""

    def __init__(self, csms, agent_factory, runtime, state):
        self.csms = csms
        self._factory = agent_factory
        self.runtime = runtime
        self.state = state
        self.sid = "CP1"
        self.ag = None
        self._rid = 0
        self.sent = {}  # profile id -> the chargingProfile as sent on the wire

    @property
    def profile_dir(self):
        return os.path.join(self.state, "profiles")

    def start(self, sets=None, extra=()):
        """Start (or restart: same state dir) the agent; returns once Accepted
        (clock set) and its StatusNotification arrived."""
        csms = self.csms
        boots = len(csms.calls("BootNotification"))
        self.ag = self._factory(csms, self.sid, self.runtime, self.state,
                                sets=dict(FAST, **(sets or {})), extra=list(extra))

        def ready():
            b = csms.calls("BootNotification")
            return (len(b) > boots and csms.connected(self.sid)
                    and any(f.t > b[-1].t for f in csms.calls("StatusNotification")))

        csms.wait_for(ready, 20)
        return self.ag

    def stop(self):
        assert self.ag.stop() == 0, self.ag.log
        self.csms.wait_for(lambda: not self.csms.connected(self.sid), 10)

    def call(self, action, payload):
        return self.csms.call(self.sid, action, payload)

    def set_profile(self, evse, cp):
        resp = self.call("SetChargingProfile", {"evseId": evse, "chargingProfile": cp})
        if resp["status"] == "Accepted":
            out = [f for f in self.csms.frames if f.direction == "out" and f.kind == "CALL"
                   and f.action == "SetChargingProfile"][-1]
            self.sent[cp["id"]] = out.msg[3]["chargingProfile"]  # what went over the wire
            assert canon(self.sent[cp["id"]]) == canon(cp)
        return resp

    def install(self, evse, cp):
        resp = self.set_profile(evse, cp)
        assert resp == {"status": "Accepted"}, (cp, resp)

    def reject(self, evse, cp, reason, words=""):
        resp = self.set_profile(evse, cp)
        assert resp["status"] == "Rejected", (cp, resp)
        info = resp["statusInfo"]
        assert info["reasonCode"] == reason, (cp, resp)
        assert words in info.get("additionalInfo", ""), (words, resp)
        return resp

    def get_profiles(self, criteria, evse=None):
        """(GetChargingProfiles status, [ReportChargingProfiles payloads in order])."""
        self._rid += 1
        rid = self._rid
        payload = {"requestId": rid, "chargingProfile": criteria}
        if evse is not None:
            payload["evseId"] = evse
        resp = self.call("GetChargingProfiles", payload)
        if resp["status"] != "Accepted":
            return resp["status"], []

        def mine():
            return [f.payload for f in self.csms.calls("ReportChargingProfiles", sid=self.sid)
                    if f.payload["requestId"] == rid]

        self.csms.wait_for(lambda: any(not r.get("tbc", False) for r in mine()), 10)
        reps = mine()
        assert [r.get("tbc", False) for r in reps] == [True] * (len(reps) - 1) + [False], reps
        return "Accepted", reps

    def reported(self, criteria, evse=None):
        """{profile id: (evseId, chargingLimitSource, profile)} of one request."""
        status, reps = self.get_profiles(criteria, evse)
        out = {}
        for r in reps:
            assert len(r["chargingProfile"]) <= smart.REPORT_CHUNK, r
            for cp in r["chargingProfile"]:
                assert cp["id"] not in out, ("reported twice", cp["id"])
                out[cp["id"]] = (r["evseId"], r["chargingLimitSource"], cp)
        return status, out

    def ids(self, criteria, evse=None):
        return sorted(self.reported(criteria, evse)[1])

    def composite(self, evse, duration, unit=None):
        payload = {"evseId": evse, "duration": duration}
        if unit:
            payload["chargingRateUnit"] = unit
        return self.call("GetCompositeSchedule", payload)

    def get_vars(self, items):
        res = self.call("GetVariables", {"getVariableData": items})["getVariableResult"]
        return [(r["variable"]["name"], r["attributeStatus"], r.get("attributeValue"))
                for r in res]

    def set_vars(self, items):
        res = self.call("SetVariables", {"setVariableData": items})["setVariableResult"]
        return [(r["variable"]["name"], r["attributeStatus"]) for r in res]

    def transaction_id(self, evse=1):
        self.csms.wait_for(lambda: self._started(evse), 15)
        return self._started(evse)[-1]["transactionInfo"]["transactionId"]

    def _started(self, evse):
        """TransactionEvent Started payloads on `evse` since the last boot."""
        boot = self.csms.calls("BootNotification", sid=self.sid)[-1].t
        return [f.payload for f in self.csms.calls("TransactionEvent", sid=self.sid)
                if f.t > boot and f.payload["eventType"] == "Started"
                and f.payload["evse"]["id"] == evse]

    def stored_files(self):
        return sorted(os.listdir(self.profile_dir))


def check_station_frames(csms):
    """End-of-test walk over csms.frames: schemas, answers, report sequences."""
    frames = csms.frames
    n = check_agent_frames(frames)  # raises on the first frame that fails its schema
    assert n > 0
    errors = [f.text for f in frames if f.direction == "in" and f.kind == "ERROR"]
    assert not errors, errors
    answered = set((f.station, f.msg[1]) for f in frames if f.direction == "in"
                   and f.kind in ("RESULT", "ERROR"))
    for f in frames:
        if f.direction == "out" and f.kind == "CALL":
            assert (f.station, f.msg[1]) in answered, "CSMS CALL not answered: " + f.text[:200]
    # nothing the station queued went out twice in one run (eventId, and
    # transactionId + seqNo, are unique). Across a power cut the flash outbox may
    # send a delivered message again (at least once): not counted.
    boot = {}
    seen = set()
    for f in frames:
        if f.direction != "in" or f.kind != "CALL":
            continue
        run = boot.get(f.station, 0)
        if f.action == "BootNotification":
            boot[f.station] = run + 1
        elif f.action == "NotifyEvent":
            for ev in f.payload["eventData"]:
                key = (f.station, run, "eventId", ev["eventId"])
                assert key not in seen, "sent twice: " + f.text[:200]
                seen.add(key)
        elif f.action == "TransactionEvent":
            key = (f.station, run, f.payload["transactionInfo"]["transactionId"],
                   f.payload["seqNo"])
            assert key not in seen, "sent twice: " + f.text[:200]
            seen.add(key)
    seqs = {}
    for f in frames:
        if f.direction == "in" and f.kind == "CALL" and f.action == "ReportChargingProfiles":
            seqs.setdefault((f.station, f.payload["requestId"]), []).append(
                f.payload.get("tbc", False))
    for key, tbcs in seqs.items():
        assert tbcs == [True] * (len(tbcs) - 1) + [False], (key, tbcs)
    return n


@pytest.fixture
def rig(csms_factory, agent_factory, tmp_path, runtime):
    r = Rig(csms_factory([("Accepted", 300)]), agent_factory, runtime, str(tmp_path / "flash"))
    yield r
    check_station_frames(r.csms)


def station_max(pid=1, stack=0, limit=40, **kw):
    return prof(pid, stack, "ChargingStationMaxProfile", [(0, limit)], start=rfc(time.time() - 60),
                **kw)


def tx_default(pid, stack, periods=((0, 16),), start="now", **kw):
    if start == "now":
        start = rfc(time.time() - 60)
    return prof(pid, stack, "TxDefaultProfile", periods, start=start, **kw)


# ------------------------------------------------------------ 1. install, report, restart

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_profiles_of_every_purpose_and_stack_reported_exactly_and_after_restart(rig):
    """K01 Accepted for every purpose and stack level 0..8, with every optional
    field; ReportChargingProfiles returns each profile field for field (decimals
    such as 13.7 included); an agent restarted on the same flash reports the same."""
    ext = ["--simulate-ev", "1", "--external-limit", "1:16:0"]
    sets = {"ACPhaseSwitchingSupported": "true"}  # phaseToUse is allowed only then
    rig.start(sets, ext)
    tx = rig.transaction_id(1)
    now = int(time.time())
    vendor = {"vendorId": "com.example.cp", "note": "kept as received"}
    profiles = [
        (0, prof(1, 0, "ChargingStationMaxProfile", [(0, 40), (3600, 32.5)], start=rfc(now - 60),
                 minChargingRate=6.1)),
        (0, prof(1000000, 8, "ChargingStationMaxProfile",
                 [{"startPeriod": 0, "limit": 63.7, "numberPhases": 3}], kind="Recurring",
                 recurrencyKind="Daily", start=rfc(now - 3600), duration=7200,
                 validFrom=rfc(now - 100), validTo=rfc(now + 7 * 86400))),
        (0, prof(3, 1, "TxDefaultProfile",
                 [(0, 11000.5), {"startPeriod": 600, "limit": 7400, "numberPhases": 1,
                                 "phaseToUse": 1}], unit="W", start=rfc(now))),
        (0, prof(4, 2, "TxDefaultProfile", [(0, 20), (3600, 13.7)], kind="Recurring",
                 recurrencyKind="Weekly", start=rfc(now - 86400), minChargingRate=6)),
        (1, prof(5, 3, "TxDefaultProfile",
                 [(0, 16), {"startPeriod": 1800, "limit": 13.7, "numberPhases": 2}],
                 kind="Relative", duration=3600)),
        (1, prof(6, 4, "TxDefaultProfile", [(0, 13.7)], start=rfc(now), validFrom=rfc(now),
                 validTo=rfc(now + 3600))),
        (1, prof(7, 5, "TxDefaultProfile", [(0, 7360.5)], unit="W", start=rfc(now),
                 customData=vendor)),
        (1, prof(8, 6, "TxProfile", [(0, 30), {"startPeriod": 60, "limit": 13.7,
                                                "numberPhases": 1, "phaseToUse": 2}],
                 kind="Relative", transactionId=tx, minChargingRate=6.0)),
        (1, prof(9, 7, "TxProfile", [{"startPeriod": 0, "limit": 13.7,
                                      "customData": {"vendorId": "com.example.p"}}],
                 start=rfc(now), transactionId=tx, duration=86400)),
    ]
    for evse, cp in profiles:
        rig.install(evse, cp)
    assert {cp["stackLevel"] for _e, cp in profiles} == set(range(9))  # ProfileStackLevel 8
    # phase rules where switching is supported: caps and Tx/TxDefault must agree (errata)
    rig.reject(0, prof(50, 3, "ChargingStationMaxProfile",
                       [{"startPeriod": 0, "limit": 20, "numberPhases": 1, "phaseToUse": 3}],
                       start=rfc(now)), "InvalidValue", "conflicts")
    # the energy manager's limit (--external-limit) was announced without a schedule
    rig.csms.wait_for(lambda: rig.csms.calls("NotifyChargingLimit"), 10)
    ncl = rig.csms.calls("NotifyChargingLimit")[0].payload
    assert ncl == {"chargingLimit": {"chargingLimitSource": "EMS"}, "evseId": 1}, ncl

    external = prof(EXT_EVSE1_EMS, 0, "ChargingStationExternalConstraints", [(0, 16)],
                    start="0001-01-01T00:00:00Z")
    expect = {cp["id"]: (evse, "CSO", rig.sent[cp["id"]]) for evse, cp in profiles}
    expect[EXT_EVSE1_EMS] = (1, "EMS", external)

    status, reps = rig.get_profiles({})
    assert status == "Accepted"
    got = [(r["evseId"], r["chargingLimitSource"], cp) for r in reps for cp in r["chargingProfile"]]
    assert sorted(cp["id"] for _e, _s, cp in got) == sorted(expect)
    for evse, src, cp in got:
        assert canon((evse, src, cp)) == canon(list(expect[cp["id"]])), cp["id"]
    # grouped by (evseId, source), at most REPORT_CHUNK profiles per report
    assert [(r["evseId"], r["chargingLimitSource"], [cp["id"] for cp in r["chargingProfile"]])
            for r in reps] == [(0, "CSO", [1, 3, 4]), (0, "CSO", [1000000]),
                               (1, "CSO", [5, 6, 7]), (1, "CSO", [8, 9]),
                               (1, "EMS", [EXT_EVSE1_EMS])]
    files = rig.stored_files()
    # station-local limits have their own file names (issue 10: their own id space)
    assert files == sorted(("x%d.json" if i == EXT_EVSE1_EMS else "p%d.json") % i
                           for i in expect), files

    # Reboot on the same flash. The transaction does not survive a reboot (a new
    # one starts with the simulated EV), so its TxProfiles go (K02.FR.05); every
    # other profile comes back exactly.
    rig.stop()
    rig.start(sets, ext)
    tx2 = rig.transaction_id(1)
    assert tx2 != tx
    _s, reps2 = rig.get_profiles({})
    kept = [(e, s, cp) for e, s, cp in got if cp["chargingProfilePurpose"] != "TxProfile"]
    got2 = [(r["evseId"], r["chargingLimitSource"], cp) for r in reps2
            for cp in r["chargingProfile"]]
    assert canon(got2) == canon(kept)
    assert "p8.json" not in rig.stored_files() and "p9.json" not in rig.stored_files()
    # a second plain reboot: the same reports again, identical (frames and order)
    rig.stop()
    rig.start(sets, ext)
    _s, reps3 = rig.get_profiles({})
    assert [canon(dict(r, requestId=0)) for r in reps3] == \
        [canon(dict(r, requestId=0)) for r in reps2]
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 2. GetChargingProfiles criteria

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_get_charging_profiles_criteria_and_tbc_chunks(rig):
    rig.start({}, ["--evses", "2", "--external-limit", "1:20:0"])
    now = int(time.time())
    rig.install(0, station_max(1, 1))
    rig.install(0, tx_default(2, 2))
    # seven TxDefaultProfiles of one stack level on EVSE 1 in back-to-back windows
    run = [tx_default(10 + i, 1, [(0, 10 + i)], start=rfc(now + 600 * i), duration=600)
           for i in range(7)]
    for cp in run:
        rig.install(1, cp)
    rig.csms.wait_for(lambda: rig.csms.calls("NotifyChargingLimit"), 10)
    evse1 = [10 + i for i in range(7)]
    everything = sorted([1, 2, EXT_EVSE1_EMS] + evse1)

    status, reps = rig.get_profiles({})
    assert status == "Accepted"
    assert len(evse1) > smart.REPORT_CHUNK
    assert [(r["evseId"], r["chargingLimitSource"], r["tbc"],
             [cp["id"] for cp in r["chargingProfile"]]) for r in reps] == [
        (0, "CSO", True, [1, 2]), (1, "CSO", True, [10, 11, 12]),
        (1, "CSO", True, [13, 14, 15]), (1, "CSO", True, [16]),
        (1, "EMS", False, [EXT_EVSE1_EMS])]
    for r in reps:
        for cp in r["chargingProfile"]:
            if cp["id"] > 0:
                assert canon(cp) == canon(rig.sent[cp["id"]])

    cases = [
        ({}, None, everything),
        ({}, 0, [1, 2]),  # K09.FR.05: installed on the station itself
        ({}, 1, sorted(evse1 + [EXT_EVSE1_EMS])),
        ({}, 2, None),
        ({"chargingProfilePurpose": "TxDefaultProfile"}, None, sorted([2] + evse1)),
        ({"chargingProfilePurpose": "ChargingStationMaxProfile"}, None, [1]),
        ({"chargingProfilePurpose": "ChargingStationMaxProfile"}, 1, None),
        ({"chargingProfilePurpose": "ChargingStationExternalConstraints"}, None,
         [EXT_EVSE1_EMS]),
        ({"chargingProfilePurpose": "TxProfile"}, None, None),
        ({"stackLevel": 2}, None, [2]),
        ({"stackLevel": 1}, None, sorted([1] + evse1)),
        ({"stackLevel": 1}, 1, evse1),
        ({"stackLevel": 0}, None, [EXT_EVSE1_EMS]),
        ({"stackLevel": 5}, None, None),
        ({"chargingProfileId": [2, 12, 16]}, None, [2, 12, 16]),
        ({"chargingProfileId": [2, 12, 16]}, 1, [12, 16]),
        ({"chargingProfileId": [999]}, None, None),
        ({"chargingLimitSource": ["EMS"]}, None, [EXT_EVSE1_EMS]),
        ({"chargingLimitSource": ["CSO"]}, None, sorted([1, 2] + evse1)),
        ({"chargingLimitSource": ["EMS", "CSO"]}, None, everything),
        ({"chargingLimitSource": ["SO", "Other"]}, None, None),
        ({"chargingLimitSource": ["EMS"]}, 0, None),
        ({"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 1,
          "chargingLimitSource": ["CSO"], "chargingProfileId": [10, 11, 2]}, 1, [10, 11]),
    ]
    for crit, evse, want in cases:
        status, got = rig.reported(crit, evse)
        if want is None:
            assert status == "NoProfiles", (crit, evse, status, sorted(got))
        else:
            assert (status, sorted(got)) == ("Accepted", want), (crit, evse)
            for pid, (ev, src, cp) in got.items():
                assert src == ("EMS" if pid < 0 else "CSO")
                assert ev == (0 if pid in (1, 2) else 1)
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 3. ClearChargingProfile

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_clear_charging_profile_and_txprofiles_end_with_transaction(rig):
    rig.start({}, ["--simulate-ev", "1", "--external-limit", "1:20:0"])
    tx = rig.transaction_id(1)
    now = int(time.time())
    rig.install(0, station_max(1, 0))
    rig.install(0, tx_default(2, 1))
    rig.install(1, tx_default(3, 2))
    rig.install(1, tx_default(4, 3))
    rig.install(1, prof(5, 0, "TxProfile", [(0, 12)], start=rfc(now), transactionId=tx))
    rig.install(1, prof(6, 1, "TxProfile", [(0, 10)], kind="Relative", transactionId=tx))
    rig.install(1, tx_default(7, 4))
    rig.csms.wait_for(lambda: rig.csms.calls("NotifyChargingLimit"), 10)
    assert rig.ids({}) == [EXT_EVSE1_EMS, 1, 2, 3, 4, 5, 6, 7]

    def clear(payload, status, left):
        resp = rig.call("ClearChargingProfile", payload)
        assert resp["status"] == status, (payload, resp)
        assert rig.ids({}) == left, payload
        files = sorted(int(n[1:-5]) for n in rig.stored_files() if n.endswith(".json"))
        assert files == left, (payload, files)  # RAM and flash agree

    all_ = [EXT_EVSE1_EMS, 1, 2, 3, 4, 5, 6, 7]
    clear({"chargingProfileId": 99}, "Unknown", all_)
    clear({"chargingProfileId": EXT_EVSE1_EMS}, "Unknown", all_)  # not the CSMS's to clear
    clear({"chargingProfileId": 1}, "Accepted", [EXT_EVSE1_EMS, 2, 3, 4, 5, 6, 7])
    clear({"chargingProfileId": 1}, "Unknown", [EXT_EVSE1_EMS, 2, 3, 4, 5, 6, 7])
    crit = {"chargingProfileCriteria": {"evseId": 1, "chargingProfilePurpose": "TxDefaultProfile",
                                        "stackLevel": 3}}
    clear(crit, "Accepted", [EXT_EVSE1_EMS, 2, 3, 5, 6, 7])
    clear(crit, "Unknown", [EXT_EVSE1_EMS, 2, 3, 5, 6, 7])
    clear({"chargingProfileCriteria": {"stackLevel": 8}}, "Unknown",
          [EXT_EVSE1_EMS, 2, 3, 5, 6, 7])
    clear({"chargingProfileCriteria": {"chargingProfilePurpose": "ChargingStationMaxProfile"}},
          "Unknown", [EXT_EVSE1_EMS, 2, 3, 5, 6, 7])
    clear({"chargingProfileCriteria": {"evseId": 0}}, "Accepted", [EXT_EVSE1_EMS, 3, 5, 6, 7])
    clear({"chargingProfileCriteria": {"stackLevel": 4}}, "Accepted", [EXT_EVSE1_EMS, 3, 5, 6])
    clear({"chargingProfileCriteria": {"chargingProfilePurpose": "TxDefaultProfile"}},
          "Accepted", [EXT_EVSE1_EMS, 5, 6])
    clear({"chargingProfileCriteria": {"chargingProfilePurpose":
                                       "ChargingStationExternalConstraints"}},
          "Unknown", [EXT_EVSE1_EMS, 5, 6])
    assert rig.ids({"chargingProfilePurpose": "TxProfile"}) == [5, 6]

    # The transaction ends (RequestStopTransaction): its TxProfiles go, RAM and flash.
    assert rig.call("RequestStopTransaction", {"transactionId": tx}) == {"status": "Accepted"}
    rig.csms.wait_for(lambda: [f for f in rig.csms.calls("TransactionEvent")
                               if f.payload["eventType"] == "Ended"], 10)
    assert rig.get_profiles({"chargingProfilePurpose": "TxProfile"}) == ("NoProfiles", [])
    assert rig.ids({}) == [EXT_EVSE1_EMS]
    assert rig.stored_files() == ["x%d.json" % EXT_EVSE1_EMS]
    # nothing but the external limit is left: a clear-all has nothing to clear
    clear({}, "Unknown", [EXT_EVSE1_EMS])
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 4. GetCompositeSchedule

def _period_at(cp, t, anchor):
    s = cp["chargingSchedule"][0]
    if "validFrom" in cp and t < unrfc(cp["validFrom"]) or "validTo" in cp and t >= unrfc(
            cp["validTo"]):
        return None
    base = anchor if cp["chargingProfileKind"] == "Relative" else unrfc(s["startSchedule"])
    rel = t - base
    if rel < 0 or "duration" in s and rel >= s["duration"]:
        return None
    cur = None
    for q in s["chargingSchedulePeriod"]:
        if q["startPeriod"] <= rel:
            cur = q
    if cur is None:
        return None
    return round(cur["limit"] * 10), s["chargingRateUnit"], cur.get("numberPhases", 3)


def _leader(cps, t, anchor):
    """The layer's value at t: the highest stack level with a period (then lowest id)."""
    for cp in sorted(cps, key=lambda c: (-c["stackLevel"], c["id"])):
        v = _period_at(cp, t, anchor)
        if v is not None:
            return v
    return None


def _fold(values):
    a = w = None
    n = 0
    for v in values:
        if v is None:
            continue
        lim, unit, ph = v
        if unit == "A":
            a = lim if a is None else min(a, lim)
        else:
            w = lim if w is None else min(w, lim)
        n = ph if n == 0 else min(n, ph)
    return a, w, n


def _to_unit(a, w, n, unit, volts=230):
    vn = volts * n
    if unit == "A":
        cands = [x for x in (a, None if w is None else w // vn) if x is not None]
    else:
        cands = [x for x in (w, None if a is None else a * vn) if x is not None]
    return min(cands)


def expected_composite(installed, evse, t, unit, txs, anchors, evses, default_a=320):
    """(limit tenths, numberPhases or 0) the installed profiles imply at t
    (docs/conformance.md semantics), evaluated second by second."""
    def of(purpose, ev):
        return [cp for e, cp in installed if cp["chargingProfilePurpose"] == purpose and e == ev]

    caps = [_leader(of("ChargingStationMaxProfile", 0), t, None),
            _leader(of("ChargingStationExternalConstraints", 0), t, None)]

    def own(k):
        tx = [cp for cp in of("TxProfile", k) if cp.get("transactionId") == txs.get(k)]
        txv = _leader(tx, t, anchors.get(k))
        txd = _leader(of("TxDefaultProfile", 0) + of("TxDefaultProfile", k), t, anchors.get(k))
        return [_leader(of("ChargingStationExternalConstraints", k), t, anchors.get(k)),
                txv if txv is not None else txd]

    dflt = default_a if unit == "A" else default_a * 230 * 3
    if evse:
        a, w, n = _fold(caps + own(evse))
        if a is None and w is None:
            return dflt, 0
        return _to_unit(a, w, n, unit), n
    total = 0
    sph = 0
    for k in range(1, evses + 1):
        a, w, n = _fold(own(k))
        if a is None and w is None:
            total += dflt
        else:
            total += _to_unit(a, w, n, unit)
            sph = max(sph, n)
    a, w, n = _fold(caps)
    ph = min(n, sph) if n and sph else (n or sph)
    if a is not None or w is not None:
        total = min(total, _to_unit(a, w, ph, unit))
    return total, ph


def per_second(schedule):
    out = []
    per = schedule["chargingSchedulePeriod"]
    assert per[0]["startPeriod"] == 0
    for i in range(schedule["duration"]):
        cur = [q for q in per if q["startPeriod"] <= i][-1]
        out.append((round(cur["limit"] * 10), cur.get("numberPhases", 0)))
    return out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_composite_schedule_evse0_and_evse1_match_installed_profiles(rig):
    """GetCompositeSchedule (K08) on the station (EVSE 0) and on each EVSE, in A and
    in W, compared second by second with what the installed profiles imply, plus
    a few instants worked out by hand; unknown EVSE and too long a window refused."""
    rig.start({}, ["--evses", "2", "--simulate-ev", "1"])
    tx = rig.transaction_id(1)
    started = [f.payload for f in rig.csms.calls("TransactionEvent")
               if f.payload["eventType"] == "Started"][0]
    anchor = unrfc(started["timestamp"])  # Relative profiles start with the transaction
    assert anchor > unrfc("2021-01-01T00:00:00Z")
    t0 = int(time.time()) - 20
    installed = [
        (0, prof(1, 0, "ChargingStationMaxProfile", [(0, 45), (200, 28)], start=rfc(t0))),
        (0, prof(2, 0, "TxDefaultProfile", [(0, 16), (150, 20)], start=rfc(t0))),
        (1, prof(3, 1, "TxDefaultProfile", [(0, 13.7), (100, 10)], start=rfc(t0),
                 duration=250)),
        (1, prof(4, 1, "TxProfile", [(0, 8.5), (30, 12)], start=rfc(t0 + 120), duration=60,
                 transactionId=tx)),
        (1, prof(5, 0, "TxProfile", [(0, 30), (200, 7)], kind="Relative", duration=230,
                 transactionId=tx)),
        (2, prof(6, 2, "TxDefaultProfile", [(0, 6900)], unit="W", start=rfc(t0 + 50),
                 duration=100)),
    ]
    for evse, cp in installed:
        rig.install(evse, cp)
    dur = 400
    txs = {1: tx}
    anchors = {1: anchor, 2: None}
    results = {}
    for evse, unit in ((1, "A"), (0, "A"), (2, "A"), (1, "W"), (0, "W"), (1, None)):
        resp = rig.composite(evse, dur, unit)
        assert resp["status"] == "Accepted", resp
        s = resp["schedule"]
        assert (s["evseId"], s["duration"], s["chargingRateUnit"]) == (evse, dur, unit or "A")
        start = unrfc(s["scheduleStart"])
        assert abs(start - time.time()) < 3
        got = per_second(s)
        want = [expected_composite(installed, evse, start + i, unit or "A", txs, anchors, 2)
                for i in range(dur)]
        assert got == want, (evse, unit, s["chargingSchedulePeriod"], start - t0, anchor - t0)
        # neighbours differ (merged), so the schedule is as short as it can be
        per = s["chargingSchedulePeriod"]
        assert all((a["limit"], a.get("numberPhases")) != (b["limit"], b.get("numberPhases"))
                   for a, b in zip(per, per[1:]))
        results[(evse, unit)] = (start, got)

    def at(evse, unit, off):
        start, got = results[(evse, unit)]
        return got[t0 + off - start]

    # by hand, at a few instants (offsets from t0; the EV's transaction began at ~t0+20):
    # t0+60: EVSE 1 the Relative TxProfile (30 A) replaces TxDefault; EVSE 2 6900 W =
    #        10.0 A (230 V, 3 phases); the station 30 + 10 under the 45 A maximum
    assert [at(1, "A", 60), at(2, "A", 60), at(0, "A", 60)] == [(300, 3), (100, 3), (400, 3)]
    # t0+125 / t0+155: the Absolute TxProfile (stack 1) leads: 8.5 A, then 12 A
    assert [at(1, "A", 125), at(1, "A", 155)] == [(85, 3), (120, 3)]
    assert at(1, "W", 125) == (85 * 690, 3)  # 8.5 A * 230 V * 3
    # t0+300: both EVSEs at TxDefault 20 A, the station capped by the maximum's 28 A
    assert [at(1, "A", 300), at(2, "A", 300), at(0, "A", 300)] == [(200, 3), (200, 3),
                                                                    (280, 3)]
    assert at(0, "W", 300) == (280 * 690, 3)

    # an EVSE the station does not have
    for evse in (3, 7):
        resp = rig.composite(evse, 60)
        assert resp["status"] == "Rejected" and resp["statusInfo"]["reasonCode"] == "UnknownEvse"
        assert "schedule" not in resp
    resp = rig.composite(1, smart.MAX_COMPOSITE_S + 1)
    assert resp["status"] == "Rejected" and resp["statusInfo"]["reasonCode"] == "InvalidValue"
    # no profile at all on a fresh view: the EVSE rating (32 A), both units
    assert rig.call("ClearChargingProfile", {}) == {"status": "Accepted"}
    s = rig.composite(2, 60, "A")["schedule"]
    assert s["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32}]
    s = rig.composite(2, 60, "W")["schedule"]
    assert s["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32 * 230 * 3}]
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 5. K01 rejections

def _k01_table(now, tx):
    """(name, evseId, chargingProfile, reasonCode, words in additionalInfo)."""
    s = rfc(now)
    txd = "TxDefaultProfile"
    mx = "ChargingStationMaxProfile"
    periods25 = [(60 * i, 16) for i in range(25)]
    return [
        ("unknown EVSE (K01.FR.28)", 3, prof(501, 0, txd, [(0, 16)], start=s),
         "UnknownEvse", "evseId 3"),
        ("external constraints from the CSMS (K01.FR.22)", 1,
         prof(502, 0, "ChargingStationExternalConstraints", [(0, 16)], start=s),
         "InvalidValue", "K01.FR.22"),
        ("station maximum on EVSE 1 (K04.FR.03)", 1, prof(503, 0, mx, [(0, 16)], start=s),
         "InvalidValue", "evseId 0"),
        ("station maximum Relative (K01.FR.38)", 0,
         prof(504, 0, mx, [(0, 16)], kind="Relative"), "InvalidValue", "Relative"),
        ("TxProfile on EVSE 0 (K01.FR.16)", 0,
         prof(505, 0, "TxProfile", [(0, 16)], start=s, transactionId=tx), "InvalidValue",
         "evseId > 0"),
        ("TxProfile without transactionId (K01.FR.03)", 1,
         prof(506, 0, "TxProfile", [(0, 16)], start=s), "MissingParam", "transactionId"),
        ("TxProfile on an EVSE without transaction (K01.FR.09)", 2,
         prof(507, 0, "TxProfile", [(0, 16)], start=s, transactionId=tx), "TxNotFound",
         "EVSE 2"),
        ("TxProfile for another transaction (K01.FR.33)", 1,
         prof(508, 0, "TxProfile", [(0, 16)], start=s, transactionId="not-" + tx[:30]),
         "TxNotFound", "not the one"),
        ("transactionId on a TxDefaultProfile", 1,
         prof(509, 0, txd, [(0, 16)], start=s, transactionId=tx), "InvalidValue",
         "transactionId"),
        ("Relative with startSchedule (K01.FR.41)", 1,
         prof(510, 0, txd, [(0, 16)], kind="Relative", start=s), "InvalidSchedule",
         "startSchedule"),
        ("Absolute without startSchedule (K01.FR.40)", 1, prof(511, 0, txd, [(0, 16)]),
         "InvalidSchedule", "startSchedule"),
        ("Recurring without recurrencyKind", 1,
         prof(512, 0, txd, [(0, 16)], kind="Recurring", start=s), "MissingParam",
         "recurrencyKind"),
        ("validTo not after validFrom", 1,
         prof(513, 0, txd, [(0, 16)], start=s, validFrom=rfc(now + 10), validTo=rfc(now + 10)),
         "InvalidValue", "validTo"),
        ("three chargingSchedules (K01.FR.34)", 1,
         dict(prof(514, 0, txd, [(0, 16)], start=s),
              chargingSchedule=[{"id": i, "chargingRateUnit": "A", "startSchedule": s,
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}
                                for i in (1, 2, 3)]), "InvalidSchedule", "one chargingSchedule"),
        ("unit not in RateUnit (K01.FR.26)", 1, prof(515, 0, txd, [(0, 11000)], unit="W",
                                                    start=s), "UnsupportedRateUnit", "Unit"),
        ("negative duration", 1, prof(516, 0, txd, [(0, 16)], start=s, duration=-1),
         "InvalidSchedule", "duration"),
        ("negative minChargingRate", 1,
         prof(517, 0, txd, [(0, 16)], start=s, minChargingRate=-1), "InvalidValue",
         "minChargingRate"),
        ("minChargingRate with two decimals", 1,
         prof(518, 0, txd, [(0, 16)], start=s, minChargingRate=6.15), "InvalidValue",
         "minChargingRate"),
        ("more periods than PeriodsPerSchedule", 1, prof(519, 0, txd, periods25, start=s),
         "TooManyElements", "25 periods"),
        ("first startPeriod not 0 (K01.FR.31)", 1, prof(520, 0, txd, [(10, 16)], start=s),
         "InvalidSchedule", "first startPeriod"),
        ("startPeriods not increasing (K01.FR.35)", 1,
         prof(521, 0, txd, [(0, 16), (600, 10), (300, 8)], start=s), "InvalidSchedule",
         "period 2"),
        ("equal startPeriods (K01.FR.35)", 1,
         prof(522, 0, txd, [(0, 16), (60, 10), (60, 8)], start=s), "InvalidSchedule",
         "period 2"),
        ("negative limit", 1, prof(523, 0, txd, [(0, 16), (60, -1)], start=s),
         "InvalidValue", "negative limit"),
        ("limit with two decimals", 1, prof(524, 0, txd, [(0, 13.75)], start=s),
         "InvalidValue", "more than one decimal"),
        ("numberPhases 4", 1,
         prof(525, 0, txd, [{"startPeriod": 0, "limit": 16, "numberPhases": 4}], start=s),
         "InvalidValue", "numberPhases"),
        ("phaseToUse without numberPhases 1 (K01.FR.19)", 1,
         prof(526, 0, txd, [{"startPeriod": 0, "limit": 16, "numberPhases": 3,
                             "phaseToUse": 2}], start=s), "InvalidValue", "numberPhases 1"),
        ("phaseToUse without phase switching (K01.FR.20)", 1,
         prof(527, 0, txd, [{"startPeriod": 0, "limit": 16, "numberPhases": 1,
                             "phaseToUse": 2}], start=s), "UnsupportedParam", "switch"),
        ("stackLevel above ProfileStackLevel", 1, prof(528, 9, txd, [(0, 16)], start=s),
         "InvalidStackLevel", "0..8"),
        ("negative stackLevel", 1, prof(529, -1, txd, [(0, 16)], start=s),
         "InvalidStackLevel", "0..8"),
        ("duplicate: same stack, purpose, EVSE, overlapping (K01.FR.06)", 1,
         prof(530, 1, txd, [(0, 16)], start=rfc(now + 1800)), "DuplicateProfile", "K01.FR.06"),
        ("duplicate: TxDefault on EVSE 0 and EVSE 1, one stack (K01.FR.52/53)", 1,
         prof(531, 2, txd, [(0, 16)], start=s), "DuplicateProfile", "K01.FR.52"),
        ("duplicate TxProfile for the transaction (K01.FR.39)", 1,
         prof(532, 0, "TxProfile", [(0, 16)], start=s, transactionId=tx), "DuplicateProfile",
         "K01.FR.39"),
    ]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_k01_rejections_over_the_wire(rig):
    """Every K01 rejection reachable over the wire, each with its reasonCode, on
    one agent: 2 EVSEs (an EV on 1), RateUnit A only, an EMS limit on EVSE 1."""
    rig.start({"RateUnit": "A"}, ["--evses", "2", "--simulate-ev", "1",
                                  "--external-limit", "1:20:0"])
    tx = rig.transaction_id(1)
    now = int(time.time())
    # RateUnit is ReadOnly for the CSMS, but a configured default (--set) works
    assert rig.get_vars([sc("RateUnit")]) == [("RateUnit", "Accepted", "A")]
    assert rig.set_vars([sc("RateUnit", value="A,W")]) == [("RateUnit", "Rejected")]
    # what the duplicate cases collide with
    rig.install(1, prof(1, 1, "TxDefaultProfile", [(0, 16)], start=rfc(now), duration=3600))
    rig.install(0, prof(2, 2, "TxDefaultProfile", [(0, 16)], start=rfc(now)))
    rig.install(1, prof(3, 0, "TxProfile", [(0, 16)], start=rfc(now), transactionId=tx))
    rig.csms.wait_for(lambda: rig.csms.calls("NotifyChargingLimit"), 10)
    before = rig.stored_files()
    table = _k01_table(now, tx)
    codes = set()
    for name, evse, cp, reason, words in table:
        resp = rig.set_profile(evse, cp)
        assert resp["status"] == "Rejected", (name, resp)
        assert resp["statusInfo"]["reasonCode"] == reason, (name, resp)
        assert words.lower() in resp["statusInfo"]["additionalInfo"].lower(), (name, resp)
        codes.add(reason)
    assert codes == {"UnknownEvse", "InvalidValue", "MissingParam", "TxNotFound",
                     "InvalidSchedule", "UnsupportedRateUnit", "TooManyElements",
                     "UnsupportedParam", "InvalidStackLevel", "DuplicateProfile"}
    # a rejection changes nothing, in RAM or on flash
    assert rig.stored_files() == before
    assert rig.ids({}) == [EXT_EVSE1_EMS, 1, 2, 3]
    assert rig.get_profiles({"chargingProfileId": [cp["id"] for _n, _e, cp, _r, _w in table
                                                   if cp["id"] > 0]}) == ("NoProfiles", [])
    # the external limit is untouched by the attempt to replace it
    assert rig.reported({"chargingLimitSource": ["EMS"]})[1][EXT_EVSE1_EMS][2][
        "chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 20}]

    # GetCompositeSchedule: a unit outside RateUnit, an unknown EVSE
    resp = rig.composite(1, 60, "W")
    assert (resp["status"], resp["statusInfo"]["reasonCode"]) == ("Rejected",
                                                                  "UnsupportedRateUnit")
    assert rig.composite(1, 60, "A")["status"] == "Accepted"
    resp = rig.composite(3, 60, "A")
    assert (resp["status"], resp["statusInfo"]["reasonCode"]) == ("Rejected", "UnknownEvse")

    # Entries full: new ids are refused, a replacement of an installed id is not
    (_n, _st, entries), = rig.get_vars([sc("Entries", "ChargingProfiles")])
    have = int(entries)
    assert have == 4
    i = 0
    while have < 16:  # Entries maxLimit (DEFAULT_MAX_ENTRIES)
        rig.install(1, prof(600 + i, 3, "TxDefaultProfile", [(0, 16)],
                            start=rfc(now + 1000 * i), duration=1000))
        i += 1
        have += 1
    assert rig.get_vars([sc("Entries", "ChargingProfiles")])[0][2] == "16"
    rig.reject(1, prof(700, 4, "TxDefaultProfile", [(0, 16)], start=rfc(now)), "OutOfStorage",
               "maximum")
    rig.install(1, prof(600, 3, "TxDefaultProfile", [(0, 13.7)], start=rfc(now), duration=1000))
    assert len(rig.stored_files()) == 16

    # SmartChargingCtrlr.Enabled false: SetChargingProfile and GetCompositeSchedule refused
    assert rig.set_vars([sc("Enabled", value="false")]) == [("Enabled", "Accepted")]
    rig.reject(1, prof(600, 3, "TxDefaultProfile", [(0, 16)], start=rfc(now), duration=1000),
               "NotEnabled", "Enabled")
    resp = rig.composite(1, 60, "A")
    assert (resp["status"], resp["statusInfo"]["reasonCode"]) == ("Rejected", "NotEnabled")
    assert rig.set_vars([sc("Enabled", value="true")]) == [("Enabled", "Accepted")]
    assert rig.composite(1, 60, "A")["status"] == "Accepted"
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 6. external limits

def _pilot(path, evse=1):
    try:
        with open(path) as f:
            rows = [json.loads(x) for x in f if x.endswith("\n")]
    except OSError:
        return []
    return [r for r in rows if r["evse"] == evse]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_external_limit_notified_capped_and_released(rig, tmp_path):
    """--external-limit 1:10:2:4: an energy manager limits EVSE 1 to 10 A from
    2 s after start for 4 s (K11-K13), with NotifyChargingLimitWithSchedules."""
    pilot_log = str(tmp_path / "pilot.jsonl")
    rig.start({"NotifyChargingLimitWithSchedules": "true"},
              ["--simulate-ev", "1", "--pilot-log", pilot_log, "--external-limit", "1:10:2:4"])
    csms = rig.csms
    csms.wait_for(lambda: csms.calls("NotifyChargingLimit"), 10)
    t_seen = time.monotonic()
    n = csms.calls("NotifyChargingLimit")[0]
    # issue 10 item 7: the schedule starts at the instant the limit was set (the CSMS's
    # clock, which the agent took from the BootNotification answer), never 2020-01-01
    start = n.payload["chargingSchedule"][0].pop("startSchedule")
    t_start = datetime.datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    age = (datetime.datetime.now(datetime.timezone.utc) - t_start).total_seconds()
    assert 0 <= age <= 30, (start, age)
    assert n.payload == {
        "chargingLimit": {"chargingLimitSource": "EMS"}, "evseId": 1,
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}]}
    # while it lasts: the composite of EVSE 1 (and of the station) is capped at 10 A
    for evse in (1, 0):
        s = rig.composite(evse, 120, "A")["schedule"]
        assert [q["limit"] for q in s["chargingSchedulePeriod"]] == [10], s
    st, got = rig.reported({"chargingLimitSource": ["EMS"]})
    assert st == "Accepted" and list(got) == [EXT_EVSE1_EMS]
    assert got[EXT_EVSE1_EMS][:2] == (1, "EMS")
    # ...and the pilot, sampled live until shortly before the limit ends (4 s after
    # it began), never offers more than 10 A once it has come down
    samples = 0
    while time.monotonic() < t_seen + 3.3:
        rows = _pilot(pilot_log)
        down = [i for i, r in enumerate(rows) if r["amps"] == 10.0]
        if time.monotonic() > t_seen + 0.5:
            assert down and rows[-1]["amps"] == 10.0, rows
        if down:
            assert all(r["amps"] <= 10.0 for r in rows[down[0]:]), rows
            samples += 1
        time.sleep(0.1)
    assert samples >= 20
    assert not csms.calls("ClearedChargingLimit"), "released early"
    csms.wait_for(lambda: csms.calls("ClearedChargingLimit"), 10)
    c = csms.calls("ClearedChargingLimit")[0]
    assert c.payload == {"chargingLimitSource": "EMS", "evseId": 1}
    assert 3.0 <= c.t - n.t <= 5.5, c.t - n.t
    assert rig.composite(1, 60, "A")["schedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32}]
    assert rig.get_profiles({"chargingLimitSource": ["EMS"]}) == ("NoProfiles", [])
    assert len(csms.calls("NotifyChargingLimit")) == 1
    csms.wait_for(lambda: _pilot(pilot_log)[-1]["amps"] == 32.0, 5)
    rig.stop()
    amps = []
    for r in _pilot(pilot_log):
        if r["amps"] > 0 and (not amps or amps[-1] != r["amps"]):
            amps.append(r["amps"])
    assert amps == [32.0, 10.0, 32.0], amps  # lowered once, raised once, nothing between


# ------------------------------------------------------------ 7. SmartChargingCtrlr variables

SC_VARS = [("Enabled", None), ("Available", None), ("Entries", "ChargingProfiles"),
           ("ProfileStackLevel", None), ("PeriodsPerSchedule", None), ("RateUnit", None),
           ("LimitChangeSignificance", None), ("ExternalControlSignalsEnabled", None),
           ("NotifyChargingLimitWithSchedules", None), ("Phases3to1", None)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_smart_charging_variables_read_set_and_persisted(rig):
    rig.start()
    items = [sc(n, i) for n, i in SC_VARS]
    assert rig.get_vars(items) == [
        ("Enabled", "Accepted", "true"), ("Available", "Accepted", "true"),
        ("Entries", "Accepted", "0"), ("ProfileStackLevel", "Accepted", "8"),
        ("PeriodsPerSchedule", "Accepted", "24"), ("RateUnit", "Accepted", "A,W"),
        ("LimitChangeSignificance", "Accepted", "1"),
        ("ExternalControlSignalsEnabled", "Accepted", "true"),
        ("NotifyChargingLimitWithSchedules", "Accepted", "false"),
        ("Phases3to1", "Accepted", "false")]
    rig.install(1, tx_default(1, 0))
    rig.install(0, station_max(2, 0))
    assert rig.get_vars([sc("Entries", "ChargingProfiles")]) == [("Entries", "Accepted", "2")]
    assert rig.set_vars([sc("Enabled", value="false"), sc("LimitChangeSignificance", value="2.5"),
                         sc("ExternalControlSignalsEnabled", value="false"),
                         sc("NotifyChargingLimitWithSchedules", value="true")]) == [
        ("Enabled", "Accepted"), ("LimitChangeSignificance", "Accepted"),
        ("ExternalControlSignalsEnabled", "Accepted"),
        ("NotifyChargingLimitWithSchedules", "Accepted")]
    ro = [sc("Available", value="false"), sc("Entries", "ChargingProfiles", value="3"),
          sc("ProfileStackLevel", value="2"), sc("PeriodsPerSchedule", value="10"),
          sc("RateUnit", value="A"), sc("Phases3to1", value="true"),
          sc("LimitChangeSignificance", value="1.25"), sc("Enabled", value="maybe")]
    assert [s for _n, s in rig.set_vars(ro)] == ["Rejected"] * len(ro)
    changed = [("Enabled", "Accepted", "false"), ("Available", "Accepted", "true"),
               ("Entries", "Accepted", "2"), ("ProfileStackLevel", "Accepted", "8"),
               ("PeriodsPerSchedule", "Accepted", "24"), ("RateUnit", "Accepted", "A,W"),
               ("LimitChangeSignificance", "Accepted", "2.5"),
               ("ExternalControlSignalsEnabled", "Accepted", "false"),
               ("NotifyChargingLimitWithSchedules", "Accepted", "true"),
               ("Phases3to1", "Accepted", "false")]
    assert rig.get_vars(items) == changed
    with open(os.path.join(rig.state, "settings.json"), "rb") as f:
        stored = json.loads(recfile.unframe(f.read()))["values"]
    assert stored["SmartChargingCtrlr/Enabled"] == "false"
    assert stored["SmartChargingCtrlr/LimitChangeSignificance"] == "2.5"

    # Reboot, now with an energy manager on EVSE 1: the values survived, and the
    # disabled external control signals keep its limit out.
    rig.stop()
    rig.start(extra=["--external-limit", "1:10:0"])
    assert rig.get_vars(items) == changed
    assert rig.composite(1, 60, "A")["statusInfo"]["reasonCode"] == "NotEnabled"
    assert rig.set_vars([sc("Enabled", value="true")]) == [("Enabled", "Accepted")]
    time.sleep(0.5)
    s = rig.composite(1, 60, "A")["schedule"]
    assert s["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16, "numberPhases": 3}]
    assert not rig.csms.calls("NotifyChargingLimit")
    assert "external control signals are disabled" in rig.ag.log
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 8. power cut after Accepted

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sigkill_right_after_accepted_keeps_the_profile(rig):
    """The power goes 0-50 ms after the CSMS received Accepted: the reboot on the
    same flash reports the profile (Accepted means it is in flash)."""
    csms = rig.csms
    record = csms.csms._record
    plan = {}

    def cut():
        os.killpg(plan["pgid"], signal.SIGKILL)  # the runtime's own process group

    def recording(sid, direction, text):  # runs in the CSMS loop: no thread hop
        record(sid, direction, text)
        f = csms.csms.frames[-1]
        if (direction == "in" and f.kind == "RESULT" and f.action == "SetChargingProfile"
                and plan.get("armed")):
            plan["armed"] = False
            if plan["delay"] == 0:
                cut()
            else:
                asyncio_loop.call_later(plan["delay"], cut)

    asyncio_loop = csms.loop
    csms.csms._record = recording
    now = int(time.time())
    # (delay s, profile): the 4th replaces the 1st with new content
    steps = [(0.0, tx_default(100, 0, [(0, 16)], start=rfc(now), duration=600)),
             (0.005, tx_default(101, 1, [(0, 13.7)], start=rfc(now))),
             (0.01, station_max(102, 0, 40)),
             (0.025, tx_default(100, 0, [(0, 12.5), (60, 8)], start=rfc(now), duration=600)),
             (0.05, tx_default(104, 2, [(0, 6.1)], start=rfc(now)))]
    rig.start()
    want = {}
    for delay, cp in steps:
        plan.update(delay=delay, pgid=rig.ag.runtime_pid(), armed=True)
        evse = 0 if cp["chargingProfilePurpose"] == "ChargingStationMaxProfile" else 1
        rig.install(evse, cp)
        want[cp["id"]] = (evse, "CSO", rig.sent[cp["id"]])
        rc = rig.ag.proc.wait(10)
        assert rc == 128 + signal.SIGKILL, (rc, rig.ag.log)  # the runtime died of the cut
        rig.ag.stop()
        csms.wait_for(lambda: not csms.connected(rig.sid), 10)
        rig.start()  # reboot on the same flash
        st, got = rig.reported({})
        assert (st, sorted(got)) == ("Accepted", sorted(want)), (delay, st, sorted(got))
        for pid in want:
            assert canon(got[pid]) == canon(want[pid]), (delay, pid)
    assert rig.ag.stop() == 0


# ------------------------------------------------------------ 9. damaged profile file

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_damaged_profile_file_set_aside_and_reported_once(rig):
    rig.start()
    rig.install(1, tx_default(1, 0))
    rig.install(1, tx_default(2, 1, [(0, 13.7)]))
    rig.install(0, station_max(3, 0))
    rig.stop()
    garbage = b"\x00garbage{\"v\":1,\xff not a profile\n#crc32=00000000 len=3\n"
    with open(os.path.join(rig.profile_dir, "p2.json"), "wb") as f:
        f.write(garbage)

    def reports_about_p2():
        return [f.payload for f in rig.csms.calls("NotifyEvent")
                if any("p2.json" in e.get("techInfo", "") for e in f.payload["eventData"])]

    rig.start()
    st, got = rig.reported({})
    assert (st, sorted(got)) == ("Accepted", [1, 3])
    for pid in (1, 3):
        assert canon(got[pid][2]) == canon(rig.sent[pid])
    assert rig.stored_files() == ["p1.json", "p2.json.bad", "p3.json"]
    with open(os.path.join(rig.profile_dir, "p2.json.bad"), "rb") as f:
        assert f.read() == garbage  # set aside untouched, not deleted
    rig.csms.wait_for(reports_about_p2, 10)
    ev = reports_about_p2()
    assert len(ev) == 1, ev
    data = ev[0]["eventData"][0]
    assert data["component"] == {"name": "SmartChargingCtrlr"}
    assert data["variable"] == {"name": "Problem"} and data["actualValue"] == "true"
    assert "set aside" in data["techInfo"]
    assert rig.get_vars([sc("Entries", "ChargingProfiles")])[0][2] == "2"

    # the next boot: the .bad file is kept and not reported again
    rig.stop()
    rig.start()
    assert rig.ids({}) == [1, 3]
    time.sleep(0.5)  # time for a (wrong) second report to arrive
    assert len(reports_about_p2()) == 1
    assert rig.stored_files() == ["p1.json", "p2.json.bad", "p3.json"]
    # id 2 can be installed again; the set-aside copy stays
    rig.install(1, tx_default(2, 1, [(0, 12)]))
    assert rig.stored_files() == ["p1.json", "p2.json", "p2.json.bad", "p3.json"]
    assert rig.ids({}) == [1, 2, 3]
    assert rig.ag.stop() == 0
