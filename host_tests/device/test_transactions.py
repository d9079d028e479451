"""transactions.py: pilot-driven transaction life, StatusNotification, K05 remote start,
RequestStop; on the simulated board through the control loop (test_control.Rig).

Every payload passes the agent's schema tables (validate.check in Rig._send); the
CPython test host_tests/test_control_day.py also checks them with jsonschema.
`day_scenario` (a time-accelerated day) lives here and runs on both runtimes.
"""

import time

from devtest import raises
from test_control import T0, Rig, prof

from chargepilot.base import rfc3339
from chargepilot.smart import config as station
from chargepilot.ocpp import transactions
from chargepilot.smart.profile import ProfileError

A = station.UNIT_A


def plugged(start_point="EVConnected", **kw):
    r = Rig(tx=True, start_point=start_point, **kw)
    ev = r.board.ev(1)
    r.run(200)
    ev.plug(320)
    r.run(500)
    return r, ev


def last(r, action="TransactionEvent"):
    return r.events(action)[-1]


def remote_profile(pid=7, limit=80, purpose="TxProfile", first=0, tx=None):
    b = {"id": pid, "stackLevel": 1, "chargingProfilePurpose": purpose,
         "chargingProfileKind": "Relative",
         "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                               "chargingSchedulePeriod": [{"startPeriod": first,
                                                           "limit": limit // 10}]}]}
    if tx is not None:
        b["transactionId"] = tx
    return b


def start_req(rid=42, evse=1, cp=None):
    p = {"remoteStartId": rid, "idToken": {"idToken": "TOKEN1", "type": "Central"}}
    if evse is not None:
        p["evseId"] = evse
    if cp is not None:
        p["chargingProfile"] = cp
    return p


def test_plug_charge_pause_limit_unplug():
    r, ev = plugged()
    assert r.events("StatusNotification")[0]["connectorStatus"] == "Available"
    assert r.events("StatusNotification")[-1]["connectorStatus"] == "Occupied"
    st = r.events()[0]
    assert st["eventType"] == "Started" and st["seqNo"] == 0
    assert st["triggerReason"] == "CablePluggedIn"
    assert st["transactionInfo"]["chargingState"] == "EVConnected"
    assert st["evse"] == {"id": 1, "connectorId": 1}
    tid = st["transactionInfo"]["transactionId"]
    assert 0 < len(tid) <= 36 and r.cfg.transaction(1)[0] == tid
    assert T0 <= r.cfg.transaction(1)[1] <= r.now()
    ev.charge()
    r.run(500)
    u = last(r)
    assert (u["eventType"], u["triggerReason"], u["seqNo"]) == \
        ("Updated", "ChargingStateChanged", 1)
    assert u["transactionInfo"] == {"transactionId": tid, "chargingState": "Charging"}
    # a lower limit that still allows PWM: ChargingRateChanged
    r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 100), (10, 50), (20, 160)]))
    r.ctl.changed()
    r.run(100)
    assert last(r)["triggerReason"] == "ChargingRateChanged" and r.ctl.advertised(1) == 100
    # below 6 A: paused by the EVSE
    r.until(T0 + 10, 50)
    u = last(r)
    assert u["transactionInfo"]["chargingState"] == "SuspendedEVSE"
    assert u["triggerReason"] == "ChargingStateChanged"
    r.until(T0 + 20, 50)
    assert last(r)["transactionInfo"]["chargingState"] == "Charging"
    # the EV pauses
    ev.pause()
    r.run(200)
    assert last(r)["transactionInfo"]["chargingState"] == "SuspendedEV"
    ev.charge()
    r.run(500)
    assert last(r)["transactionInfo"]["chargingState"] == "Charging"
    ev.unplug()
    r.run(200)
    e = last(r)
    assert e["eventType"] == "Ended" and e["triggerReason"] == "EVCommunicationLost"
    assert e["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert e["transactionInfo"]["timeSpentCharging"] >= 0
    assert [p["seqNo"] for p in r.events()] == list(range(len(r.events())))
    assert r.events("StatusNotification")[-1]["connectorStatus"] == "Available"
    assert r.cfg.transaction(1) is None and r.txs.transaction_id(1) is None
    # a new plug-in is a new transaction
    ev.plug()
    r.run(500)
    st2 = last(r)
    assert st2["eventType"] == "Started" and st2["seqNo"] == 0
    assert st2["transactionInfo"]["transactionId"] != tid


def test_power_path_closed_start_point():
    r, ev = plugged("PowerPathClosed")
    assert r.events() == [] and r.txs.transaction_id(1) is None
    assert r.events("StatusNotification")[-1]["connectorStatus"] == "Occupied"
    ev.charge()
    r.run(500)
    st = r.events()[0]
    assert st["eventType"] == "Started" and st["triggerReason"] == "ChargingStateChanged"
    assert st["transactionInfo"]["chargingState"] == "Charging"
    assert r.ctl.relay(1)


def test_fault_reports_faulted_until_unplug():
    for kind in ("E", "diode"):
        r = ev = None
        r, ev = plugged()
        ev.charge()
        r.run(500)
        if kind == "E":
            ev.set_fault("E")
        else:
            ev.remove_diode()
        r.run(400)
        assert not r.ctl.relay(1)
        assert r.events("StatusNotification")[-1]["connectorStatus"] == "Faulted"
        u = last(r)
        assert u["triggerReason"] == "EVCommunicationLost"
        assert u["transactionInfo"]["chargingState"] == "SuspendedEVSE"
        assert r.txs.connector_status(1) == "Faulted"
        r.run(1000)  # still latched, even where the line reads B again
        assert r.txs.connector_status(1) == "Faulted"
        ev.unplug()
        r.run(200)
        assert r.events("StatusNotification")[-1]["connectorStatus"] == "Available"
        assert last(r)["eventType"] == "Ended"


def test_f_state_is_faulted_and_unavailable_is_unavailable():
    r, ev = plugged()
    ev.set_fault("F")
    r.run(300)
    assert r.txs.connector_status(1) == "Faulted"
    ev.unplug()
    r.run(300)
    r.ctl.set_available(1, False)
    r.run(300)
    assert r.txs.connector_status(1) == "Unavailable"
    assert r.events("StatusNotification")[-1]["connectorStatus"] == "Unavailable"


def test_remote_start_binds_the_profile_and_it_goes_with_the_transaction():
    r = Rig(tx=True)
    r.run(200)
    resp = r.txs.request_start(start_req(cp=remote_profile(7, 80)))
    assert resp == {"status": "Accepted"}  # no EV yet: waits for the plug
    assert r.events() == [] and 7 not in r.profiles
    r.board.ev(1).plug()
    r.run(500)
    st = r.events()[0]
    tid = st["transactionInfo"]["transactionId"]
    assert st["eventType"] == "Started" and st["transactionInfo"]["remoteStartId"] == 42
    assert st["idToken"] == {"idToken": "TOKEN1", "type": "Central"}
    p = r.profiles.get(7)
    assert p is not None and p.transaction_id == tid and p.evse_id == 1
    assert r.ctl.composite_limit(1) == 80 and r.ctl.advertised(1) == 80
    r.board.ev(1).unplug()
    r.run(200)
    assert 7 not in r.profiles and r.txs.last_removed == [7]
    assert r.ended == [(1, tid, [7])]
    assert r.ctl.composite_limit(1) == 480  # back to the local limit


def test_remote_start_on_a_running_transaction():
    r, ev = plugged()
    tid = r.txs.transaction_id(1)
    resp = r.txs.request_start(start_req(rid=5, cp=remote_profile(8, 100)))
    assert resp == {"status": "Accepted", "transactionId": tid}
    u = last(r)
    assert u["triggerReason"] == "RemoteStart" and u["transactionInfo"]["remoteStartId"] == 5
    assert u["idToken"]["idToken"] == "TOKEN1"
    assert r.profiles.get(8).transaction_id == tid
    r.run(100)
    assert r.ctl.advertised(1) == 100
    again = r.txs.request_start(start_req(rid=6))
    assert again["status"] == "Rejected" and again["statusInfo"]["reasonCode"] == "TxInProgress"


def test_remote_start_rejects_bad_profiles():
    r = Rig(tx=True)
    r.run(100)
    for cp, code in ((remote_profile(purpose="TxDefaultProfile"), "InvalidProfile"),
                     (remote_profile(tx="abc"), "InvalidProfile"),
                     (remote_profile(first=10), "InvalidSchedule"),
                     ({"id": 1}, "InvalidProfile")):
        resp = r.txs.request_start(start_req(cp=cp))
        assert resp["status"] == "Rejected" and resp["statusInfo"]["reasonCode"] == code, resp
        assert resp["statusInfo"]["additionalInfo"]
    assert len(r.profiles) == 0 and r.cfg.transactions == {}
    unknown = r.txs.request_start(start_req(evse=3))
    assert unknown["statusInfo"]["reasonCode"] == "UnknownEvse"
    for junk in ({"idToken": {"idToken": "x", "type": "Central"}}, {"remoteStartId": 1},
                 {"remoteStartId": True, "idToken": {}}, [1]):
        resp = r.txs.request_start(junk)
        assert resp["status"] == "Rejected" and resp["statusInfo"]["reasonCode"] == "InvalidValue"
    assert r.txs.request_stop([1])["status"] == "Rejected"
    # the agent's validator is used when given
    seen = []

    def validator(obj, evse_id, tid):
        seen.append((obj["id"], evse_id, tid))
        raise ProfileError("InvalidSchedule", "agent says no")

    r.txs.validator = validator
    resp = r.txs.request_start(start_req(cp=remote_profile(9)))
    assert resp["statusInfo"]["reasonCode"] == "InvalidSchedule" and seen == [(9, 1, None)]
    # without smart charging the profile is ignored and the start accepted (K05.FR.04)
    r.txs.smart = False
    assert r.txs.request_start(start_req(cp=remote_profile(purpose="Bad")))["status"] == \
        "Accepted"


def test_remote_stop():
    r, ev = plugged()
    ev.charge()
    r.run(500)
    tid = r.txs.transaction_id(1)
    r.profiles.add(prof(3, 1, "TxProfile", [(0, 100)], tx=tid))
    bad = r.txs.request_stop({"transactionId": "nope"})
    assert bad["status"] == "Rejected" and bad["statusInfo"]["reasonCode"] == "TxNotFound"
    assert r.txs.request_stop({"transactionId": tid}) == {"status": "Accepted"}
    e = last(r)
    assert e["eventType"] == "Ended" and e["triggerReason"] == "RemoteStop"
    assert e["transactionInfo"]["stoppedReason"] == "Remote"
    assert 3 not in r.profiles and r.txs.last_removed == [3]
    r.run(100)
    assert r.ctl.advertised(1) == 0  # held: no current for the plugged-in EV
    r.run(7000, 100)
    assert not r.ctl.relay(1)
    n = len(r.events())
    r.run(1000)
    assert len(r.events()) == n  # no new transaction while the EV stays
    # a remote start on the same plugged-in EV starts a new one at once
    resp = r.txs.request_start(start_req(rid=9))
    assert resp["status"] == "Accepted" and resp["transactionId"] != tid
    assert last(r)["triggerReason"] == "RemoteStart" and last(r)["seqNo"] == 0
    r.run(600)
    assert r.ctl.advertised(1) == 320 and r.ctl.relay(1)


def test_offline_flag_and_clock_unset_start():
    r = Rig(tx=True, clock_set=False)
    r.online = False
    r.board.ev(1).plug()
    r.run(500)
    # issue 10 item 7: no invented timestamp; the events wait for the clock
    assert r.sent == [] and r.txs.held() == 3  # StatusNotification Available, Occupied; Started
    assert r.ctl.advertised(1) == 0  # no clock: paused
    r.clock.set(T0)
    r.run(200)
    st = r.events()[0]
    # stamped with the instant it happened: a few hundred ms before the clock was set,
    # in whole seconds never after the event: T0 - 1 s (hand computation)
    assert st["eventType"] == "Started" and st["offline"] is True
    assert st["timestamp"] == rfc3339.format(T0 - 1)
    assert r.txs.held() == 0
    assert r.cfg.transaction(1)[1] == T0  # Relative profiles anchor once the time is known
    assert r.ctl.advertised(1) == 320


def test_ids_are_unique_and_config_is_checked():
    r = Rig(tx=True)
    ids = set()
    ev = r.board.ev(1)
    for _ in range(5):
        ev.plug()
        r.run(400)
        ids.add(r.txs.transaction_id(1))
        ev.unplug()
        r.run(100)
    assert len(ids) == 5 and None not in ids
    assert raises(ValueError, transactions.Transactions, r.cfg, r.profiles, r.clock, None,
                  "Authorized")
    assert raises(ValueError, r.txs.update, 2, "A")
    assert "got 'X'" in str(raises(ValueError, r.txs.update, 1, "X"))
    # an id function returning garbage: no transaction, no crash
    r2 = Rig(tx=True, id_fn=lambda evse: "x" * 40)
    r2.board.ev(1).plug()
    r2.run(500)
    assert r2.txs.transaction_id(1) is None and r2.events() == []


def test_pending_remote_start_expires():
    r = Rig(tx=True, connect_timeout_s=60)
    r.run(100)
    assert r.txs.request_start(start_req(rid=3, cp=remote_profile(7)))["status"] == "Accepted"
    r.until(T0 + 61)
    r.txs.poll()
    r.board.ev(1).plug()
    r.run(500)
    st = last(r)
    assert st["eventType"] == "Started" and "remoteStartId" not in st["transactionInfo"]
    assert "idToken" not in st and 7 not in r.profiles


def test_send_failure_never_stops_the_loop():
    r = Rig(tx=True)

    def broken(action, payload):
        raise OSError("queue full")

    r.txs.send = broken
    r.board.ev(1).plug()
    r.run(500)
    r.board.ev(1).charge()
    r.run(500)
    assert r.ctl.relay(1) and r.txs.charging_state(1) == "Charging"
# ---------------------------------------------------------------- a day

def _ext(pid, limit):
    return prof(pid, 0, "ChargingStationExternalConstraints", [(0, limit)], start=0,
                source="EMS")


class _Expected:
    """The limit to hold the station to, from the independent reference
    (host_tests/device/reference.py), never from the engine under test: built from
    the JSON of what is installed (profile.to_json is what came in) and the
    running transactions, rebuilt whenever either changes."""

    def __init__(self):
        self.key = None
        self.ref = None

    def limit(self, r, evse, now):
        from reference import A as REF_A
        from reference import Reference

        from chargepilot.smart import profile

        key = (tuple((id(p), p.id) for p in r.profiles),
               tuple(sorted(r.cfg.transactions.items())))
        if key != self.key:
            c = r.cfg
            self.ref = Reference(c.evse_count, c.supply_voltage, c.default_amps,
                                 c.default_watts, c.ac)
            for p in r.profiles:
                self.ref.add(p.evse_id, profile.to_json(p))
            for k, tx in c.transactions.items():
                self.ref.transactions[k] = tx
            self.key = key
        return self.ref.limit(evse, now, REF_A, now)[0]


def day_scenario(day_s=86400, sample_s=5, send=None):
    """A time-accelerated day on two EVSEs (ratings 32 A and 16 A).

    Schedule changes, an external limit added/removed, EV pauses, unplug/replug,
    a TxProfile, and two "CSMS disconnects" (no-op for the control loop). The
    clock is driven by hand; `Controller.step()` is called at every sample
    (every sample_s), at every next-change instant the controller announces,
    and every 50 ms for 2 s after each event. At every step the advertised
    current is checked <= min(reference limit now, rating), the EV draw too (the
    limit from host_tests/device/reference.py, not from the engine under test).
    Returns a dict of figures; `send(action, payload)` sees every message."""
    r = Rig(evses=2, ratings=[320, 160], tx=True, default_amps=480)
    if send is not None:
        base = r._send

        def both(action, payload):
            base(action, payload)
            send(action, payload)

        r.txs.send = both
    f = day_s // 100  # one "percent" of the day in seconds
    ev1 = r.board.ev(1)
    ev2 = r.board.ev(2)
    txd = [(0, 320), (15 * f, 200), (27 * f, 100), (42 * f, 50), (47 * f, 250),
           (75 * f, 160), (90 * f, 55), (93 * f, 130)]
    txd2 = [(0, 180), (10 * f, 90), (55 * f, 240)]
    figures = {"samples": 0, "offline_changes": 0, "relay_opens": 0}

    def install(p):
        r.profiles.add(p)
        r.ctl.changed()

    def tx_profile():
        tid = r.txs.transaction_id(1)
        install(prof(10, 1, "TxProfile", [(0, 80), (5 * f, 200)], kind="Relative", tx=tid))

    def set_online(flag):
        r.online = flag

    events = [
        (0, lambda: install(prof(1, 0, "TxDefaultProfile", txd))),
        (0, lambda: ev1.plug(300)),
        (1 * f, ev1.charge),
        (5 * f, lambda: install(prof(2, 0, "ChargingStationMaxProfile", [(0, 400)]))),
        (10 * f, lambda: ev2.plug(160)),
        (11 * f, ev2.charge),
        (20 * f, lambda: install(_ext(-5, 120))),
        (25 * f, lambda: set_online(False)),
        (30 * f, lambda: (r.profiles.remove(-5), r.ctl.changed())),
        (35 * f, ev1.pause),
        (40 * f, ev1.charge),
        (48 * f, lambda: set_online(True)),
        (50 * f, tx_profile),
        (55 * f, lambda: install(prof(1, 0, "TxDefaultProfile", txd2))),
        (60 * f, ev2.unplug),
        (65 * f, lambda: ev2.plug(110)),
        (66 * f, ev2.charge),
        (70 * f, lambda: set_online(False)),
        (72 * f, lambda: install(_ext(-10, 70))),
        (80 * f, ev1.unplug),
        (85 * f, lambda: ev1.plug(320)),
        (86 * f, ev1.charge),
        (88 * f, lambda: (r.profiles.remove(-10), r.ctl.changed())),
        (95 * f, lambda: set_online(True)),
        (97 * f, ev2.pause),
    ]
    expected = _Expected()
    end = T0 + day_s
    ei = 0
    fine_until = None
    last_out = None
    while r.now() < end:
        now = r.now()
        while ei < len(events) and T0 + events[ei][0] <= now:
            events[ei][1]()
            ei += 1
            fine_until = time.ticks_add(r.ticks(), 2000)
        r.ctl.step()
        figures["samples"] += 1
        out = []
        for k in (1, 2):
            lim = expected.limit(r, k, now)
            cap = min(lim, r.board.rating_tenths(k))
            adv = r.ctl.advertised(k)
            if adv > cap or r.board.ev_draw_tenths(k) > cap:
                raise AssertionError("EVSE %d at %s: advertised %d, draw %d > limit %d"
                                     % (k, rfc3339.format(now), adv, r.board.ev_draw_tenths(k),
                                        cap))
            out.append(adv)
        if last_out is not None and out != last_out and not r.online:
            figures["offline_changes"] += 1
        last_out = out
        # next instant: 50 ms while settling after an event, else the next sample,
        # the next event or the controller's next change, whichever comes first
        if fine_until is not None and time.ticks_diff(fine_until, r.ticks()) > 0:
            r.ticks.advance(50)
            continue
        fine_until = None
        t_next = (now // sample_s + 1) * sample_s
        nc = r.ctl.next_change()
        if nc is not None and nc < t_next:
            t_next = nc
        if ei < len(events) and T0 + events[ei][0] < t_next:
            t_next = T0 + events[ei][0]
        if t_next <= now:
            t_next = now + 1
        r.ticks.advance((t_next - now) * 1000)
    figures["recomputes"] = r.ctl.recomputes
    figures["steps"] = r.ctl.steps
    figures["sent"] = r.sent
    figures["rig"] = r
    return figures


def check_day(fig):
    """What every run of day_scenario must show (both runtimes)."""
    r = fig["rig"]
    # the loop kept applying the stored schedule while the CSMS was away
    assert fig["offline_changes"] >= 2, fig["offline_changes"]
    # recomputed on changes and next-change instants only: far fewer than steps
    assert fig["recomputes"] < fig["steps"] // 5, (fig["recomputes"], fig["steps"])
    txev = r.events()
    assert any(p.get("offline") for p in txev)
    by_tx = {}
    for p in txev:
        by_tx.setdefault(p["transactionInfo"]["transactionId"], []).append(p)
    assert len(by_tx) == 4  # EV1 twice, EV2 twice
    for tid, evs in by_tx.items():
        assert len(tid) <= 36
        assert [p["seqNo"] for p in evs] == list(range(len(evs)))
        assert evs[0]["eventType"] == "Started"
        assert all(p["eventType"] == "Updated" for p in evs[1:-1])
    ended = [p for p in txev if p["eventType"] == "Ended"]
    assert len(ended) == 2 and all(p["transactionInfo"]["stoppedReason"] == "EVDisconnected"
                                   for p in ended)
    states = set(p["transactionInfo"].get("chargingState") for p in txev)
    for s in ("EVConnected", "Charging", "SuspendedEV", "SuspendedEVSE"):
        assert s in states, (s, states)
    # the TxProfile went with its transaction
    assert 10 not in r.profiles and any(10 in e[2] for e in r.ended)


def test_short_day_scenario():
    fig = day_scenario(day_s=4000, sample_s=10)
    check_day(fig)
    assert fig["samples"] > 400


# ---------------------------------------------------------------- power loss (txstate.py)

def _txfile(d):
    return d + "/transactions.json"


def _stored(path):
    """The entries of a transactions file as dicts ({} when absent)."""
    import json

    from chargepilot.store import recfile

    body, reason = recfile.read_framed(path, 4096)
    if body is None:
        if reason is not None:
            raise AssertionError(reason)
        return {}
    out = {}
    tx = json.loads(body)["tx"]
    for tid in tx:
        evse, seq, start, at, state = tx[tid]
        out[tid] = {"evse": evse, "seq": seq, "start": start, "at": at, "state": state}
    return out


def _rebooted(path, **kw):
    """A fresh Transactions on the same flash, offline, clock unknown (a boot)."""
    r = Rig(tx=True, clock_set=False, state_path=path, **kw)
    r.online = False
    return r


T_CLOCK = T0 + 3 * 86400  # the time the CSMS gives after the reboot


def _boot(r, queued=None):
    """recover() at a boot with the clock unknown, then the clock comes (the
    BootNotification answer) and poll() queues the Endeds that waited for it
    (issue 11 item 8: none is stamped before the time is known)."""
    got, problems = r.txs.recover(queued)
    assert r.events() == [], r.events()
    r.clock.set(T_CLOCK)
    r.txs.poll()
    return got, problems


def test_running_transaction_is_ended_after_a_power_loss():
    from devtest import rmtree, tmpdir

    d = tmpdir("tx")
    try:
        path = _txfile(d)
        r = Rig(tx=True, state_path=path, seq_block=4)
        assert r.txs.recover() == ([], [])  # nothing stored: nothing to do
        ev = r.board.ev(1)
        r.run(200)
        ev.plug(320)
        r.run(500)
        tid = r.txs.transaction_id(1)
        ent = _stored(path)[tid]
        assert (ent["evse"], ent["seq"], ent["start"]) == (1, 4, r.cfg.transaction(1)[1])
        import os

        assert os.stat(path)[6] <= 128  # inline in LittleFS metadata (txstate.py)
        ev.charge()
        r.run(500)
        # enough rate changes to run through the first seqNo block
        for i in range(5):
            r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 100 + 10 * i)]))
            r.ctl.changed()
            r.run(100)
        r.run(32000)  # the finding: an Updated 32 s after the last file write
        r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 200)]))
        r.ctl.changed()
        r.run(100)
        sent = [p["seqNo"] for p in r.events()]
        assert sent == list(range(len(sent))) and len(sent) >= 7
        ent = _stored(path)[tid]
        assert max(sent) < ent["seq"] <= max(sent) + 4
        assert ent["state"] == "Charging" and ent["at"] is not None
        # writes: one per block of 4 events (no removal yet)
        assert r.txs._file.counters["files"] == (len(sent) + 3) // 4
        # the power goes; at the reboot the clock is unknown and the station offline
        r2 = _rebooted(path, seq_block=4)
        got, problems = r2.txs.recover()
        assert got == [(1, tid)] and problems == []
        assert r2.events() == [] and list(_stored(path)) == [tid]  # waits for the clock
        r2.txs.poll()
        assert r2.events() == []  # still unknown: still waiting
        r2.clock.set(T_CLOCK)
        r2.txs.poll()
        (end,) = r2.events()
        assert end["eventType"] == "Ended" and end["triggerReason"] == "AbnormalCondition"
        assert end["transactionInfo"] == {"transactionId": tid, "stoppedReason": "PowerLoss"}
        assert max(sent) < end["seqNo"] <= max(sent) + 4
        assert end["offline"] is True and end["evse"] == {"id": 1, "connectorId": 1}
        # never before an event the CSMS already has (the finding: the Started
        # time, 32 s before an Updated); the last file write is older than
        # the last event sent, so the file's time would go backwards
        last_sent = max(p["timestamp"] for p in r.events())
        assert rfc3339.format(ent["at"]) < last_sent
        assert end["timestamp"] == rfc3339.format(T_CLOCK) >= last_sent
        assert _stored(path) == {}
        assert r2.txs.recover() == ([], [])  # once only
        # a third boot: nothing left to end
        r3 = _rebooted(path)
        assert r3.txs.recover() == ([], []) and r3.events() == []
    finally:
        rmtree(d)


def test_power_loss_ended_uses_the_clock_when_known_and_few_flash_writes():
    from devtest import rmtree, tmpdir

    d = tmpdir("tx")
    try:
        path = _txfile(d)
        r = Rig(tx=True, state_path=path, evses=2)
        r.txs.recover()
        for evse in (1, 2):
            r.board.ev(evse).plug()
        r.run(500)
        r.board.ev(1).charge()
        r.run(500)
        r.board.ev(1).unplug()  # a whole transaction: Started, Charging, Ended
        r.run(200)
        assert [p["eventType"] for p in r.events()
                if p["evse"]["id"] == 1] == ["Started", "Updated", "Ended"]
        c = r.txs._file.counters
        # EVSE 1: one write at the start, one at the end; EVSE 2: one at the start
        assert (c["files"], c["removes"]) == (3, 0)
        tid2 = r.txs.transaction_id(2)
        assert list(_stored(path)) == [tid2]
        r.board.ev(2).unplug()
        r.run(200)
        assert r.txs._file.counters["removes"] == 1 and _stored(path) == {}
        r.board.ev(2).plug()
        r.run(500)
        tid3 = r.txs.transaction_id(2)
        r2 = Rig(tx=True, state_path=path, evses=2)  # clock known at boot, online
        r2.until(T0 + 3600)
        assert r2.txs.recover() == ([(2, tid3)], [])
        (end,) = r2.events()
        assert end["timestamp"] == rfc3339.format(r2.now()) and "offline" not in end
        assert end["seqNo"] == 8  # the first reservation: seqNos 0..7
    finally:
        rmtree(d)


def test_ended_already_queued_is_not_sent_twice():
    from devtest import rmtree, tmpdir

    d = tmpdir("tx")
    try:
        path = _txfile(d)
        r = Rig(tx=True, state_path=path, evses=2)
        r.txs.recover()
        r.board.ev(1).plug()
        r.board.ev(2).plug()
        r.run(500)
        t1, t2 = r.txs.transaction_id(1), r.txs.transaction_id(2)
        ended1 = dict(r.events()[0], eventType="Ended", seqNo=1)  # queued, the file not yet
        late2 = dict(r.events()[1], eventType="Updated", seqNo=11)  # beyond the reservation
        late2["timestamp"] = "2099-01-01T00:00:00Z"
        assert ended1["transactionInfo"]["transactionId"] == t1
        queued = [(5, "StatusNotification", {"evseId": 1}), (6, "TransactionEvent", ended1),
                  (7, "TransactionEvent", late2)]
        r2 = _rebooted(path, evses=2)
        assert _boot(r2, queued) == ([(2, t2)], [])
        (end,) = r2.events()
        assert end["transactionInfo"]["transactionId"] == t2 and end["seqNo"] == 12
        assert end["timestamp"] == "2099-01-01T00:00:00Z"  # not before a queued event
        assert _stored(path) == {}

        # an unreadable queue: the reservation alone numbers the Ended
        r3 = Rig(tx=True, state_path=path)
        r3.txs.recover()
        r3.board.ev(1).plug()
        r3.run(500)

        def broken():
            yield (1, "TransactionEvent", "not a payload")
            raise OSError("flash read error")

        r4 = _rebooted(path)
        assert _boot(r4, broken())[0] == [(1, r3.txs.transaction_id(1))]
        assert r4.events()[0]["seqNo"] == 8

        # events of the transaction still queued: the Ended follows the last one
        # exactly (every later event would be queued too), not the reservation
        r5 = Rig(tx=True, state_path=path)
        r5.txs.recover()
        r5.board.ev(1).plug()
        r5.run(500)
        r5.board.ev(1).charge()
        r5.run(500)
        evs = r5.events()
        assert [p["seqNo"] for p in evs] == [0, 1]
        r6 = _rebooted(path)
        got, problems = _boot(r6, [(9, "TransactionEvent", evs[1])])
        assert got == [(1, r5.txs.transaction_id(1))] and problems == []
        assert r6.events()[0]["seqNo"] == 2  # no gap
    finally:
        rmtree(d)


def test_damaged_transactions_file_is_set_aside_and_reported():
    import os

    from devtest import rmtree, tmpdir

    d = tmpdir("tx")
    try:
        path = _txfile(d)
        with open(path, "wb") as f:
            f.write(b'{"v":1,"tx":{"abc":[1,4,null,null,null]}}\n#crc32=00000000 len=3\n')
        r = _rebooted(path)
        got, problems = r.txs.recover()
        assert got == [] and r.events() == []
        assert len(problems) == 1 and problems[0][0] == "transactions.json"
        assert "length" in problems[0][1]
        assert sorted(os.listdir(d)) == ["transactions.json.bad"]
        # the station goes on: a new transaction is kept in a new file
        r.board.ev(1).plug()
        r.run(500)
        assert list(_stored(path)) == [r.txs.transaction_id(1)]

        # a valid file with one bad entry: the good ones still end, the file is set aside
        from chargepilot.store import recfile

        body = recfile.dumps({"v": 1, "tx": {"good": [1, 3, None, None, None, "later"],
                                             "bad": [True, 1, None, None, None],
                                             "short": [1, 1],
                                             "x" * 40: [1, 1, None, None, None]}})
        with open(path, "wb") as f:
            f.write(recfile.frame(body))
        r2 = _rebooted(path)
        got, problems = r2.txs.recover()
        assert got == [(1, "good")] and r2.events() == []  # held: no clock, no instant
        r2.clock.set(T0)
        r2.txs.poll()
        assert r2.events()[0]["seqNo"] == 3 and r2.events()[0]["timestamp"] == \
            rfc3339.format(T0)  # 0 ms old: the boot instant is the clock's now
        assert len(problems) == 1 and "entry" in problems[0][1]
        assert sorted(os.listdir(d)) == ["transactions.json.1.bad", "transactions.json.bad"]

        # not JSON, wrong version, a leftover .tmp: no crash, reported, set aside
        for data in (b"\xff\xfe garbage", recfile.frame(b'{"v":2,"tx":{}}'),
                     recfile.frame(b"[1,2]")):
            with open(path, "wb") as f:
                f.write(data)
            with open(path + ".tmp", "wb") as f:
                f.write(b"half")
            r3 = _rebooted(path)
            got, problems = r3.txs.recover()
            assert got == [] and len(problems) == 1 and r3.events() == []
            assert not [n for n in os.listdir(d) if n.endswith(".tmp")]
            assert "transactions.json" not in os.listdir(d)
    finally:
        rmtree(d)


def test_power_loss_ended_not_queued_is_kept_for_the_next_boot():
    from devtest import rmtree, tmpdir

    d = tmpdir("tx")
    try:
        path = _txfile(d)
        r = Rig(tx=True, state_path=path)
        r.txs.recover()
        r.board.ev(1).plug()
        r.run(500)
        tid = r.txs.transaction_id(1)
        r2 = _rebooted(path)

        def full(action, payload):
            raise OSError("outbox full")

        r2.txs.send = full
        r2.clock.set(T_CLOCK)  # known at boot this time: queued (refused) at once
        got, problems = r2.txs.recover()
        assert got == [] and problems[0][0] == tid and "not queued" in problems[0][1]
        r2.txs.send = r2._send
        r2.board.ev(1).plug()  # a new transaction meanwhile: both are in the file
        r2.run(500)
        assert sorted(_stored(path)) == sorted([tid, r2.txs.transaction_id(1)])
        r3 = _rebooted(path)
        got, problems = _boot(r3)
        assert sorted(got) == sorted([(1, tid), (1, r2.txs.transaction_id(1))])
        assert problems == [] and _stored(path) == {} and len(r3.events()) == 2
        assert "2020-01-01T00:00:00Z" not in [p["timestamp"] for p in r3.events()]
    finally:
        rmtree(d)


def test_failed_write_is_retried_and_recover_not_called_keeps_old_entries():
    from devtest import rmtree, tmpdir

    d = tmpdir("tx")
    try:
        path = _txfile(d)
        r = Rig(tx=True, state_path=path, seq_block=2)
        r.txs.recover()
        real = r.txs._file.save
        fails = [1]

        def flaky(recs):
            if fails[0]:
                fails[0] -= 1
                raise OSError("flash write failed")
            return real(recs)

        r.txs._file.save = flaky
        ev = r.board.ev(1)
        ev.plug()
        r.run(500)
        tid = r.txs.transaction_id(1)
        assert r.events()[0]["eventType"] == "Started" and _stored(path) == {}
        ev.charge()  # the next event writes the reservation
        r.run(500)
        assert _stored(path)[tid]["seq"] == 3 and len(r.events()) == 2
        # a Transactions that never ran recover(): its first write keeps the old entry
        r2 = Rig(tx=True, state_path=path)
        r2.board.ev(1).plug()
        r2.run(500)
        assert sorted(_stored(path)) == sorted([tid, r2.txs.transaction_id(1)])
        for bad in (0, True, 1001):
            assert raises(ValueError, lambda: transactions.Transactions(
                r.cfg, r.profiles, r.clock, None, state_path=path, seq_block=bad))
    finally:
        rmtree(d)


def test_event_held_for_days_keeps_its_instant():
    # The clock stays unset for 8 days (longer than ticks_diff's 2**29 ms range on a
    # board); poll() runs meanwhile (the agent's 1 s poll, here once a day). The event
    # is stamped 8 days and a fraction before the clock's time: T0 - 8 d - 1 s.
    r = Rig(tx=True, clock_set=False)
    r.board.ev(1).plug()
    r.run(500)
    assert r.sent == [] and r.txs.held() == 3
    for _ in range(8):
        r.ticks.advance(86400000)
        r.txs.poll()
    r.clock.set(T0)
    r.txs.poll()
    started = [p for a, p in r.sent if a == "TransactionEvent"][0]
    assert started["timestamp"] == rfc3339.format(T0 - 8 * 86400 - 1), started["timestamp"]


def _cycles(r, ev, n):
    for _ in range(n):
        ev.plug()
        r.run(500)
        ev.unplug()
        r.run(500)


def test_held_overflow_never_leaves_a_started_without_its_ended():
    # 40 plug cycles with the clock unknown (review): each cycle is StatusNotification
    # Occupied, Started, Ended, StatusNotification Available; 1 + 40 * 4 = 161 events,
    # at most 64 held, so 161 - 64 = 97 dropped (one per event added to a full hold).
    # Hand-run policy: StatusNotifications go first; after cycle 32 the hold is the
    # 64 Started/Ended of transactions 1..32; cycles 33..40 go whole (Started dropped,
    # so its Ended too). Delivered: 32 Started, each with its Ended, in order.
    r = Rig(tx=True, clock_set=False)
    ev = r.board.ev(1)
    r.run(500)
    _cycles(r, ev, 40)
    assert r.sent == [] and r.txs.held() == 64
    assert r.txs.held_dropped == 97, r.txs.held_dropped
    r.clock.set(T0)
    r.txs.poll()
    tes = r.events()
    started = [p["transactionInfo"]["transactionId"] for p in tes if p["eventType"] == "Started"]
    ended = [p["transactionInfo"]["transactionId"] for p in tes if p["eventType"] == "Ended"]
    assert len(started) == 32 and ended == started, (len(started), len(ended))
    assert len(set(started)) == 32
    # the transactions after the hold filled are gone whole, also once the clock is known
    _cycles(r, ev, 1)
    tes = r.events()
    assert len(tes) == 66 and tes[-2]["eventType"] == "Started" and tes[-1]["eventType"] == "Ended"
    assert tes[-1]["transactionInfo"]["transactionId"] == tes[-2]["transactionInfo"]["transactionId"]


def test_held_overflow_drops_updated_before_the_ended():
    # Held: StatusNotification Available, Occupied, Started (3), then 70 Updated: the
    # 62nd and 63rd drop the two StatusNotifications, the 64th..70th the Updated 1..7
    # (9 drops). Unplug emits StatusNotification Available (no other one held: it
    # drops Updated 8), then the Ended (drops that StatusNotification, the oldest):
    # 11 drops. Delivered: Started, Updated 9..70 (62), Ended.
    r = Rig(tx=True, clock_set=False)
    ev = r.board.ev(1)
    r.run(500)
    ev.plug()
    r.run(500)
    assert r.txs.held() == 3
    for _ in range(70):
        assert r.txs.event(1, "Trigger")
    assert r.txs.held_dropped == 9 and r.txs.held() == 64
    ev.unplug()
    r.run(500)
    assert r.txs.held_dropped == 11 and r.txs.held() == 64
    r.clock.set(T0)
    r.txs.poll()
    tes = r.events()
    kinds = [p["eventType"] for p in tes]
    assert kinds == ["Started"] + ["Updated"] * 62 + ["Ended"], kinds
    # seqNo: Started 0, Updated 1..70, Ended 71; Updated 9..70 delivered
    assert [p["seqNo"] for p in tes] == [0] + list(range(9, 71)) + [71]


def test_held_overflow_drops_a_later_session_before_an_ended():
    # Two EVSEs, hold lowered to 4, StatusNotification off, driven directly. Held:
    # Started tx1 (EVSE 1), Started tx2, Ended tx2, Started tx3 (EVSE 2): full.
    # Ended tx1 must be held: no StatusNotification or Updated to drop, so the newest
    # Started of another transaction (tx3) goes, and with it tx3's Ended later.
    # Delivered (hand): Started tx1, Started tx2, Ended tx2, Ended tx1; 2 dropped.
    r = Rig(evses=2, tx=True, clock_set=False)
    r.txs.send_status = False
    r.txs.max_held = 4
    r.txs.update(1, "B")
    r.txs.update(2, "B")
    r.txs.update(2, "A")
    r.txs.update(2, "B")
    assert r.txs.held() == 4 and r.txs.held_dropped == 0
    r.txs.update(1, "A")
    r.txs.update(2, "A")
    assert r.txs.held() == 4 and r.txs.held_dropped == 2
    r.clock.set(T0)
    r.txs.poll()
    got = [(p["eventType"], p["evse"]["id"]) for p in r.events()]
    assert got == [("Started", 1), ("Started", 2), ("Ended", 2), ("Ended", 1)], got
    ids = [p["transactionInfo"]["transactionId"] for p in r.events()]
    assert ids[0] == ids[3] and ids[1] == ids[2] and ids[0] != ids[1]
    # once the clock is known, tx4 on EVSE 2 goes as usual
    r.txs.update(2, "B")
    r.txs.update(2, "A")
    assert [p["eventType"] for p in r.events()][4:] == ["Started", "Ended"]


def test_held_events_wait_for_outbox_room_on_release():
    # Held while the clock is unknown: StatusNotification Occupied, Started, 3 Updated
    # (5 events; Available went before the tx point). Once the clock is known the
    # outbox takes only 2, then none: the other 3 stay held, in order, nothing is
    # dropped; when room comes back they follow. Expected by hand: Started seqNo 0,
    # Updated 1, 2, 3, in that order, no drop.
    r = Rig(tx=True, clock_set=False)
    ev = r.board.ev(1)
    r.run(500)
    ev.plug()
    r.run(500)
    for _ in range(3):
        assert r.txs.event(1, "Trigger")
    held0 = r.txs.held()
    assert held0 >= 4, held0
    room = [2]

    def has_room(payload):
        return room[0] > 0

    def counted(fn):
        def send(action, payload):
            room[0] -= 1
            fn(action, payload)
        return send

    r.txs.send = counted(r.txs.send)
    r.txs.has_room = has_room
    r.clock.set(T0)
    r.txs.poll()
    assert r.txs.held() == held0 - 2 and r.txs.held_dropped == 0
    r.txs.poll()  # still no room: nothing moves
    assert r.txs.held() == held0 - 2
    room[0] = 100
    r.txs.poll()
    assert r.txs.held() == 0 and r.txs.held_dropped == 0
    tes = r.events()
    assert [p["eventType"] for p in tes] == ["Started", "Updated", "Updated", "Updated"]
    assert [p["seqNo"] for p in tes] == [0, 1, 2, 3]
