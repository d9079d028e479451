#!/usr/bin/env python3
"""`make run`: the bundled CSMS and the agent (simulated host board) on loopback.

Starts the CSMS on 127.0.0.1 (a free port) and the agent on the MicroPython
unix port (or CPython with --runtime cpython) in a fresh state directory
(./state/demo, emptied first: a kept one would be a reboot after a power cut),
plays the scenario and stops by itself a few seconds after it, with exit 0.
It prints one timeline, every line on one time base (seconds since start):
the CSMS's view of every frame, the agent's log lines ("agent |") and the
simulated board's outputs ("pilot |"); then writes one self-contained HTML
page of the run (tools/timeline.py) and prints its path.

    tools/run_demo.py                         # ~50 s, then the page's path
    tools/run_demo.py --step 3                # the same scenario, faster (~25 s)
    tools/run_demo.py --keep-running          # stays up after the scenario (Ctrl-C stops)
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import venvcheck  # noqa: E402

venvcheck.ensure("ocpp", "websockets")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import csms_server  # noqa: E402
import timeline  # noqa: E402


def parse(argv):
    ap = argparse.ArgumentParser(prog="run_demo", description=__doc__.splitlines()[0],
                                 formatter_class=venvcheck.HelpFormatter,
                                 epilog="example: tools/run_demo.py --step 3 --full")
    ap.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                    help="where the agent runs")
    ap.add_argument("--duration", type=float,
                    help="stop after this many seconds at the latest (default: when the "
                    "scenario is done)")
    ap.add_argument("--keep-running", action="store_true",
                    help="do not stop after the scenario (Ctrl-C or --duration stops)")
    ap.add_argument("--linger", type=float, default=3.0,
                    help="seconds to keep running after the scenario, so the last output "
                    "change is seen")
    ap.add_argument("--heartbeat", type=int, default=10, help="heartbeat interval the CSMS gives")
    ap.add_argument("--scenario", default="demo", choices=sorted(csms_server.SCENARIOS))
    ap.add_argument("--state", default=os.path.join(ROOT, "state", "demo"),
                    help="state dir (the station's flash), emptied first")
    ap.add_argument("--keep-state", action="store_true",
                    help="start from the state dir as it is (a reboot) instead of emptying it")
    ap.add_argument("--id", default="DEMO-1", help="station identity")
    ap.add_argument("--step", type=int, default=10,
                    help="seconds between the demo profile's steps")
    ap.add_argument("--full", action="store_true",
                    help="print every frame whole instead of a one-line summary")
    ap.add_argument("--page", metavar="FILE",
                    help="where to write the HTML page (default: STATE/timeline.html)")
    args = ap.parse_args(argv)
    if args.heartbeat < 1:
        ap.error("--heartbeat must be >= 1")
    if args.step < 1:
        ap.error("--step must be >= 1")
    if os.path.exists(args.state) and not os.path.isdir(args.state):
        ap.error("--state %s: exists and is not a directory" % args.state)
    return args


async def _pump(stream, out, stamp):
    while True:
        line = await stream.readline()
        if not line:
            return
        out.write("%s agent | %s\n" % (stamp(), line.decode("utf-8", "replace").rstrip()))
        out.flush()


def pilot_line(text):
    """One --pilot-log record as the text of a timeline line (without the time)."""
    try:
        r = json.loads(text)
    except ValueError:
        return "pilot | (unreadable) " + text.strip()
    amps, duty = r.get("amps"), r.get("duty")
    if amps == 0 and duty == 100:
        what = "paused (+12 V)"
    elif duty == 0:
        what = "pilot at -12 V (fault)"
    else:
        what = "%s A offered (duty %s %%)" % (amps, duty)
    return "pilot | EVSE %s: %s, EV state %s, relay %s" % (
        r.get("evse"), what, r.get("state"), "closed" if r.get("relay") else "open")


async def _tail_pilot(path, out, stamp):
    """Show the simulated board's output changes in the timeline as they happen."""
    pos = 0
    while True:
        with open(path) as f:
            f.seek(pos)
            chunk = f.read()
        done = chunk.rfind("\n") + 1
        for line in chunk[:done].splitlines():
            out.write("%s %s\n" % (stamp(), pilot_line(line)))
        out.flush()
        pos += len(chunk[:done].encode())
        await asyncio.sleep(0.1)


def _fresh_state(path):
    """Empty the demo's state dir: a kept one would make the next run a reboot after a
    power cut (the agent would end the old transaction with PowerLoss)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def _scenario_seconds(args):
    """Roughly how long the scenario plays (for the line that says when the demo ends)."""
    return {"demo": 3 + 4 * args.step, "smart": 2 + 4 * args.step, "variables": 2,
            "none": 0}.get(args.scenario, 0)


async def demo(args, out=sys.stdout):
    if not args.keep_state:
        _fresh_state(args.state)
    os.makedirs(args.state, exist_ok=True)
    csms = csms_server.Csms([("Accepted", args.heartbeat)], out=out,
                            scenario_name=args.scenario)
    csms.scenario_step = args.step
    csms.full = args.full
    stamp = csms._stamp
    await csms.start("127.0.0.1", 0)
    url = "ws://127.0.0.1:%d/ocpp" % csms.port
    pilot_log = os.path.join(args.state, "pilot.log")
    frame_log = os.path.join(args.state, "frames.log")
    open(pilot_log, "w").close()
    open(frame_log, "w").close()
    if args.keep_running:
        csms._say("the demo keeps running after the scenario; Ctrl-C stops it")
    else:
        csms._say("scenario %r: the demo ends by itself about %d s after the station is "
                  "accepted (Ctrl-C stops it earlier; --keep-running keeps it going)"
                  % (args.scenario, _scenario_seconds(args) + args.linger))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "agent"), "--csms", url, "--id", args.id,
           "--state", args.state, "--runtime", args.runtime, "--log-time", "none",
           "--set", "RetryBackOffWaitMinimum=1", "--set", "RetryBackOffRandomRange=1",
           "--simulate-ev", "1", "--pilot-log", pilot_log, "--frame-log", frame_log]
    # Own session: Ctrl-C reaches only us; we pass exactly one SIGINT on.
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                start_new_session=True, cwd=ROOT)
    pumps = [asyncio.ensure_future(_pump(proc.stderr, out, stamp)),
             asyncio.ensure_future(_pump(proc.stdout, out, stamp))]
    tail = asyncio.ensure_future(_tail_pilot(pilot_log, out, stamp))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def scenario_over():
        while args.id not in csms.scenario_results:
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.linger)

    waiter = asyncio.ensure_future(proc.wait())
    stoppers = [asyncio.ensure_future(stop.wait())]
    if not args.keep_running and args.scenario != "none":
        stoppers.append(asyncio.ensure_future(scenario_over()))
    done, _ = await asyncio.wait([waiter] + stoppers, timeout=args.duration,
                                 return_when=asyncio.FIRST_COMPLETED)
    rc = None
    failed = isinstance(csms.scenario_results.get(args.id), Exception)
    if waiter in done:
        rc = waiter.result()
        out.write("%s -- agent exited early with code %s\n" % (stamp(), rc))
        failed = True
    else:
        out.write("%s -- stopping the agent (SIGINT) --\n" % stamp())
        out.flush()
        proc.send_signal(signal.SIGINT)
        try:
            rc = await asyncio.wait_for(waiter, 15)
        except asyncio.TimeoutError:
            proc.kill()
            rc = await waiter
    for s_ in stoppers:
        s_.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    await asyncio.sleep(0.3)
    tail.cancel()
    await csms.stop()
    page = os.path.abspath(args.page or os.path.join(args.state, "timeline.html"))
    timeline.write_page(page, pilot_log, frame_log, "chargepilot demo: %s, scenario %s"
                        % (args.id, args.scenario))
    out.write("%s -- demo over: agent exit code %s%s --\n" % (
        stamp(), rc, ", scenario failed" if failed else ""))
    out.write("timeline page (open it in a browser): %s\n" % page)
    out.flush()
    return 0 if rc == 0 and not failed else 1


def main(argv=None):
    args = parse(argv)
    return asyncio.run(demo(args))


if __name__ == "__main__":
    sys.exit(main())
