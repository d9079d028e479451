"""TriggerMessage (F06): the CSMS asks for a message now, e.g. to resynchronise.

Answered first; the message goes out after the answer (F06.FR.04), as the
rpc layer's follow-up work. Supported: BootNotification (only while not yet
Accepted: F06.FR.17), Heartbeat, StatusNotification (the EVSE/connector named,
or every one; the current status), TransactionEvent (Updated, triggerReason
Trigger, with the TxUpdatedMeasurands; Rejected when no transaction runs on
the EVSE(s) named), MeterValues (context Trigger; NotImplemented without a
meter). Anything else: NotImplemented.
"""

from chargepilot.base import log

_TAG = "trigger"


def _answer(status, reason=None, text=""):
    r = {"status": status}
    if reason:
        r["statusInfo"] = {"reasonCode": reason, "additionalInfo": text[:512]}
    return r


def make(st):
    """Handler table entry for an app.Station `st`."""
    agent = st.agent
    n = st.cfg.evse_count

    async def on_trigger(payload):
        what = payload.get("requestedMessage")
        evse = payload.get("evse")
        ids = list(range(1, n + 1))
        if evse is not None:
            eid = evse.get("id")
            conn = evse.get("connectorId")
            if type(eid) is not int or eid < 0 or eid > n:
                return _answer("Rejected", "UnknownEvse", "EVSE %r does not exist" % (eid,))
            if conn is not None and conn != 1:
                return _answer("Rejected", "UnknownConnectorId", "EVSE %d has connector 1 only"
                               % eid)
            if eid > 0:
                ids = [eid]
        if what == "BootNotification":
            if agent.registration == "Accepted":
                return _answer("Rejected", "AlreadyAccepted", "BootNotification was already "
                               "Accepted (F06.FR.17)")
            return _answer("Accepted"), agent.trigger_boot
        if what == "Heartbeat":
            return _answer("Accepted"), _heartbeat
        if what == "StatusNotification":
            if st.clock.now_rfc3339() is None:
                # agent.send_status sends nothing without a known time: say so now
                return _answer("Rejected", "TimeUnknown", "the station's clock is not set")
            async def statuses():
                r = agent.rpc
                for i in ids:
                    if r is None or r.closed:
                        return
                    await agent.send_status(r, i, 1, agent.connector_status(i, 1))
            return _answer("Accepted"), statuses
        if what == "TransactionEvent":
            busy = [i for i in ids if st.txs.transaction_id(i) is not None]
            if not busy:
                return _answer("Rejected", "NoTransaction", "no transaction runs on EVSE %s"
                               % ",".join(str(i) for i in ids))

            async def events():
                for i in busy:
                    st.txs.event(i, "Trigger")
            return _answer("Accepted"), events
        if what == "MeterValues":
            m = st.meter
            ids = [i for i in ids if m.has_meter(i)]
            if not ids:
                return _answer("NotImplemented", "NoMeter", "this EVSE has no meter")
            if st.clock.now_rfc3339() is None:
                # a MeterValues is not held and re-stamped like a TransactionEvent:
                # without a known time it would carry an invented instant
                return _answer("Rejected", "TimeUnknown", "the station's clock is not set")

            async def meter_values():
                if st.clock.now_rfc3339() is None:
                    log.warn(_TAG, "MeterValues not sent: the clock is not set")
                    return
                now = st.clock.now()
                for i in ids:
                    mv = m.values(i, st.dm.get("TxUpdatedMeasurands"), "Trigger",
                                  st.ctl.advertised(i), now)
                    if mv:
                        st.send("MeterValues", {"evseId": i, "meterValue": mv})
            return _answer("Accepted"), meter_values
        log.info(_TAG, "TriggerMessage %s: not implemented" % what)
        return _answer("NotImplemented")

    async def _heartbeat():
        r = agent.rpc
        if r is not None and not r.closed:
            await agent._heartbeat(r)

    return {"TriggerMessage": on_trigger}
