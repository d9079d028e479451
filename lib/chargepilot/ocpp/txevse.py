"""One EVSE as the transactions see it, and what its pilot state means in OCPP:
the connector status (StatusNotification, G01; Unavailable for G03/G04) and the
transaction's chargingState (E02: EVConnected, Charging, SuspendedEV,
SuspendedEVSE), a transactionId, a TransactionEvent's payload. Plain records
and pure functions for transactions.py.
"""

import os

EV_CONNECTED = "EVConnected"
STATES = ("A", "B", "C", "D", "E", "F")

# chargingState values
CHARGING = "Charging"
SUSPENDED_EV = "SuspendedEV"
SUSPENDED_EVSE = "SuspendedEVSE"


def rand32():
    """32 random bits for a transactionId."""
    try:
        return int.from_bytes(os.urandom(4), "little")
    except Exception:  # a port without urandom
        import random

        return random.getrandbits(32)


def new_id(id_fn, evse_id, now, count):
    """A transactionId: `id_fn(evse_id)` when given (tests), else the start time
    and 32 random bits (apart from the ids of earlier boots, with no counter in
    flash), the EVSE and `count` (this boot's n-th). ValueError unless 1..36
    characters (the schema's limit)."""
    if id_fn is not None:
        tid = id_fn(evse_id)
    else:
        tid = "%x-%08x-%d-%d" % (now or 0, rand32(), evse_id, count)
    if type(tid) is not str or not tid or len(tid) > 36:
        raise ValueError("transactions: transactionId must be 1..36 characters, got %r"
                         % (tid,))
    return tid


class Tx:
    def __init__(self, tx_id, start_t):
        self.id = tx_id
        self.seq = 0
        self.start_t = start_t  # None while the clock was unset
        self.cstate = None  # chargingState last reported
        self.adv = 0
        self.remote_id = None
        self.charged = False  # was ever in Charging
        self.charging_since = None
        self.charged_s = 0
        self.hi = 0  # seqNo reservation in flash: every seqNo sent is below it


class Evse:
    def __init__(self):
        self.state = None  # last pilot state seen
        self.status = None  # last connector status sent
        self.latched = False  # pilot E seen: Faulted until unplugged
        self.available = True
        self.blocked = False  # transaction stopped while the EV stays plugged in
        self.tx = None
        self.pending = None  # (remoteStartId, idToken, Profile | None, obj, deadline_t)
        self.adv = 0
        self.relay = False
        self.inop = False  # ChangeAvailability Inoperative (effective once no tx runs)


def connector_status(e):
    """Available / Occupied / Faulted / Unavailable of Evse `e` (None before a pilot state)."""
    st = e.state
    if st is None:
        return None
    if e.inop and e.tx is None and not (e.latched or st == "E" or st == "F"):
        return "Unavailable"  # G03/G04 (a fault still reads Faulted)
    if st == "A":
        return "Available"
    if st == "F" and not e.available:
        return "Unavailable"
    if e.latched or st == "E" or st == "F":
        return "Faulted"
    return "Occupied"


def charging_state(e):
    """The chargingState of the transaction running on Evse `e`."""
    st = e.state
    if e.latched or st == "E" or st == "F" or e.adv <= 0:
        return SUSPENDED_EVSE
    if st == "C" or st == "D":
        return CHARGING
    return SUSPENDED_EV if e.tx.charged else EV_CONNECTED


def set_charging_state(tx, cs, now):
    """Tx `tx` enters chargingState `cs` at `now`; the time spent Charging adds up."""
    if tx.cstate == CHARGING and tx.charging_since is not None and now is not None:
        tx.charged_s += now - tx.charging_since
    tx.charging_since = now if cs == CHARGING else None
    if cs == CHARGING:
        tx.charged = True
    tx.cstate = cs


def event_payload(evse_id, tx, kind, trigger, stamp, extra_info=None, id_token=None):
    """The TransactionEventRequest of Tx `tx` (seqNo not yet advanced): the
    transactionInfo with its chargingState and `extra_info`, the idToken if any;
    meter values and the offline flag are the caller's to add."""
    info = {"transactionId": tx.id}
    if tx.cstate is not None:
        info["chargingState"] = tx.cstate
    if extra_info:
        for k in extra_info:
            info[k] = extra_info[k]
    p = {"eventType": kind, "timestamp": stamp, "triggerReason": trigger,
         "seqNo": tx.seq, "transactionInfo": info,
         "evse": {"id": evse_id, "connectorId": 1}}
    if id_token is not None:
        p["idToken"] = id_token
    return p
