"""The device model's variables: components, variables and their types, as data.

Every variable is one row of `TABLE` (data, not code per variable):

    (key, component, variable, variable_instance, type, mutability, default, lo, hi, flags)

* key: short internal name the agent uses (`dm.get("HeartbeatInterval")`).
* type: "integer" (lo..hi), "boolean", "decimal" (stored as int tenths; lo..hi in
  tenths; at most one fractional digit), "string" (length lo..hi),
  "MemberList" (comma list of the allowed members in `lo`),
  "SequenceList" (ordered comma list of distinct members of `lo`, at least one).
* mutability: _RO, _RW, _WO.
* default: typed value; the station's own capabilities (ProfileStackLevel...)
  come from the config passed to DeviceModel and replace the default.
* flags: _PERSIST (kept in the state dir), _REBOOT (a set is stored and answered
  RebootRequired; the running value changes at the next start).

`parse_value` / `format_value` turn an OCPP string into the typed value of a row
and back. The values and their settings file: devicemodel.py.
"""

from micropython import const

# Public (no underscore): handlers_core reads rows with them.
RO = const(1)
RW = const(2)
WO = const(3)
PERSIST = const(1)
REBOOT = const(2)
# The same values under private names: TABLE below must be made of constants
# only, so that frozen firmware keeps it in flash as one constant object (a row
# naming a module-level variable, as `_RW = RW` or NETWORK_SLOTS did, makes the
# whole table a heap object built at import: 3.1 KB on the board twin).
_RO = const(1)
_RW = const(2)
_WO = const(3)
_PERSIST = const(1)
_REBOOT = const(2)

MUT_NAMES = {_RO: "ReadOnly", _RW: "ReadWrite", _WO: "WriteOnly"}

# The network profile slots (valuesList of NetworkConfigurationPriority; netprofile.py).
NETWORK_SLOTS = "1,2,3"
# valuesList of the SampledDataCtrlr measurand lists (meter.MEASURANDS)
MEASURANDS = "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered"

# Constants only (see _RO): the valuesLists of NETWORK_SLOTS and MEASURANDS are
# repeated as literals in their rows (host_tests/test_frozen_tables.py checks).
TABLE = (
    # OCPPCommCtrlr (Part 2 §2, Part 4 §8)
    ("HeartbeatInterval", "OCPPCommCtrlr", "HeartbeatInterval", None,
     "integer", _RW, 300, 1, 86400, _PERSIST),
    ("MessageTimeout", "OCPPCommCtrlr", "MessageTimeout", "Default",
     "integer", _RW, 30, 1, 3600, _PERSIST),
    ("WebSocketPingInterval", "OCPPCommCtrlr", "WebSocketPingInterval", None,
     "integer", _RW, 60, 0, 86400, _PERSIST),
    ("RetryBackOffRepeatTimes", "OCPPCommCtrlr", "RetryBackOffRepeatTimes", None,
     "integer", _RW, 5, 0, 20, _PERSIST),
    ("RetryBackOffRandomRange", "OCPPCommCtrlr", "RetryBackOffRandomRange", None,
     "integer", _RW, 10, 0, 3600, _PERSIST),
    ("RetryBackOffWaitMinimum", "OCPPCommCtrlr", "RetryBackOffWaitMinimum", None,
     "integer", _RW, 5, 0, 3600, _PERSIST),
    ("OfflineThreshold", "OCPPCommCtrlr", "OfflineThreshold", None,
     "integer", _RW, 300, 0, 432000, _PERSIST),
    # failed attempts (CSMS reached but refused) before a new BasicAuthPassword /
    # SecurityProfile is rolled back to the previous value (like B10's fallback)
    ("NetworkProfileConnectionAttempts", "OCPPCommCtrlr", "NetworkProfileConnectionAttempts",
     None, "integer", _RW, 3, 1, 100, _PERSIST),
    # E13: a TransactionEvent the CSMS does not take (no answer, CALLERROR, the
    # connection closed after the send) is sent at most MessageAttempts times,
    # waiting MessageAttemptInterval x (attempts so far) s between; then it is
    # discarded and reported (outbox.py, app.py)
    ("MessageAttemptsTransactionEvent", "OCPPCommCtrlr", "MessageAttempts", "TransactionEvent",
     "integer", _RW, 5, 1, 100, _PERSIST),
    ("MessageAttemptIntervalTransactionEvent", "OCPPCommCtrlr", "MessageAttemptInterval",
     "TransactionEvent", "integer", _RW, 10, 0, 3600, _PERSIST),
    # B09/B10: the network profile slots (netprofile.py) in the order the agent
    # uses them; it connects with the first. A new value is a trial (TRIAL_KEYS).
    ("NetworkConfigurationPriority", "OCPPCommCtrlr", "NetworkConfigurationPriority", None,
     "SequenceList", _RW, "1", "1,2,3", 0, _PERSIST),
    # the slot of the current (or last tried) connection; the agent supplies it
    ("ActiveNetworkProfile", "OCPPCommCtrlr", "ActiveNetworkProfile", None,
     "integer", _RO, 1, 0, 3, 0),
    # SmartChargingCtrlr (spec digest §2)
    ("SmartChargingEnabled", "SmartChargingCtrlr", "Enabled", None,
     "boolean", _RW, True, 0, 0, _PERSIST),
    ("SmartChargingAvailable", "SmartChargingCtrlr", "Available", None,
     "boolean", _RO, True, 0, 0, 0),
    ("Entries", "SmartChargingCtrlr", "Entries", "ChargingProfiles",
     "integer", _RO, 0, 0, 1000, 0),
    ("ProfileStackLevel", "SmartChargingCtrlr", "ProfileStackLevel", None,
     "integer", _RO, 8, 0, 1000, 0),
    ("PeriodsPerSchedule", "SmartChargingCtrlr", "PeriodsPerSchedule", None,
     "integer", _RO, 24, 1, 1024, 0),
    ("RateUnit", "SmartChargingCtrlr", "RateUnit", None,
     "MemberList", _RO, "A,W", "A,W", 0, 0),
    ("LimitChangeSignificance", "SmartChargingCtrlr", "LimitChangeSignificance", None,
     "decimal", _RW, 10, 0, 1000, _PERSIST),
    # True by default: an external limit (grid operator, energy manager) only ever
    # lowers the current, so obeying it is the safe side (K11).
    ("ExternalControlSignalsEnabled", "SmartChargingCtrlr", "ExternalControlSignalsEnabled",
     None, "boolean", _RW, True, 0, 0, _PERSIST),
    ("NotifyChargingLimitWithSchedules", "SmartChargingCtrlr",
     "NotifyChargingLimitWithSchedules", None, "boolean", _RW, False, 0, 0, _PERSIST),
    ("Phases3to1", "SmartChargingCtrlr", "Phases3to1", None,
     "boolean", _RO, False, 0, 0, 0),
    ("ACPhaseSwitchingSupported", "SmartChargingCtrlr", "ACPhaseSwitchingSupported", None,
     "boolean", _RO, False, 0, 0, 0),
    # TxCtrlr: what starts a transaction (read at boot)
    ("TxStartPoint", "TxCtrlr", "TxStartPoint", None,
     "MemberList", _RW, "EVConnected", "EVConnected,PowerPathClosed", 0, _PERSIST | _REBOOT),
    # SecurityCtrlr (spec digest §2, §10.6)
    # ReadWrite here (a vendor choice; 2.0.1 changes it through SetNetworkProfile):
    # raising it is accepted only when the station can connect that way, lowering
    # it never (no downgrade). A new value is tried on the next connection and
    # rolled back if that fails (TRIAL_KEYS).
    ("SecurityProfile", "SecurityCtrlr", "SecurityProfile", None,
     "integer", _RW, 1, 0, 3, _PERSIST),
    ("BasicAuthPassword", "SecurityCtrlr", "BasicAuthPassword", None,
     "string", _WO, "", 16, 64, _PERSIST),
    ("Identity", "SecurityCtrlr", "Identity", None,
     "string", _RW, "", 1, 48, _PERSIST | _REBOOT),
    ("OrganizationName", "SecurityCtrlr", "OrganizationName", None,
     "string", _RW, "chargepilot", 0, 64, _PERSIST),
    # DeviceDataCtrlr: bounds on the lists a CSMS sends in one message
    ("ItemsPerMessageGetVariables", "DeviceDataCtrlr", "ItemsPerMessage", "GetVariables",
     "integer", _RO, 16, 1, 100, 0),
    ("ItemsPerMessageSetVariables", "DeviceDataCtrlr", "ItemsPerMessage", "SetVariables",
     "integer", _RO, 16, 1, 100, 0),
    ("BytesPerMessageGetVariables", "DeviceDataCtrlr", "BytesPerMessage", "GetVariables",
     "integer", _RO, 8192, 1, 65536, 0),
    ("BytesPerMessageSetVariables", "DeviceDataCtrlr", "BytesPerMessage", "SetVariables",
     "integer", _RO, 8192, 1, 65536, 0),
    # SampledDataCtrlr (J01/J02, meter.py): measurands of TransactionEvents; hi 1 =
    # the list may be empty (nothing sampled)
    ("TxStartedMeasurands", "SampledDataCtrlr", "TxStartedMeasurands", None,
     "MemberList", _RW, "Energy.Active.Import.Register",
     "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered", 1, _PERSIST),
    ("TxUpdatedMeasurands", "SampledDataCtrlr", "TxUpdatedMeasurands", None,
     "MemberList", _RW, "Energy.Active.Import.Register,Current.Import,Current.Offered",
     "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered", 1, _PERSIST),
    ("TxEndedMeasurands", "SampledDataCtrlr", "TxEndedMeasurands", None,
     "MemberList", _RW, "Energy.Active.Import.Register",
     "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered", 1, _PERSIST),
    ("TxUpdatedInterval", "SampledDataCtrlr", "TxUpdatedInterval", None,
     "integer", _RW, 60, 0, 86400, _PERSIST),
)


def ext_key(row):
    """The name a row has in settings.json: "Component/Variable" or "Component/Variable[Instance]"."""
    if row[3]:
        return "%s/%s[%s]" % (row[1], row[2], row[3])
    return "%s/%s" % (row[1], row[2])


class ValueRejected(ValueError):
    """A value that does not fit the variable: `reason` (a reasonCode) + `info`."""

    def __init__(self, reason, info):
        super().__init__(reason, info)
        self.reason = reason
        self.info = info


def parse_value(row, text):
    """OCPP string -> typed value for `row`, or raise ValueRejected."""
    typ = row[4]
    lo = row[7]
    hi = row[8]
    if type(text) is not str:
        raise ValueRejected("InvalidValue", "value must be a string")
    if typ == "integer":
        s = text.strip()
        digits = s[1:] if s[:1] in ("-", "+") else s
        if not digits or not digits.isdigit() or len(digits) > 9:
            raise ValueRejected("InvalidValue", "%s: %r is not an integer" % (row[2], text))
        v = int(s)
        if v < lo:
            if v < 0 and lo >= 0:
                raise ValueRejected("ValuePositiveOnly", "%s must be >= %d" % (row[2], lo))
            raise ValueRejected("ValueTooLow", "%s must be >= %d" % (row[2], lo))
        if v > hi:
            raise ValueRejected("ValueTooHigh", "%s must be <= %d" % (row[2], hi))
        return v
    if typ == "boolean":
        s = text.strip().lower()
        if s == "true":
            return True
        if s == "false":
            return False
        raise ValueRejected("InvalidValue", "%s: %r is not true/false" % (row[2], text))
    if typ == "decimal":
        v = parse_tenths(text)
        if v is None:
            raise ValueRejected(
                "InvalidValue", "%s: %r is not a decimal with at most one fraction digit"
                % (row[2], text))
        if v < lo or v > hi:
            raise ValueRejected("ValueOutOfRange", "%s must be %s..%s"
                                % (row[2], format_tenths(lo), format_tenths(hi)))
        return v
    if typ == "string":
        n = len(text)
        if n < lo or n > hi:
            raise ValueRejected("ValueOutOfRange", "%s: length must be %d..%d"
                                % (row[2], lo, hi))
        if row[0] == "Identity" and ":" in text:
            raise ValueRejected("InvalidValue", "Identity must not contain ':'")
        return text
    if typ == "MemberList":
        if hi == 1 and not text.strip():
            return ""
        allowed = lo.split(",")
        parts = [p.strip() for p in text.split(",")]
        for p in parts:
            if p not in allowed:
                raise ValueRejected("InvalidValue", "%s: %r not in %s" % (row[2], p, lo))
        return ",".join(parts)
    if typ == "SequenceList":
        allowed = lo.split(",")
        parts = [p.strip() for p in text.split(",")]
        seen = []
        for p in parts:
            if p not in allowed:
                raise ValueRejected("InvalidValue", "%s: %r not in %s" % (row[2], p, lo))
            if p in seen:
                raise ValueRejected("InvalidValue", "%s: %s named twice" % (row[2], p))
            seen.append(p)
        return ",".join(parts)
    raise ValueRejected("InternalError", "unknown type " + typ)


def format_value(row, v):
    typ = row[4]
    if typ == "boolean":
        return "true" if v else "false"
    if typ == "decimal":
        return format_tenths(v)
    if typ == "integer":
        return str(v)
    return v


def parse_tenths(text):
    """ "12", "12.5", "-0.5" -> 120, 125, -5 ; None when not such a number (no floats)."""
    s = text.strip()
    neg = s[:1] == "-"
    if s[:1] in ("-", "+"):
        s = s[1:]
    if "." in s:
        whole, frac = s.split(".", 1)
        if not frac or len(frac) > 1 or not frac.isdigit():
            return None
    else:
        whole = s
        frac = "0"
    if not whole or not whole.isdigit() or len(whole) > 8:
        return None
    v = int(whole) * 10 + int(frac)
    return -v if neg else v


def format_tenths(v):
    sign = "-" if v < 0 else ""
    v = -v if v < 0 else v
    if v % 10:
        return "%s%d.%d" % (sign, v // 10, v % 10)
    return "%s%d" % (sign, v // 10)
