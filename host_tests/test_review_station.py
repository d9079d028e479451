"""Review of the issue 10/11/15 merge, whole app.Station (CPython: the Station
does not fit the device-test heap).

A power cut during a transaction while the outbox is full (the station was
offline for long): at boot transactions.recover() queues the Ended
(PowerLoss); the full outbox refuses it. transactions.py keeps such a
transaction in its file ("tried again at the next boot") only when `send`
raises (recover() with the clock known, or release() of the Ended held for
an unset clock); app.Station.send swallowed the refusal, so the file lost the
transaction and no boot ever ended it at the CSMS.
"""

import simcsms
from devtest import tmpdir

from chargepilot.station import app
from chargepilot.ocppj import outbox
from chargepilot.store import txstate

TID = "tx-review-1"


def _boot(state):
    sim = simcsms.SimTime(scale=1)
    st = simcsms.make_station(state, sim)
    st.load()
    # the CSMS's BootNotification answer sets the clock: the held Ended goes out
    st.clock.set(simcsms.T0)
    st.txs.release()
    return st, sim


def test_power_loss_ended_refused_by_a_full_outbox_stays_for_the_next_boot():
    state = tmpdir("review-st")
    t = simcsms.T0 - 3600
    txstate.TxFile(state + "/" + app.TX_FILE).save(
        {TID: txstate.entry(1, 8, t, t + 60, "Charging")})
    ob = outbox.Outbox(state + "/outbox", max_count=app.OUTBOX_MAX, check_fs=False)
    ob.load()
    n = 0
    while True:  # offline for long: the outbox is full
        try:
            ob.put("NotifyEvent", {"generatedAt": None, "seqNo": n, "eventData": []})
        except outbox.OutboxFull:
            break
        n += 1
    assert n > 0
    st, _sim = _boot(state)
    ended = [p for _i, a, p in st.outbox.items() if a == "TransactionEvent"]
    assert ended == [], "the full outbox took it after all: the setup tests nothing"
    # refused: the transaction is still in the file, so the next boot ends it
    recs, _probs = txstate.TxFile(state + "/" + app.TX_FILE).load()
    assert TID in recs, recs
    # the CSMS took the backlog: the next boot queues the Ended (PowerLoss)
    for i in list(st.outbox.ids()):
        st.outbox.ack(i)
    st2, _sim = _boot(state)
    ended = [p for _i, a, p in st2.outbox.items() if a == "TransactionEvent"]
    assert len(ended) == 1 and ended[0]["transactionInfo"]["transactionId"] == TID, ended
    assert ended[0]["transactionInfo"]["stoppedReason"] == "PowerLoss"
