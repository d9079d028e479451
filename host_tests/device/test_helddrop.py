"""Events held while the clock is unknown and dropped (hold full) reach the
CSMS as one NotifyEvent each source (app.Station.report_held_drops), once the
clock is known: the whole station (app.Station, host board, its outbox in
flash), driven directly (no connection: the outbox keeps what would be sent).

Expected values are hand computations (see each test)."""

import gc

import simcsms
from devtest import rmtree, tmpdir

from chargepilot.base import clock, log

T = 220000000  # seconds since 2020-01-01Z (2026-12-21)


def _station(name):
    state = tmpdir(name)
    st = simcsms.make_station(state, clk=clock.Clock(),
                              fixed={"NotifyChargingLimitWithSchedules": True,
                                     "ExternalControlSignalsEnabled": True,
                                     "LimitChangeSignificance": 0})
    st.load()
    return st, state


def _problems(st):
    out = []
    for _n, action, p in st.outbox.items():
        gc.collect()
        if action == "NotifyEvent":
            ev = p["eventData"][0]
            if ev["component"]["name"] == "OCPPCommCtrlr" and "techInfo" in ev:
                out.append((p["generatedAt"], ev["techInfo"]))
    return out


def _report(st):
    # what the station's 1 s poll does (app.Station._poll)
    st.txs.poll()
    st.smart.poll()
    st.report_held_drops()


def test_dropped_transaction_events_are_reported_once_the_clock_is_known():
    # 40 plug cycles with the clock unknown, the hold lowered to 8 events (64 full
    # TransactionEvents next to a whole station do not fit the test heap). The app
    # sends StatusNotification itself (send_status=False): 40 Started + 40 Ended =
    # 80 events, 8 held (cycles 1..4), 72 dropped (cycles 5..40 whole).
    old = log.level
    st, state = _station("hd1")
    try:
        log.level = 100
        st.txs.max_held = 8
        for _ in range(40):
            st.txs.update(1, "B")
            st.txs.update(1, "A")
        assert st.txs.held() == 8 and st.txs.held_dropped == 72
        _report(st)  # clock unknown: nothing reported yet
        assert _problems(st) == []
        # the 8 released events fill the outbox (by count): the report waits for
        # room, no refused put (outbox.dropped unchanged)
        while len(st.outbox) < 64 - st.outbox.reserve_count - 8:
            st.outbox.put("Heartbeat", {})
        dropped = st.outbox.dropped
        st.clock.set(T)
        _report(st)
        assert st.txs.held() == 0 and len(st.outbox) == 64 - st.outbox.reserve_count
        assert _problems(st) == [] and st.txs.held_dropped == 72
        assert st.outbox.dropped == dropped
        st.outbox.ack(st.outbox.peek()[0])  # one message sent to the CSMS
        _report(st)
        got = _problems(st)
        assert len(got) == 1, got
        assert got[0][1].startswith("72 TransactionEvent/StatusNotification messages dropped"), got
        assert got[0][0] is not None
        assert "TransactionEvent Ended seqNo 1 of transaction" in got[0][1], got
        _report(st)  # once: the count is cleared
        assert len(_problems(st)) == 1 and st.txs.held_dropped == 0
    finally:
        log.level = old
        rmtree(state)


def test_dropped_limit_notifications_are_reported_once_the_clock_is_known():
    # 20 external limits (each a different value, LimitChangeSignificance 0: each one
    # a NotifyChargingLimit) with the clock unknown: 16 held, 20 - 16 = 4 dropped.
    old = log.level
    st, state = _station("hd2")
    try:
        log.level = 100
        for i in range(20):
            st.smart.set_external_limit(1, 100 + 10 * i, "A", "EMS")
        st.clock.set(T)
        _report(st)
        got = _problems(st)
        assert len(got) == 1, got
        assert got[0][1].startswith("4 charging limit notifications dropped"), got
        assert "NotifyChargingLimit for evse 1 (source EMS)" in got[0][1], got
    finally:
        log.level = old
        rmtree(state)
