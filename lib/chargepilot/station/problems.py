"""What goes wrong at a station, told to the CSMS: NotifyEvent (N07 alerting,
component OCPPCommCtrlr and the others, variable Problem) for what the boot
found damaged or unusable, for a queued message the outbox gave up or the CSMS
refused, for events dropped while the clock was unknown, and for messages the
full outbox refused; a NotifyEvent queued before the clock was known is stamped
when it is sent, never with an invented time.

`Problems` is the part of station/app.Station that does this; the fields it uses
(outbox, clock, txs, smart, avail, networks, dm, _event_id, _event_seq, send)
are Station's.
"""

from micropython import const

from chargepilot.base import log

_TAG = "app"
_DROP_NOTE_BYTES = const(1024)  # room a held-drops NotifyEvent needs in the outbox


class Problems:
    """See the module doc; mixed into Station."""

    def _report_loaded(self, problems, queued, txp):
        """What Station.load() found (stored profiles, queued messages, running
        transactions set aside; availability, network profiles, settings it could
        not use): one NotifyEvent each, in the outbox now, sent once online."""
        for text in self.avail.problems:
            self._problem("ChargingStation", text)
        for name, reason in problems:
            self._problem("SmartChargingCtrlr", "stored profile %s set aside: %s" % (name, reason))
        for name, reason in queued:
            self._problem("OCPPCommCtrlr", "queued message %s set aside: %s" % (name, reason))
        for name, reason in txp:
            self._problem("TxCtrlr", "running transactions %s: %s" % (name, reason))
        for reason in self.networks.problems:
            self._problem("OCPPCommCtrlr", "network profiles: %s" % reason)
        # settings.json set aside (integrity check failed: defaults in use) or
        # entries it could not use: one event, the CSMS can set them again
        dmp = getattr(self.dm, "problems", None)
        if dmp:
            self._problem("DeviceDataCtrlr", "settings: %s" % "; ".join(dmp[:4]))


    def _discarded(self, n, action, payload, reason):
        """A queued message was discarded (outbox.on_discard). For a
        TransactionEvent the CSMS sees the seqNo gap (the spec's way: seqNo
        counts every event of the transaction); this NotifyEvent says which
        one went and why. A discarded NotifyEvent is only logged (no loop)."""
        if action == "NotifyEvent":
            return
        what = "%s (message %d)" % (action or "message", n)
        if action == "TransactionEvent" and type(payload) is dict:
            info = payload.get("transactionInfo")
            tid = info.get("transactionId") if type(info) is dict else None
            what = "TransactionEvent %s seqNo %s of transaction %s" % (
                payload.get("eventType"), payload.get("seqNo"), tid)
        self._problem("OCPPCommCtrlr", "%s discarded: %s" % (what, reason))

    def report_held_drops(self):
        """Events that transactions / smart held while the clock was unknown
        and dropped (their hold full): one NotifyEvent each (OCPPCommCtrlr
        Problem, the count and the last one dropped), like a discarded
        message (_discarded). Only once the clock is known (the held ones
        are out then, and the NotifyEvent carries a real time)."""
        if self.clock.now_rfc3339() is None:
            return
        if not self.outbox.has_room(_DROP_NOTE_BYTES):
            # full (e.g. the held ones just released): tried again at the next poll,
            # once sending made room (no refused put, no flash write meanwhile)
            return
        for src, what in ((self.txs.out, "TransactionEvent/StatusNotification messages"),
                          (self.smart, "charging limit notifications")):
            n = getattr(src, "held_dropped", 0)
            if n:
                text = ("%d %s dropped while the clock was unknown (hold full); last: %s"
                        % (n, what, src.held_drop_last))
                log.error(_TAG, text)
                self._problem("OCPPCommCtrlr", text)
                src.held_dropped -= n

    def _stamp_late(self, action, payload):
        """outbox.prepare: a NotifyEvent queued while the clock was unknown
        (e.g. the damage found at boot) is stamped when it is sent, never
        with an invented past time (issue 11 item 8: timestamps never go
        backwards across reboots). The send time is after the event."""
        if action != "NotifyEvent" or payload.get("generatedAt") is not None:
            return payload
        now = self.clock.now_rfc3339()
        if now is None:
            # Online means the CSMS gave the time, so this should not happen; if
            # it does, the outbox holds the message and tries again later
            # rather than sending an invented instant (issue 10 item 7).
            raise RuntimeError("NotifyEvent held: the clock is not known")
        payload["generatedAt"] = now
        for ev in payload.get("eventData") or ():
            if type(ev) is dict and ev.get("timestamp") is None:
                ev["timestamp"] = now
        return payload

    def _problem(self, component, text):
        """NotifyEvent: `component` (its name, or a component object) has the
        Problem `text` (actualValue true, techInfo the text); no text: it has
        none any more (false)."""
        if type(component) is str:
            component = {"name": component}
        self._event_id += 1
        now = self.clock.now_rfc3339()  # None: stamped when sent (_stamp_late)
        ev = {"eventId": self._event_id, "timestamp": now, "trigger": "Alerting",
              "actualValue": "true" if text else "false", "component": component,
              "variable": {"name": "Problem"},
              "eventNotificationType": "HardWiredNotification"}
        if text:
            ev["techInfo"] = text[:500]
        self.send("NotifyEvent", {"generatedAt": now, "seqNo": self._event_seq,
                                  "eventData": [ev]})
        self._event_seq += 1

    async def _on_online(self):
        """After every (re)connection: report messages the full outbox refused."""
        ob = self.outbox
        if ob.dropped:
            self._problem("OCPPCommCtrlr", "%d messages were not queued: outbox full (%s)"
                          % (ob.dropped, ob.last_drop))
            ob.clear_dropped(ob.dropped)
