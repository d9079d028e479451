"""Reset (B11 without, B12 with a transaction running).

Station-wide (no evseId, or 0):
* no transaction: Accepted; after the answer the station closes the
  connection and reboots (`reboot()`): `<state>/reset.json` records the cause,
  so the next BootNotification says reason RemoteReset;
* OnIdle during a transaction: Scheduled (B12.FR.01); the reboot follows when
  the last transaction has ended normally (B12.FR.03, `ended()`), and the next
  BootNotification says ScheduledReset (as OCTT's TC_B_21 expects); a power
  cut meanwhile reboots it anyway;
* Immediate during a transaction: Accepted; every transaction ends with
  triggerReason ResetCommand, stoppedReason ImmediateReset (B12.FR.04; never
  PowerLoss: the Ended is queued in flash before the reboot), then the reboot.

One EVSE (evseId): the EVSE has no controller of its own to restart, so its
reset is its transaction's end: Immediate ends it (B12.FR.08: ResetCommand /
ImmediateReset; the EVSE pauses until the EV is unplugged, like any stop with
the EV still there), OnIdle with a transaction is Scheduled (nothing more is
left to do when it ends), without one Accepted. Other EVSEs are not touched.
An unknown evseId: Rejected.

"Reboot" on the board is machine.reset() (firmware/main.py); on the host
Station.run returns with `reset_requested` set and tools/agent_main.py exits
with EXIT_RESET, on which the launcher starts the runtime again (tools/agent).
Profiles, settings, availability and queued messages are all in flash already.
"""

import asyncio

from micropython import const

from chargepilot.store import atomic, recfile
from chargepilot.base import log

_TAG = "reset"
FILE = "reset.json"
EXIT_RESET = const(75)  # the host runtime's exit code meaning "start me again"
_FLUSH_MS = const(5000)  # at most this long to deliver queued messages before rebooting


def take_boot_reason(state_dir):
    """The BootNotification reason a Reset left in flash (removed), else None."""
    path = state_dir + "/" + FILE
    d, why, _legacy = recfile.read_record(path, 256)  # framed (recfile.py) or plain JSON
    if d is None and why is None:
        return None
    atomic.remove(path)
    if d is None:
        log.warn(_TAG, "%s damaged (%s): the boot says PowerUp" % (FILE, why))
        return None
    r = d.get("reason")
    return r if r in ("RemoteReset", "ScheduledReset", "LocalReset") else None


class Reset:
    """For one app.Station `st`."""

    def __init__(self, st, state_dir):
        self.st = st
        self.path = state_dir + "/" + FILE
        self.scheduled = False  # station reset waiting for the last transaction
        self.rebooting = False

    def handlers(self):
        return {"Reset": self.on_reset}

    async def on_reset(self, payload):
        immediate = payload.get("type") == "Immediate"
        eid = payload.get("evseId")
        txs = self.st.txs
        n = self.st.cfg.evse_count
        if eid is not None and eid != 0:
            if type(eid) is not int or eid < 0 or eid > n:
                return {"status": "Rejected",
                        "statusInfo": {"reasonCode": "UnknownEvse",
                                       "additionalInfo": "EVSE %r does not exist" % (eid,)}}
            if txs.transaction_id(eid) is None:
                log.info(_TAG, "EVSE %d reset: idle, nothing to end" % eid)
                return {"status": "Accepted"}
            if not immediate:
                log.info(_TAG, "EVSE %d reset scheduled: when its transaction ends" % eid)
                return {"status": "Scheduled"}
            txs.stop(eid, "ResetCommand", "ImmediateReset")
            return {"status": "Accepted"}
        if self.rebooting:
            return {"status": "Accepted"}
        if txs.running() and not immediate:
            self.scheduled = True
            log.info(_TAG, "reset scheduled: when the last transaction ends")
            return {"status": "Scheduled"}
        return {"status": "Accepted"}, self._reset_now

    async def _reset_now(self):
        txs = self.st.txs
        for i in range(1, self.st.cfg.evse_count + 1):
            if txs.transaction_id(i) is not None:
                txs.stop(i, "ResetCommand", "ImmediateReset")
        await self.reboot("RemoteReset")

    def ended(self):
        """A transaction ended: a scheduled reset goes once none runs."""
        if self.scheduled and not self.rebooting and self.st.txs.running() == 0:
            self.scheduled = False
            asyncio.create_task(self.reboot("ScheduledReset"))

    async def reboot(self, reason):
        """Record the cause, deliver what is queued (bounded wait), close, reboot."""
        if self.rebooting:
            return
        self.rebooting = True
        try:
            recfile.write_record(self.path, {"reason": reason})
        except (OSError, ValueError) as e:
            log.error(_TAG, "reset cause not stored (%s): the next boot says PowerUp" % e)
        ob = self.st.outbox
        waited = 0
        while ob is not None and len(ob) and self.st.agent.online and waited < _FLUSH_MS:
            await asyncio.sleep_ms(50)
            waited += 50
        log.info(_TAG, "rebooting (%s)" % reason)
        self.st.reset_requested = True
        self.st.stop()
