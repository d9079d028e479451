"""profile_checks: every K01 rejection, with its reason code, and the acceptances around them."""

from devtest import raises

from chargepilot.smart import profile, profile_checks, config as station
from chargepilot.base import rfc3339
from chargepilot.smart.profile_checks import Rejected
from chargepilot.smart.profiles import ProfileSet

T0 = rfc3339.parse("2024-05-01T00:00:00Z")


def cfg(**kw):
    c = station.SmartConfig(evse_count=2, max_stack_level=5, max_periods=4, max_entries=5, **kw)
    c.start_transaction(1, "tx-1", T0)
    return c


def body(**kw):
    d = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
         "chargingProfileKind": "Absolute",
         "chargingSchedule": [{"id": 1, "startSchedule": "2024-05-01T00:00:00Z",
                               "chargingRateUnit": "A",
                               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16},
                                                          {"startPeriod": 60, "limit": 10}]}]}
    for k in kw:
        if k in ("startSchedule", "duration", "chargingRateUnit", "chargingSchedulePeriod",
                 "minChargingRate"):
            if kw[k] is None:
                del d["chargingSchedule"][0][k]
            else:
                d["chargingSchedule"][0][k] = kw[k]
        elif kw[k] is None:
            del d[k]
        else:
            d[k] = kw[k]
    return d


def P(evse=1, source="CSO", **kw):
    return profile.parse(body(**kw), evse, source)


def rejected(c, installed, p, code, text):
    e = raises(Rejected, profile_checks.check, c, installed, p)
    assert e.reason_code == code, (e.reason_code, e.info)
    assert text in e.info, e.info
    assert len(e.reason_code) <= 20 and e.info
    assert isinstance(e, profile.ProfileError)
    return e


def accepted(c, installed, p):
    profile_checks.check(c, installed, p)
    installed.add(p)


def test_valid_profile_accepted():
    s = ProfileSet(5)
    accepted(cfg(), s, P())
    assert len(s) == 1


def test_unknown_evse():
    rejected(cfg(), ProfileSet(), P(evse=3), "UnknownEvse", "evseId 3")


def test_external_constraints_not_from_csms():
    s = ProfileSet()
    rejected(cfg(), s, P(evse=0, chargingProfilePurpose="ChargingStationExternalConstraints"),
             "InvalidValue", "K01.FR.22")
    ext = P(evse=0, source="EMS", id=-5, chargingProfilePurpose="ChargingStationExternalConstraints")
    accepted(cfg(), s, ext)
    # the CSMS's id -5 is another id space: accepted as a new profile, never a replacement
    csms = P(evse=0, id=-5, stackLevel=3)
    accepted(cfg(), s, csms)
    assert s.get(-5) is csms and s.get_local(-5) is ext


def test_station_max_only_on_evse_0_and_not_relative():
    rejected(cfg(), ProfileSet(), P(evse=1, chargingProfilePurpose="ChargingStationMaxProfile"),
             "InvalidValue", "evseId 0")
    rejected(cfg(), ProfileSet(),
             P(evse=0, chargingProfilePurpose="ChargingStationMaxProfile",
               chargingProfileKind="Relative", startSchedule=None),
             "InvalidValue", "Relative")
    accepted(cfg(), ProfileSet(), P(evse=0, chargingProfilePurpose="ChargingStationMaxProfile"))


def test_tx_profile_binding():
    c = cfg()
    rejected(c, ProfileSet(), P(evse=0, chargingProfilePurpose="TxProfile", transactionId="tx-1"),
             "InvalidValue", "evseId > 0")
    rejected(c, ProfileSet(), P(chargingProfilePurpose="TxProfile"), "MissingParam",
             "transactionId")
    rejected(c, ProfileSet(), P(evse=2, chargingProfilePurpose="TxProfile", transactionId="tx-1"),
             "TxNotFound", "no transaction")
    rejected(c, ProfileSet(), P(chargingProfilePurpose="TxProfile", transactionId="tx-9"),
             "TxNotFound", "tx-9")
    accepted(c, ProfileSet(), P(chargingProfilePurpose="TxProfile", transactionId="tx-1"))


def test_transaction_id_only_on_tx_profile():
    rejected(cfg(), ProfileSet(), P(transactionId="tx-1"), "InvalidValue", "only allowed")


def test_kind_and_start_schedule():
    rejected(cfg(), ProfileSet(), P(chargingProfileKind="Relative"), "InvalidSchedule",
             "K01.FR.41")
    rejected(cfg(), ProfileSet(), P(startSchedule=None), "InvalidSchedule", "K01.FR.40")
    rejected(cfg(), ProfileSet(), P(chargingProfileKind="Recurring", recurrencyKind="Daily",
                                    startSchedule=None), "InvalidSchedule", "K01.FR.40")
    rejected(cfg(), ProfileSet(), P(chargingProfileKind="Recurring"), "MissingParam",
             "recurrencyKind")
    accepted(cfg(), ProfileSet(), P(chargingProfileKind="Recurring", recurrencyKind="Weekly"))
    accepted(cfg(), ProfileSet(), P(chargingProfileKind="Relative", startSchedule=None))


def test_validity_window():
    rejected(cfg(), ProfileSet(), P(validFrom="2024-05-02T00:00:00Z",
                                    validTo="2024-05-01T00:00:00Z"), "InvalidValue", "validTo")


def test_exactly_one_schedule():
    b = body()
    b["chargingSchedule"] = b["chargingSchedule"] * 2
    rejected(cfg(), ProfileSet(), profile.parse(b, 1), "InvalidSchedule", "K01.FR.34")


def test_rate_unit():
    c = cfg(rate_units=(station.UNIT_A,))
    rejected(c, ProfileSet(), P(chargingRateUnit="W"), "UnsupportedRateUnit", "K01.FR.26")


def test_schedule_numbers():
    rejected(cfg(), ProfileSet(), P(duration=-1), "InvalidSchedule", "negative duration")
    rejected(cfg(), ProfileSet(), P(minChargingRate=-0.5), "InvalidValue", "minChargingRate")
    five = [{"startPeriod": 60 * i, "limit": 6} for i in range(5)]
    rejected(cfg(), ProfileSet(), P(chargingSchedulePeriod=five), "TooManyElements",
             "5 periods")
    rejected(cfg(), ProfileSet(), P(chargingSchedulePeriod=[{"startPeriod": 5, "limit": 6}]),
             "InvalidSchedule", "K01.FR.31")
    same = [{"startPeriod": 0, "limit": 6}, {"startPeriod": 0, "limit": 7}]
    rejected(cfg(), ProfileSet(), P(chargingSchedulePeriod=same), "InvalidSchedule", "K01.FR.35")
    down = [{"startPeriod": 0, "limit": 6}, {"startPeriod": 90, "limit": 7},
            {"startPeriod": 30, "limit": 8}]
    rejected(cfg(), ProfileSet(), P(chargingSchedulePeriod=down), "InvalidSchedule", "period 2")
    neg = [{"startPeriod": 0, "limit": 6}, {"startPeriod": 90, "limit": -0.1}]
    rejected(cfg(), ProfileSet(), P(chargingSchedulePeriod=neg), "InvalidValue", "negative limit")


def test_phase_rules():
    three = [{"startPeriod": 0, "limit": 6, "numberPhases": 3, "phaseToUse": 1}]
    rejected(cfg(phase_switching=True), ProfileSet(), P(chargingSchedulePeriod=three),
             "InvalidValue", "K01.FR.19")
    absent = [{"startPeriod": 0, "limit": 6, "phaseToUse": 1}]
    rejected(cfg(phase_switching=True), ProfileSet(), P(chargingSchedulePeriod=absent),
             "InvalidValue", "numberPhases 1")
    one = [{"startPeriod": 0, "limit": 6, "numberPhases": 1, "phaseToUse": 2}]
    rejected(cfg(), ProfileSet(), P(chargingSchedulePeriod=one), "UnsupportedParam",
             "cannot switch")
    accepted(cfg(phase_switching=True), ProfileSet(), P(chargingSchedulePeriod=one))
    # DC: numberPhases/phaseToUse may be accepted and ignored (K01.FR.44)
    accepted(cfg(ac=False), ProfileSet(), P(chargingSchedulePeriod=three))


def test_phase_to_use_conflict_with_station_max():
    c = cfg(phase_switching=True)
    s = ProfileSet()
    on2 = [{"startPeriod": 0, "limit": 20, "numberPhases": 1, "phaseToUse": 2}]
    accepted(c, s, P(evse=0, id=10, chargingProfilePurpose="ChargingStationMaxProfile",
                     chargingSchedulePeriod=on2))
    on3 = [{"startPeriod": 0, "limit": 6, "numberPhases": 1, "phaseToUse": 3}]
    rejected(c, s, P(chargingSchedulePeriod=on3), "InvalidValue", "conflicts")
    accepted(c, s, P(chargingSchedulePeriod=on2))


def test_stack_level_range():
    rejected(cfg(), ProfileSet(), P(stackLevel=6), "InvalidStackLevel", "0..5")
    rejected(cfg(), ProfileSet(), P(stackLevel=-1), "InvalidStackLevel", "-1")
    accepted(cfg(), ProfileSet(), P(stackLevel=5))


def test_tx_default_cross_evse_duplicates():
    c = cfg()
    s = ProfileSet()
    accepted(c, s, P(evse=1, id=1, stackLevel=2))
    rejected(c, s, P(evse=0, id=2, stackLevel=2), "DuplicateProfile", "K01.FR.52/53")
    accepted(c, s, P(evse=0, id=3, stackLevel=3))
    rejected(c, s, P(evse=2, id=4, stackLevel=3), "DuplicateProfile", "K01.FR.52/53")
    # same stack level on two different EVSEs is fine
    accepted(c, s, P(evse=2, id=5, stackLevel=2))


def test_same_stack_purpose_evse_with_overlapping_validity():
    c = cfg()
    s = ProfileSet()
    accepted(c, s, P(id=1, validFrom="2024-05-01T00:00:00Z", validTo="2024-05-02T00:00:00Z"))
    rejected(c, s, P(id=2, validFrom="2024-05-01T12:00:00Z"), "DuplicateProfile", "K01.FR.06")
    # validity windows that do not overlap: not a duplicate
    accepted(c, s, P(id=3, validFrom="2024-05-02T00:00:00Z", validTo="2024-05-03T00:00:00Z"))
    # replacing by id is not a duplicate of itself ...
    accepted(c, s, P(id=1, validFrom="2024-05-01T00:00:00Z", validTo="2024-05-01T20:00:00Z"))
    assert len(s) == 2
    # ... but the replacement is checked against the others
    rejected(c, s, P(id=1, validFrom="2024-05-01T00:00:00Z"), "DuplicateProfile", "profile 3")


def test_back_to_back_recurring_profiles_are_not_duplicates():
    c = cfg()
    s = ProfileSet()
    first = P(evse=0, id=401, stackLevel=5, chargingProfileKind="Recurring",
              recurrencyKind="Daily", startSchedule="2024-01-01T08:00:00Z", duration=300)
    accepted(c, s, first)
    accepted(c, s, P(evse=0, id=402, stackLevel=5, chargingProfileKind="Recurring",
                     recurrencyKind="Daily", startSchedule="2024-01-01T08:05:00Z", duration=300))
    # one second of overlap makes it a duplicate
    rejected(c, s, P(evse=0, id=403, stackLevel=5, chargingProfileKind="Recurring",
                     recurrencyKind="Weekly", startSchedule="2024-01-03T08:09:59Z", duration=60),
             "DuplicateProfile", "K01.FR.06")
    # an Absolute profile that falls between two occurrences is fine, one that hits one is not
    accepted(c, s, P(evse=0, id=404, stackLevel=5, startSchedule="2024-03-01T09:00:00Z",
                     duration=3600))
    rejected(c, s, P(evse=0, id=405, stackLevel=5, startSchedule="2024-03-02T07:00:00Z",
                     duration=3700), "DuplicateProfile", "K01.FR.06")
    # Relative profiles overlap anything in their validity
    rejected(c, s, P(evse=0, id=406, stackLevel=5, chargingProfileKind="Relative",
                     startSchedule=None), "DuplicateProfile", "K01.FR.06")


def test_tx_profile_same_stack_and_transaction():
    c = cfg()
    s = ProfileSet()
    accepted(c, s, P(id=1, chargingProfilePurpose="TxProfile", transactionId="tx-1"))
    rejected(c, s, P(id=2, chargingProfilePurpose="TxProfile", transactionId="tx-1"),
             "DuplicateProfile", "K01.FR.39")
    accepted(c, s, P(id=2, stackLevel=1, chargingProfilePurpose="TxProfile",
                     transactionId="tx-1"))


def test_capacity():
    c = cfg()
    s = ProfileSet(5)
    for i in range(5):
        accepted(c, s, P(id=10 + i, stackLevel=i))
    rejected(c, s, P(id=20, evse=2), "OutOfStorage", "maximum is 5")
    # replacing an installed id does not count twice
    accepted(c, s, P(id=12, stackLevel=2, duration=60))
    assert len(s) == 5
    # the set itself refuses to grow too
    e = raises(profile.ProfileError, s.add, P(id=21, evse=2))
    assert e.reason_code == "OutOfStorage"
    assert 21 not in s


def test_overlap_helper_directly():
    a = P(id=1, chargingProfileKind="Recurring", recurrencyKind="Weekly",
          startSchedule="2024-01-01T00:00:00Z", duration=3600)
    b = P(id=2, chargingProfileKind="Recurring", recurrencyKind="Daily",
          startSchedule="2024-01-02T01:00:00Z", duration=3600)
    assert not profile_checks.overlap(a, b)
    b2 = P(id=2, chargingProfileKind="Recurring", recurrencyKind="Daily",
           startSchedule="2024-01-02T00:59:59Z", duration=3600)
    assert profile_checks.overlap(a, b2) and profile_checks.overlap(b2, a)
    # short common validity: only the real occurrences in it count
    c = P(id=3, chargingProfileKind="Recurring", recurrencyKind="Daily",
          startSchedule="2024-01-01T00:00:00Z", duration=3600,
          validFrom="2024-01-05T02:00:00Z", validTo="2024-01-05T23:00:00Z")
    assert not profile_checks.overlap(a, c)
    zero = P(id=4, duration=0)
    assert not profile_checks.overlap(zero, P(id=5))
