"""Issue 11, item 2, station level: a TransactionEvent the outbox discards
(MessageAttempts[TransactionEvent] reached) is reported to the CSMS as a
NotifyEvent naming the transaction and the seqNo (the seqNo gap is the spec's
own signal). CPython only: the whole app.Station does not fit the unix port's
256 KB test heap (see host_tests/device/test_soak.py).
"""

from devtest import rmtree, run, tmpdir
from test_outbox_rules import Csms, te

from chargepilot import rpc


def test_station_reports_a_discarded_transaction_event():
    from simcsms import make_station

    d = tmpdir("obr")
    try:
        st = make_station(d, fixed={"MessageAttemptsTransactionEvent": 2,
                                    "MessageAttemptIntervalTransactionEvent": 0})
        st.load()
        while len(st.outbox):  # boot reports, if any: delivered
            run(st.outbox.drain(Csms(lambda a, p, k: None).call))
        st.send("TransactionEvent", te(7, tid="tx-gap"))
        c = Csms(lambda a, p, k: rpc.CallError("InternalError", "db down")
                 if a == "TransactionEvent" else None)
        for _ in range(4):
            st.outbox.retry_now()
            run(st.outbox.drain(c.call))
        assert [x for x in c.got if x[0] == "TransactionEvent"] == [("TransactionEvent", 7)] * 2
        assert st.outbox.discarded == 1 and len(st.outbox) == 0
        # the NotifyEvent went out after it, naming the transaction and the seqNo
        assert c.got[-1][0] == "NotifyEvent", c.got
        ev = c.payloads[-1]["eventData"][0]
        assert ev["component"] == {"name": "OCPPCommCtrlr"} and ev["actualValue"] == "true"
        assert "seqNo 7 of transaction tx-gap discarded" in ev["techInfo"], ev["techInfo"]
        assert "gave up after 2 attempts" in ev["techInfo"]
    finally:
        rmtree(d)
