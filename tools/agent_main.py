"""Host entry point of the agent; runs on the MicroPython unix port and on CPython.

`tools/agent` (the launcher) parses the command line and passes the result as
JSON in the environment variable CHARGEPILOT_AGENT (not argv: the password
would show in `ps`). Keys: url, id, state, password, cafile, security_profile,
cert, key (paths: the key itself never goes through the environment), set (variable key
-> text, used as defaults: values persisted in the state dir win), log_level,
model, vendor, serial, firmware, max_profiles (maxLimit of
SmartChargingCtrlr.Entries), stop_stdin (MicroPython: a line on stdin asks
for the clean stop).

The state dir is the station's flash; starting again with the same dir is a
reboot. SIGINT/SIGTERM (CPython), a line on stdin (MicroPython with
stop_stdin) or KeyboardInterrupt: close the connection cleanly, exit 0.
"""

import sys

if sys.implementation.name != "micropython":
    import os

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for _p in ("boards/host", "lib"):
        sys.path.insert(0, os.path.join(_root, _p))
    import cpython_shim

    cpython_shim.install()

import asyncio
import json
import os

import time

from chargepilot import VERSION
from chargepilot.station import app
from chargepilot.base import clock, log
from chargepilot.ocpp import devicemodel as variables

_TAG = "main"
# Collect after every 4 KB allocated: on a small heap fragmentation, not live
# data, is what runs out first (tools/bench heap: smallest heap 459K -> 386K with
# 16 KB; tools/bench heap-agent on the board twin: 93 KB with 16 KB, 85 KB with
# 4 KB, 85 KB with 1 KB). firmware/main.py uses the same value.
_GC_THRESHOLD = 4096


def _mkdirs(path):
    parts = path.split("/")
    cur = ""
    for i, part in enumerate(parts):
        cur = part if i == 0 else cur + "/" + part
        if not cur:
            continue
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _ssl_context(cfg):
    """The TLS context for wss:// (None for ws://): CA, plus cert/key for profile 3.
    The key stays in memory only as long as loading it takes."""
    if not cfg.get("cafile"):
        return None

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    cert = read(cfg["cert"]) if cfg.get("cert") else None
    key = read(cfg["key"]) if cfg.get("key") else None
    from chargepilot.net import tls  # a ws:// station never loads it

    return tls.ssl_context(read(cfg["cafile"]), cert, key)


def _no_downgrade(dm, cfg):
    """Keep the security profile in the state dir and never go below the one the
    station already uses (during a trial: the one before it). A lower configured
    profile is ignored when the configuration can still run the kept one, else
    the station does not start."""
    configured = dm.configured("SecurityProfile")
    if dm.stored("SecurityProfile") is None or configured > dm.get("SecurityProfile"):
        dm.set_local("SecurityProfile", configured)  # first start, or the installer raised it
        return
    have = dm.stored("SecurityProfile", proven=True)
    if have is None or configured >= have:
        return
    secure = cfg["url"].startswith("wss:") and cfg.get("cafile")
    if have >= 2 and not secure or have == 3 and not cfg.get("cert"):
        raise ValueError("security profile %d configured, but this station already uses profile %d "
                         "(%s/settings.json) and a downgrade is refused" % (configured, have, cfg["state"]))
    log.warn(_TAG, "security profile %d configured; staying at profile %d (no downgrade)"
             % (configured, dm.get("SecurityProfile")))


def _board(cfg, clk):
    """The simulated host board: EVSEs, rating, pilot log, an EV plugged in."""
    import board

    kw = {"now_fn": clk.now, "evse_count": cfg.get("evses") or 1,
          "meter_path": cfg["state"] + "/meter.json"}  # the simulated meter's register
    if cfg.get("rating"):
        kw["rating_tenths"] = cfg["rating"]
    if cfg.get("pilot_log"):
        kw["log_path"] = cfg["pilot_log"]
    b = board.load(**kw)
    ev = cfg.get("simulate_ev")
    if ev:
        car = b.ev(ev)  # ValueError for an EVSE the board does not have
        car.plug()
        car.charge()
        log.info(_TAG, "simulated EV plugged into EVSE %d, ready to charge" % ev)
    return b


def build(cfg):
    state = cfg["state"]
    _mkdirs(state)
    fixed = {"Identity": cfg["id"]}
    if cfg.get("password"):
        fixed["BasicAuthPassword"] = cfg["password"]
    url = cfg["url"]
    prof = cfg.get("security_profile")
    if prof is None:  # the launcher always sends it; direct users get the same inference
        prof = 3 if cfg.get("cert") else 2 if url.startswith("wss:") else 1 if cfg.get("password") else 0
    fixed["SecurityProfile"] = prof
    sets = cfg.get("set") or {}
    for key in sets:
        row = None
        for r in variables.TABLE:
            if r[0] == key:
                row = r
        if row is None:
            raise ValueError("--set: no variable %r" % key)
        try:
            fixed[key] = variables.parse_value(row, sets[key])
        except variables.ValueRejected as e:
            raise ValueError("--set %s: %s" % (key, e.info))
    dm = variables.DeviceModel(state, fixed=fixed, max_entries=cfg.get("max_profiles")
                               or variables.DEFAULT_MAX_ENTRIES)
    _no_downgrade(dm, cfg)
    ctx = _ssl_context(cfg)
    acfg = {"url": url, "id": cfg["id"], "model": cfg.get("model", "chargepilot-host"),
            "vendor": cfg.get("vendor", "chargepilot"),
            "firmware": cfg.get("firmware", VERSION)}
    if cfg.get("serial"):
        acfg["serial"] = cfg["serial"]
    clk = clock.Clock()
    st = app.Station(acfg, dm, clk, _board(cfg, clk), state, ctx)
    st.load()
    return st


async def _external_limits(st, plan):
    """--external-limit EVSE:AMPS:AFTER_S[:FOR_S]: an energy manager on the board."""
    t0 = time.ticks_ms()
    events = []
    for evse, tenths, after, dur in plan:
        events.append((after, evse, tenths))
        if dur:
            events.append((after + dur, evse, None))
    events.sort(key=lambda e: e[0])
    for after, evse, tenths in events:
        left = after * 1000 - time.ticks_diff(time.ticks_ms(), t0)
        if left > 0:
            await asyncio.sleep_ms(left)
        try:
            if tenths is None:
                st.smart.clear_external_limit(evse, "EMS")
            else:
                st.smart.set_external_limit(evse, tenths, "A", "EMS")
            if st.agent.online:
                await st.smart.flush()
        except ValueError as e:
            log.error(_TAG, "external limit: %s" % e)


async def _stop_on_stdin(st):
    """MicroPython under tools/agent: a line on stdin asks for the clean stop (the
    launcher's SIGINT/SIGTERM; see there why not SIGINT). EOF: the launcher is
    gone, and the power cut (PR_SET_PDEATHSIG) follows: nothing to do."""
    try:
        line = await asyncio.StreamReader(getattr(sys.stdin, "buffer", sys.stdin)).readline()
    except Exception as e:
        log.warn(_TAG, "stop requests on stdin not read: %s" % e)
        return
    if line:
        import gc

        gc.collect()
        log.info(_TAG, "stop requested; closing the connection (heap: %d bytes used, %d free)"
                 % (gc.mem_alloc(), gc.mem_free()))
        st.stop()


async def _run(st, cfg):
    if sys.implementation.name != "micropython":
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, st.stop)
    elif cfg.get("stop_stdin"):
        asyncio.create_task(_stop_on_stdin(st))
    if cfg.get("external_limits"):
        asyncio.create_task(_external_limits(st, cfg["external_limits"]))
    await st.run()


async def _shutdown(st):
    try:
        st.board.safe()
    except Exception as e:
        log.warn(_TAG, "board.safe: %s" % e)
    sock = st.agent._ws
    if sock is not None:
        sock._reading = False  # the reader task died with the old loop
        try:
            await asyncio.wait_for_ms(sock.close(), 2000)
        except Exception as e:
            log.warn(_TAG, "close after interrupt: %s" % e)


_ERRNO = {2: "no such file or directory", 13: "permission denied", 17: "file exists",
          20: "a path component is not a directory", 21: "is a directory",
          28: "no space left on the device", 30: "read-only file system"}


def _os_error(e):
    code = e.args[0] if e.args and type(e.args[0]) is int else None
    text = _ERRNO.get(code)
    if text is None:
        return str(e)
    where = getattr(e, "filename", None)
    return "%s (errno %d)%s" % (text, code, ": %s" % where if where else "")


def _wall_ms():
    """Host wall clock in ms since 1970 (the frame log's time base; a host has one)."""
    return time.time_ns() // 1000000


def _redact(v):
    if type(v) is dict:
        var = v.get("variable")
        if type(var) is dict and "Password" in str(var.get("name", "")) and "attributeValue" in v:
            v["attributeValue"] = "<redacted>"
        for k in v:
            _redact(v[k])
    elif type(v) is list:
        for x in v:
            _redact(x)


def _redacted(text):
    """A frame with every value of a *Password variable replaced (frame log, debug log)."""
    try:
        msg = json.loads(text)
    except ValueError:
        return "<unparsable frame naming a password: redacted>"
    _redact(msg)
    return json.dumps(msg)


def _event_log(st, path):
    """--frame-log FILE: one JSON line per OCPP frame and per change of the limit
    the control loop applies, each with the host's wall time in ms:
    {"ms", "dir": "in"|"out", "frame": "<text>"} and
    {"ms", "evse", "limit": A, "amps": A offered, "state", "relay"}.
    tools/timeline draws it next to the --pilot-log. Debug level also logs each frame."""
    f = open(path, "a") if path else None
    prev_frame = st.agent.on_frame
    prev_output = st.ctl.on_output

    def on_frame(direction, text):
        if prev_frame is not None:
            prev_frame(direction, text)
        if text is None:  # sent in pieces (rpc.py): there was no memory for its text
            return
        if "Password" in text:  # GetVariables/SetVariables of BasicAuthPassword: never logged
            text = _redacted(text)
        if log.level <= log.DEBUG:
            log.debug("frame", "%s %s" % ("CS>>CSMS" if direction == "out" else "CSMS>>CS", text))
        if f is not None:
            f.write('{"ms": %d, "dir": "%s", "frame": %s}\n'
                    % (_wall_ms(), "in" if direction == "in" else "out", json.dumps(text)))
            f.flush()

    def on_output(k, state, lim, adv, relay, avail):
        if f is not None:
            f.write('{"ms": %d, "evse": %d, "limit": %d.%d, "amps": %d.%d, "state": "%s", '
                    '"relay": %s}\n' % (_wall_ms(), k, lim // 10, lim % 10, adv // 10, adv % 10,
                                       state, "true" if relay else "false"))
            f.flush()
        log.debug("control", "EVSE %d: limit %d.%d A, offered %d.%d A, pilot %s, relay %s%s" % (
            k, lim // 10, lim % 10, adv // 10, adv % 10, state, "closed" if relay else "open",
            "" if avail else ", unavailable"))
        if prev_output is not None:
            prev_output(k, state, lim, adv, relay, avail)

    st.agent.on_frame = on_frame
    st.ctl.on_output = on_output


def _log_time(kind):
    """Prefix every log line with the host's UTC time ("wall", HH:MM:SS.mmm), the
    seconds since start ("uptime") or nothing ("none": tools/run_demo stamps them)."""
    if kind == "none":
        return
    t0 = time.ticks_ms()

    def wall():
        ms = _wall_ms()
        s = ms // 1000
        return "%02d:%02d:%02d.%03d" % (s // 3600 % 24, s // 60 % 60, s % 60, ms % 1000)

    def uptime():
        d = time.ticks_diff(time.ticks_ms(), t0)
        return "%4d.%03ds" % (d // 1000, d % 1000)

    log.stamp = uptime if kind == "uptime" else wall


def main():
    try:
        cfg = json.loads(os.getenv("CHARGEPILOT_AGENT") or "")
    except ValueError:
        print("agent_main: CHARGEPILOT_AGENT must hold the JSON config (use tools/agent)")
        return 2
    if cfg.get("log_level") == "debug":
        log.level = log.DEBUG
    _log_time(cfg.get("log_time") or "wall")
    try:
        st = build(cfg)
    except KeyboardInterrupt:
        return 0
    except OSError as e:  # MicroPython's str(OSError) is only the errno: say what and where
        log.error(_TAG, "cannot start: state dir %s: %s" % (cfg.get("state"), _os_error(e)))
        return 2
    except Exception as e:
        log.error(_TAG, "cannot start: %s" % e)
        return 2
    _event_log(st, cfg.get("frame_log"))
    log.info(_TAG, "chargepilot %s on %s; state %s; CSMS %s" % (
        VERSION, sys.implementation.name, cfg["state"], st.agent.url))
    if sys.implementation.name == "micropython":
        import gc

        gc.collect()
        gc.threshold(_GC_THRESHOLD)
        log.info(_TAG, "heap after start-up: %d bytes used, %d free" % (
            gc.mem_alloc(), gc.mem_free()))
    try:
        asyncio.run(_run(st, cfg))
    except KeyboardInterrupt:  # MicroPython: SIGINT surfaces here
        log.info(_TAG, "interrupted; closing the connection")
        try:
            asyncio.new_event_loop()
            asyncio.run(_shutdown(st))
        except BaseException as e:
            log.warn(_TAG, "shutdown: %s" % e)
    if st.reset_requested:  # Reset (reset.py): the launcher starts the station again
        from chargepilot.ocpp import reset

        log.info(_TAG, "exit for a reset")
        return reset.EXIT_RESET
    log.info(_TAG, "exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
