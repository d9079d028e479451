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

One sweep: every applicable profile emits its own (already ordered) change
points in the window into a shared key list, one sort, then one pass that
updates a per-profile cursor and re-evaluates only at change points. The
scratch buffers are module-level and reused between calls.
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

# Reused scratch, allocated once at import (before the heap fragments), grown on
# demand and never shrunk: a call then allocates almost nothing but its result.
_PREALLOC_EVENTS = const(640)
_PREALLOC_SLOTS = const(48)
_keys = [0] * _PREALLOC_EVENTS   # sort keys: offset << _SLOT_BITS | slot
del _keys[:]                     # (keeps the capacity)
_pay = array("i", range(_PREALLOC_EVENTS))   # per change point: period index or -1
_npay = [0]
_sprof = [None] * _PREALLOC_SLOTS  # slot -> Profile
del _sprof[:]
_sper = [None] * _PREALLOC_SLOTS   # slot -> its periods array
del _sper[:]
_sunit = array("i", range(_PREALLOC_SLOTS))
_cur = array("i", range(_PREALLOC_SLOTS))
_ptr = array("i", range(_PREALLOC_SLOTS))
_gs = array("i", range(2 + 3 * 16))
_ge = array("i", range(2 + 3 * 16))
_acc = array("i", range(3))   # a, w, phases of the layers being combined


def _grow(arr, n):
    if len(arr) >= n:
        return arr
    m = len(arr)
    while m < n:
        m *= 2
    return array("i", range(m))


def _emit(t0, s, t, pidx, last):
    """Append one change point of slot s; returns the offset (for dedupe)."""
    global _pay
    off = t - t0
    n = _npay[0]
    if off == last:
        _pay[n - 1] = pidx
        return off
    if n >= len(_pay):
        new = _grow(_pay, n + 1)
        for i in range(n):
            new[i] = _pay[i]
        _pay = new
    _pay[n] = pidx
    _npay[0] = n + 1
    _keys.append((off << _SLOT_BITS) | s)
    return off


def _occurrence(t0, t1, s, per, occ, end, lo, hi, last):
    a = occ if occ > lo else lo
    b = end if end < hi else hi
    if a >= b:
        return last
    n = len(per) // 3
    i = -1
    rel = a - occ
    while i + 1 < n and per[3 * (i + 1)] <= rel:
        i += 1
    if i >= 0:
        last = _emit(t0, s, a, i, last)
    j = i + 1
    while j < n:
        tj = occ + per[3 * j]
        if tj >= b:
            break
        last = _emit(t0, s, tj, j, last)
        j += 1
    if b < t1:
        last = _emit(t0, s, b, -1, last)
    return last


def _generate(t0, t1, s, p, anchor):
    vf = p.valid_from
    vt = p.valid_to
    lo = t0 if vf is None or vf < t0 else vf
    hi = t1 if vt is None or vt > t1 else vt
    if lo >= hi:
        return
    per = p.periods
    dur = p.duration
    last = -1
    period = RECURRENCE_SECONDS[p.recurrence] if p.kind == RECURRING else 0
    base = p.start if p.kind != RELATIVE and p.start is not None else anchor
    if period:
        span = period if dur is None or dur > period else dur
        occ = base + ((lo - base) // period) * period
        while occ < hi:
            last = _occurrence(t0, t1, s, per, occ, occ + span, lo, hi, last)
            occ += period
    else:
        end = _FOREVER if dur is None else base + dur
        _occurrence(t0, t1, s, per, base, end, lo, hi, last)


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


def _fill_group(profiles, g, k, evse_tx, n):
    """Append the group's slots (highest stack first, then lowest id); return new n."""
    first = n
    for p in profiles:
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


def _leading(g):
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
    _take(_leading(g), ac)
    s = _leading(g + 2)
    if s < 0:
        s = _leading(g + 1)
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
    global _cur, _ptr, _sunit
    t0 = start_t
    t1 = t0 + (duration if duration > 0 else 1)
    ac = cfg.ac
    volts = cfg.supply_voltage
    dph = cfg.default_phases
    nev = cfg.evse_count
    txs = cfg.transactions
    # 1. slots, grouped, best first
    del _sprof[:]
    n = _fill_group(profiles, _G_MAX, 0, None, 0)
    n = _fill_group(profiles, _G_EXT0, 0, None, n)
    if evse_id == 0:
        k_lo = 1
        k_hi = nev
    else:
        k_lo = k_hi = evse_id
    for k in range(k_lo, k_hi + 1):
        tx = txs.get(k)
        g = _G_EVSE + 3 * (k - 1)
        n = _fill_group(profiles, g, k, tx, n)
        n = _fill_group(profiles, g + 1, k, tx, n)
        n = _fill_group(profiles, g + 2, k, tx, n)
    if len(_cur) < n:
        _cur = _grow(_cur, n)
        _ptr = _grow(_ptr, n)
        _sunit = _grow(_sunit, n)
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
            i += 1
        if duration == 0 and off > 0:
            break
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
            _take(_leading(_G_MAX), ac)
            _take(_leading(_G_EXT0), ac)
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
            _take(_leading(_G_MAX), ac)
            _take(_leading(_G_EXT0), ac)
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
    return out, nxt


def limit_at(cfg, profiles, evse_id, t, unit, horizon=86400):
    """(limit_tenths, phases_or_0, next_change_t) in force at t, for the control loop.

    next_change_t is the first instant after t at which the limit may change,
    looked for up to t + horizon (returned when nothing changes before)."""
    out, nxt = compute(cfg, profiles, evse_id, t, horizon, unit, True)
    first = out[0]
    return first[1], first[2], nxt
