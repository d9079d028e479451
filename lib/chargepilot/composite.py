"""Composite schedule (K08) and the limit in force now: pure integer arithmetic.

Semantics (libocpp's, see docs/conformance.md):
* Per layer, the period of the highest stackLevel that has a period at t wins;
  a lower stack shows through wherever the higher one has none.
* Layers of EVSE k: ChargingStationMaxProfile (on 0), External on 0, External
  on k, TxDefault (on 0 and on k, pooled) and TxProfile (bound to the running
  transaction of k). TxProfile replaces TxDefault wherever it has a period;
  the EVSE result is the minimum of the layers that have a period.
* Current and power limits stay apart until the end, then convert to the
  requested unit with supply_voltage and n phases: A = min(A, W // (V*n)),
  W = min(W, A*V*n) (integer floor: rounded towards the safe side). n = the
  lowest numberPhases among contributing periods (absent on AC = 3), else
  default_phases.
* No layer at all: the configured local limit (default_amps/default_watts),
  without numberPhases.
* EVSE 0: each EVSE's result (default-filled, converted) summed, numberPhases
  = the highest among EVSEs, then capped by the station's Max and External.
* Recurring: occurrences every 86400/604800 s from startSchedule, also before
  it; each cut at the next occurrence and at duration. Relative: anchored at
  the EVSE's transaction start, else at `start_t`. validFrom/validTo cut.
* minChargingRate is not used (it never lifts a limit).

One sweep, no per-second sampling: every applicable profile ("slot") emits its
own change points in the window (its periods are already in order) into one
int key list (offset << 10 | slot), one sort, then one pass that moves each
slot's cursor and re-evaluates only where a layer's leading slot may have
changed. The scratch buffers are module-level, allocated at import and reused,
so a call allocates little beyond its result. Not re-entrant (one caller at a
time, as in the asyncio agent).

Station-level Relative caps (Max cannot be Relative; External on evse 0) are
anchored at start_t; an EVSE's own Relative profiles at its transaction start.
"""

from array import array

from micropython import const

from chargepilot.profile import (EXTERNAL, MAX, RECURRENCE_SECONDS, RECURRING, RELATIVE, TX,
                                 TX_DEFAULT, UNIT_A)

_SLOT_BITS = const(10)
_SLOT_MASK = const(1023)
_DUMMY = const(1023)
_MAX_SLOTS = const(1023)
_FOREVER = const(0x3FFFFFFF)

# Station-level groups; EVSE k's groups follow at _G_EVSE + 3 * (k - 1) (+0 EXT, +1 TXD, +2 TX).
_G_MAX = const(0)
_G_EXT0 = const(1)
_G_EVSE = const(2)

# Reused scratch: grown on first use to what the installed profiles need, then
# kept (never shrunk), so later calls allocate almost nothing but their result.
# Small at import: the heap is shared with the rest of the agent.
_keys = []                    # sort keys: offset << _SLOT_BITS | slot
_pay = array("i", range(16))  # per change point: period index or -1
_npay = [0]
_plist = []                   # the profiles of this call (one pass over the set)
_sprof = []                   # slot -> Profile
_sper = []                    # slot -> its periods array
_sunit = array("i", range(16))
_cur = array("i", range(16))
_ptr = array("i", range(16))
_sgrp = array("i", range(16))                # slot -> group
_gs = array("i", range(2 + 3 * 16))          # group -> first slot
_ge = array("i", range(2 + 3 * 16))          # group -> end of its slots
_lead = array("i", range(2 + 3 * 16))        # group -> leading slot now, or -1
_dirty = bytearray(2 + 3 * 16)               # group -> its leader must be looked up again
_acc = array("i", range(3))   # a, w, phases of the layers being combined
# ...but bounded: a call that needed more change points than this (a 7-day
# GetCompositeSchedule over many profiles: 20 x 24 periods x 7 days = 3361)
# gives its change-point scratch back instead of keeping it for good (~27 KB
# on the ESP32, ~43 KB on the 64-bit unix port). The control loop's 24 h
# windows stay far below (481 points for those 20 profiles).
_KEEP_POINTS = const(2048)


def _grow(arr, n):
    if len(arr) >= n:
        return arr
    m = len(arr)
    while m < n:
        m *= 2
    if m < 64:
        m = 64
    return array("i", range(m))


def _reserve(n):
    """Make room for n change points in _pay (grown, copied, only when needed)."""
    global _pay
    if n > len(_pay):
        new = _grow(_pay, n)
        for i in range(_npay[0]):
            new[i] = _pay[i]
        _pay = new


def _generate(t0, t1, s, p, anchor):
    """Append slot s's change points in [t0, t1): (offset << _SLOT_BITS | s) to
    _keys, the period index (or -1: no period) to _pay, in increasing time.

    A later point at the same offset replaces the earlier one; a point earlier
    than the previous one (only possible when periods are out of order, i.e. the
    profile skipped validation) is dropped."""
    vf = p.valid_from
    vt = p.valid_to
    lo = t0 if vf is None or vf < t0 else vf
    hi = t1 if vt is None or vt > t1 else vt
    if lo >= hi:
        return
    per = p.periods
    nper = len(per) // 3
    dur = p.duration
    period = RECURRENCE_SECONDS[p.recurrence] if p.kind == RECURRING else 0
    base = p.start if p.kind != RELATIVE and p.start is not None else anchor
    if period:
        span = period if dur is None or dur > period else dur
        occ = base + ((lo - base) // period) * period
        n_occ = (hi - occ) // period + 1
    else:
        span = _FOREVER if dur is None else dur
        occ = base
        n_occ = 1
    _reserve(_npay[0] + n_occ * (nper + 2))
    pay = _pay
    keys = _keys
    n = _npay[0]
    last = -1
    while n_occ > 0 and occ < hi:
        end = occ + span
        a = occ if occ > lo else lo
        b = end if end < hi else hi
        if a < b:
            # the period in force at a, then every later period start before b
            i = -1
            rel = a - occ
            while i + 1 < nper and per[3 * (i + 1)] <= rel:
                i += 1
            j = i
            t = a
            while True:
                if j >= 0:
                    off = t - t0
                    if off > last:
                        pay[n] = j
                        n += 1
                        keys.append((off << _SLOT_BITS) | s)
                        last = off
                    elif off == last:
                        pay[n - 1] = j
                j += 1
                if j >= nper:
                    break
                t = occ + per[3 * j]
                if t >= b:
                    break
            if b < t1:
                off = b - t0
                if off > last:
                    pay[n] = -1
                    n += 1
                    keys.append((off << _SLOT_BITS) | s)
                    last = off
                elif off == last:
                    pay[n - 1] = -1
        occ += period
        n_occ -= 1
    _npay[0] = n


def _applies(p, g, evse_tx, k):
    """Does profile p belong to group g (of EVSE k when g >= _G_EVSE)?"""
    pur = p.purpose
    if g == _G_MAX:
        return pur == MAX
    if g == _G_EXT0:
        return pur == EXTERNAL and p.evse_id == 0
    r = (g - _G_EVSE) % 3
    if r == 0:
        return pur == EXTERNAL and p.evse_id == k
    if r == 1:
        return pur == TX_DEFAULT and (p.evse_id == 0 or p.evse_id == k)
    return (pur == TX and p.evse_id == k and evse_tx is not None
            and p.transaction_id == evse_tx[0])


def _fill_group(g, k, evse_tx, n):
    """Append the group's slots (highest stack first, then lowest id); return new n."""
    first = n
    plist = _plist
    for ip in range(len(plist)):
        p = plist[ip]
        if not _applies(p, g, evse_tx, k):
            continue
        if n >= _MAX_SLOTS:
            raise ValueError("composite: more than %d profile layers" % _MAX_SLOTS)
        _sprof.append(p)
        i = n
        while i > first:
            q = _sprof[i - 1]
            if q.stack > p.stack or (q.stack == p.stack and q.id <= p.id):
                break
            _sprof[i] = q
            i -= 1
        _sprof[i] = p
        n += 1
    _gs[g] = first
    _ge[g] = n
    return n


def _find_leader(g):
    s = _gs[g]
    e = _ge[g]
    cur = _cur
    while s < e:
        if cur[s] >= 0:
            return s
        s += 1
    return -1


def _take(s, ac):
    """Fold slot s's current period into _acc (a, w, phases)."""
    if s < 0:
        return
    per = _sper[s]
    j = 3 * _cur[s]
    lim = per[j + 1]
    ph = per[j + 2] & 15
    if ph == 0 and ac:
        ph = 3
    acc = _acc
    if _sunit[s] == UNIT_A:
        if acc[0] < 0 or lim < acc[0]:
            acc[0] = lim
    elif acc[1] < 0 or lim < acc[1]:
        acc[1] = lim
    if ph and (acc[2] == 0 or ph < acc[2]):
        acc[2] = ph


def _convert(a, w, n, unit, volts, dflt_phases):
    """min of the A and W limits (-1 = none) in `unit`, n phases (0: the default)."""
    vn = volts * (n if n else dflt_phases)
    if unit == UNIT_A:
        r = a
        if w >= 0:
            c = w // vn
            if r < 0 or c < r:
                r = c
    else:
        r = w
        if a >= 0:
            c = a * vn
            if r < 0 or c < r:
                r = c
    return r


def _evse_value(k, ac):
    """Fold EVSE k's own layers (External on k, Tx or TxDefault) into _acc."""
    g = _G_EVSE + 3 * (k - 1)
    _take(_lead[g], ac)
    s = _lead[g + 2]
    if s < 0:
        s = _lead[g + 1]
    _take(s, ac)


def compute(cfg, profiles, evse_id, start_t, duration, unit, stop_at_change=False):
    """Composite schedule of `evse_id` over [start_t, start_t + duration) in `unit`.

    Returns (periods, next_change_t): periods = [(start_offset, limit_tenths,
    number_phases_or_0), ...] with equal neighbours merged, first offset 0;
    next_change_t = the first instant after start_t at which the result changes,
    or start_t + duration (at least start_t + 1) if it does not change in the window.
    With stop_at_change the sweep stops there (only the first period is returned).
    Raises ValueError for an unknown EVSE, a unit not in cfg.rate_units or a
    negative duration.
    """
    if type(evse_id) is not int or evse_id < 0 or evse_id > cfg.evse_count:
        raise ValueError("composite: unknown EVSE %r" % (evse_id,))
    if unit not in cfg.rate_units:
        raise ValueError("composite: unsupported rate unit %r" % (unit,))
    if type(duration) is not int or duration < 0:
        raise ValueError("composite: bad duration %r" % (duration,))
    global _cur, _ptr, _sunit, _sgrp
    t0 = start_t
    t1 = t0 + (duration if duration > 0 else 1)
    ac = cfg.ac
    volts = cfg.supply_voltage
    dph = cfg.default_phases
    nev = cfg.evse_count
    txs = cfg.transactions
    # 1. slots, grouped, best first (groups of EVSEs not asked for stay empty)
    ngroups = _G_EVSE + 3 * (evse_id if evse_id else nev)
    for g in range(ngroups):
        _gs[g] = 0
        _ge[g] = 0
    del _sprof[:]
    del _plist[:]
    for p in profiles:
        _plist.append(p)
    n = _fill_group(_G_MAX, 0, None, 0)
    n = _fill_group(_G_EXT0, 0, None, n)
    if evse_id == 0:
        k_lo = 1
        k_hi = nev
    else:
        k_lo = k_hi = evse_id
    for k in range(k_lo, k_hi + 1):
        tx = txs.get(k)
        g = _G_EVSE + 3 * (k - 1)
        n = _fill_group(g, k, tx, n)
        n = _fill_group(g + 1, k, tx, n)
        n = _fill_group(g + 2, k, tx, n)
    if len(_cur) < n:
        _cur = _grow(_cur, n)
        _ptr = _grow(_ptr, n)
        _sunit = _grow(_sunit, n)
        _sgrp = _grow(_sgrp, n)
    for g in range(ngroups):
        _lead[g] = -1
        _dirty[g] = 1
        for s in range(_gs[g], _ge[g]):
            _sgrp[s] = g
    # 2. change points of every slot
    del _keys[:]
    del _sper[:]
    _npay[0] = 0
    _keys.append(_DUMMY)
    g_of_k = _G_EVSE + 3 * (k_lo - 1)
    k = k_lo
    for s in range(n):
        p = _sprof[s]
        _sper.append(p.periods)
        _sunit[s] = p.unit
        _cur[s] = -1
        _ptr[s] = _npay[0]
        while k < k_hi and s >= _ge[g_of_k + 2]:
            k += 1
            g_of_k += 3
        if s < _ge[_G_EXT0]:
            anchor = t0
        else:
            tx = txs.get(k)
            anchor = t0 if tx is None else tx[1]
        _generate(t0, t1, s, p, anchor)
    _keys.sort()
    # 3. sweep
    out = []
    prev_lim = -2
    prev_ph = -1
    nxt = None
    keys = _keys
    nk = len(keys)
    cur = _cur
    ptr = _ptr
    pay = _pay
    acc = _acc
    sgrp = _sgrp
    lead = _lead
    dirty = _dirty
    changed = True
    i = 0
    while i < nk:
        off = keys[i] >> _SLOT_BITS
        while i < nk:
            key = keys[i]
            if (key >> _SLOT_BITS) != off:
                break
            s = key & _SLOT_MASK
            if s != _DUMMY:
                j = ptr[s]
                cur[s] = pay[j]
                ptr[s] = j + 1
                # only a change at or above the layer's leader can change the layer
                g = sgrp[s]
                ld = lead[g]
                if ld < 0 or s <= ld:
                    dirty[g] = 1
                    changed = True
            i += 1
        if duration == 0 and off > 0:
            break
        if not changed:
            continue
        changed = False
        for g in range(ngroups):
            if dirty[g]:
                dirty[g] = 0
                lead[g] = _find_leader(g)
        if evse_id == 0:
            total = 0
            sph = 0
            for kk in range(1, nev + 1):
                acc[0] = -1
                acc[1] = -1
                acc[2] = 0
                _evse_value(kk, ac)
                if acc[0] < 0 and acc[1] < 0:
                    lim = cfg.default_amps if unit == UNIT_A else cfg.default_watts
                else:
                    lim = _convert(acc[0], acc[1], acc[2], unit, volts, dph)
                    if acc[2] > sph:
                        sph = acc[2]
                total += lim
            acc[0] = -1
            acc[1] = -1
            acc[2] = 0
            _take(_lead[_G_MAX], ac)
            _take(_lead[_G_EXT0], ac)
            ph = acc[2]
            if sph and (ph == 0 or sph < ph):
                ph = sph
            if acc[0] >= 0 or acc[1] >= 0:
                cap = _convert(acc[0], acc[1], ph, unit, volts, dph)
                if cap < total:
                    total = cap
            lim = total
        else:
            acc[0] = -1
            acc[1] = -1
            acc[2] = 0
            _take(_lead[_G_MAX], ac)
            _take(_lead[_G_EXT0], ac)
            _evse_value(evse_id, ac)
            ph = acc[2]
            if acc[0] < 0 and acc[1] < 0:
                lim = cfg.default_amps if unit == UNIT_A else cfg.default_watts
                ph = 0
            else:
                lim = _convert(acc[0], acc[1], ph, unit, volts, dph)
        if lim != prev_lim or ph != prev_ph:
            if out:
                if nxt is None:
                    nxt = t0 + off
                if stop_at_change:
                    break
            out.append((off, lim, ph))
            prev_lim = lim
            prev_ph = ph
    if nxt is None:
        nxt = t1
    # drop the references to the profiles (capacity is kept, up to _KEEP_POINTS)
    del _sprof[:]
    del _sper[:]
    del _plist[:]
    if nk > _KEEP_POINTS:
        _release()
    return out, nxt


def _release():
    """Give back the change-point scratch (list.clear() frees a list's storage on
    MicroPython; `del l[:]` keeps it)."""
    global _pay
    _keys.clear()
    _pay = array("i", range(16))


def limit_at(cfg, profiles, evse_id, t, unit, horizon=86400):
    """(limit_tenths, phases_or_0, next_change_t) in force at t, for the control loop.

    next_change_t is the first instant after t at which the limit may change,
    looked for up to t + horizon (returned when nothing changes before)."""
    out, nxt = compute(cfg, profiles, evse_id, t, horizon, unit, True)
    first = out[0]
    return first[1], first[2], nxt
