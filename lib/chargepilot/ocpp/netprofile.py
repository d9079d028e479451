"""Network connection profiles (OCPP 2.0.1 B09, B10): the slots SetNetworkProfile
fills and the checks on OCPPCommCtrlr.NetworkConfigurationPriority.

Slots: a small fixed set (`SLOTS`, the valuesList of NetworkConfigurationPriority).
Slot 1 without stored data is the station's own configuration (tools/agent --csms,
config.json csms_url; its security profile is SecurityCtrlr.SecurityProfile and its
timeout OCPPCommCtrlr.MessageTimeout): the initial profile. A stored slot keeps
the checked connectionData (ocppVersion, ocppTransport, ocppCsmsUrl,
messageTimeout, securityProfile, ocppInterface).

The agent connects with the first slot of NetworkConfigurationPriority. A new
priority set by the CSMS is a trial like a new BasicAuthPassword
(variables.TRIAL_KEYS): persisted, used from the next connection attempt, kept
once a connection succeeds, rolled back to the previous priority (so, to the
previous CSMS) after NetworkProfileConnectionAttempts failed attempts (B10.FR.07:
back to the last profile that worked). For this trial an unreachable CSMS counts
as a failure too. The station does not drop a working connection for a new
priority: it applies at the next (re)connection (after the CSMS closes the
connection, a lost link or a reboot, e.g. after a Reset: reset.py).

No downgrade (B09.FR.04, A05.FR.10): a slot below the station's SecurityProfile
is refused, as is one the station could not use (profile 2/3 on ws://, TLS that
does not verify the CSMS, profile 3 without a client certificate, profile 1/2
without BasicAuthPassword: Agent.security_problem). A slot the current priority
names, or during its trial the previous priority's first slot (the rollback
target), cannot be overwritten: the next reconnection may use it.

File: `<state>/network_profiles.json` = {"version": 1, "slots": {"2": {...}}}
as a framed record (JSON text + CRC-32 integrity line, recfile.py), written
atomically. A file that fails its integrity check, is not valid JSON, too big, of another version or
holds an entry this firmware cannot use is set aside as `network_profiles.json.bad`
(never deleted), reported, and what was valid in it is written back; the agent
never stops for it.
"""


from micropython import const

from chargepilot.store import atomic, recfile
from chargepilot.base import log
from chargepilot.net import wshs
from chargepilot.ocpp.devicemodel import NETWORK_SLOTS, ValueRejected

_TAG = "netprofile"
FILE = "network_profiles.json"
SLOTS = tuple(int(s) for s in NETWORK_SLOTS.split(","))
PRIORITY = "NetworkConfigurationPriority"
_MAX_FILE = const(4096)  # 3 slots with 512-character URLs take about 2 KB
_MAX_TIMEOUT_S = const(3600)  # as OCPPCommCtrlr.MessageTimeout
_MAX_INFO = const(512)


class Rejected(Exception):
    """A SetNetworkProfile the station refuses: `reason` (reasonCode) + `info`."""

    def __init__(self, reason, info):
        super().__init__(reason, info)
        self.reason = reason
        self.info = info


def _int(v):
    """A schema integer as an int (draft-06 lets 2.0 be an integer); None otherwise."""
    if type(v) is float:
        try:
            i = int(v)  # OverflowError for inf (a file may hold 1e999), ValueError for nan
        except (OverflowError, ValueError):
            return None
        return i if i == v else None
    if type(v) is int:  # a bool is not (type(True) is bool on both runtimes)
        return v
    return None


def check(data):
    """The content checks of B09.FR.02 (nothing about the station's state):
    the connectionData the station keeps, or raises Rejected."""
    if type(data) is not dict:
        raise Rejected("InvalidNetworkConf", "connectionData is not an object")
    if data.get("ocppVersion") != "OCPP20":
        raise Rejected("UnsupportedParam", "ocppVersion %s: this station speaks OCPP 2.0.1 "
                       "(OCPP20) only" % data.get("ocppVersion"))
    if data.get("ocppTransport") != "JSON":
        raise Rejected("UnsupportedParam", "ocppTransport %s: this station speaks OCPP-J "
                       "(JSON) only" % data.get("ocppTransport"))
    if "vpn" in data:
        raise Rejected("UnsupportedParam", "this station has no VPN client")
    if "apn" in data:
        raise Rejected("UnsupportedParam", "this station has no cellular modem (apn)")
    p = _int(data.get("securityProfile"))
    if p is None or p < 0 or p > 3:
        raise Rejected("InvalidNetworkConf", "securityProfile must be 0..3")
    t = _int(data.get("messageTimeout"))
    if t is None or t < 1 or t > _MAX_TIMEOUT_S:
        raise Rejected("InvalidNetworkConf", "messageTimeout must be 1..%d s" % _MAX_TIMEOUT_S)
    iface = data.get("ocppInterface")
    if type(iface) is not str or not iface:
        raise Rejected("InvalidNetworkConf", "ocppInterface missing")
    url = data.get("ocppCsmsUrl")
    if type(url) is not str:
        raise Rejected("InvalidURL", "ocppCsmsUrl is not a string")
    if "@" in url:  # never echoed: it may hold a password
        raise Rejected("InvalidURL", "ocppCsmsUrl must not carry credentials")
    if "?" in url or "#" in url:
        raise Rejected("InvalidURL", "ocppCsmsUrl: no query or fragment (the station "
                       "appends its identity to the path)")
    try:
        secure, host, _port, _res = wshs.parse_url(url)
    except Exception as e:  # WebSocketError
        raise Rejected("InvalidURL", "ocppCsmsUrl: %s" % e)
    if not host:
        raise Rejected("InvalidURL", "ocppCsmsUrl has no host")
    if p >= 2 and not secure:
        raise Rejected("InvalidNetworkConf", "security profile %d needs a wss:// URL" % p)
    if p <= 1 and secure:
        raise Rejected("InvalidNetworkConf", "security profile %d is ws://; wss:// is profile "
                       "2 or 3" % p)
    return {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url,
            "messageTimeout": t, "securityProfile": p, "ocppInterface": iface}


def slots_of(text):
    """ "2,1" -> [2, 1] (a value parse_value already checked)."""
    return [int(s) for s in text.split(",") if s]


class NetworkProfiles:
    """The stored slots (slot -> connectionData), in `<state_dir>/network_profiles.json`
    (in memory only without a state dir). `problems`: what load() set aside."""

    def __init__(self, state_dir=None):
        self._slots = {}
        self.problems = []
        self._path = None
        self.counters = recfile.new_counters()  # flash operations of the file
        if state_dir:
            self._path = state_dir + "/" + FILE
            self.load()

    def get(self, slot):
        """The stored connectionData of `slot` (a dict: do not change it), or None."""
        return self._slots.get(slot)

    def put(self, slot, data):
        """Store checked `data` (check()) in `slot`; raises OSError when the flash
        write fails (nothing changed then)."""
        if slot not in SLOTS:
            raise ValueError("no network profile slot %r" % (slot,))
        old = self._slots.get(slot)
        self._slots[slot] = data
        try:
            self.save()
        except OSError:
            if old is None:
                del self._slots[slot]
            else:
                self._slots[slot] = old
            raise

    def save(self):
        if self._path is None:
            return
        out = {}
        for slot in self._slots:
            out[str(slot)] = self._slots[slot]
        try:
            recfile.write_record(self._path, {"version": 1, "slots": out}, self.counters,
                                 _MAX_FILE)
        except ValueError as e:  # too large: the caller handles a failed flash write
            log.error(_TAG, "%s not written: %s" % (FILE, e))
            raise OSError(27)  # EFBIG

    def load(self):
        # A framed record (recfile.py, docs/store-format.md); a file of the
        # format before the integrity line (plain JSON) is read once and
        # rewritten framed.
        path = self._path
        data, reason, legacy = recfile.read_record(path, _MAX_FILE)
        if data is None and reason is None:
            return
        slots = data.get("slots") if type(data) is dict else None
        if type(slots) is not dict:
            self._damaged(reason or "not a network profile file")
            return
        if data.get("version") != 1 or type(data.get("version")) is bool:
            self._damaged("format version %r (this build reads 1)" % (data.get("version"),))
            return
        bad = []
        for key in slots:
            slot = int(key) if type(key) is str and key.isdigit() and len(key) < 3 else None
            if slot not in SLOTS:
                bad.append("entry %r is not a slot of this station (%s)"
                           % (key[:8], NETWORK_SLOTS))
                continue
            try:
                self._slots[slot] = check(slots[key])
            except Exception as e:  # Rejected; anything else must not stop the boot either
                bad.append("slot %d not usable: %s" % (slot, getattr(e, "info", e)))
        if bad:
            self._damaged("; ".join(bad))
            if self._slots:
                try:
                    self.save()  # the valid slots, in a clean file
                except OSError as e:
                    log.error(_TAG, "%s not rewritten: %s" % (path, e))
        elif self._slots:
            log.info(_TAG, "network profile slots %s loaded" % ",".join(
                str(s) for s in SLOTS if s in self._slots))
        if legacy and not bad:
            try:
                self.save()
                log.info(_TAG, "%s migrated to the checksummed format" % FILE)
            except OSError as e:
                log.error(_TAG, "%s not migrated: %s" % (FILE, e))

    def _damaged(self, why):
        try:
            moved = atomic.set_aside(self._path, set())
        except OSError as e:
            log.error(_TAG, "cannot set aside %s: %s" % (self._path, e))
            moved = "(not moved)"
        msg = "%s: %s; set aside as %s" % (FILE, why, moved)
        self.problems.append(msg)
        log.warn(_TAG, msg)


def _rejected(reason, info):
    return {"status": "Rejected",
            "statusInfo": {"reasonCode": reason[:20], "additionalInfo": info[:_MAX_INFO]}}


def locked_slots(dm):
    """Slots a reconnection may use now: the current priority's and, during its trial,
    the previous one's first slot (the rollback target)."""
    out = set(slots_of(dm.get(PRIORITY)))
    prev = dm.stored(PRIORITY, proven=True)
    if prev is None:
        prev = dm.configured(PRIORITY)
    out.add(slots_of(prev)[0])
    return out


def check_slot(agent, slot, profile, url):
    """Can the station connect with (profile, url) now? None or raises Rejected."""
    cur = agent.dm.get("SecurityProfile")
    if profile < cur:
        raise Rejected("NoSecurityDowngrade", "slot %d: security profile %d is below the "
                       "station's %d; a downgrade is refused" % (slot, profile, cur))
    why = agent.security_problem(profile, url)
    if why is not None:
        raise Rejected("InvalidNetworkConf", "slot %d: %s" % (slot, why))


def check_priority(agent, text):
    """SetVariables NetworkConfigurationPriority: every slot named holds a profile the
    station can use without a downgrade; raises ValueRejected otherwise."""
    for slot in slots_of(text):
        c = agent.connection(slot)
        if c is None:
            raise ValueRejected("InvalidNetworkConf", "slot %d holds no network profile "
                                "(SetNetworkProfile first)" % slot)
        try:
            check_slot(agent, slot, c[1], c[0])
        except Rejected as e:
            raise ValueRejected(e.reason, e.info)


def make(agent):
    """The SetNetworkProfile handler of `agent` (Action -> async fn)."""

    async def on_set_network_profile(payload):
        slot = _int(payload.get("configurationSlot"))
        try:
            if slot not in SLOTS:
                raise Rejected("InvalidConfSlot", "configurationSlot %s: this station has "
                               "slots %s" % (payload.get("configurationSlot"), NETWORK_SLOTS))
            if slot in locked_slots(agent.dm):
                raise Rejected("ActiveNetworkConf", "slot %d is named by %s %s and may be "
                               "used by the next reconnection; write another slot"
                               % (slot, PRIORITY, agent.dm.get(PRIORITY)))
            data = check(payload.get("connectionData"))
            check_slot(agent, slot, data["securityProfile"], data["ocppCsmsUrl"])
        except Rejected as e:
            log.warn(_TAG, "SetNetworkProfile slot %s rejected: %s: %s" % (
                payload.get("configurationSlot"), e.reason, e.info))
            return _rejected(e.reason, e.info)
        try:
            agent.networks.put(slot, data)
        except OSError as e:
            log.error(_TAG, "network profile slot %d not stored: %s" % (slot, e))
            return {"status": "Failed", "statusInfo": {
                "reasonCode": "InternalError", "additionalInfo": "flash write failed"}}
        log.info(_TAG, "network profile slot %d stored: %s, security profile %d; used when %s "
                 "names it first" % (slot, data["ocppCsmsUrl"], data["securityProfile"],
                                     PRIORITY))
        return {"status": "Accepted"}

    return {"SetNetworkProfile": on_set_network_profile}
