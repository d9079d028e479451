"""RequestStartTransaction and RequestStopTransaction (F01-F03), with the
TxProfile a remote start may carry (K05).

Functions of the transactions.Transactions `txs`, which imports this module on
first need: a check of the request (EVSE, availability, a remote start already
running, the K05 profile run through the K01 checks as if bound to the
transaction), then the change, through the state machine's own steps (`_start`,
`_event`, `_hold`, `_wake`, `_starts_on`, the EVSE records `_e`). Kept apart from
transactions.py so that the state machine driven by the pilot reads on its own.
"""

from micropython import const

from chargepilot.base import log
from chargepilot.smart import profile, profile_checks
from chargepilot.smart.profile import TX, ProfileError

_TAG = "tx"
_PLACEHOLDER_TX = "remote-start-pending"
_MAX_INFO = const(512)


def _status_info(reason, info):
    return {"reasonCode": reason[:20], "additionalInfo": info[:_MAX_INFO]}


def check_remote_profile(cfg, profiles, obj, evse_id, transaction_id=None):
    """K05 validator: `obj` (the RequestStartTransaction chargingProfile) ->
    profile.Profile without transactionId, or raises ProfileError whose
    reason_code is InvalidProfile or InvalidSchedule (K05.FR.05 / F01.FR.26).

    The K01 checks run as if the profile were bound to `transaction_id` (the
    running transaction it will join) or to the transaction about to start."""
    try:
        p = profile.parse(obj, evse_id)
    except ProfileError as e:
        raise ProfileError("InvalidProfile", str(e))
    if p.purpose != TX:
        raise ProfileError("InvalidProfile",
                           "chargingProfilePurpose must be TxProfile (K05.FR.02)")
    if p.transaction_id is not None:
        raise ProfileError("InvalidProfile", "a remote start profile carries no transactionId "
                           "(F01.FR.11)")
    tx = transaction_id if transaction_id is not None else _PLACEHOLDER_TX
    saved = cfg.transactions.get(evse_id)
    p.transaction_id = tx
    if transaction_id is None:
        cfg.transactions[evse_id] = (tx, 0)
    try:
        profile_checks.check(cfg, profiles, p)
    except ProfileError as e:
        code = "InvalidSchedule" if e.reason_code == "InvalidSchedule" else "InvalidProfile"
        raise ProfileError(code, "%s: %s" % (e.reason_code, e.info))
    finally:
        p.transaction_id = None
        if transaction_id is None:
            if saved is None:
                cfg.transactions.pop(evse_id, None)
            else:
                cfg.transactions[evse_id] = saved
    return p


def bind(txs, evse_id, tid, p, obj):
    """K05.FR.03: the remote start profile now belongs to transaction tid."""
    p.transaction_id = tid
    obj = dict(obj)
    obj["transactionId"] = tid
    try:
        if txs.install is not None:
            bad = txs.install(evse_id, p, obj)
        else:
            txs.profiles.add(p)
            bad = None
    except Exception as e:
        bad = (type(e).__name__, str(e))
    if bad is not None:
        log.error(_TAG, "remote start profile %d not installed for %s: %s"
                  % (p.id, tid, bad))
    else:
        log.info(_TAG, "TxProfile %d bound to transaction %s (K05)" % (p.id, tid))


def started(txs, evse_id, e, tid):
    """A transaction `tid` starts on Evse `e` with a remote start pending: it is
    that start's (remote_id, K05 profile bound) -> (transactionInfo extra, idToken)."""
    pend = e.pending
    e.pending = None
    e.tx.remote_id = pend[0]
    if pend[2] is not None:
        bind(txs, evse_id, tid, pend[2], pend[3])
    return {"remoteStartId": pend[0]}, pend[1]


def request_start(txs, payload):
    """RequestStartTransactionRequest (validated) -> response payload (F01, K05)."""
    rid = payload.get("remoteStartId") if type(payload) is dict else None
    token = payload.get("idToken") if type(payload) is dict else None
    if type(rid) is bool or type(rid) is not int or type(token) is not dict:
        return {"status": "Rejected",
                "statusInfo": _status_info("InvalidValue", "remoteStartId must be an "
                                           "integer and idToken an object")}
    evse_id = payload.get("evseId")
    if evse_id is None:
        evse_id = _pick(txs)
        if evse_id is None:
            return {"status": "Rejected",
                    "statusInfo": _status_info("NoFreeEvse", "every EVSE is busy, "
                                               "faulted or unavailable")}
    elif type(evse_id) is not int or evse_id < 1 or evse_id > len(txs._e):
        return {"status": "Rejected",
                "statusInfo": _status_info("UnknownEvse", "evseId %r does not exist"
                                           % (evse_id,))}
    e = txs._e[evse_id - 1]
    if e.inop and e.tx is None:
        return {"status": "Rejected",
                "statusInfo": _status_info("Unavailable", "EVSE %d is Inoperative "
                                           "(ChangeAvailability)" % evse_id)}
    if not e.available or e.latched or e.state == "E" or e.state == "F":
        return {"status": "Rejected",
                "statusInfo": _status_info("Unavailable", "EVSE %d is faulted or "
                                           "unavailable" % evse_id)}
    tx = e.tx
    if tx is not None and tx.remote_id is not None:
        return {"status": "Rejected",
                "statusInfo": _status_info("TxInProgress", "transaction %s on EVSE %d "
                                           "was already started remotely"
                                           % (tx.id, evse_id))}
    p = None
    obj = payload.get("chargingProfile")
    if obj is not None and txs.smart:
        try:
            if txs.validator is not None:
                p = txs.validator(obj, evse_id, None if tx is None else tx.id)
            else:
                p = check_remote_profile(txs.cfg, txs.profiles, obj, evse_id,
                                         None if tx is None else tx.id)
        except ProfileError as err:
            code = err.reason_code
            if code != "InvalidSchedule":
                code = "InvalidProfile"
            return {"status": "Rejected", "statusInfo": _status_info(code, str(err))}
        except Exception as err:
            return {"status": "Rejected",
                    "statusInfo": _status_info("InvalidProfile", "%s: %s"
                                               % (type(err).__name__, err))}
    now = txs.out.now()
    if tx is not None:
        # Already running (cable first): it is now remotely authorised.
        tx.remote_id = rid
        if p is not None:
            bind(txs, evse_id, tx.id, p, obj)
        txs._event(evse_id, e, "Updated", "RemoteStart", now, {"remoteStartId": rid},
                    token)
        txs._wake()
        return {"status": "Accepted", "transactionId": tx.id}
    deadline = None if now is None else now + txs.connect_timeout_s
    e.pending = (rid, token, p, obj, deadline)
    if e.blocked:
        e.blocked = False
        txs._hold(evse_id, e.inop)
    if txs._starts_on(e):
        tid = txs._start(evse_id, e, "RemoteStart", now)
        if tid is not None:
            return {"status": "Accepted", "transactionId": tid}
    return {"status": "Accepted"}

def _pick(txs):
    """EVSE for a RequestStart without evseId: a connected EV first, then any free one."""
    best = None
    for i in range(len(txs._e)):
        e = txs._e[i]
        if (e.tx is not None or e.pending is not None or not e.available or e.latched
                or e.inop or e.state == "E" or e.state == "F"):
            continue
        if e.state in ("B", "C", "D"):
            return i + 1
        if best is None:
            best = i + 1
    return best

def request_stop(txs, payload):
    """RequestStopTransactionRequest -> response payload (F03)."""
    tid = payload.get("transactionId") if type(payload) is dict else None
    evse_id = txs.find(tid) if type(tid) is str else None
    if evse_id is None:
        return {"status": "Rejected",
                "statusInfo": _status_info("TxNotFound", "no running transaction %r"
                                           % (tid,))}
    txs.stop(evse_id, "RemoteStop", "Remote")
    return {"status": "Accepted"}
