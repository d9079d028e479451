"""Meter values in TransactionEvents and MeterValues (J01/J02, SampledDataCtrlr).

The board may have a meter (docs/ARCHITECTURE.md "Board interface"):
`board.meter_wh(evse_id)` -> the energy register in Wh (int, never
decreasing, kept across reboots) or None when the EVSE has no meter;
`board.meter_amps_tenths(evse_id)` -> (L1, L2, L3) tenths of A drawn, or None.
A board without these methods has no meter. What the pilot offers is always
known: Current.Offered (the advertised current, A) and Power.Offered (that
current x supply voltage x phases, W).

SampledDataCtrlr.TxStartedMeasurands / TxUpdatedMeasurands / TxEndedMeasurands
choose the measurands of Started (context Transaction.Begin), Updated
(Sample.Periodic every TxUpdatedInterval s; Trigger for a TriggerMessage;
Other for ChargingRateChanged, so the CSMS sees the new offer) and Ended
(Transaction.End; also the Ended sent at boot after a power cut). A measurand
the hardware cannot give is left out, never invented.
"""

import time

from chargepilot.base import log, rfc3339

_TAG = "meter"
ENERGY = "Energy.Active.Import.Register"
CURRENT = "Current.Import"
OFFERED = "Current.Offered"
POWER_OFFERED = "Power.Offered"
# the valuesList of the SampledDataCtrlr measurand variables
MEASURANDS = "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered"
_PHASES = ("L1", "L2", "L3")


def number(tenths):
    """tenths (int) -> an exact JSON number where possible (16 -> 16, 13.7)."""
    if tenths % 10 == 0:
        return tenths // 10
    return tenths / 10


class Meter:
    """`board`, `dm` (variables.DeviceModel), `clock`; `voltage` V and `phases`
    of the supply (Power.Offered)."""

    def __init__(self, board, dm, clock, voltage=230, phases=3):
        self.board = board
        self.dm = dm
        self.clock = clock
        self.voltage = voltage
        self.phases = phases
        self._wh = getattr(board, "meter_wh", None)
        self._amps = getattr(board, "meter_amps_tenths", None)
        self._last = {}  # evse_id -> (transactionId, ticks of the last sample)

    def has_meter(self, evse_id):
        if self._wh is None:
            return False
        try:
            return self._wh(evse_id) is not None
        except Exception:
            return False

    def sampled(self, evse_id, measurands, context, offered):
        """[sampledValue] for the measurands (comma text) this EVSE can give."""
        out = []
        for m in measurands.split(","):
            if m == ENERGY and self._wh is not None:
                wh = self._wh(evse_id)
                if wh is not None:
                    out.append({"value": wh, "context": context, "measurand": m,
                                "unitOfMeasure": {"unit": "Wh"}})
            elif m == CURRENT and self._amps is not None:
                amps = self._amps(evse_id)
                if amps is not None:
                    for i in range(len(amps)):
                        out.append({"value": number(amps[i]), "context": context,
                                    "measurand": m, "phase": _PHASES[i],
                                    "unitOfMeasure": {"unit": "A"}})
            elif m == OFFERED:
                out.append({"value": number(offered), "context": context, "measurand": m,
                            "unitOfMeasure": {"unit": "A"}})
            elif m == POWER_OFFERED:
                out.append({"value": offered * self.voltage * self.phases // 10,
                            "context": context, "measurand": m,
                            "unitOfMeasure": {"unit": "W"}})
        return out

    def values(self, evse_id, measurands, context, offered, now):
        """[meterValue] (one, timestamped) or None when nothing was sampled."""
        try:
            sv = self.sampled(evse_id, measurands, context, offered)
        except Exception as e:
            log.exception(_TAG, "EVSE %d meter" % evse_id, e)
            return None
        if not sv:
            return None
        return [{"timestamp": rfc3339.format(now if now is not None else 0), "sampledValue": sv}]

    def for_event(self, evse_id, kind, trigger, offered, now):
        """transactions.Transactions.meter: the meter values of one TransactionEvent."""
        if kind == "Started":
            key, ctx = "TxStartedMeasurands", "Transaction.Begin"
        elif kind == "Ended":
            key, ctx = "TxEndedMeasurands", "Transaction.End"
        elif trigger == "MeterValuePeriodic":
            key, ctx = "TxUpdatedMeasurands", "Sample.Periodic"
        elif trigger == "Trigger":
            key, ctx = "TxUpdatedMeasurands", "Trigger"
        elif trigger == "ChargingRateChanged":
            key, ctx = "TxUpdatedMeasurands", "Other"
        else:
            return None
        return self.values(evse_id, self.dm.get(key), ctx, offered, now)

    def power_loss(self, action, p):
        """The Ended that transactions.recover() sends at boot for a transaction a
        power cut interrupted (stoppedReason PowerLoss, no meterValue yet) gets
        the TxEndedMeasurands read now (J02; the register survived the cut)."""
        if action != "TransactionEvent" or "meterValue" in p:
            return
        info = p.get("transactionInfo")
        if type(info) is not dict or info.get("stoppedReason") != "PowerLoss":
            return
        try:
            mv = self.for_event(p["evse"]["id"], "Ended", "AbnormalCondition", 0,
                                self.clock.now())
        except Exception as e:
            log.exception(_TAG, "meter values of a power loss Ended", e)
            return
        if mv:
            p["meterValue"] = mv

    def tick(self, txs):
        """Periodic Updated (MeterValuePeriodic) every TxUpdatedInterval s per running
        transaction; 0 = off. Call about once a second."""
        interval = self.dm.get("TxUpdatedInterval")
        now = time.ticks_ms()
        for i in range(1, txs.cfg.evse_count + 1):
            tid = txs.transaction_id(i)
            if tid is None:
                self._last.pop(i, None)
                continue
            last = self._last.get(i)
            if last is None or last[0] != tid:
                self._last[i] = (tid, now)  # Started carried the first reading
                continue
            if interval <= 0 or time.ticks_diff(now, last[1]) < interval * 1000:
                continue
            self._last[i] = (tid, now)
            txs.event(i, "MeterValuePeriodic")
