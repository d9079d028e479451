#!/usr/bin/env python3
"""`make run`: the bundled CSMS and the agent (simulated host board) on loopback.

Starts the CSMS on 127.0.0.1 (a free port) and the agent on the MicroPython
unix port (or CPython with --runtime cpython) with its flash in ./state/demo,
and prints one timeline: the CSMS's view of every frame (boot, status,
heartbeats, each CSMS CALL and its answer) with the agent's own log lines
("agent |") in between. Ctrl-C stops both cleanly (exit 0).

    tools/run_demo.py [--runtime micropython|cpython] [--duration SECONDS]
                      [--heartbeat N] [--scenario demo] [--state DIR]
"""

import argparse
import asyncio
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import venvcheck  # noqa: E402

venvcheck.ensure("ocpp", "websockets")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import csms_server  # noqa: E402


def parse(argv):
    ap = argparse.ArgumentParser(prog="run_demo", description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--heartbeat", type=int, default=10, help="heartbeat interval the CSMS gives")
    ap.add_argument("--scenario", default="demo", choices=sorted(csms_server.SCENARIOS))
    ap.add_argument("--state", default=os.path.join(ROOT, "state", "demo"))
    ap.add_argument("--id", default="DEMO-1")
    ap.add_argument("--step", type=int, default=10,
                    help="seconds between the demo profile's steps")
    args = ap.parse_args(argv)
    if args.heartbeat < 1:
        ap.error("--heartbeat must be >= 1")
    return args


async def _pump(stream, out):
    while True:
        line = await stream.readline()
        if not line:
            return
        out.write("           agent | " + line.decode("utf-8", "replace").rstrip() + "\n")
        out.flush()


def pilot_line(text):
    """One --pilot-log record as a timeline line."""
    try:
        r = json.loads(text)
    except ValueError:
        return "           pilot | (unreadable) " + text.strip()
    return "%s pilot | EVSE %s: %s A offered, duty %s %%, state %s, relay %s" % (
        (r.get("t") or "?")[11:19], r.get("evse"), r.get("amps"), r.get("duty"),
        r.get("state"), "closed" if r.get("relay") else "open")


async def _tail_pilot(path, out):
    """Show the simulated board's output changes in the timeline as they happen."""
    pos = 0
    while True:
        with open(path) as f:
            f.seek(pos)
            chunk = f.read()
        done = chunk.rfind("\n") + 1
        for line in chunk[:done].splitlines():
            out.write(pilot_line(line) + "\n")
        out.flush()
        pos += len(chunk[:done].encode())
        await asyncio.sleep(0.2)


async def demo(args, out=sys.stdout):
    csms = csms_server.Csms([("Accepted", args.heartbeat)], out=out,
                            scenario_name=args.scenario)
    csms.scenario_step = args.step
    await csms.start("127.0.0.1", 0)
    url = "ws://127.0.0.1:%d/ocpp" % csms.port
    os.makedirs(args.state, exist_ok=True)
    pilot_log = os.path.join(args.state, "pilot.log")
    open(pilot_log, "w").close()
    cmd = [sys.executable, os.path.join(ROOT, "tools", "agent"), "--csms", url, "--id", args.id,
           "--state", args.state, "--runtime", args.runtime,
           "--set", "RetryBackOffWaitMinimum=1", "--set", "RetryBackOffRandomRange=1",
           "--simulate-ev", "1", "--pilot-log", pilot_log]
    # Own session: Ctrl-C reaches only us; we pass exactly one SIGINT on.
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                start_new_session=True, cwd=ROOT)
    pumps = [asyncio.ensure_future(_pump(proc.stderr, out)),
             asyncio.ensure_future(_pump(proc.stdout, out))]
    tail = asyncio.ensure_future(_tail_pilot(pilot_log, out))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([waiter, stopper], timeout=args.duration,
                                 return_when=asyncio.FIRST_COMPLETED)
    rc = None
    if waiter in done:
        rc = waiter.result()
        out.write("agent exited early with code %s\n" % rc)
    else:
        out.write("-- stopping the agent (SIGINT) --\n")
        out.flush()
        proc.send_signal(signal.SIGINT)
        try:
            rc = await asyncio.wait_for(waiter, 15)
        except asyncio.TimeoutError:
            proc.kill()
            rc = await waiter
    stopper.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    await asyncio.sleep(0.3)
    tail.cancel()
    await csms.stop()
    out.write("-- demo over: agent exit code %s --\n" % rc)
    out.flush()
    return 0 if rc == 0 else 1


def main(argv=None):
    args = parse(argv)
    return asyncio.run(demo(args))


if __name__ == "__main__":
    sys.exit(main())
