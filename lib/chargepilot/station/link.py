"""Where and how the station connects: the security profile (A00/A01: ws:// or
wss://, Basic auth, client certificate, never a downgrade), the network profile
slot the next attempt uses (B09/B10: NetworkConfigurationPriority's first), the
trial of new connection settings (kept once connected, rolled back after
NetworkProfileConnectionAttempts refusals), and how big a message the
connection keeps (BytesPerMessage from the free heap) and the answer to a
bigger one, which is counted, never parsed.

`Link` is the part of station/agent.Agent that decides this (the connection
itself and its states are agent.py's); the fields it uses (dm, cfg, url,
ssl_context, networks, identity, slot, _timeout_s, _profile, _link,
_accepted_boot) are set by Agent.__init__.
"""

from micropython import const

from chargepilot.base import log
from chargepilot.ocpp import netprofile

_TAG = "agent"
# Between two connection attempts at least this long, whatever RetryBackOff says: a
# refusal that awaits nothing (the station's own security checks) would otherwise
# spin the event loop and starve the control loop that feeds the watchdog.
MIN_ATTEMPT_MS = const(100)
_MIN_BYTES = const(2048)  # BytesPerMessage bounds (_message_budget)
_MAX_BYTES = const(65536)
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def quote(text):
    """Percent-encode for one URL path segment (RFC 3986 unreserved kept)."""
    out = []
    for b in text.encode():
        c = chr(b)
        if b < 128 and c in _UNRESERVED:
            out.append(c)
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def basic_auth(identity, password):
    import binascii

    raw = ("%s:%s" % (identity, password)).encode()
    return "Basic " + binascii.b2a_base64(raw).decode().strip()


class Link:
    """See the module doc; mixed into Agent."""

    def _headers(self, profile=None):
        p = self.dm.get("SecurityProfile") if profile is None else profile
        if p == 3:
            return None  # profile 3: the client certificate authenticates, no Basic auth
        pw = self.dm.get("BasicAuthPassword")
        if pw:
            return {"Authorization": basic_auth(self.identity, pw)}
        return None

    _trial_failures = 0  # refused attempts with new credentials on trial

    # floor of the reconnect wait (MIN_ATTEMPT_MS); a time-accelerated simulation,
    # where 100 real ms are half a simulated hour, lowers it (never to 0: see there)
    min_attempt_ms = MIN_ATTEMPT_MS

    def security_problem(self, profile=None, url=None):
        """Why the station must not connect with `profile` (default: the configured
        one) to `url` (default: the current one) with its TLS context; None when it
        may. A profile 2/3 station never uses ws:// or TLS that does not verify the
        CSMS (no downgrade)."""
        p = self.dm.get("SecurityProfile") if profile is None else profile
        url = self.url if url is None else url
        ctx = self.ssl_context
        if p >= 2:
            if url[:6].lower() != "wss://":
                return ("security profile %d needs a wss:// CSMS URL; refusing %s (no downgrade)"
                        % (p, url.split("://", 1)[0] + "://"))
            if ctx is None or not _verifies(ctx):
                return ("security profile %d needs TLS that verifies the CSMS certificate and host "
                        "name against a CA; refusing unverified TLS (no downgrade)" % p)
        if p == 3 and not getattr(ctx, "has_client_cert", False):
            return "security profile 3 needs a client certificate and key (mutual TLS)"
        if p in (1, 2) and not self.dm.get("BasicAuthPassword"):
            return "security profile %d needs SecurityCtrlr.BasicAuthPassword (HTTP Basic auth)" % p
        return None

    def _check_profile_set(self, v):
        """SetVariables SecurityProfile: only up, and only to a profile this station can use."""
        from chargepilot.ocpp.dmtable import ValueRejected

        cur = self.dm.get("SecurityProfile")
        if v < cur:
            raise ValueRejected("ValueTooLow", "SecurityProfile %d -> %d is a downgrade; refused"
                                % (cur, v))
        if v > cur:
            slot, _conn = self._target()
            if self.networks.get(slot) is not None:
                raise ValueRejected("InvalidValue", "the connection uses network profile slot %d: "
                                    "its securityProfile applies (SetNetworkProfile)" % slot)
            problem = self.security_problem(v, self.cfg["url"])
            if problem is not None:
                raise ValueRejected("InvalidValue", problem)

    def connection(self, slot):
        """(CSMS URL without identity, security profile, messageTimeout s or None) of
        network profile `slot`, None when it is empty. Slot 1 without stored data is
        the station's own configuration (cfg url, SecurityProfile, MessageTimeout)."""
        d = self.networks.get(slot)
        if d is not None:
            return d["ocppCsmsUrl"], d["securityProfile"], d["messageTimeout"]
        if slot == 1:
            return self.cfg["url"], self.dm.get("SecurityProfile"), None
        return None

    def _target(self):
        """(slot, connection(slot)) the next attempt uses: NetworkConfigurationPriority's first."""
        slot = netprofile.slots_of(self.dm.get(netprofile.PRIORITY))[0]
        return slot, self.connection(slot)

    def _check_priority_set(self, v):
        netprofile.check_priority(self, v)

    def _active_slot(self):
        return self.slot

    def message_timeout_s(self):
        """The connection's message timeout: its stored slot's messageTimeout, else
        OCPPCommCtrlr.MessageTimeout."""
        t = self._timeout_s
        return t if t else self.dm.get("MessageTimeout")

    def _connected(self):
        """After a successful connection: another network profile than the last
        connection's means registering again (B10.FR.10); a higher security profile
        is the station's from now on (never lowered again)."""
        link = (self.slot, self.url)
        if self._link is not None and self._link != link:
            log.info(_TAG, "connected through network profile slot %d: BootNotification again"
                     % self.slot)
            self._accepted_boot = None
        self._link = link
        p = self._profile
        if p is not None and p > self.dm.get("SecurityProfile"):
            try:
                self.dm.set_local("SecurityProfile", p)
                log.info(_TAG, "security profile %d from network profile slot %d is the station's "
                         "now" % (p, self.slot))
            except (ValueError, OSError) as e:
                log.error(_TAG, "security profile %d not stored: %s" % (p, e))

    def _message_budget(self, fixed=None):
        """DeviceDataCtrlr.BytesPerMessage (and ItemsPerMessage) from the heap: a
        CALL is kept and parsed only when it is at most this big. Decoding a
        JSON text of n bytes takes several times n (the frame, its str, one
        object per value: ~8x for dense charging periods), so a sixteenth of the
        free heap, 2 KB..64 KB; CPython (no gc.mem_free) gets 64 KB. `fixed` (cfg
        bytes_per_message) replaces the estimate. Bigger CALLs are answered
        without being parsed (ocppj/framefix.too_big)."""
        if fixed is None:
            fixed = _MAX_BYTES
            import sys

            if sys.implementation.name == "micropython":  # CPython's shim says 0
                import gc

                gc.collect()
                fixed = gc.mem_free() // 16
        n = max(_MIN_BYTES, min(_MAX_BYTES, fixed))
        items = max(4, min(100, n // 512))  # a result item is a few hundred bytes of JSON
        for action in ("GetVariables", "SetVariables"):
            self.dm.set_local("BytesPerMessage" + action, n, False)
            self.dm.set_local("ItemsPerMessage" + action, items, False)
        return n

    def _oversize(self, action, scan):
        """The Rpc's answer to a CALL too big to be kept (framefix.too_many_periods)."""
        from chargepilot.ocppj import framefix

        return framefix.too_many_periods(self.dm, action, scan)

    def _attempt_done(self, why):
        """After a connection attempt (why None = connected): end or count a trial of new
        credentials. Only refusals count (the CSMS or the TLS layer said no, or the
        station's own checks did); an unreachable CSMS says nothing about them, except
        when a new NetworkConfigurationPriority (a new CSMS URL) is on trial."""
        names = self.dm.trial_keys()
        if not names:
            return
        names = ", ".join(names)
        if why is None:
            self.dm.end_trial(True)
            self._trial_failures = 0
            log.info(_TAG, "connected with the new %s; kept" % names)
            return
        if "TCP connect" in why and netprofile.PRIORITY not in names:
            return  # a new CSMS URL (priority) must be reachable: then it counts
        n = self._trial_failures + 1
        limit = self.dm.get("NetworkProfileConnectionAttempts")
        if n < limit:
            self._trial_failures = n
            log.warn(_TAG, "new %s refused (%d of %d attempts before rolling back)"
                     % (names, n, limit))
            return
        self._trial_failures = 0
        restored = self.dm.end_trial(False)
        log.warn(_TAG, "new %s refused %d times: rolled back to the previous %s"
                 % (names, n, ", ".join(restored)))


def _verifies(ctx):
    # tls is imported only where a TLS context exists (its objects cost heap)
    from chargepilot.net import tls

    return tls.verifies(ctx)
