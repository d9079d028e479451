"""The device model the agent exposes: components, variables, GetVariables/SetVariables.

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

Persistence: `<state>/settings.json` = {"version": 1, "values": {"Comp/Var[Inst]": "text"}}
as a framed record (JSON text + CRC-32 integrity line, recfile.py) written atomically (plus "fallback": {"Comp/Var": "text" or null} while a new
BasicAuthPassword/SecurityProfile/NetworkConfigurationPriority is on trial, see
TRIAL_KEYS; null = the value came from the configuration, not the file).
Values are kept as their OCPP strings and re-checked on load;
entries this firmware does not know or cannot use are kept in the file (and
logged), never dropped. A file that fails its integrity check or is not valid JSON is set aside as
`settings.json.bad`, `settings.json.1.bad`, ... (never deleted) and the defaults are used.

The OCPP GetVariables/SetVariables item handling is in handlers_core.py.
"""

from micropython import const

from chargepilot.store import atomic, recfile
from chargepilot.base import log

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

_MUT_NAMES = {_RO: "ReadOnly", _RW: "ReadWrite", _WO: "WriteOnly"}

# The network profile slots (valuesList of NetworkConfigurationPriority; netprofile.py).
NETWORK_SLOTS = "1,2,3"
# valuesList of the SampledDataCtrlr measurand lists (meter.MEASURANDS)
MEASURANDS = "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered"

# Constants only (see _RO): the valuesLists of NETWORK_SLOTS and MEASURANDS are
# repeated as literals in their rows (host_tests/test_variables_table.py checks).
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

# Extra characteristic the device model reports: Entries.maxLimit (profiles at most).
DEFAULT_MAX_ENTRIES = 16

SETTINGS_FILE = "settings.json"
MAX_SETTINGS = const(8192)  # bytes of the settings record (JSON text)

# Connection settings: a new value set by the CSMS is a trial. settings.json
# keeps the previous one under "fallback" (same atomic write) until the agent
# ends the trial: connected -> kept, refused -> the previous value is restored.
TRIAL_KEYS = ("BasicAuthPassword", "SecurityProfile", "NetworkConfigurationPriority")


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


class DeviceModel:
    """The variables of this station, their values and their settings file.

    `fixed`: key -> typed value for the station's own capabilities and
    configured defaults (e.g. {"ProfileStackLevel": 3, "Identity": "CP1"}).
    A persisted value wins over a configured default.
    `on_change(key, value)` is called after a SetVariables changed a running value.
    """

    def __init__(self, state_dir=None, fixed=None, max_entries=DEFAULT_MAX_ENTRIES):
        self._rows = {}
        self._values = {}
        for row in TABLE:
            self._rows[row[0]] = row
            self._values[row[0]] = row[6]
        self.components = set(r[1] for r in TABLE)
        self.max_entries = max_entries
        self._readers = {}  # key -> fn() for values that live elsewhere (Entries)
        self._pending = {}  # key -> value stored, active after the next start
        self._extra = {}  # settings.json entries this firmware does not use (kept)
        self._stored = {}  # ext key -> text as in settings.json
        self._fallback = {}  # ext key -> previous text (None: configured value) of a trial
        self.on_change = None
        # key -> fn(value) raising ValueRejected: extra SetVariables checks (the agent's)
        self.checks = {}
        self.problems = []  # what load() had to set aside (for logs and tests)
        # optional provider of EVSE/connector-scoped read-only variables (rows made on
        # demand, nothing kept per EVSE): .find(component name, evse dict, variable dict)
        # -> (row, None) | (None, status), .rows() -> (row, evse_id, connector_id)...,
        # .value(key) for a row's key (availability.Scoped)
        self.scope = None
        if fixed:
            for k in fixed:
                if k not in self._rows:
                    raise ValueError("device model: no variable %r" % k)
                self._values[k] = fixed[k]
        self._configured = {}  # trial keys: the value before settings.json (for a rollback)
        for k in TRIAL_KEYS:
            self._configured[k] = self._values[k]
        self._path = None
        self.counters = recfile.new_counters()  # flash operations of settings.json
        if state_dir:
            self._path = state_dir + "/" + SETTINGS_FILE
            self.load()

    # --- plain access for the agent ---

    def get(self, key):
        r = self._readers.get(key)
        if r is not None:
            return r()
        try:
            return self._values[key]
        except KeyError:
            if self.scope is None:
                raise
        return self.scope.value(key)  # a scoped row's key

    def set_reader(self, key, fn):
        """Let `fn()` supply the value of a read-only `key` (e.g. Entries from the store)."""
        self._rows[key]  # KeyError for a wrong key: a programming error
        self._readers[key] = fn

    def set_local(self, key, value, persist=True):
        """Set a value from the station itself (not the CSMS); checked like a set."""
        row = self._rows[key]
        v = parse_value(row, format_value(row, value))
        self._values[key] = v
        if persist and row[9] & _PERSIST:
            self._stored[ext_key(row)] = format_value(row, v)
            self.save()

    def pending(self, key):
        return self._pending.get(key)

    def stored(self, key, proven=False):
        """The typed value settings.json holds for `key` (None: none). proven=True:
        during a trial the value of before it (None when that was not stored)."""
        row = self._rows[key]
        ek = ext_key(row)
        if proven and ek in self._fallback:
            text = self._fallback[ek]
        else:
            text = self._stored.get(ek)
        if text is None:
            return None
        try:
            return parse_value(row, text)
        except ValueRejected:
            return None

    # --- trial of new connection credentials (TRIAL_KEYS) ---

    def configured(self, key):
        """A trial key's value from the configuration (fixed/default), not settings.json."""
        return self._configured[key]

    def trial_keys(self):
        """Variable names of a running trial ([] = none)."""
        out = []
        for k in TRIAL_KEYS:
            if ext_key(self._rows[k]) in self._fallback:
                out.append(self._rows[k][2])
        return out

    def end_trial(self, ok):
        """Close the trial: ok keeps the new values, else the previous ones come back
        (in memory at once; on flash too unless the write fails, then at the next save).
        Returns the restored variable names."""
        fb = self._fallback
        if not fb:
            return []
        self._fallback = {}
        restored = []
        if not ok:
            for k in TRIAL_KEYS:
                row = self._rows[k]
                ek = ext_key(row)
                if ek not in fb:
                    continue
                text = fb[ek]
                v = None
                if text is not None:
                    try:
                        v = parse_value(row, text)
                    except ValueRejected:
                        text = None
                if text is None:
                    self._stored.pop(ek, None)
                    v = self._configured[k]
                else:
                    self._stored[ek] = text
                self._values[k] = v
                restored.append(row[2])
        try:
            self.save()
        except OSError as e:
            log.error("variables", "settings not saved after the trial: %s" % e)
        return restored

    # --- settings file ---

    def load(self):
        """Read settings.json; a damaged file is set aside and the defaults are used.

        The file is a framed record (recfile.py: JSON text + CRC-32 integrity
        line, docs/store-format.md): a flipped byte is detected, never read as
        another value. A file of the format before the integrity line (plain
        JSON, older firmware) is accepted and rewritten framed at once."""
        path = self._path
        data, reason, legacy = recfile.read_record(path, MAX_SETTINGS)
        if data is None and reason is None:
            return
        if data is not None and type(data.get("values")) is not dict:
            data, reason = None, "not a settings object"
        if data is not None and (type(data.get("version")) is bool or data.get("version") != 1):
            data, reason = None, "format version %r (this build reads 1)" % (data.get("version"),)
        if data is None:
            moved = self._set_aside(path)
            msg = "%s is damaged (%s); set aside as %s, using defaults" % (path, reason, moved)
            self.problems.append(msg)
            log.warn("variables", msg)
            return
        values = data["values"]
        by_ext = {}
        for row in TABLE:
            if row[9] & _PERSIST:
                by_ext[ext_key(row)] = row
        for k in values:
            text_v = values[k]
            row = by_ext.get(k)
            if row is None or type(text_v) is not str:
                self._extra[k] = text_v
                self.problems.append("%s: unknown entry %r kept" % (SETTINGS_FILE, k))
                log.warn("variables", "%s: entry %r not used by this firmware; kept" % (
                    SETTINGS_FILE, k))
                continue
            try:
                v = parse_value(row, text_v)
            except ValueRejected as e:
                self._extra[k] = text_v
                self.problems.append("%s: %s" % (k, e.info))
                log.warn("variables", "%s: bad value for %s (%s); default used, entry kept"
                         % (SETTINGS_FILE, k, e.info))
                continue
            self._values[row[0]] = v
            self._stored[k] = text_v
        fb = data.get("fallback")
        if type(fb) is dict:
            for k in fb:
                row = by_ext.get(k)
                if row is not None and row[0] in TRIAL_KEYS and (fb[k] is None or type(fb[k]) is str):
                    self._fallback[k] = fb[k]
            if self._fallback:
                log.info("variables", "a new %s is on trial until the next connection"
                         % ", ".join(self.trial_keys()))
        if legacy:
            try:
                self.save()
                log.info("variables", "%s migrated to the checksummed format" % SETTINGS_FILE)
            except OSError as e:
                log.error("variables", "%s not migrated: %s" % (SETTINGS_FILE, e))

    def _set_aside(self, path):
        try:
            return atomic.set_aside(path, set())
        except OSError as e:
            log.error("variables", "cannot set aside %s: %s" % (path, e))
            return "(not moved)"

    def save(self):
        """Write settings.json atomically (raises OSError when the flash write fails)."""
        if self._path is None:
            return
        values = {}
        for k in self._extra:
            values[k] = self._extra[k]
        for k in self._stored:
            values[k] = self._stored[k]
        data = {"version": 1, "values": values}
        if self._fallback:
            data["fallback"] = self._fallback
        try:
            recfile.write_record(self._path, data, self.counters, MAX_SETTINGS)
        except ValueError as e:  # too large: callers handle a failed flash write
            log.error("variables", "settings.json not written: %s" % e)
            raise OSError(27)  # EFBIG

    # --- used by handlers_core (GetVariables / SetVariables) ---

    def find(self, component, variable):
        """(row, None) or (None, "UnknownComponent"|"UnknownVariable") for one item."""
        if type(component) is not dict or type(variable) is not dict:
            return None, "UnknownComponent"
        cname = component.get("name")
        if "evse" in component and "instance" not in component and self.scope is not None:
            return self.scope.find(cname, component["evse"], variable)
        if cname not in self.components or "instance" in component or "evse" in component:
            return None, "UnknownComponent"
        # A scan of TABLE (in flash when frozen), not an index by name: the index
        # held a key tuple per row, ~2 KB of heap for the agent's life, and a
        # Get/SetVariables item is rare and bounded (ItemsPerMessage).
        name = variable.get("name")
        inst = variable.get("instance")
        for row in TABLE:
            if row[2] == name and row[1] == cname and row[3] == inst:
                return row, None
        return None, "UnknownVariable"

    def commit(self, changes):
        """Apply [(row, value)] from one SetVariables: persist once, then run them.

        Returns False (nothing changed) when the settings file cannot be written.
        """
        old_stored = dict(self._stored)
        old_fallback = dict(self._fallback)
        persist = False
        trial = []
        for row, v in changes:
            ek = ext_key(row)
            if row[0] in TRIAL_KEYS and v != self._values[row[0]]:
                # keep the value of before the first untried change (the last that worked)
                if ek not in self._fallback:
                    self._fallback[ek] = self._stored.get(ek)
                trial.append(row[2])
            if row[9] & _PERSIST:
                self._stored[ek] = format_value(row, v)
                persist = True
        if persist:
            try:
                self.save()
            except OSError as e:
                self._stored = old_stored
                self._fallback = old_fallback
                log.error("variables", "settings not saved: %s" % e)
                return False
        if trial:
            log.info("variables", "new %s used from the next connection; the previous value "
                     "comes back if the CSMS refuses it" % ", ".join(trial))
        for row, v in changes:
            key = row[0]
            if row[9] & _REBOOT:
                self._pending[key] = v
                log.info("variables", "%s stored; active after reboot" % row[2])
                continue
            old = self._values[key]
            self._values[key] = v
            if row[5] == _WO:
                log.info("variables", "%s set (value not logged)" % row[2])
            else:
                log.info("variables", "%s = %s" % (row[2], format_value(row, v)))
            if old != v and self.on_change is not None:
                try:
                    self.on_change(key, v)
                except Exception as e:
                    log.exception("variables", "on_change(%s) failed" % key, e)
        return True

    # --- what the engine needs ---

    def smart_config_values(self):
        """SmartChargingCtrlr values in the names station.SmartConfig uses."""
        units = tuple(u for u in self.get("RateUnit").split(",") if u)
        return {
            "enabled": self.get("SmartChargingEnabled"),
            "max_stack_level": self.get("ProfileStackLevel"),
            "max_periods": self.get("PeriodsPerSchedule"),
            "max_entries": self.max_entries,
            "rate_units": units,
            "limit_change_significance": self.get("LimitChangeSignificance"),
            "external_control": self.get("ExternalControlSignalsEnabled"),
            "notify_with_schedules": self.get("NotifyChargingLimitWithSchedules"),
            "phase_switching": self.get("ACPhaseSwitchingSupported"),
            "phases_3to1": self.get("Phases3to1"),
        }

    def apply_smart_config(self, cfg):
        """Copy smart_config_values() onto a station.SmartConfig (attributes it has).

        rate_units become the engine's unit numbers (index in ("A", "W")).
        """
        vals = self.smart_config_values()
        vals["rate_units"] = tuple(("A", "W").index(u) for u in vals["rate_units"])
        for k in vals:
            if hasattr(cfg, k):
                setattr(cfg, k, vals[k])
        return cfg

    def mutability(self, key):
        return _MUT_NAMES[self._rows[key][5]]
