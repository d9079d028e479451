"""The timeline page (tools/timeline.py, `make run`, tools/timeline), seen in a real
headless browser (Debian's chromium): the series must be drawn, and drawn where
the logs say.

The check cannot pass on an empty page: the screenshot is decoded (PNG, zlib,
no extra package) and the pixels of each series' own colour are counted; the
page of empty logs is shot the same way and must have none of them. The relay
band's width is compared with a hand computation from the logs written here
(relay closed for 20 of the 40 s shown -> half the plot width).
"""

import calendar
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import timeline  # noqa: E402

T0_MS = calendar.timegm((2026, 12, 3, 0, 0, 0)) * 1000  # 2026-12-03T00:00:00Z
T0_TEXT = "2026-12-03T00:00:%02dZ"


def chromium():
    """Debian's chromium; installed here when missing and we may (root, as in CI)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=600)
        exe = shutil.which("chromium")
        if exe:
            return exe
    pytest.fail("this test needs Debian's chromium: run `apt-get install -y chromium` (as root)")


def screenshot(page, png, tmp_path, height=700):
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--user-data-dir=%s" % (tmp_path / "chromium-profile"),
           "--window-size=1200,%d" % height, "--screenshot=%s" % png, "file://%s" % page]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert os.path.exists(png), "chromium wrote no screenshot: %s" % r.stdout.decode()[-2000:]
    return decode_png(png)


def decode_png(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB/RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 1:
                line[i] = (line[i] + a) & 255
            elif ft == 2:
                line[i] = (line[i] + b) & 255
            elif ft == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, [[tuple(r[x * bpp:x * bpp + 3]) for x in range(w)] for r in rows]


def rgb(hexcol):
    return tuple(int(hexcol[i:i + 2], 16) for i in (1, 3, 5))


def count(img, hexcol):
    want = rgb(hexcol)
    return sum(row.count(want) for row in img[2])


def write_logs(tmp_path):
    """A hand-made 40 s run on EVSE 1: limit 16 A, 10 A from 10 s, 4.5 A (paused)
    from 20 s, 32 A from 30 s; relay closed from 10 s to 30 s; pilot state C."""
    pilot = tmp_path / "pilot.log"
    frames = tmp_path / "frames.log"
    rows = [(0, 16.0, 26.66, "B", False), (10, 10.0, 16.66, "C", True),
            (20, 0.0, 100, "C", True), (30, 32.0, 53.33, "C", False)]
    with open(pilot, "w") as f:
        for s, amps, duty, st, relay in rows:
            f.write(json.dumps({"t": T0_TEXT % s, "evse": 1, "amps": amps, "duty": duty,
                                "state": st, "relay": relay}) + "\n")
    with open(frames, "w") as f:
        for s, lim in ((0, 16.0), (10, 10.0), (20, 4.5), (30, 32.0)):
            f.write(json.dumps({"ms": T0_MS + s * 1000, "evse": 1, "limit": lim}) + "\n")
        f.write(json.dumps({"ms": T0_MS + 5000, "dir": "in", "frame": json.dumps(
            [2, "a1", "SetChargingProfile", {"evseId": 1, "chargingProfile": {}}])}) + "\n")
        f.write(json.dumps({"ms": T0_MS + 5050, "dir": "out", "frame": json.dumps(
            [3, "a1", {"status": "Accepted"}])}) + "\n")
        f.write(json.dumps({"ms": T0_MS + 40000, "dir": "out", "frame": json.dumps(
            [2, "b2", "Heartbeat", {}])}) + "\n")
    return str(pilot), str(frames)


def test_page_draws_every_series_where_the_logs_say(tmp_path):
    pilot, frames = write_logs(tmp_path)
    page = str(tmp_path / "page.html")
    run = timeline.write_page(page, pilot, frames, "test run")
    assert run.problems == []
    text = open(page).read()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and "<script" not in text  # self-contained
    assert "paused (+12 V)" in text and "SetChargingProfile" in text
    img = screenshot(page, str(tmp_path / "page.png"), tmp_path)
    c = timeline.COLOURS
    n = {k: count(img, c[k]) for k in ("limit", "offered", "relay", "msg_out", "msg_in")}
    n["state C"] = count(img, timeline.STATE_COLOURS["C"])
    n["state B"] = count(img, timeline.STATE_COLOURS["B"])
    # Beyond the legend's 14x10 swatch (140 px): the limit and the offered current are
    # 3 px lines across the 1010 px plot (the limit dashed 8/4), the messages 6x14 px
    # markers (2 out, 1 in), the bands 26 px high.
    legend = 140
    least = {"limit": 800, "offered": 800, "relay": 2000, "msg_out": 2 * 6 * 14 * 0.8,
             "msg_in": 6 * 14 * 0.8, "state C": 5000, "state B": 2000}
    for k, v in n.items():
        assert v - legend >= least[k], "series %s hardly drawn: %d pixels (%r)" % (k, v, n)
    # relay closed for 20 s of the 40 s shown: half of the plot width, band 26 px high,
    # plus the legend's 14x10 swatch (hand computation from the layout: 1100 - 70 - 20 px)
    expect = (1100 - 70 - 20) * 20 / 40.0 * 26 + 140
    assert abs(n["relay"] - expect) < 0.03 * expect, (n["relay"], expect)
    # pilot state B for the first 10 s (a quarter), C for the rest
    assert abs(n["state B"] - (1010 / 4.0) * 26) < 0.05 * 1010 / 4.0 * 26 + 200, n["state B"]
    assert n["state C"] > 2.5 * n["state B"]


def test_empty_logs_draw_nothing_so_the_check_can_fail(tmp_path):
    pilot = tmp_path / "pilot.log"
    frames = tmp_path / "frames.log"
    pilot.write_text("")
    frames.write_text("")
    page = str(tmp_path / "empty.html")
    timeline.write_page(page, str(pilot), str(frames))
    assert "No records" in open(page).read()
    img = screenshot(page, str(tmp_path / "empty.png"), tmp_path)
    for k in ("limit", "offered", "relay", "msg_out", "msg_in"):
        assert count(img, timeline.COLOURS[k]) == 0, k


def test_bad_lines_are_named_and_skipped(tmp_path):
    pilot = tmp_path / "pilot.log"
    pilot.write_text('{"t": null, "evse": 1, "amps": 6.0, "state": "C", "relay": true}\n'
                     'not json\n[1, 2]\n{"evse": 1}\n')
    run = timeline.write_page(str(tmp_path / "p.html"), str(pilot), None)
    assert run.problems == ["%s:2: not JSON, skipped" % pilot,
                            "%s:3: not a JSON object, skipped" % pilot,
                            "%s:4: no evse/amps, skipped" % pilot]
    assert "Skipped lines" in open(tmp_path / "p.html").read()


def test_make_run_ends_by_itself_in_a_fresh_state_and_writes_the_page(tmp_path):
    """tools/run_demo.py (what `make run` runs), with a faster step: exit 0 without
    a signal, a stale state dir emptied (no power-loss ending of an old transaction),
    one time base, and a page whose series a browser draws."""
    state = tmp_path / "demo"
    state.mkdir()
    (state / "stale-marker").write_text("from an earlier run")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "run_demo.py"), "--step", "2",
                        "--linger", "1", "--state", str(state)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120, cwd=ROOT)
    out = r.stdout.decode()
    assert r.returncode == 0, out[-3000:]
    assert not (state / "stale-marker").exists()
    assert "PowerLoss" not in out and "ERROR" not in out, out
    assert "scenario demo done" in out and "paused (+12 V)" in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    page = lines[-1].split(": ", 1)[1]
    assert lines[-1].startswith("timeline page") and os.path.isfile(page), lines[-1]
    import re

    stamped = [ln for ln in lines[:-1] if re.match(r"^ *\d+\.\d{3}s ", ln)]
    assert len(stamped) == len(lines) - 1, [ln for ln in lines[:-1] if ln not in stamped]
    img = screenshot(page, str(tmp_path / "demo.png"), tmp_path)
    for k in ("limit", "offered", "relay", "msg_out", "msg_in"):
        assert count(img, timeline.COLOURS[k]) > 140 + 300, k
