"""Review of the issue 10/11/15 merge: hostile-CSMS reproductions.

1. TriggerMessage(MeterValues) while the clock is unknown: the MeterValues
   must not carry an invented instant (meter.values used to format 0 =
   2020-01-01T00:00:00Z, sent straight to the outbox, never re-stamped).
2. A CSMS sets currentTime 9999-12-31T23:59:59Z and the clock runs past it:
   a TransactionEvent / StatusNotification can no longer be stamped
   (rfc3339.format raises); the transaction must still start (the event is
   held like one of an unknown clock), never raise out of update().
"""

from devtest import run

from test_control import Rig, Ticks

from chargepilot.base import clock as clockmod
from chargepilot.base import rfc3339
from chargepilot.ocpp import trigger

_EPOCH0 = "2020-01-01T00:00:00Z"


class _Obj:
    pass


def _trigger_rig(clock):
    from chargepilot.ocpp import meter, devicemodel as variables

    st = _Obj()
    st.cfg = _Obj()
    st.cfg.evse_count = 1
    st.agent = _Obj()
    st.agent.registration = "Pending"
    st.agent.rpc = None
    st.clock = clock
    st.dm = variables.DeviceModel(None)
    board = _Obj()
    board.meter_wh = lambda evse: 1234
    st.meter = meter.Meter(board, st.dm, clock)
    st.ctl = _Obj()
    st.ctl.advertised = lambda evse: 160
    st.sent = []
    st.send = lambda a, p: st.sent.append((a, p))
    st.txs = _Obj()
    st.txs.transaction_id = lambda evse: None
    return st


def _run_trigger(st, payload):
    h = trigger.make(st)["TriggerMessage"]
    out = run(h(payload))
    if type(out) is tuple:
        resp, follow = out
        run(follow())
        return resp
    return out


def _stamps(st):
    return [mv["timestamp"] for a, p in st.sent if a == "MeterValues" for mv in p["meterValue"]]


def test_trigger_meter_values_clock_unset_sends_no_invented_instant():
    st = _trigger_rig(clockmod.Clock())  # never set: the time is unknown
    resp = _run_trigger(st, {"requestedMessage": "MeterValues", "evse": {"id": 1}})
    assert _EPOCH0 not in _stamps(st), st.sent
    # nothing accepted and then silently skipped: the answer says why
    assert resp["status"] == "Rejected" and st.sent == [], (resp, st.sent)


def test_trigger_meter_values_clock_past_9999_sends_nothing_invented():
    ticks = Ticks()
    c = clockmod.Clock(ticks_ms=ticks)
    c.set(rfc3339.parse("9999-12-31T23:59:59Z"))
    ticks.advance(5000)  # the clock runs on past the last instant RFC 3339 can name
    st = _trigger_rig(c)
    resp = _run_trigger(st, {"requestedMessage": "MeterValues"})
    assert resp["status"] == "Rejected" and st.sent == [], (resp, st.sent)


def test_trigger_meter_values_clock_known_is_stamped_now():
    c = clockmod.Clock()
    t = rfc3339.parse("2031-05-06T07:08:09Z")
    c.set(t)
    st = _trigger_rig(c)
    resp = _run_trigger(st, {"requestedMessage": "MeterValues"})
    assert resp == {"status": "Accepted"}, resp
    s = _stamps(st)
    assert len(s) == 1 and "2031-05-06T07:08:09Z" <= s[0] <= "2031-05-06T07:08:11Z", s


def test_clock_past_9999_transaction_still_starts_and_nothing_raises():
    r = Rig(tx=True)
    r.clock.set(rfc3339.parse("9999-12-31T23:59:58Z"))
    r.run(200)
    r.run(5000)  # the clock is now past 9999-12-31T23:59:59Z
    ev = r.board.ev(1)
    ev.plug(320)
    r.run(500)
    # the pilot state change reached Transactions without an exception: a transaction runs
    assert r.txs.transaction_id(1) is not None, r.faults
    for a, p in r.sent:
        ts = p.get("timestamp")
        assert ts is None or type(ts) is str, (a, p)


def test_change_availability_flood_writes_flash_only_on_a_change():
    from devtest import tmpdir

    from chargepilot.ocpp import availability
    from chargepilot.store import recfile

    d = tmpdir("review-av")
    writes = []
    orig = recfile.write_record

    def counting(path, obj, *a):
        writes.append(path)
        return orig(path, obj, *a)

    recfile.write_record = counting
    try:
        av = availability.Availability(d, 2)
        for _ in range(50):  # a CSMS repeating the same request
            av.set(1, False)
            av.set(0, True)
        assert len(writes) == 1, len(writes)
        av.set(1, True)
        assert len(writes) == 2
        # what is on flash is what was asked for last
        av2 = availability.Availability(d, 2)
        assert av2.operative(1) and av2.operative(2)
        av.set(0, False)
        av2 = availability.Availability(d, 2)
        assert not av2.operative(1) and not av2.operative(2)
    finally:
        recfile.write_record = orig


def test_rfc3339_year_0000_january_february_round_trip():
    # Clock.set accepts 0000-01-01T00:00:00Z; format() gave 0000-01-02 for every
    # instant of 0000-01-01..0000-02-28 (the C algorithm's era rounding, floored
    # twice in Python). Independent check: walk the calendar by hand (year 0000
    # is a leap year in the proleptic Gregorian calendar) one day at a time.
    t = rfc3339.parse("0000-01-01T00:00:00Z")
    assert rfc3339.parse("0001-01-01T00:00:00Z") - t == 366 * 86400
    months = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    for y in (0, 1):
        for m in range(12):
            for d in range(months[m] if y == 0 else (31, 28, 31, 30, 31, 30, 31, 31, 30,
                                                     31, 30, 31)[m]):
                want = "%04d-%02d-%02dT12:34:56Z" % (y, m + 1, d + 1)
                got = rfc3339.format(t + 12 * 3600 + 34 * 60 + 56)
                assert got == want, (got, want)
                assert rfc3339.parse(want) == t + 45296, want
                t += 86400


def test_events_held_for_the_clock_released_before_2020_keep_their_real_time():
    # A CSMS whose currentTime is 2019-06-01 (the clock supports 1970..): the
    # events held while the clock was unset were stamped max(at, 0) =
    # 2020-01-01T00:00:00Z, an invented instant seven months after "now".
    r = Rig(tx=True, clock_set=False)
    ev = r.board.ev(1)
    r.run(200)
    ev.plug(320)
    r.run(2000)
    assert r.txs.held() > 0 and r.sent == []
    t = rfc3339.parse("2019-06-01T00:00:00Z")
    r.clock.set(t)
    r.txs.release()
    stamps = [p["timestamp"] for a, p in r.sent]
    assert stamps, r.sent
    for s in stamps:
        # happened at most ~2.2 s before the clock was set (hand count of the run above)
        assert "2019-05-31T23:59:57Z" <= s <= "2019-06-01T00:00:00Z", stamps


def test_external_limit_held_for_the_clock_released_before_2020_keeps_its_real_time():
    from test_smart import make

    sc = make(NotifyChargingLimitWithSchedules=True)
    tk = [1000]
    sc.clock._ticks_ms = lambda: tk[0]
    sc.clock.t = None
    sc.set_external_limit(1, 100, source="SO")  # constant: in force with the clock unset
    tk[0] += 2500
    sc.clock.t = rfc3339.parse("2019-06-01T00:00:00Z")
    sc.poll()
    _a, p = sc.pending[(1, "SO")]
    # set 2.5 s before the clock read 2019-06-01T00:00:00Z: whole seconds, never after
    assert p["chargingSchedule"][0]["startSchedule"] == "2019-05-31T23:59:57Z", p


def test_base_report_follow_up_refused_does_not_wedge_later_reports():
    # The rpc layer answers a CALL whose follow-up it cannot start (MAX_FOLLOW_UPS
    # busy: e.g. four TriggerMessage(StatusNotification) waiting on a slow CSMS)
    # with a CALLERROR and never runs the follow-up. Reporter set busy in the
    # handler: every later GetBaseReport was Rejected InProgress until a reboot.
    from test_coreops_units import _Agent, _dm

    from chargepilot.ocpp import basereport

    a = _Agent(_dm())
    rep = basereport.Reporter(a)
    resp, _never_started = run(rep.on_get_base_report({"requestId": 1,
                                                       "reportBase": "FullInventory"}))
    assert resp == {"status": "Accepted"}
    resp, send = run(rep.on_get_base_report({"requestId": 2, "reportBase": "FullInventory"}))
    assert resp == {"status": "Accepted"}, resp
    run(send())
    assert a.frames and a.frames[-1]["requestId"] == 2 and a.frames[-1]["tbc"] is False


def test_base_report_while_a_report_runs_is_in_progress_and_clock_unknown_is_rejected():
    import asyncio

    from test_coreops_units import _Agent, _dm

    from chargepilot.ocpp import basereport

    a = _Agent(_dm())
    gate = []

    async def slow_call(action, payload):
        while not gate:
            await asyncio.sleep_ms(5)
        a.frames.append(payload)
        return {}

    a.call = slow_call
    rep = basereport.Reporter(a)

    async def scenario():
        resp, send = await rep.on_get_base_report({"requestId": 1, "reportBase": "FullInventory"})
        assert resp == {"status": "Accepted"}
        task = asyncio.create_task(send())
        await asyncio.sleep_ms(20)  # the report is being sent
        again = await rep.on_get_base_report({"requestId": 2, "reportBase": "FullInventory"})
        assert again["status"] == "Rejected" and again["statusInfo"]["reasonCode"] == \
            "InProgress", again
        gate.append(1)
        await task
        assert not rep.busy and a.frames[-1]["requestId"] == 1

    run(scenario())
    a.timestamp = lambda: None  # the clock is not known: no invented generatedAt
    resp = run(rep.on_get_base_report({"requestId": 3, "reportBase": "FullInventory"}))
    assert resp["status"] == "Rejected", resp


def test_trigger_status_notification_clock_unset_is_rejected_not_accepted_and_dropped():
    # agent.send_status returns without sending while the time is unknown: an
    # Accepted trigger would never be answered by a StatusNotification.
    st = _trigger_rig(clockmod.Clock())
    resp = _run_trigger(st, {"requestedMessage": "StatusNotification"})
    assert resp["status"] == "Rejected", resp


def test_session_ended_while_the_clock_is_unknown_survives_a_power_cut():
    # Started..Ended of a session while the clock is unset wait in RAM; _end took
    # the transaction off the file at once, so a power cut before the clock was
    # known lost the whole session: the next boot had nothing to end.
    from devtest import tmpdir

    from chargepilot.store import txstate

    d = tmpdir("review-tx")
    r = Rig(tx=True, clock_set=False, state_path=d + "/tx.json")
    r.txs.recover()
    ev = r.board.ev(1)
    r.run(200)
    ev.plug(320)
    r.run(500)
    ev.charge()
    r.run(2000)
    tid = r.txs.transaction_id(1)
    assert tid is not None
    ev.unplug()
    r.run(500)
    assert r.txs.transaction_id(1) is None and r.sent == [] and r.txs.held() > 0
    recs, _p = txstate.TxFile(d + "/tx.json").load()
    assert tid in recs, recs
    # power cut now: the next boot ends it (PowerLoss), held for its clock
    r2 = Rig(tx=True, clock_set=False, state_path=d + "/tx.json")
    got, _probs = r2.txs.recover()
    assert got == [(1, tid)], got
    # no cut: once the clock is known the held Ended goes out and the file lets go
    r.clock.set(rfc3339.parse("2031-01-01T00:00:00Z"))
    r.txs.release()
    ends = [p for a, p in r.sent if a == "TransactionEvent" and p["eventType"] == "Ended"]
    assert len(ends) == 1 and ends[0]["transactionInfo"]["transactionId"] == tid
    recs, _p = txstate.TxFile(d + "/tx.json").load()
    assert tid not in recs, recs
