"""A power cut during a transaction, end to end: the agent on both runtimes, the
bundled CSMS over loopback, the station's flash in a tmp dir (txstate.py).

The runtime is SIGKILLed (its own process group) while a transaction runs; the
next boot on the same flash sends TransactionEvent Ended for it (triggerReason
AbnormalCondition, stoppedReason PowerLoss, seqNo after every event the CSMS
got, offline: it was queued before the connection), its TxProfile is gone, and
with the EV still plugged in a new transaction starts after it. Every frame is
checked against the official OCPP 2.0.1 schemas (csms_factory teardown).
"""

import json
import os
import signal
import time

import pytest

from csms_fixture import RUNTIMES, agent_factory, csms_factory, schema_validator  # noqa: F401

FAST = {"RetryBackOffWaitMinimum": "0", "RetryBackOffRandomRange": "0", "MessageTimeout": "5"}
EV = ["--simulate-ev", "1"]


def tx_events(csms, tid=None):
    return [f.payload for f in csms.calls("TransactionEvent")
            if tid is None or f.payload["transactionInfo"]["transactionId"] == tid]


def stored(state):
    """Entries of <state>/transactions.json ({} when absent)."""
    try:
        with open(os.path.join(state, "transactions.json"), "rb") as f:
            body = f.read().split(b"\n")[0]
    except FileNotFoundError:
        return {}
    return json.loads(body)["tx"]


class Boot:
    def __init__(self, csms, factory, runtime, state):
        self.csms, self.factory, self.runtime, self.state = csms, factory, runtime, state
        self.ag = None

    def start(self, extra):
        boots = len(self.csms.calls("BootNotification"))
        self.ag = self.factory(self.csms, "CP1", self.runtime, self.state, sets=FAST,
                               extra=list(extra))
        self.csms.wait_for(lambda: len(self.csms.calls("BootNotification")) > boots
                           and self.csms.connected("CP1"), 30)
        return self.csms.calls("BootNotification")[-1].t

    def started_since(self, t0, timeout=20):
        def new():
            return [f.payload for f in self.csms.calls("TransactionEvent")
                    if f.t > t0 and f.payload["eventType"] == "Started"]

        self.csms.wait_for(new, timeout)
        return new()[-1]["transactionInfo"]["transactionId"]

    def power_cut(self):
        os.killpg(self.ag.runtime_pid(), signal.SIGKILL)
        rc = self.ag.proc.wait(10)
        assert rc == 128 + signal.SIGKILL, (rc, self.ag.log)
        self.ag.stop()
        self.csms.wait_for(lambda: not self.csms.connected("CP1"), 10)


def check_power_loss_ended(csms, tid, before):
    """The one Ended of `tid`: PowerLoss, numbered after every earlier event."""
    evs = tx_events(csms, tid)
    ended = [p for p in evs if p["eventType"] == "Ended"]
    assert len(ended) == 1, evs
    end = ended[0]
    schema_validator("TransactionEventRequest").validate(end)
    assert end["triggerReason"] == "AbnormalCondition"
    assert end["transactionInfo"] == {"transactionId": tid, "stoppedReason": "PowerLoss"}
    assert end["offline"] is True  # the power loss happened while offline
    assert end["evse"] == {"id": 1, "connectorId": 1}
    seqs = [p["seqNo"] for p in before]
    assert seqs == list(range(len(seqs))), seqs  # the old sequence, as sent
    assert max(seqs) < end["seqNo"] <= max(seqs) + 8, (seqs, end["seqNo"])  # one block
    # issue 11 item 8: never stamped before an event the CSMS already has
    # (same RFC 3339 form on both sides: string order is time order)
    last = max(p["timestamp"] for p in before)
    assert end["timestamp"] >= last, (end["timestamp"], last)
    return end


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_power_cut_ends_the_transaction_with_power_loss_at_the_next_boot(
        csms_factory, agent_factory, tmp_path, runtime):
    csms = csms_factory([("Accepted", 300)])
    state = str(tmp_path / "flash")
    b = Boot(csms, agent_factory, runtime, state)

    # boot 1: the EV plugged in starts a transaction; a TxProfile is bound to it
    t1 = b.start(EV)
    tid = b.started_since(t1)
    csms.wait_for(lambda: any(p["transactionInfo"].get("chargingState") == "Charging"
                              for p in tx_events(csms, tid)), 15)
    cp = {"id": 50, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
          "chargingProfileKind": "Relative", "transactionId": tid,
          "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}]}
    resp = csms.call("CP1", "SetChargingProfile", {"evseId": 1, "chargingProfile": cp})
    assert resp == {"status": "Accepted"}, resp
    assert "p50.json" in os.listdir(os.path.join(state, "profiles"))
    time.sleep(0.5)  # the answers to the last events are in
    assert list(stored(state)) == [tid]
    before = tx_events(csms, tid)
    b.power_cut()

    # boot 2, the EV still plugged in: Ended for the old transaction, then a new one
    t2 = b.start(EV)
    tid2 = b.started_since(t2)
    assert tid2 != tid
    csms.wait_for(lambda: any(p["eventType"] == "Ended" for p in tx_events(csms, tid)), 10)
    end = check_power_loss_ended(csms, tid, before)
    order = [(p["transactionInfo"]["transactionId"], p["eventType"]) for p in tx_events(csms)]
    assert order.index((tid, "Ended")) < order.index((tid2, "Started")), order
    # K02.FR.05: the TxProfile went with its transaction
    assert "p50.json" not in os.listdir(os.path.join(state, "profiles"))
    resp = csms.call("CP1", "GetChargingProfiles",
                     {"requestId": 1, "chargingProfile": {"chargingProfilePurpose": "TxProfile"}})
    assert resp["status"] == "NoProfiles", resp
    assert "ended by a power loss" in b.ag.log
    time.sleep(0.5)
    assert list(stored(state)) == [tid2]
    before2 = tx_events(csms, tid2)
    b.power_cut()

    # boot 3 without the EV: only the Ended of the second transaction, nothing new
    t3 = b.start([])
    csms.wait_for(lambda: any(p["eventType"] == "Ended" for p in tx_events(csms, tid2)), 15)
    check_power_loss_ended(csms, tid2, before2)
    time.sleep(1.0)
    later = [f.payload for f in csms.calls("TransactionEvent") if f.t > t3]
    assert [(p["transactionInfo"]["transactionId"], p["eventType"]) for p in later] == \
        [(tid2, "Ended")], later
    assert len([p for p in tx_events(csms, tid) if p["eventType"] == "Ended"]) == 1
    assert stored(state) == {} and "transactions.json" not in os.listdir(state)
    assert end["seqNo"] > 0
    assert b.ag.proc.poll() is None, b.ag.log  # still running (teardown cuts the power)
    assert "Traceback" not in b.ag.log, b.ag.log
