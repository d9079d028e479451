"""Host entry point of the agent; runs on the MicroPython unix port and on CPython.

`tools/agent` (the launcher) parses the command line and passes the result as
JSON in the environment variable CHARGEPILOT_AGENT (not argv: the password
would show in `ps`). Keys: url, id, state, password, cafile, set (variable key
-> text, used as defaults: values persisted in the state dir win), log_level,
model, vendor, serial, firmware.

The state dir is the station's flash; starting again with the same dir is a
reboot. SIGINT/SIGTERM: close the connection cleanly, exit 0.
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

from chargepilot import VERSION, agent, app, clock, log, variables

_TAG = "main"


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


def _ssl_context(cafile):
    with open(cafile, "rb") as f:
        return agent.ssl_context(f.read())


def _board(cfg, clk):
    """The simulated host board: EVSEs, rating, pilot log, an EV plugged in."""
    import board

    kw = {"now_fn": clk.now, "evse_count": cfg.get("evses") or 1}
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
    fixed["SecurityProfile"] = 2 if url.startswith("wss:") else (1 if cfg.get("password") else 0)
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
    dm = variables.DeviceModel(state, fixed=fixed)
    ctx = _ssl_context(cfg["cafile"]) if cfg.get("cafile") else None
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


async def _run(st, cfg):
    if sys.implementation.name != "micropython":
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, st.stop)
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


def main():
    try:
        cfg = json.loads(os.getenv("CHARGEPILOT_AGENT") or "")
    except ValueError:
        print("agent_main: CHARGEPILOT_AGENT must hold the JSON config (use tools/agent)")
        return 2
    if cfg.get("log_level") == "debug":
        log.level = log.DEBUG
    try:
        st = build(cfg)
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        log.error(_TAG, "cannot start: %s" % e)
        return 2
    log.info(_TAG, "chargepilot %s on %s; state %s; CSMS %s" % (
        VERSION, sys.implementation.name, cfg["state"], st.agent.url))
    if sys.implementation.name == "micropython":
        import gc

        gc.collect()
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
    log.info(_TAG, "exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
