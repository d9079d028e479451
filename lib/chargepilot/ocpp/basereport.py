"""GetBaseReport -> NotifyReport (B07 GetBaseReport, B08 custom reports not here).

ConfigurationInventory: every variable the CSMS can set (ReadWrite, WriteOnly);
FullInventory: every variable, station-level (variables.TABLE) and EVSE- or
connector-scoped (DeviceModel.scope); SummaryInventory: NotSupported (an
optional report; this station keeps no separate summary).

Each reported value is what GetVariables answers for the same component,
variable and attribute (the value goes through handlers_core.get_variables);
a WriteOnly variable is reported without a value. The report goes out after
the answer as NotifyReport frames: the requestId, seqNo 0, 1, 2... without
gaps, tbc true on all but the last; a frame holds at most _MAX_ITEMS items and
_MAX_BYTES bytes of reportData (the CSMS-side limit of GetVariables the
station applies to itself: DeviceDataCtrlr.BytesPerMessage is larger). Items
are built one at a time from the table: memory is one frame, whatever the
inventory size. A lost connection ends the report (the CSMS asks again).
"""

import asyncio
import json

from micropython import const

from chargepilot.ocpp import handlers_core
from chargepilot.base import log
from chargepilot.ocpp.devicemodel import PERSIST, RO, TABLE, WO

_TAG = "report"
_MAX_ITEMS = const(8)
_MAX_BYTES = const(3000)
_MUT = {RO: "ReadOnly", WO: "WriteOnly"}
_NUMERIC = ("integer", "decimal")


def _item(dm, row, evse_id, connector_id):
    comp = {"name": row[1]}
    if evse_id is not None:
        ev = {"id": evse_id}
        if connector_id is not None:
            ev["connectorId"] = connector_id
        comp["evse"] = ev
    var = {"name": row[2]}
    if row[3]:
        var["instance"] = row[3]
    attr = {"type": "Actual", "mutability": _MUT.get(row[5], "ReadWrite"),
            "persistent": bool(row[9] & PERSIST), "constant": False}
    res = handlers_core.get_variables(dm, [{"component": comp, "variable": var}])[0]
    if res.get("attributeStatus") == "Accepted":
        attr["value"] = res["attributeValue"][:2500]
    typ = row[4]
    ch = {"dataType": typ, "supportsMonitoring": False}
    if typ in _NUMERIC:
        lo, hi = row[7], row[8]
        if row[0] == "Entries":
            hi = dm.max_entries
        if typ == "decimal":
            ch["minLimit"] = lo / 10 if lo % 10 else lo // 10
            ch["maxLimit"] = hi / 10 if hi % 10 else hi // 10
        else:
            ch["minLimit"] = lo
            ch["maxLimit"] = hi
    elif typ == "string":
        ch["maxLimit"] = row[8]
    elif typ in ("MemberList", "SequenceList", "OptionList"):
        ch["valuesList"] = row[7]
    return {"component": comp, "variable": var, "variableAttribute": [attr],
            "variableCharacteristics": ch}


def items(dm, base):
    """The report items of `base`, one at a time."""
    config = base == "ConfigurationInventory"
    for row in TABLE:
        if config and row[5] == RO:
            continue
        yield _item(dm, row, None, None)
    if config:
        return
    if dm.scope is not None:
        for row, evse_id, connector_id in dm.scope.rows():
            yield _item(dm, row, evse_id, connector_id)


class Reporter:
    """GetBaseReport for `agent` (its dm, clock and call)."""

    def __init__(self, agent, done=None):
        self.agent = agent
        self.done = done  # fn() once a report ended (app.Station drops this module)
        self.busy = False
        self.max_items = _MAX_ITEMS
        self.max_bytes = _MAX_BYTES

    def handlers(self):
        return {"GetBaseReport": self.on_get_base_report}

    async def on_get_base_report(self, payload):
        base = payload.get("reportBase")
        rid = payload.get("requestId")
        if base == "SummaryInventory":
            return {"status": "NotSupported",
                    "statusInfo": {"reasonCode": "UnsupportedParam",
                                   "additionalInfo": "SummaryInventory is not kept"}}
        if base not in ("ConfigurationInventory", "FullInventory"):
            return {"status": "NotSupported"}
        if self.busy:
            return {"status": "Rejected",
                    "statusInfo": {"reasonCode": "InProgress",
                                   "additionalInfo": "a report is being sent"}}
        if self.agent.timestamp() is None:
            # never an invented generatedAt: say so now rather than Accept and send nothing
            return {"status": "Rejected",
                    "statusInfo": {"reasonCode": "TimeUnknown",
                                   "additionalInfo": "the station's clock is not set"}}

        async def send():
            # busy is taken here, not in the handler: the rpc layer may refuse to
            # start this follow-up (MAX_FOLLOW_UPS, connection gone), and a flag set
            # by the handler would then stay set and refuse every report until reboot.
            # Two requests Accepted back to back: the second waits (at most
            # rpc.MAX_FOLLOW_UPS follow-ups exist at once).
            while self.busy:
                await asyncio.sleep_ms(100)
            self.busy = True
            try:
                await self._report(rid, base)
            finally:
                self.busy = False
                if self.done is not None:
                    self.done()

        return {"status": "Accepted"}, send

    async def _report(self, rid, base):
        a = self.agent
        gen = a.timestamp()
        if gen is None:  # never an invented generatedAt (issue 10 item 7)
            log.warn(_TAG, "GetBaseReport %s not sent: the time is not known" % rid)
            return
        seq = 0
        frame = []
        size = 0
        for it in items(a.dm, base):
            n = len(json.dumps(it))
            if frame and (size + n > self.max_bytes or len(frame) >= self.max_items):
                if not await self._send({"requestId": rid, "generatedAt": gen, "seqNo": seq,
                                         "tbc": True, "reportData": frame}):
                    return
                seq += 1
                frame = []
                size = 0
            frame.append(it)
            size += n
            it = None
        msg = {"requestId": rid, "generatedAt": gen, "seqNo": seq, "tbc": False}
        if frame:
            msg["reportData"] = frame
        frame = None
        await self._send(msg)

    async def _send(self, msg):
        # one argument (docs/ARCHITECTURE.md: a big payload must not stay in the caller's frame)
        try:
            await self.agent.call("NotifyReport", msg)
            return True
        except Exception as e:
            log.warn(_TAG, "report %s stopped at seqNo %s: %s" % (msg.get("requestId"),
                                                                  msg.get("seqNo"), e))
            return False
