"""Issue 11, item 2, station level: a TransactionEvent the outbox discards
(MessageAttempts[TransactionEvent] reached) is reported to the CSMS as a
NotifyEvent naming the transaction and the seqNo (the seqNo gap is the spec's
own signal). CPython only: the whole app.Station does not fit the unix port's
256 KB test heap (see host_tests/device/test_soak.py).
"""

from devtest import rmtree, run, tmpdir
from test_outbox_rules import Csms, te

from chargepilot.ocppj import rpc


def test_station_reports_a_discarded_transaction_event():
    from simcsms import make_station

    d = tmpdir("obr")
    try:
        st = make_station(d, fixed={"MessageAttemptsTransactionEvent": 2,
                                    "MessageAttemptIntervalTransactionEvent": 0})
        st.load()
        st.clock.set(150000000)  # online: the CSMS gave the time (a NotifyEvent needs it)
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


def test_boot_report_without_clock_is_stamped_when_sent():
    # issue 11 items 7 + 8: a damaged settings.json found at a boot without a
    # clock is reported (NotifyEvent), stamped when sent, not with 2020-01-01
    from simcsms import make_station

    from chargepilot.base import clock

    d = tmpdir("obs")
    try:
        with open(d + "/settings.json", "wb") as f:
            f.write(b'{"version":1,"values":{"SecurityCtrlr/SecurityProfile":"1"}}\n'
                    b"#crc32=00000000 len=61\n")  # the checksum does not match
        clk = clock.Clock()
        st = make_station(d, clk=clk)
        st.load()
        queued = [p for _n, a, p in st.outbox.items() if a == "NotifyEvent"]
        assert len(queued) == 1 and queued[0]["generatedAt"] is None
        assert "settings" in queued[0]["eventData"][0]["techInfo"]
        assert "damaged" in queued[0]["eventData"][0]["techInfo"]
        clk.set_rfc3339("2026-03-01T12:00:00Z")  # BootNotification's currentTime
        c = Csms(lambda a, p, k: None)
        run(st.outbox.drain(c.call))
        ev = c.payloads[0]
        assert ev["generatedAt"] >= "2026-03-01T12:00:00Z"
        assert ev["eventData"][0]["timestamp"] == ev["generatedAt"]
    finally:
        rmtree(d)
