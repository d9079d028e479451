"""One applicable profile in a composite window (a "slot"): its set-up and its changes.

composite.py groups the slots into layers, stacks the layers and sweeps the window
from one change to the next; the job here is the slot itself: turning one profile's
instants into window offsets (setup) and then yielding its changes in order on demand
(advance), a small state machine per slot. Its state is a table of module-level lists,
one entry per slot, grown to the largest call (room) and reused, so a call allocates
nothing once they are grown. The sweep reads the table in place and inlines advance's
common case (the next period of the same occurrence). Not re-entrant, as composite.

Time: instants are ints of seconds since 2020-01-01Z and may be anything rfc3339 gives
(years 0001..9999: big ints on a 32-bit board). They meet the window [t0, t0 + w) once
per profile per call, in setup: there every instant becomes a window offset clamped
to [0, w] (a recurrence becomes its phase), so the sweep only ever handles small ints
(offsets < 2**29; composite refuses a longer window).
"""

from micropython import const

from chargepilot.smart.profile import RECURRENCE_SECONDS, RECURRING, RELATIVE

# "no further change" for a slot; larger than every window offset.
_NONE = const(0x3FFFFFFF)

# Per-slot state (lists: an entry may hold a big int in the rare set-up case of
# a schedule that began decades before the window; every other entry is small).
# composite reads the public ones (never rebound: room only appends).
sper = []    # slot -> its periods array (set by composite)
nx = []      # slot -> offset of its next change, _NONE if none
nv = []      # slot -> period index (or -1) from that change on
cur = []     # slot -> period index in force now, or -1 (set by composite's sweep)
socc = []    # slot -> offset of the current occurrence's start
send = []    # slot -> offset where the current occurrence stops (<= its hi)
sj = []      # slot -> next period index to emit; nper: the end; nper+1: done
_hi = []     # slot -> offset where the profile stops being valid (<= window end)
_rp = []     # slot -> recurrence period in s (0: one occurrence)
_span = []   # slot -> length of one occurrence (-1: open-ended)


def room(n):
    """Grow the per-slot lists to n entries (kept for later calls)."""
    if len(nx) >= n:
        return  # the common case: no tuple built, nothing allocated
    while len(sper) < n:
        sper.append(None)
    for lst in (nx, nv, cur, socc, send, sj, _hi, _rp, _span):
        while len(lst) < n:
            lst.append(0)


def _start(s, occ, lo):
    """Slot s enters the occurrence starting at offset occ (window part from lo):
    its first change is at max(occ, lo). Moves on to later occurrences while an
    occurrence has nothing in the window; _NONE when none is left."""
    hi = _hi[s]
    rp = _rp[s]
    span = _span[s]
    per = sper[s]
    nper = len(per) // 3
    while occ < hi:
        a = occ if occ > lo else lo
        if span < 0:
            end = hi
        else:
            end = occ + span
            if end > hi:
                end = hi
        if a < end:
            rel = a - occ
            i = -1
            while i + 1 < nper and per[3 * (i + 1)] <= rel:
                i += 1
            socc[s] = occ
            send[s] = end
            nx[s] = a
            nv[s] = i
            sj[s] = i + 1
            return
        if not rp:
            break
        occ += rp
    nx[s] = _NONE


def advance(s, now, w):
    """Slot s's change at `now` was taken: find its next one (at or after now;
    w is the window's length)."""
    per = sper[s]
    nper = len(per) // 3
    j = sj[s]
    if j < nper:
        t = socc[s] + per[3 * j]
        end = send[s]
        if t < end:
            nx[s] = t if t > now else now  # out-of-order periods: no going back
            nv[s] = j
            sj[s] = j + 1
            return
        j = nper
    if j == nper:
        sj[s] = nper + 1
        end = send[s]
        if end < w:
            nx[s] = end if end > now else now
            nv[s] = -1
            return
    rp = _rp[s]
    if rp:
        occ = socc[s] + rp
        _start(s, occ, occ)
    else:
        nx[s] = _NONE


def setup(s, p, t0, t1, anchor, w):
    """Window offsets of slot s's profile p over [t0, t1) (w = t1 - t0, a small int;
    anchor: the start of one without startSchedule); its first change (or _NONE)."""
    nx[s] = _NONE
    cur[s] = -1
    vf = p.valid_from
    vt = p.valid_to
    if vf is None or vf <= t0:
        lo = 0
    elif vf >= t1:
        return
    else:
        lo = vf - t0
    if vt is None or vt >= t1:
        hi = w
    elif vt <= t0:
        return
    else:
        hi = vt - t0
    if lo >= hi:
        return
    _hi[s] = hi
    dur = p.duration
    if p.kind == RECURRING and p.recurrence:
        rp = RECURRENCE_SECONDS[p.recurrence]
        span = rp if dur is None or dur > rp else dur
        if span <= 0:
            return
        _rp[s] = rp
        _span[s] = span
        # occurrences at offsets r + k*rp (also before startSchedule)
        if p.start is None:
            r = (anchor - t0) % rp
        elif p.rphase is None:
            r = (p.start - t0) % rp
        else:
            r = (p.rphase - t0) % rp
        occ = r + ((lo - r) // rp) * rp
        _start(s, occ, lo)
        return
    _rp[s] = 0
    if p.kind == RELATIVE or p.start is None:
        base = anchor
        stop = None if dur is None else base + dur
        last = None
    else:
        base = p.start
        stop = p.stop
        last = p.last_start
        if last is None:
            # a start near 2020 (profile.parse derives these only for far ones)
            if dur is not None:
                stop = base + dur
            per = sper[s]
            last = base + per[len(per) - 3]
    if base >= t1 or (dur is not None and dur <= 0) or (stop is not None and stop <= t0):
        return
    if base >= t0:
        # starts in the window: a stop inside it is < w away, else open-ended here
        _span[s] = -1 if stop is None or stop >= t1 else stop - base
        _start(s, base - t0, lo)
        return
    # began before the window: the period in force at lo and the later ones
    per = sper[s]
    nper = len(per) // 3
    if last is not None and last <= t0 + lo:
        i = nper - 1            # every period has begun (no big-int arithmetic)
        occ = 0
    else:
        rel = t0 - base + lo
        i = -1
        while i + 1 < nper and per[3 * (i + 1)] <= rel:
            i += 1
        occ = lo - rel          # base - t0
    socc[s] = occ if i + 1 < nper else 0
    send[s] = hi if stop is None or stop >= t1 else _min(stop - t0, hi)
    _span[s] = -1
    nx[s] = lo
    nv[s] = i
    sj[s] = i + 1


def _min(a, b):
    return a if a < b else b
