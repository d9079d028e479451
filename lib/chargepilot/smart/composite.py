"""Composite schedule (K08) and the limit in force now: pure integer arithmetic.

Semantics (libocpp's, see docs/conformance.md):
* Per layer, the period of the highest stackLevel that has a period at t wins;
  a lower stack shows through wherever the higher one has none.
* Layers of EVSE k: ChargingStationMaxProfile (on 0), External on 0, External
  on k, TxDefault (on 0 and on k, pooled) and TxProfile (bound to the running
  transaction of k). TxProfile replaces TxDefault wherever it has a period;
  the EVSE result is the minimum of the layers that have a period.
* K01.FR.50: every period's limit is converted to the requested unit with
  supply_voltage and **its own** numberPhases (absent on AC = 3, K01.FR.49;
  on DC default_phases) before the minimum is taken: A = W // (V*n) (floor:
  the safe side), W = A*V*n. The reported numberPhases is the lowest among
  the contributing periods.
* No layer at all: the configured local limit (default_amps/default_watts),
  without numberPhases.
* EVSE 0: each EVSE's result (default-filled, converted) summed, numberPhases
  = the highest among EVSEs, then capped by the station's Max and External.
* Recurring: occurrences every 86400/604800 s from startSchedule, also before
  it; each cut at the next occurrence and at duration. Relative: anchored at
  the EVSE's transaction start, else at `start_t`. validFrom/validTo cut.
  Absent duration / validTo: open-ended (no horizon).
* minChargingRate is not used (it never lifts a limit).

Time: instants are ints of seconds since 2020-01-01Z (any year rfc3339 gives); each
becomes a small window offset once per profile per call, in its slot's set-up
(smart/slots.py), so the sweep below only ever handles small ints.

One sweep, no per-second sampling and no list of change points: every
applicable profile ("slot") is a small state machine (smart/slots.py) that yields
its next change (offset, period index or -1) on demand; the sweep takes the
earliest offset, advances the slots that change there and re-evaluates only where
a layer's leading slot may have changed. Scratch = a few lists of one entry per
slot (at most profiles x EVSEs), module-level, grown to the largest call and
reused, so the memory a call needs does not depend on the window or on the
number of periods. Not re-entrant (one caller at a time, as in the asyncio
agent).

Slots are ordered within a layer by (stackLevel desc, id asc): the ProfileSet
keeps its profiles in that order (`ordered()`), so grouping is one counting
pass (no sort per call).

Station-level Relative caps (Max cannot be Relative; External on evse 0) are
anchored at start_t; an EVSE's own Relative profiles at its transaction start.
"""

from micropython import const

# profile before slots: run from source (tools/composite, 100K) a lower import peak (measured)
from chargepilot.smart.profile import EXTERNAL, MAX, TX, TX_DEFAULT, UNIT_A
from chargepilot.smart import slots

# Longest window computed (offsets stay small ints with room to add a period).
MAX_WINDOW = const(0x20000000)
_MAX_SLOTS = const(4096)
# Every limit (converted, summed) is capped here: the safe side, a small int.
_LIM_MAX = const(1000000000)

# Station-level groups; EVSE k's groups follow at _G_EVSE + 3 * (k - 1) (+0 EXT, +1 TXD, +2 TX).
_G_MAX = const(0)
_G_EXT0 = const(1)
_G_EVSE = const(2)
_NGROUPS = const(2 + 3 * 16)

# Per-slot grouping (the slot's own state is slots.py's table, read in place; the
# fold functions use these two names per change: one global look-up, not two).
_sprof = []   # slot -> Profile
_sk = []      # slot -> EVSE whose layer it is in (0: station)
_sgrp = []    # slot -> group
_sst = []     # slot -> stackLevel
_sper = slots.sper
_cur = slots.cur
_gs = [0] * _NGROUPS      # group -> first slot
_ge = [0] * _NGROUPS      # group -> end of its slots
_lead = [0] * _NGROUPS    # group -> leading slot now, or -1
_dirty = bytearray(_NGROUPS)
_acc = [0, 0]  # limit in the requested unit (-1 none), lowest phases
_cv = [0, 0, 0, 0, 0]  # unit, volts, ac, default phases (for _take)


def _room(n):
    """Grow the per-slot lists here and in slots.py to n entries (kept for later calls)."""
    if len(_sprof) >= n:
        return
    slots.room(n)
    while len(_sprof) < n:
        _sprof.append(None)
        _sk.append(0)
        _sgrp.append(0)
        _sst.append(0)


def _groups(p, g_pass, k_lo, k_hi, txs, n):
    """Count (g_pass 0) or place (1) p in every group it belongs to."""
    pur = p.purpose
    ev = p.evse_id
    if pur == MAX:
        return _put(p, _G_MAX, 0, g_pass, n)
    if pur == EXTERNAL:
        if ev == 0:
            return _put(p, _G_EXT0, 0, g_pass, n)
        if k_lo <= ev <= k_hi:
            return _put(p, _G_EVSE + 3 * (ev - 1), ev, g_pass, n)
        return n
    if pur == TX_DEFAULT:
        if ev == 0:
            for k in range(k_lo, k_hi + 1):
                n = _put(p, _G_EVSE + 3 * (k - 1) + 1, k, g_pass, n)
            return n
        if k_lo <= ev <= k_hi:
            return _put(p, _G_EVSE + 3 * (ev - 1) + 1, ev, g_pass, n)
        return n
    if pur == TX and k_lo <= ev <= k_hi:
        tx = txs.get(ev)
        if tx is not None and p.transaction_id == tx[0]:
            return _put(p, _G_EVSE + 3 * (ev - 1) + 2, ev, g_pass, n)
    return n


def _put(p, g, k, g_pass, n):
    if g_pass == 0:
        _ge[g] += 1
        return n + 1
    s = _ge[g]
    _sprof[s] = p
    _sper[s] = p.periods
    _sk[s] = k
    _sgrp[s] = g
    _sst[s] = p.stack
    _ge[g] = s + 1
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


def _take_layer(s):
    """Fold a layer's leading slot s and every slot of the same stackLevel in
    force with it (equal stacks in force together: only station-local limits
    of several sources, or profiles that slipped past K01.FR.06) into _acc:
    the lowest of them wins, never an arbitrary one."""
    if s < 0:
        return
    _take(s)
    e = _ge[_sgrp[s]]
    st = _sst[s]
    s += 1
    while s < e and _sst[s] == st:
        if _cur[s] >= 0:
            _take(s)
        s += 1


def _take(s):
    """Fold slot s's current period, converted to the requested unit with its
    own numberPhases (K01.FR.50), into _acc (limit, lowest phases)."""
    per = _sper[s]
    j = 3 * _cur[s]
    lim = per[j + 1]
    ph = per[j + 2] & 15
    cv = _cv
    if ph == 0 and cv[2]:
        ph = 3
    if _sprof[s].unit != cv[0]:
        vn = cv[1] * (ph if ph else cv[3])
        if cv[0] == UNIT_A:
            lim = lim // vn
        elif lim > _LIM_MAX // vn:
            lim = _LIM_MAX
        else:
            lim = lim * vn
    acc = _acc
    if acc[0] < 0 or lim < acc[0]:
        acc[0] = lim
    if ph and (acc[1] == 0 or ph < acc[1]):
        acc[1] = ph


def _evse_value(k):
    """Fold EVSE k's own layers (External on k, Tx or TxDefault) into _acc."""
    g = _G_EVSE + 3 * (k - 1)
    _take_layer(_lead[g])
    s = _lead[g + 2]
    if s < 0:
        s = _lead[g + 1]
    _take_layer(s)


def compute(cfg, profiles, evse_id, start_t, duration, unit, stop_at_change=False):
    """Composite schedule of `evse_id` over [start_t, start_t + duration) in `unit`
    from `profiles`, a ProfileSet (its ordered() is the layer order: no sort here).

    Returns (periods, next_change_t): periods = [(start_offset, limit_tenths,
    number_phases_or_0), ...] with equal neighbours merged, first offset 0;
    next_change_t = the first instant after start_t at which the result changes,
    or start_t + duration (at least start_t + 1) if it does not change in the window.
    With stop_at_change the sweep stops there (only the first period is returned).
    Raises ValueError for an unknown EVSE, a unit not in cfg.rate_units, a
    negative duration or one above MAX_WINDOW, or a non-int start_t.
    """
    if type(evse_id) is not int or evse_id < 0 or evse_id > cfg.evse_count:
        raise ValueError("composite: unknown EVSE %r" % (evse_id,))
    if unit not in cfg.rate_units:
        raise ValueError("composite: unsupported rate unit %r" % (unit,))
    if type(duration) is not int or duration < 0 or duration > MAX_WINDOW:
        raise ValueError("composite: bad duration %r" % (duration,))
    if type(start_t) is not int:
        raise ValueError("composite: bad start time %r" % (start_t,))
    t0 = start_t
    w = duration if duration > 0 else 1
    t1 = t0 + w
    cv = _cv
    cv[0] = unit
    cv[1] = cfg.supply_voltage
    cv[2] = 1 if cfg.ac else 0
    cv[3] = cfg.default_phases
    nev = cfg.evse_count
    txs = cfg.transactions
    if evse_id == 0:
        k_lo = 1
        k_hi = nev
    else:
        k_lo = k_hi = evse_id
    ngroups = _G_EVSE + 3 * k_hi
    # 1. slots, grouped, best first: count, then place (the order is the set's)
    plist = profiles.ordered()
    for g in range(ngroups):
        _ge[g] = 0
    n = 0
    for p in plist:
        n = _groups(p, 0, k_lo, k_hi, txs, n)
    if n > _MAX_SLOTS:
        raise ValueError("composite: more than %d profile layers" % _MAX_SLOTS)
    _room(n)
    s = 0
    for g in range(ngroups):
        c = _ge[g]
        _gs[g] = s
        _ge[g] = s
        s += c
    for p in plist:
        _groups(p, 1, k_lo, k_hi, txs, 0)
    plist = None
    # 2. every slot's first change
    for s in range(n):
        k = _sk[s]
        tx = txs.get(k) if k else None
        slots.setup(s, _sprof[s], t0, t1, t0 if tx is None else tx[1], w)
    for g in range(ngroups):
        _lead[g] = -1
        _dirty[g] = 1
    # 3. sweep
    out = []
    prev_lim = -2
    prev_ph = -1
    nxt = None
    nx = slots.nx
    nv = slots.nv
    cur = _cur
    sper = _sper
    sj = slots.sj
    socc = slots.socc
    send = slots.send
    sgrp = _sgrp
    sst = _sst
    lead = _lead
    dirty = _dirty
    acc = _acc
    off = 0
    while True:
        changed = off == 0
        m = w  # the next change inside the window (w: none is left)
        # one pass: the slots changing at `off` and the next change point. A
        # binary heap of the slots measured slower on the unix port for the
        # benchmark's 20 slots (several change at once; a sift costs more than
        # the scan); what the scan saves is advance's call and global look-ups.
        for s in range(n):
            x = nx[s]
            if x == off:
                while x == off:
                    cur[s] = nv[s]
                    # slots.advance's common case inline (the next period of the
                    # same occurrence); every other case goes through it
                    per = sper[s]
                    j = sj[s]
                    if 3 * j < len(per):
                        x = socc[s] + per[3 * j]
                        if x < send[s]:
                            if x < off:
                                x = off  # out-of-order periods: no going back
                            nx[s] = x
                            nv[s] = j
                            sj[s] = j + 1
                            continue
                    slots.advance(s, off, w)
                    x = nx[s]
                # only a change at or above the layer's leader (or of its
                # stackLevel) can change the layer
                g = sgrp[s]
                ld = lead[g]
                if ld < 0 or s <= ld or sst[s] == sst[ld]:
                    dirty[g] = 1
                    changed = True
            if x < m:
                m = x
        if changed:
            for g in range(ngroups):
                if dirty[g]:
                    dirty[g] = 0
                    lead[g] = _find_leader(g)
            if evse_id == 0:
                total = 0
                sph = 0
                for kk in range(1, nev + 1):
                    acc[0] = -1
                    acc[1] = 0
                    _evse_value(kk)
                    if acc[0] < 0:
                        lim = cfg.default_amps if unit == UNIT_A else cfg.default_watts
                    else:
                        lim = acc[0]
                        if acc[1] > sph:
                            sph = acc[1]
                    total += lim
                    if total > _LIM_MAX:
                        total = _LIM_MAX
                acc[0] = -1
                acc[1] = 0
                _take_layer(lead[_G_MAX])
                _take_layer(lead[_G_EXT0])
                ph = acc[1]
                if sph and (ph == 0 or sph < ph):
                    ph = sph
                if acc[0] >= 0 and acc[0] < total:
                    total = acc[0]
                lim = total
            else:
                acc[0] = -1
                acc[1] = 0
                _take_layer(lead[_G_MAX])
                _take_layer(lead[_G_EXT0])
                _evse_value(evse_id)
                ph = acc[1]
                if acc[0] < 0:
                    lim = cfg.default_amps if unit == UNIT_A else cfg.default_watts
                    ph = 0
                else:
                    lim = acc[0]
            if lim != prev_lim or ph != prev_ph:
                if out:
                    if nxt is None:
                        nxt = t0 + off
                    if stop_at_change:
                        break
                out.append((off, lim, ph))
                prev_lim = lim
                prev_ph = ph
        if m >= w:
            break
        off = m
    if nxt is None:
        nxt = t1
    # drop the references to the profiles and the occurrence starts (a big int
    # in slots.setup's rare case); the lists' length is kept
    for s in range(n):
        _sprof[s] = None
        sper[s] = None
        socc[s] = 0
    return out, nxt


def limit_at(cfg, profiles, evse_id, t, unit, horizon=86400):
    """(limit_tenths, phases_or_0, next_change_t) in force at t, for the control loop.

    next_change_t is the first instant after t at which the limit may change,
    looked for up to t + horizon (returned when nothing changes before)."""
    out, nxt = compute(cfg, profiles, evse_id, t, horizon, unit, True)
    first = out[0]
    return first[1], first[2], nxt
