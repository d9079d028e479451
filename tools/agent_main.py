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

from chargepilot import VERSION, agent, clock, log, variables

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
    try:
        import board
    except ImportError:
        log.warn(_TAG, "no simulated board module; one EVSE, always Available")
        return None
    try:
        if hasattr(board, "load"):
            return board.load(now_fn=clk.now)
        return board.Board(now_fn=clk.now)
    except Exception as e:
        log.exception(_TAG, "simulated board failed to start; running without it", e)
        return None


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
    return agent.Agent(acfg, dm, clk, _board(cfg, clk), ctx)


async def _run(a):
    if sys.implementation.name != "micropython":
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, a.stop)
    await a.run()


async def _shutdown(a):
    sock = a._ws
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
        a = build(cfg)
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        log.error(_TAG, "cannot start: %s" % e)
        return 2
    log.info(_TAG, "chargepilot %s on %s; state %s; CSMS %s" % (
        VERSION, sys.implementation.name, cfg["state"], a.url))
    if sys.implementation.name == "micropython":
        import gc

        gc.collect()
        log.info(_TAG, "heap after start-up: %d bytes used, %d free" % (
            gc.mem_alloc(), gc.mem_free()))
    try:
        asyncio.run(_run(a))
    except KeyboardInterrupt:  # MicroPython: SIGINT surfaces here
        log.info(_TAG, "interrupted; closing the connection")
        try:
            asyncio.new_event_loop()
            asyncio.run(_shutdown(a))
        except BaseException as e:
            log.warn(_TAG, "shutdown: %s" % e)
    log.info(_TAG, "exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
