"""K01 acceptance checks for a parsed profile (digest §3.2, in that order).

`check(cfg, installed, p)` returns None when p may be installed (adding it or
replacing the profile with the same id), else raises Rejected(reason_code,
info): the SetChargingProfile status is then `Rejected` with
statusInfo {reasonCode, additionalInfo}. Nothing is changed here.

Duplicates (K01.FR.06): same stackLevel, purpose and evseId, a different id,
and the two can be in force at the same instant: their validFrom/validTo
windows intersect AND their schedules can both have a period at one instant.
Two Daily profiles back to back (08:00-08:05 and 08:05-08:10) never overlap,
so they are not duplicates; a Relative schedule (anchor unknown until a
transaction starts) is taken to overlap anything in its validity.
"""


from chargepilot.smart.profile import (CSO, EXTERNAL, MAX, RECURRENCE_SECONDS, RECURRING,
                                 RELATIVE, TX, TX_DEFAULT, ProfileError)


class Rejected(ProfileError):
    """SetChargingProfile must answer Rejected with this reason code and info."""


def _reject(code, info):
    raise Rejected(code, info)


def check(cfg, installed, p):
    ev = p.evse_id
    pur = p.purpose
    # 3. evse
    if ev < 0 or ev > cfg.evse_count:
        _reject("UnknownEvse", "evseId %d does not exist (K01.FR.28)" % ev)
    # 4. external constraints never come from the CSMS
    if pur == EXTERNAL and p.source == CSO:
        _reject("InvalidValue", "ChargingStationExternalConstraints cannot be set by the CSMS "
                "(K01.FR.22)")
    # the profile p would replace: same id in p's id space (CSMS or station-local)
    old = installed.same(p)
    if old is not None and old.purpose == EXTERNAL and p.source == CSO:
        _reject("InvalidValue", "profile id %d is an external constraint; the CSMS cannot "
                "replace it (K01.FR.05)" % p.id)
    # 5. station maximum
    if pur == MAX:
        if ev != 0:
            _reject("InvalidValue", "ChargingStationMaxProfile is only allowed on evseId 0 "
                    "(K04.FR.03)")
        if p.kind == RELATIVE:
            _reject("InvalidValue", "ChargingStationMaxProfile cannot be Relative (K01.FR.38)")
    # 6. transaction binding
    if pur == TX:
        if ev == 0:
            _reject("InvalidValue", "TxProfile needs an evseId > 0 (K01.FR.16)")
        if p.transaction_id is None:
            _reject("MissingParam", "TxProfile without transactionId (K01.FR.03)")
        tx = cfg.transactions.get(ev)
        if tx is None:
            _reject("TxNotFound", "no transaction is running on EVSE %d (K01.FR.09)" % ev)
        if tx[0] != p.transaction_id:
            _reject("TxNotFound", "transaction %s is not the one on EVSE %d (K01.FR.33)"
                    % (p.transaction_id, ev))
    elif p.transaction_id is not None:
        _reject("InvalidValue", "transactionId is only allowed on a TxProfile")
    # 7. kind and startSchedule
    if p.kind == RELATIVE:
        if p.start is not None:
            _reject("InvalidSchedule", "a Relative profile must not have startSchedule "
                    "(K01.FR.41)")
    elif p.start is None:
        _reject("InvalidSchedule", "an Absolute or Recurring profile needs startSchedule "
                "(K01.FR.40)")
    if p.kind == RECURRING and not p.recurrence:
        _reject("MissingParam", "a Recurring profile needs recurrencyKind")
    if (p.valid_from is not None and p.valid_to is not None
            and p.valid_to <= p.valid_from):
        _reject("InvalidValue", "validTo is not after validFrom")
    # 8. one schedule
    if p.n_schedules != 1:
        _reject("InvalidSchedule", "exactly one chargingSchedule is allowed outside ISO 15118 "
                "(K01.FR.34)")
    # 9. the schedule
    if p.unit not in cfg.rate_units:
        _reject("UnsupportedRateUnit", "chargingRateUnit is not supported (K01.FR.26)")
    if p.duration is not None and p.duration < 0:
        _reject("InvalidSchedule", "negative duration %d" % p.duration)
    if p.min_rate is not None and p.min_rate < 0:
        _reject("InvalidValue", "negative minChargingRate")
    per = p.periods
    n = len(per) // 3
    if n > cfg.max_periods:
        _reject("TooManyElements", "%d periods, at most %d are supported (PeriodsPerSchedule)"
                % (n, cfg.max_periods))
    if per[0] != 0:
        _reject("InvalidSchedule", "the first startPeriod must be 0 (K01.FR.31)")
    ptu_any = 0
    for i in range(n):
        if i and per[3 * i] <= per[3 * i - 3]:
            _reject("InvalidSchedule", "startPeriod of period %d is not after the previous one "
                    "(K01.FR.35)" % i)
        if per[3 * i + 1] < 0:
            _reject("InvalidValue", "negative limit in period %d" % i)
        ph = per[3 * i + 2]
        ptu = ph >> 4
        if ptu and cfg.ac:
            if ph & 15 != 1:
                _reject("InvalidValue", "phaseToUse in period %d needs numberPhases 1 "
                        "(K01.FR.19)" % i)
            if not cfg.phase_switching:
                _reject("UnsupportedParam", "phaseToUse in period %d: the EVSE cannot switch "
                        "phases (K01.FR.20/48)" % i)
            if ptu_any == 0:
                ptu_any = ptu
    # 10. stack level
    if p.stack < 0 or p.stack > cfg.max_stack_level:
        _reject("InvalidStackLevel", "stackLevel %d is outside 0..%d"
                % (p.stack, cfg.max_stack_level))
    # 11. phaseToUse conflicts between caps and Tx/TxDefault (errata)
    if ptu_any:
        caps = pur == MAX or pur == EXTERNAL
        for q in installed:
            if q is old:
                continue
            if caps == (q.purpose == MAX or q.purpose == EXTERNAL):
                continue
            qp = _phase_to_use(q)
            if qp and qp != ptu_any:
                _reject("InvalidValue", "phaseToUse %d conflicts with phaseToUse %d of profile "
                        "%d" % (ptu_any, qp, q.id))
    # 12./13. duplicates (K01.FR.06 is about the CSMS's profiles: station-local
    # limits of several sources all apply together, the composite takes the lowest)
    for q in (installed if p.source == CSO else ()):
        if q is old or q.purpose != pur or q.stack != p.stack:
            continue
        if pur == TX:
            if q.transaction_id == p.transaction_id:
                _reject("DuplicateProfile", "TxProfile %d has the same stackLevel and "
                        "transactionId (K01.FR.39)" % q.id)
            continue
        if pur == TX_DEFAULT and (q.evse_id == 0) != (ev == 0):
            _reject("DuplicateProfile", "TxDefaultProfile %d on evseId %d has the same "
                    "stackLevel (K01.FR.52/53)" % (q.id, q.evse_id))
        if q.evse_id == ev and overlap(p, q):
            _reject("DuplicateProfile", "profile %d has the same stackLevel, purpose and "
                    "evseId and overlapping validity (K01.FR.06)" % q.id)
    # 14. capacity
    if old is None and len(installed) >= cfg.max_entries:
        _reject("OutOfStorage", "%d profiles installed, the maximum is %d"
                % (len(installed), cfg.max_entries))


def _phase_to_use(q):
    per = q.periods
    for i in range(len(per) // 3):
        ptu = per[3 * i + 2] >> 4
        if ptu:
            return ptu
    return 0


def _span(p):
    """Length of one active stretch (occurrence) of p's schedule; None if open-ended."""
    period = RECURRENCE_SECONDS[p.recurrence] if p.kind == RECURRING else 0
    d = p.duration
    if period and (d is None or d > period):
        d = period
    return d


def overlap(p, q):
    """Can p and q both be in force (valid and with a period) at one instant?

    Exact ints throughout (install time: instants of years 0001..9999 are big
    ints on the board, which is fine here); None = open-ended, never a finite
    stand-in."""
    lo = _maxn(p.valid_from, q.valid_from)   # None: since forever
    hi = _minn(p.valid_to, q.valid_to)       # None: for ever
    if lo is not None and hi is not None and lo >= hi:
        return False
    sp = _span(p)
    sq = _span(q)
    if (sp is not None and sp <= 0) or (sq is not None and sq <= 0):
        return False
    if p.kind == RELATIVE or q.kind == RELATIVE:
        return True
    rp = p.kind == RECURRING
    rq = q.kind == RECURRING
    if not rp and not rq:
        a = _maxn(_maxn(p.start, q.start), lo)
        b = _minn(_minn(_end(p.start, sp), _end(q.start, sq)), hi)
        return b is None or a < b
    if rp and rq:
        return _both_recurring(p, sp, q, sq, lo, hi)
    if rp:
        p, q, sp, sq = q, p, sq, sp
    # p absolute, q recurring
    a = _maxn(p.start, lo)
    b = _minn(_end(p.start, sp), hi)
    period = RECURRENCE_SECONDS[q.recurrence]
    if b is None or b - a >= period:
        return True
    if a >= b:
        return False
    occ = q.start + ((a - q.start) // period) * period
    while occ < b:
        if occ + sq > a:
            return True
        occ += period
    return False


def _end(start, span):
    return None if span is None else start + span


def _both_recurring(p, sp, q, sq, lo, hi):
    pp = RECURRENCE_SECONDS[p.recurrence]
    pq = RECURRENCE_SECONDS[q.recurrence]
    big = pp if pp > pq else pq
    if lo is not None and hi is not None and hi - lo < 3 * big:
        # short common validity: look at the real occurrences in it
        op = p.start + ((lo - p.start) // pp) * pp
        while op < hi:
            a = _max2(op, lo)
            b = _min2(op + sp, hi)
            if a < b:
                oq = q.start + ((a - q.start) // pq) * pq
                while oq < b:
                    if _max2(oq, a) < _min2(oq + sq, b):
                        return True
                    oq += pq
            op += pp
        return False
    # long validity: compare the occurrence pattern on a circle of `big` seconds
    for i in range(big // pp):
        x1 = (p.start + i * pp) % big
        for j in range(big // pq):
            x2 = (q.start + j * pq) % big
            if (x2 - x1) % big < sp or (x1 - x2) % big < sq:
                return True
    return False


def _max2(a, b):
    return a if a > b else b


def _min2(a, b):
    return a if a < b else b


def _maxn(a, b):
    """max where None is minus infinity."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a > b else b


def _minn(a, b):
    """min where None is plus infinity."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a < b else b
