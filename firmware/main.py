"""Runs after boot.py on the ESP32: Wi-Fi, time, then the agent, forever.

boot.py has already put every pilot at steady +12 V with the relays open, so
whatever happens here the EVSE is safe. This file never lets an exception end
the program: it logs it, waits, and resets the board.

/config.json: one JSON object. A key this file does not know is refused (a typo
would silently drop a setting); keys starting with "_" are comments. Examples:
boards/<board>/config.example.json (checked by host_tests/test_config_examples.py).

    {
      "wifi": {"ssid": "site-wlan", "password": "..."},      required
      "csms_url": "wss://csms.example.com/ocpp",               required, ws:// or wss://
      "station_id": "CP-0001",                                 required, <= 48 chars, no ':'
      "security_profile": 2,                                   1 (ws + Basic), 2 (wss + Basic),
                                                               3 (wss + client certificate); 0 = lab only
      "password": "at least 16 characters",                   Basic auth (profiles 1, 2)
      "ca_file": "/csms_ca.pem",                               CA for wss:// (required with wss)
      "cert_file": "/station.pem", "key_file": "/station.key", profile 3: certificate + unencrypted key
      "board_module": "board",                                 the board's Python module (default
                                                               "board"); its pins are in /board.json
      "evse": {"count": 1, "rating_amps": 32},                 informational; the board config rules
      "model": "chargepilot-esp32", "vendor": "chargepilot", "serial": "SN-1",
      "ntp_host": "pool.ntp.org",                              optional; time sync is non-fatal
      "state_dir": "/state",                                   where the agent persists (flash)
      "safe_mode_pin": 0                                       optional GPIO: held low at start-up,
                                                               the agent does not start (safe mode)
    }

A value still holding the placeholder CHANGE-ME is refused (tools/deploy flash
refuses it too). Safe mode: with the file /SAFE_MODE present, or safe_mode_pin
held low, main.py does not start the agent (nor the watchdog): the outputs stay
in boot.py's safe state and the REPL is free, so mpremote can copy files
without the 8 s watchdog resetting the board mid-copy. tools/deploy flash
creates /SAFE_MODE, resets, copies, then removes it and resets again.

A value the CSMS set through SetVariables (persisted in state_dir) wins over
the installer's password in config.json.
"""

import json
import time

import machine
import network

_CONFIG = "/config.json"
SAFE_FLAG = "/SAFE_MODE"
PLACEHOLDER = "CHANGE-ME"
# Every key load_config knows (keys starting with "_" are comments).
KEYS = ("wifi", "csms_url", "station_id", "security_profile", "password", "ca_file",
        "cert_file", "key_file", "board_module", "evse", "model", "vendor", "serial",
        "ntp_host", "state_dir", "safe_mode_pin")
WIFI_KEYS = ("ssid", "password")
_RESET_DELAY_S = 10
_WIFI_TIMEOUT_MS = 20000
_WIFI_CHECK_MS = 5000
_WATCHDOG_MS = 8000
_GC_THRESHOLD = 4096  # bytes allocated between collections (twin heap-agent: 93 -> 85 KB)


class ConfigError(ValueError):
    pass


def _log(msg):
    print("main: " + msg)


def load_config(path=_CONFIG, allow_placeholders=False):
    """The checked config dict; ConfigError with a clear message otherwise (the
    message names the file and the field). allow_placeholders: accept values
    holding CHANGE-ME (checking an example config, not deploying it)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("%s is missing" % path)
    # the grammar first: MicroPython's json.loads gives a missing value or comma a meaning
    # (tools/deploy runs this on CPython without the package: its json is strict itself)
    try:
        from chargepilot.base import jsongrammar

        at = jsongrammar.fault(text)
    except ImportError:
        at = None
    try:
        if at is not None:
            raise ValueError
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError("%s is not valid JSON%s" % (path, "" if at is None else
                                                       " (at byte %d)" % at))
    if type(cfg) is not dict:
        raise ConfigError("%s must hold one JSON object" % path)
    if "board" in cfg:
        raise ConfigError('config: "board" is now "board_module" (the board\'s Python module, '
                          'e.g. "board"; its pins are in board.json)')
    for key in cfg:
        if key not in KEYS and not key.startswith("_"):
            raise ConfigError("config: unknown key %r (known: %s; \"_...\" keys are comments)"
                              % (key, ", ".join(KEYS)))
    if type(cfg.get("wifi")) is dict:
        for key in cfg["wifi"]:
            if key not in WIFI_KEYS:
                raise ConfigError("config: unknown key wifi.%s (known: ssid, password)" % key)
    if not allow_placeholders:
        left = placeholders(cfg)
        if left:
            raise ConfigError("config: %s still hold%s the placeholder %s" % (
                ", ".join(left), "s" if len(left) == 1 else "", PLACEHOLDER))
    wifi = cfg.get("wifi")
    if type(wifi) is not dict or type(wifi.get("ssid")) is not str or not wifi["ssid"]:
        raise ConfigError("config: wifi.ssid (string) is required")
    if type(wifi.get("password", "")) is not str:
        raise ConfigError("config: wifi.password must be a string")
    url = cfg.get("csms_url")
    if type(url) is not str or not (url.startswith("ws://") or url.startswith("wss://")):
        raise ConfigError("config: csms_url must start with ws:// or wss://")
    sid = cfg.get("station_id")
    if type(sid) is not str or not 0 < len(sid) <= 48 or ":" in sid:
        raise ConfigError("config: station_id must be 1-48 characters without ':'")
    prof = cfg.get("security_profile", 2 if url.startswith("wss://") else 1)
    if type(prof) is bool or type(prof) is not int or prof not in (0, 1, 2, 3):
        raise ConfigError("config: security_profile must be 0, 1, 2 or 3")
    if prof >= 2 and not url.startswith("wss://"):
        raise ConfigError("config: security_profile %d needs a wss:// csms_url" % prof)
    if prof == 3 and (type(cfg.get("cert_file")) is not str or type(cfg.get("key_file")) is not str):
        raise ConfigError("config: security_profile 3 needs cert_file and key_file")
    if url.startswith("wss://") and type(cfg.get("ca_file")) is not str:
        raise ConfigError("config: wss:// needs ca_file (the CSMS is always verified)")
    pw = cfg.get("password")
    if prof in (1, 2) and (type(pw) is not str or len(pw) < 16):
        raise ConfigError("config: security profile %d needs a password of >= 16 characters"
                          % prof)
    for key in ("board_module", "model", "vendor", "serial", "ntp_host", "state_dir",
                "cert_file", "key_file"):
        if key in cfg and type(cfg[key]) is not str:
            raise ConfigError("config: %s must be a string" % key)
    pin = cfg.get("safe_mode_pin")
    if pin is not None and (type(pin) is not int or not 0 <= pin <= 39):
        raise ConfigError("config: safe_mode_pin must be a GPIO number 0..39")
    cfg["security_profile"] = prof
    return cfg


def placeholders(cfg, prefix=""):
    """Dotted names of the string values that still hold CHANGE-ME."""
    out = []
    for key in cfg:
        v = cfg[key]
        if key.startswith("_"):  # a comment
            continue
        if type(v) is dict:
            out += placeholders(v, prefix + key + ".")
        elif type(v) is str and PLACEHOLDER in v:
            out.append(prefix + key)
    return sorted(out)


def safe_mode(path=_CONFIG, flag=SAFE_FLAG):
    """Why the agent must not start (None: start it): the flag file, or the
    config's safe_mode_pin held low. Never raises: a broken config is main()'s
    to report."""
    try:
        import os

        os.stat(flag)
        return "%s present" % flag
    except OSError:
        pass
    try:
        with open(path) as f:
            pin = json.loads(f.read()).get("safe_mode_pin")
        if type(pin) is int:
            if machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0:
                return "GPIO %d held low" % pin
    except Exception:
        pass
    return None


async def wifi_connect(wlan, cfg, timeout_ms=_WIFI_TIMEOUT_MS):
    """Connect, waiting without blocking the control loop; True when connected."""
    import asyncio

    if wlan.isconnected():
        return True
    wlan.active(True)
    try:
        wlan.connect(cfg["wifi"]["ssid"], cfg["wifi"].get("password", ""))
    except OSError as e:
        _log("wifi connect: %s" % e)
        return False
    t0 = time.ticks_ms()
    while not wlan.isconnected():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            _log("wifi: no connection within %d ms" % timeout_ms)
            return False
        await asyncio.sleep_ms(200)
    _log("wifi: connected, %s" % (wlan.ifconfig()[0],))
    return True


def sync_time(clk, host=None):
    """Set the clock from NTP; any failure is only logged (the CSMS sets it later)."""
    try:
        import ntptime

        from chargepilot.base import rfc3339

        if host:
            ntptime.host = host
        t = ntptime.time()  # seconds since the port's epoch
        y, mo, d, h, mi, s = time.gmtime(t)[:6]
        clk.set(rfc3339.from_fields(y, mo, d, h, mi, s))
        _log("time from NTP: %s" % rfc3339.format(clk.now()))
    except Exception as e:
        _log("NTP failed (%s); waiting for the CSMS's currentTime" % e)


def _mkdir(path):
    try:
        import os

        os.mkdir(path)
    except OSError:
        pass


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _ssl_context(cfg):
    from chargepilot.net import tls

    if cfg["security_profile"] == 3:
        return tls.ssl_context(_read(cfg["ca_file"]), _read(cfg["cert_file"]),
                               _read(cfg["key_file"]))
    return tls.ssl_context(_read(cfg["ca_file"]))


def build_station(cfg, clk, board):
    from chargepilot import VERSION
    from chargepilot.station import app
    from chargepilot.ocpp import devicemodel as variables

    state = cfg.get("state_dir", "/state")
    _mkdir(state)
    fixed = {"Identity": cfg["station_id"], "SecurityProfile": cfg["security_profile"]}
    if cfg.get("password"):
        fixed["BasicAuthPassword"] = cfg["password"]
    dm = variables.DeviceModel(state, fixed=fixed)
    ctx = _ssl_context(cfg) if cfg["csms_url"].startswith("wss://") else None
    acfg = {"url": cfg["csms_url"], "id": cfg["station_id"],
            "model": cfg.get("model", "chargepilot-esp32"),
            "vendor": cfg.get("vendor", "chargepilot"), "firmware": VERSION}
    if cfg.get("serial"):
        acfg["serial"] = cfg["serial"]
    # The control loop feeds the watchdog: if it hangs, the board resets into boot.py's safe state.
    st = app.Station(acfg, dm, clk, board, state, ctx, watchdog_ms=_WATCHDOG_MS)
    st.load()  # stored profiles apply from the first pilot output on, online or not
    return st


async def _keep_wifi(wlan, cfg, clk):
    """Bring Wi-Fi up and keep it up; the first time it is up, sync the clock.
    The agent's own back-off handles the CSMS socket meanwhile."""
    import asyncio

    synced = False
    while True:
        if not wlan.isconnected():
            _log("wifi down; connecting")
            try:
                wlan.disconnect()
            except Exception:
                pass
            await wifi_connect(wlan, cfg, _WIFI_TIMEOUT_MS)
        if wlan.isconnected() and not synced:
            sync_time(clk, cfg.get("ntp_host"))  # one short UDP exchange
            synced = True
        await asyncio.sleep_ms(_WIFI_CHECK_MS)


async def _run(station, wlan, cfg, clk):
    import asyncio

    asyncio.create_task(_keep_wifi(wlan, cfg, clk))
    await station.run()


def main():
    import asyncio

    from chargepilot.base import clock

    cfg = load_config()
    import gc

    gc.collect()
    gc.threshold(_GC_THRESHOLD)  # fragmentation, not live data, runs out first
    # No board, no charging: boot.py's safe state stays and the board resets to retry.
    board = __import__(cfg.get("board_module", "board")).load()
    clk = clock.Clock()
    station = build_station(cfg, clk, board)
    wlan = network.WLAN(network.STA_IF)
    asyncio.run(_run(station, wlan, cfg, clk))
    if station.reset_requested:  # Reset (lib/chargepilot/ocpp/reset.py): reboot now
        _log("reset requested by the CSMS")
        board.safe()
        machine.reset()


def _safe_main():
    why = safe_mode()
    if why:
        _log("safe mode (%s): the agent is not started, outputs stay safe; remove %s "
             "(or release the pin) and reset to run" % (why, SAFE_FLAG))
        return
    while True:
        try:
            main()
        except KeyboardInterrupt:  # the REPL (mpremote) takes over
            _log("interrupted")
            return
        except Exception as e:
            _log("fatal: %s: %s; reset in %d s" % (type(e).__name__, e, _RESET_DELAY_S))
            try:
                import sys

                sys.print_exception(e)
            except Exception:
                pass
            time.sleep(_RESET_DELAY_S)
            machine.reset()


if __name__ == "__main__":
    _safe_main()
