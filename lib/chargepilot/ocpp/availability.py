"""ChangeAvailability (G03 per EVSE/connector, G04 station-wide), kept in flash.

What the CSMS asked for is stored at once in `<state>/availability.json`
= {"version": 1, "station": true|false, "evse": {"1": false, ...}}
(true = Operative; only EVSEs made Inoperative are listed). The *effective*
state of an EVSE follows from it: Inoperative when the station or the EVSE
is, and no transaction runs on it. So a change asked for during a
transaction is answered Scheduled and takes effect when the transaction
ends (transactions.Transactions.set_inoperative), and survives a reboot or a
power cut in between like any other stored setting.

An Inoperative EVSE: connector status Unavailable, the pilot paused (steady
+12 V: plug-in detection keeps working, no current offered, relay open) and
no transaction starts when an EV is plugged in.

A damaged file is set aside (`.bad`) and every EVSE is Operative (reported
through `problems`); a flash write that fails answers Rejected and changes
nothing.
"""

from chargepilot.store import atomic, recfile
from chargepilot.base import log

_TAG = "avail"
FILE = "availability.json"


def _info(reason, text):
    return {"reasonCode": reason, "additionalInfo": text[:512]}


class Availability:
    """`state_dir` None: RAM only (tests)."""

    def __init__(self, state_dir, evse_count):
        self.n = evse_count
        self.station = True
        self.evse = [True] * (evse_count + 1)  # index 0 unused
        self.problems = []
        self._path = None if state_dir is None else state_dir + "/" + FILE
        if self._path is not None:
            self._load()

    def operative(self, evse_id):
        """What was asked for this EVSE (station and EVSE both Operative)."""
        return self.station and self.evse[evse_id]

    def _load(self):
        # a framed record (recfile.py, docs/store-format.md §0); a plain-JSON file
        # of the previous format is still read (rewritten framed at the next set)
        d, why, _legacy = recfile.read_record(self._path, 1024)
        if d is None and why is None:
            return
        try:
            if d is None:
                raise ValueError(why)
            if type(d) is not dict or d.get("version") != 1 or type(d.get("station")) is not bool:
                raise ValueError("not an availability file")
            ev = d.get("evse") or {}
            if type(ev) is not dict:
                raise ValueError("evse is not an object")
            self.station = d["station"]
            for k in ev:
                i = int(k)
                if 1 <= i <= self.n and type(ev[k]) is bool:
                    self.evse[i] = ev[k]
        except Exception as e:
            self.station = True
            self.evse = [True] * (self.n + 1)
            try:
                moved = atomic.set_aside(self._path, set())
            except OSError:
                moved = "(not moved)"
            msg = "%s damaged (%s); set aside as %s, every EVSE Operative" % (FILE, e, moved)
            self.problems.append(msg)
            log.warn(_TAG, msg)

    def set(self, evse_id, operative):
        """Store a change (0 = the station). Raises OSError when the flash write
        fails; then nothing changed."""
        old_s = self.station
        old_e = self.evse[evse_id] if evse_id else None
        if (old_s if evse_id == 0 else old_e) == operative:
            return  # what flash holds already (a CSMS repeating itself wears no flash)
        if evse_id == 0:
            self.station = operative
        else:
            self.evse[evse_id] = operative
        if self._path is None:
            return
        ev = {}
        for i in range(1, self.n + 1):
            if not self.evse[i]:
                ev[str(i)] = False
        try:
            recfile.write_record(self._path, {"version": 1, "station": self.station, "evse": ev})
        except (OSError, ValueError):
            self.station = old_s
            if evse_id:
                self.evse[evse_id] = old_e
            raise


_STATES = "Available,Occupied,Reserved,Unavailable,Faulted"


class Scoped:
    """The EVSE- and connector-scoped variables of the device model
    (DeviceModel.scope): EVSE AvailabilityState and Available, Connector
    AvailabilityState, for every EVSE; read-only, rows made on demand (no
    memory per EVSE). `status(evse_id)` -> the connector status."""

    def __init__(self, av, status):
        self.av = av
        self.status = status

    def _row(self, comp, var, eid, conn):
        typ = "boolean" if var == "Available" else "OptionList"
        key = "@%d:%d:%s" % (eid, conn or 0, var)
        return (key, comp, var, None, typ, 1, "", "" if typ == "boolean" else _STATES, 0, 0)

    def rows(self):
        for i in range(1, self.av.n + 1):
            yield self._row("EVSE", "AvailabilityState", i, None), i, None
            yield self._row("EVSE", "Available", i, None), i, None
            yield self._row("Connector", "AvailabilityState", i, 1), i, 1

    def find(self, cname, evse, variable):
        if type(evse) is not dict:
            return None, "UnknownComponent"
        eid = evse.get("id")
        conn = evse.get("connectorId")
        if (type(eid) is not int or type(eid) is bool or eid < 1 or eid > self.av.n
                or "instance" in evse):
            return None, "UnknownComponent"
        if not ((cname == "EVSE" and conn is None) or (cname == "Connector" and conn == 1)):
            return None, "UnknownComponent"
        var = variable.get("name")
        if variable.get("instance") is not None or not (
                var == "AvailabilityState" or (var == "Available" and cname == "EVSE")):
            return None, "UnknownVariable"
        return self._row(cname, var, eid, conn), None

    def value(self, key):
        parts = key[1:].split(":")
        eid = int(parts[0])
        if parts[2] == "Available":
            return self.av.operative(eid)
        return self.status(eid)


def apply(av, txs):
    """Hand the effective wish of every EVSE to the transactions (boot, change)."""
    for i in range(1, av.n + 1):
        txs.set_inoperative(i, not av.operative(i))


def make(av, txs):
    """The ChangeAvailability handler (Action -> async fn)."""

    async def on_change_availability(payload):
        operative = payload.get("operationalStatus") == "Operative"
        evse = payload.get("evse")
        eid = 0
        if evse is not None:
            eid = evse.get("id")
            conn = evse.get("connectorId")
            if type(eid) is not int or eid < 0 or eid > av.n:
                return {"status": "Rejected",
                        "statusInfo": _info("UnknownEvse", "EVSE %r does not exist" % (eid,))}
            if conn is not None and (eid == 0 or conn != 1):
                return {"status": "Rejected",
                        "statusInfo": _info("UnknownConnectorId",
                                            "EVSE %d has connector 1 only" % eid)}
        try:
            av.set(eid, operative)
        except OSError as e:
            log.error(_TAG, "availability not stored: %s" % e)
            return {"status": "Rejected",
                    "statusInfo": _info("InternalError", "could not be stored: %s" % e)}
        apply(av, txs)
        ids = range(1, av.n + 1) if eid == 0 else (eid,)
        busy = False
        for i in ids:
            if txs.transaction_id(i) is not None:
                busy = True
        log.info(_TAG, "%s %s%s" % ("station" if eid == 0 else "EVSE %d" % eid,
                                    "Operative" if operative else "Inoperative",
                                    " when the transaction ends" if busy and not operative
                                    else ""))
        # G03.FR.05 / G04: a running transaction is not interrupted: Scheduled
        if busy and not operative:
            return {"status": "Scheduled"}
        return {"status": "Accepted"}

    return {"ChangeAvailability": on_change_availability}
