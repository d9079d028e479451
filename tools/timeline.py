"""The picture of a run: one self-contained HTML page (inline SVG, no network).

Reads the two logs a `tools/agent` run writes:

* --pilot-log: one JSON line per output change of the (simulated) board,
  {"t": RFC 3339 or null, "evse", "amps", "duty", "state", "relay", "duty_bp"};
* --frame-log: one JSON line per OCPP frame, {"ms", "dir": "in"|"out", "frame"},
  and per change of the limit the control loop applies,
  {"ms", "evse", "limit", "amps", "state", "relay"} (ms: wall time since 1970).

and draws, per EVSE over one time axis (seconds since the first record): the
limit in force (composite schedule, 0 while the loop holds the EVSE), the
current offered on the pilot, the relay, the EV's pilot state (A-F), and every
OCPP message as a marker (hover for the action and payload; the full list is
under the chart). Used by `make run` (tools/run_demo.py) and `tools/timeline`.

The colours are fixed (COLOURS): host_tests/test_timeline_page.py renders the
page in a headless browser and counts the pixels of each series.
"""

import html
import json

# Solid colours, drawn without anti-aliasing (shape-rendering="crispEdges") so
# a screenshot holds them exactly.
COLOURS = {
    "limit": "#d62728",      # the limit in force
    "offered": "#1f77b4",    # the current offered on the pilot
    "relay": "#2ca02c",      # relay closed
    "pause": "#c7c7c7",      # pilot at steady +12 V (paused)
    "msg_out": "#9467bd",    # station -> CSMS
    "msg_in": "#8c564b",     # CSMS -> station
}
STATE_COLOURS = {"A": "#e0e0e0", "B": "#ffdd57", "C": "#ff7f0e", "D": "#ff9896",
                 "E": "#000000", "F": "#7f0000"}
STATE_TEXT = {"A": "A: no EV", "B": "B: EV connected, not charging", "C": "C: charging",
              "D": "D: charging, ventilation", "E": "E: CP short / no diode",
              "F": "F: EVSE or EV fault"}


def _rfc3339_ms(text):
    """ "2026-12-03T07:21:59Z" (or with fraction/offset) -> ms since 1970, None if unreadable."""
    import datetime

    if not isinstance(text, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return int(round(t.timestamp() * 1000))


def _lines(path, problems):
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                problems.append("%s:%d: not JSON, skipped" % (path, n))
                continue
            if not isinstance(rec, dict):
                problems.append("%s:%d: not a JSON object, skipped" % (path, n))
                continue
            out.append((n, rec))
    return out


class Run:
    """Everything the page shows, on one time base (ms since 1970)."""

    def __init__(self):
        self.outputs = {}   # evse -> [(ms, amps, duty, state, relay)]
        self.limits = {}    # evse -> [(ms, limit A)]
        self.frames = []    # (ms, dir, action, kind, text)
        self.loop_outputs = {}  # evse -> [[ms, amps, None, state, relay]] (frame log)
        self.problems = []

    def add_pilot_log(self, path):
        undated = []
        for n, r in _lines(path, self.problems):
            try:
                evse = int(r["evse"])
                row = [_rfc3339_ms(r.get("t")), float(r["amps"]), float(r.get("duty", 0)),
                       str(r.get("state", "?")), bool(r.get("relay"))]
            except (KeyError, TypeError, ValueError):
                self.problems.append("%s:%d: no evse/amps, skipped" % (path, n))
                continue
            if row[0] is None:
                undated.append((evse, row))  # before the station's clock was set
            else:
                self.outputs.setdefault(evse, []).append(row)
        for evse, row in undated:
            self.outputs.setdefault(evse, []).insert(0, row)
        self._undated = bool(undated)

    def add_frame_log(self, path):
        opened = {}
        own_outputs = {}
        for n, r in _lines(path, self.problems):
            ms = r.get("ms")
            if type(ms) is not int:
                self.problems.append("%s:%d: no \"ms\", skipped" % (path, n))
                continue
            if "frame" in r:
                text = r["frame"]
                action, kind = _classify(text, opened)
                self.frames.append((ms, r.get("dir"), action, kind, text))
            elif "evse" in r and "limit" in r:
                try:
                    evse = int(r["evse"])
                    self.limits.setdefault(evse, []).append((ms, float(r["limit"])))
                    if "amps" in r and "state" in r:
                        own_outputs.setdefault(evse, []).append(
                            [ms, float(r["amps"]), None, str(r["state"]), bool(r.get("relay"))])
                except (KeyError, TypeError, ValueError):
                    self.problems.append("%s:%d: bad limit record, skipped" % (path, n))
        self.loop_outputs = own_outputs

    def finish(self):
        """Give undated pilot records the first known time; sort; the time window."""
        for evse, rows in self.loop_outputs.items():
            if evse not in self.outputs:  # no pilot log for this EVSE: the loop's view
                self.outputs[evse] = rows
            else:
                _snap(self.outputs[evse], rows)
        known = [row[0] for rows in self.outputs.values() for row in rows if row[0] is not None]
        known += [ms for rows in self.limits.values() for ms, _ in rows]
        known += [f[0] for f in self.frames]
        self.t0 = min(known) if known else 0
        self.t1 = max(known) if known else 0
        for rows in self.outputs.values():
            for row in rows:
                if row[0] is None:
                    row[0] = self.t0
            rows.sort(key=lambda r: r[0])
        for rows in self.limits.values():
            rows.sort()
        self.frames.sort(key=lambda f: f[0])
        if self.t1 - self.t0 < 1000:
            self.t1 = self.t0 + 1000


def _snap(pilot_rows, loop_rows):
    """The pilot log has whole seconds of the station's clock; the frame log has the
    host's ms. Move each pilot record to the ms of the loop record that reports the
    same output (same current and relay) in [t - 1 s, t + 2 s), in order, so both
    logs share one time base. A record without a match (the loop reports once per
    pass, the board every single change) keeps its time, but never goes before the
    record ahead of it."""
    j = 0
    matched = []
    for row in pilot_rows:
        hit = False
        if row[0] is not None:
            for k in range(j, len(loop_rows)):
                ms, amps, _, _, relay = loop_rows[k]
                if ms >= row[0] + 2000:
                    break
                if ms >= row[0] - 1000 and amps == row[1] and relay == row[4]:
                    row[0] = ms
                    j = k + 1
                    hit = True
                    break
        matched.append(hit)
    # an unmatched change of the same pass (pilot first, then the relay): the time of
    # the matched record right after it
    nxt = None
    for i in range(len(pilot_rows) - 1, -1, -1):
        row = pilot_rows[i]
        if matched[i]:
            nxt = row[0]
        elif row[0] is not None and nxt is not None and 0 <= nxt - row[0] < 2000:
            row[0] = nxt
    prev = None
    for row in pilot_rows:
        if row[0] is None:
            continue
        if prev is not None and row[0] < prev:
            row[0] = prev
        prev = row[0]


def _classify(text, opened):
    """(action, "CALL"|"RESULT"|"ERROR"|"?") of an OCPP-J frame."""
    try:
        msg = json.loads(text)
    except (TypeError, ValueError):
        return None, "?"
    if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
        return None, "?"
    if msg[0] == 2 and isinstance(msg[2], str):
        opened[msg[1]] = msg[2]
        return msg[2], "CALL"
    if msg[0] in (3, 4):
        return opened.pop(msg[1], None), "RESULT" if msg[0] == 3 else "ERROR"
    return None, "?"


# ---------------------------------------------------------------- drawing

_W = 1100          # svg width
_L, _R = 70, 20    # plot margins
_AMPS_H = 220      # current panel height
_BAND_H = 26       # relay / pilot-state band height
_MSG_H = 44        # message marker lane


def _x(run, ms):
    return _L + (ms - run.t0) * (_W - _L - _R) / float(run.t1 - run.t0)


def _steps(rows, t1):
    """[(ms, value)] -> [(start, end, value)] held until the next change (the last to t1)."""
    out = []
    for i, (ms, v) in enumerate(rows):
        end = rows[i + 1][0] if i + 1 < len(rows) else t1
        out.append((ms, max(end, ms), v))
    return out


def _tick_step(seconds):
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if seconds / s <= 12:
            return s
    return 7200


def _fmt_a(v):
    return ("%.1f" % v).rstrip("0").rstrip(".")


def _evse_svg(run, evse):
    outs = run.outputs.get(evse, [])
    lims = run.limits.get(evse, [])
    amax = 6.0
    for r in outs:
        amax = max(amax, r[1])
    for _, v in lims:
        amax = max(amax, v)
    amax = (int(amax) // 8 + 1) * 8
    top = 10
    base = top + _AMPS_H
    relay_y = base + 30
    state_y = relay_y + _BAND_H + 8
    msg_y = state_y + _BAND_H + 8
    axis_y = msg_y + _MSG_H + 4
    height = axis_y + 34
    c = COLOURS
    p = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'role="img" aria-label="EVSE %d over time" shape-rendering="crispEdges" '
         'font-family="sans-serif" font-size="12">' % (_W, height, _W, height, evse)]

    def y(a):
        return base - a * _AMPS_H / float(amax)

    # grid and the ampere axis
    step_a = 4 if amax <= 32 else 8 if amax <= 64 else 16
    a = 0
    while a <= amax:
        p.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eeeeee"/>' % (_L, _W - _R, y(a), y(a)))
        p.append('<text x="%d" y="%.1f" text-anchor="end" fill="#444">%d A</text>' % (_L - 6, y(a) + 4, a))
        a += step_a
    span_s = (run.t1 - run.t0) / 1000.0
    ts = _tick_step(span_s)
    s = 0
    while s <= span_s + 1e-9:
        xx = _x(run, run.t0 + s * 1000)
        p.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eeeeee"/>' % (xx, xx, top, axis_y))
        p.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#444">%g s</text>' % (xx, axis_y + 16, s))
        s += ts
    # paused spans (offered 0 with the pilot at +12 V while an EV is connected)
    out_steps = _steps([(r[0], r) for r in outs], run.t1)
    pauses = []
    for t_a, t_b, r in out_steps:
        if r[1] == 0 and r[3] in ("B", "C", "D") and (r[2] is None or r[2] >= 100):
            if pauses and pauses[-1][1] == t_a:
                pauses[-1][1] = t_b  # one pause, even if the relay opens within it
            else:
                pauses.append([t_a, t_b])
    for t_a, t_b in pauses:
        if True:
            x0, x1 = _x(run, t_a), _x(run, t_b)
            p.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.5">'
                     '<title>paused (+12 V): %s</title></rect>'
                     % (x0, top, max(x1 - x0, 1), _AMPS_H, c["pause"], _span_text(run, t_a, t_b)))
            if x1 - x0 > 80:
                p.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">paused (+12 V)</text>'
                         % ((x0 + x1) / 2, top + 16))
    # offered current: filled steps
    for t_a, t_b, r in out_steps:
        x0, x1 = _x(run, t_a), _x(run, t_b)
        if r[1] > 0:
            p.append('<rect class="offered" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" '
                     'fill-opacity="0.35"/>' % (x0, y(r[1]), max(x1 - x0, 1), base - y(r[1]), c["offered"]))
    p.append(_step_path([(r[0], r[1]) for r in outs], run, y, c["offered"], 3, "offered"))
    # the limit in force
    p.append(_step_path(lims, run, y, c["limit"], 3, "limit", dash="8 4"))
    for t_a, t_b, v in _steps(lims, run.t1):
        x0, x1 = _x(run, t_a), _x(run, t_b)
        p.append('<rect x="%.1f" y="%.1f" width="%.1f" height="8" fill-opacity="0"><title>limit %s A: %s'
                 '</title></rect>' % (x0, y(v) - 4, max(x1 - x0, 1), _fmt_a(v), _span_text(run, t_a, t_b)))
    p.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#444"/>' % (_L, _W - _R, base, base))
    # relay band
    p.append('<text x="%d" y="%d" text-anchor="end" fill="#444">relay</text>' % (_L - 6, relay_y + 17))
    p.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#f4f4f4"/>' % (_L, relay_y, _W - _L - _R, _BAND_H))
    for t_a, t_b, closed in _runs(out_steps, 4):
        if closed:
            x0, x1 = _x(run, t_a), _x(run, t_b)
            p.append('<rect class="relay" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s">'
                     '<title>relay closed: %s</title></rect>'
                     % (x0, relay_y, max(x1 - x0, 1), _BAND_H, c["relay"], _span_text(run, t_a, t_b)))
    # pilot state band
    p.append('<text x="%d" y="%d" text-anchor="end" fill="#444">EV pilot</text>' % (_L - 6, state_y + 17))
    for t_a, t_b, st in _runs(out_steps, 3):
        x0, x1 = _x(run, t_a), _x(run, t_b)
        p.append('<rect class="state" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s">'
                 '<title>pilot state %s: %s</title></rect>'
                 % (x0, state_y, max(x1 - x0, 1), _BAND_H, STATE_COLOURS.get(st, "#bbbbbb"),
                    html.escape(STATE_TEXT.get(st, st)), _span_text(run, t_a, t_b)))
        if x1 - x0 > 14:
            p.append('<text x="%.1f" y="%d" fill="%s">%s</text>' % (
                x0 + 4, state_y + 17, "#fff" if st in ("E", "F") else "#222", html.escape(st)))
    # OCPP messages
    p.append('<text x="%d" y="%d" text-anchor="end" fill="#444">OCPP</text>' % (_L - 6, msg_y + 26))
    p.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#cccccc"/>' % (_L, _W - _R, msg_y + _MSG_H // 2, msg_y + _MSG_H // 2))
    for i, (ms, d, action, kind, text) in enumerate(run.frames):
        if not _frame_for(evse, text, run):
            continue
        xx = _x(run, ms)
        out = d == "out"
        yy = msg_y + (4 if out else _MSG_H // 2 + 4)
        colour = c["msg_out"] if out else c["msg_in"]
        label = "%s %s%s" % ("CS>>CSMS" if out else "CSMS>>CS", action or "?",
                             "" if kind == "CALL" else "." + kind.lower())
        p.append('<a href="#m%d"><rect class="msg" x="%.1f" y="%d" width="6" height="%d" fill="%s">'
                 '<title>%s  +%.3f s\n%s</title></rect></a>'
                 % (i, xx - 3, yy, _MSG_H // 2 - 8, colour, html.escape(label), (ms - run.t0) / 1000.0,
                    html.escape(_short(text, 600))))
    # legend
    lx = _L
    ly = height - 6
    for name, colour in (("limit in force", c["limit"]), ("offered on the pilot", c["offered"]),
                         ("relay closed", c["relay"]), ("paused (+12 V)", c["pause"]),
                         ("CS>>CSMS", c["msg_out"]), ("CSMS>>CS", c["msg_in"])):
        p.append('<rect x="%d" y="%d" width="14" height="10" fill="%s"/><text x="%d" y="%d" fill="#222">%s</text>'
                 % (lx, ly - 10, colour, lx + 18, ly, html.escape(name)))
        lx += 30 + 7 * len(name)
    p.append("</svg>")
    return "\n".join(p)


def _runs(steps, field):
    """Consecutive steps with the same value of row[field] joined: [(start, end, value)]."""
    out = []
    for t_a, t_b, r in steps:
        if out and out[-1][2] == r[field] and out[-1][1] == t_a:
            out[-1][1] = t_b
        else:
            out.append([t_a, t_b, r[field]])
    return out


def _frame_for(evse, text, run):
    """A frame belongs to every EVSE's lane unless it names another evseId."""
    if len(run.outputs) <= 1:
        return True
    try:
        msg = json.loads(text)
        payload = msg[3] if msg[0] == 2 else msg[2]
        other = payload.get("evseId", payload.get("evse", {}).get("id") if isinstance(payload.get("evse"), dict) else None)
    except Exception:
        return True
    return other in (None, 0, evse)


def _step_path(rows, run, y, colour, width, cls, dash=None):
    if not rows:
        return ""
    d = []
    for i, (t_a, t_b, v) in enumerate(_steps(rows, run.t1)):
        x0, x1 = _x(run, t_a), _x(run, t_b)
        d.append("%s%.1f %.1f H%.1f" % ("M" if i == 0 else "L", x0, y(v), x1))
    return ('<path class="%s" d="%s" fill="none" stroke="%s" stroke-width="%d"%s/>'
            % (cls, " ".join(d), colour, width, ' stroke-dasharray="%s"' % dash if dash else ""))


def _span_text(run, t_a, t_b):
    return "+%.1f s to +%.1f s" % ((t_a - run.t0) / 1000.0, (t_b - run.t0) / 1000.0)


def _short(text, n):
    return text if len(text) <= n else text[: n - 3] + "..."


def _utc(ms):
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def render(run, title="chargepilot run"):
    """The whole page as one string (no external resource)."""
    run.finish()
    evses = sorted(set(run.outputs) | set(run.limits))
    p = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         "<title>%s</title>" % html.escape(title),
         "<style>body{font-family:sans-serif;margin:16px;color:#222}"
         "table{border-collapse:collapse;font-size:12px}td,th{padding:2px 8px;text-align:left;"
         "vertical-align:top;border-bottom:1px solid #eee}td{white-space:nowrap}td.p{font-family:monospace;"
         "white-space:pre-wrap;word-break:break-all}tr:target{background:#fff3c4}"
         ".out{color:%s}.in{color:%s}</style></head><body>" % (COLOURS["msg_out"], COLOURS["msg_in"]),
         "<h1>%s</h1>" % html.escape(title)]
    if evses or run.frames:
        p.append("<p>From %s, %.1f s. Time axis: seconds since the first record. "
                 "Hover a marker or a band for details; the messages are listed below.</p>"
                 % (_utc(run.t0), (run.t1 - run.t0) / 1000.0))
    else:
        p.append("<p>No records in the logs.</p>")
    for evse in evses:
        p.append('<h2>EVSE %d</h2>' % evse)
        p.append(_evse_svg(run, evse))
    if run.problems:
        p.append("<h2>Skipped lines</h2><ul>%s</ul>" % "".join(
            "<li>%s</li>" % html.escape(x) for x in run.problems[:50]))
    p.append("<h2>OCPP messages (%d)</h2>" % len(run.frames))
    p.append("<table><tr><th>time</th><th></th><th>message</th><th>frame</th></tr>")
    for i, (ms, d, action, kind, text) in enumerate(run.frames):
        out = d == "out"
        p.append('<tr id="m%d"><td>+%.3f s</td><td class="%s">%s</td><td>%s%s</td><td class="p">%s</td></tr>'
                 % (i, (ms - run.t0) / 1000.0, "out" if out else "in",
                    "CS&gt;&gt;CSMS" if out else "CSMS&gt;&gt;CS", html.escape(action or "?"),
                    "" if kind == "CALL" else "." + kind.lower(), html.escape(text)))
    p.append("</table></body></html>")
    return "\n".join(p) + "\n"


def write_page(out_path, pilot_log=None, frame_log=None, title="chargepilot run"):
    """Read the logs, write the page; returns the Run (its .problems say what was skipped)."""
    run = Run()
    if pilot_log:
        run.add_pilot_log(pilot_log)
    if frame_log:
        run.add_frame_log(frame_log)
    page = render(run, title)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(page)
    return run
