"""Core CSMS->station handlers: GetVariables, SetVariables (B06/B05).

Only the Actual attribute exists here (others: NotSupportedAttributeType).
Components are station-level, except the EVSE/Connector ones of
DeviceModel.scope (availability.Scoped: AvailabilityState, Available); any
other item naming an EVSE or a component instance gets UnknownComponent. The number of items is bounded by
DeviceDataCtrlr.ItemsPerMessage (more: CALLERROR OccurrenceConstraintViolation).
"""

from chargepilot.ocppj import errors
from chargepilot.ocpp.devicemodel import RO, WO, REBOOT, ValueRejected, format_value, parse_value


def _check(dm, items, key, action):
    if type(items) is not list:
        raise errors.OcppError(errors.TYPE_CONSTRAINT_VIOLATION, action + ": not a list")
    limit = dm.get(key)
    if len(items) > limit:
        raise errors.OcppError(
            errors.OCCURRENCE_CONSTRAINT_VIOLATION,
            "%s: %d items, at most %d (DeviceDataCtrlr.ItemsPerMessage)"
            % (action, len(items), limit))
    for it in items:
        if type(it) is not dict:
            raise errors.OcppError(errors.TYPE_CONSTRAINT_VIOLATION,
                                   action + ": item is not an object")


def _start(dm, it):
    """(result dict, row or None); the result already has the status when row is None."""
    comp = it.get("component")
    var = it.get("variable")
    res = {"component": comp, "variable": var}
    attr = it.get("attributeType")
    if attr is not None:
        res["attributeType"] = attr
    row, status = dm.find(comp, var)
    if row is None:
        res["attributeStatus"] = status
    elif attr is not None and attr != "Actual":
        res["attributeStatus"] = "NotSupportedAttributeType"
        row = None
    return res, row


def _reject(res, reason, info):
    res["attributeStatus"] = "Rejected"
    res["attributeStatusInfo"] = {"reasonCode": reason[:20], "additionalInfo": info[:512]}


def get_variables(dm, items):
    """`getVariableData` list -> `getVariableResult` list."""
    _check(dm, items, "ItemsPerMessageGetVariables", "GetVariables")
    out = []
    for it in items:
        res, row = _start(dm, it)
        out.append(res)
        if row is None:
            continue
        if row[5] == WO:
            _reject(res, "WriteOnly", "%s is write-only" % row[2])
        else:
            res["attributeStatus"] = "Accepted"
            res["attributeValue"] = format_value(row, dm.get(row[0]))
    return out


def set_variables(dm, items):
    """`setVariableData` list -> `setVariableResult` list (persisted once, at the end)."""
    _check(dm, items, "ItemsPerMessageSetVariables", "SetVariables")
    out = []
    changes = []
    accepted = []
    for it in items:
        res, row = _start(dm, it)
        out.append(res)
        if row is None:
            continue
        if row[5] == RO:
            _reject(res, "ReadOnly", "%s is read-only" % row[2])
            continue
        try:
            v = parse_value(row, it.get("attributeValue"))
            extra = dm.checks.get(row[0])
            if extra is not None:
                extra(v)  # e.g. the agent's SecurityProfile rules (no downgrade)
        except ValueRejected as e:
            _reject(res, e.reason, e.info)
            continue
        res["attributeStatus"] = "RebootRequired" if row[9] & REBOOT else "Accepted"
        changes.append((row, v))
        accepted.append(res)
    if changes and not dm.commit(changes):
        for res in accepted:
            _reject(res, "InternalError", "settings could not be written to flash")
    return out


def make(agent):
    """The handler table entries this module serves for `agent` (Action -> async fn)."""
    dm = agent.dm

    async def on_get_variables(payload):
        return {"getVariableResult": get_variables(dm, payload.get("getVariableData"))}

    async def on_set_variables(payload):
        return {"setVariableResult": set_variables(dm, payload.get("setVariableData"))}

    return {"GetVariables": on_get_variables, "SetVariables": on_set_variables}
