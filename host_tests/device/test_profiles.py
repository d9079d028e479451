"""profiles.ProfileSet: add/replace, remove, K09 select, K10 clear, end of transaction."""

from devtest import raises

from chargepilot.smart import profile
from chargepilot.smart.profiles import ProfileSet


def P(pid, evse, purpose="TxDefaultProfile", stack=0, source="CSO", tx=None):
    b = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
         "chargingProfileKind": "Relative",
         "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": pid}]}]}
    if tx is not None:
        b["transactionId"] = tx
    return profile.parse(b, evse, source)


def sample():
    s = ProfileSet(20)
    s.add(P(1, 0, "ChargingStationMaxProfile"))
    s.add(P(2, 0, "TxDefaultProfile", stack=1))
    s.add(P(3, 1, "TxDefaultProfile", stack=2))
    s.add(P(4, 1, "TxProfile", stack=0, tx="t1"))
    s.add(P(5, 2, "TxProfile", stack=3, tx="t2"))
    s.add(P(-6, 0, "ChargingStationExternalConstraints", source="EMS"))
    s.add(P(-7, 1, "ChargingStationExternalConstraints", stack=2, source="SO"))
    return s


def ids(lst):
    return [p.id for p in lst]


def test_add_replace_remove():
    s = ProfileSet(3)
    assert s.add(P(1, 1)) is None
    old = s.add(P(1, 2))
    assert old is not None and old.evse_id == 1
    assert s.get(1).evse_id == 2 and len(s) == 1 and 1 in s
    assert s.remove(1).id == 1 and s.remove(1) is None and len(s) == 0


def test_bounded():
    s = ProfileSet(2)
    s.add(P(1, 1))
    s.add(P(2, 1))
    e = raises(profile.ProfileError, s.add, P(3, 1))
    assert e.reason_code == "OutOfStorage"
    assert s.ids() == [1, 2]
    s.add(P(2, 2))  # replacing still works when full
    assert s.get(2).evse_id == 2


def test_select_evse_semantics():
    s = sample()
    assert ids(s.select()) == [-7, -6, 1, 2, 3, 4, 5]               # K09.FR.06
    assert ids(s.select(evse_id=0)) == [-6, 1, 2]                    # K09.FR.05
    assert ids(s.select(evse_id=1)) == [-7, 3, 4]                    # K09.FR.04
    assert ids(s.select(evse_id=3)) == []


def test_select_criteria_are_anded():
    s = sample()
    assert ids(s.select(ids=[1, 3, 99])) == [1, 3]
    assert ids(s.select(ids=[1, 3], evse_id=1)) == [3]
    assert ids(s.select(stack_level=2)) == [-7, 3]
    assert ids(s.select(source=profile.CSO)) == [1, 2, 3, 4, 5]
    assert ids(s.select(source=profile.SO)) == [-7]
    assert ids(s.select(purpose=profile.TX_DEFAULT)) == [2, 3]
    assert ids(s.select(purpose=profile.TX_DEFAULT, stack_level=2, evse_id=1)) == [3]
    assert ids(s.select(purpose=profile.TX, stack_level=2)) == []


def test_clear_by_id():
    s = sample()
    assert ids(s.clear(profile_id=3)) == [3] and 3 not in s
    assert s.clear(profile_id=3) == []                               # K10.FR.01 Unknown
    assert s.clear(profile_id=-6) == [] and s.get_local(-6) is not None  # K10.FR.09
    # id wins over criteria
    assert ids(s.clear(profile_id=4, evse_id=2)) == [4]


def test_clear_by_criteria_never_external():
    s = sample()
    assert ids(s.clear(evse_id=1)) == [3, 4] and s.get_local(-7) is not None  # K10.FR.04/08
    assert ids(s.clear(purpose=profile.TX, stack_level=3)) == [5]
    assert s.clear(purpose=profile.EXTERNAL) == []                   # K10.FR.08
    assert ids(s.clear(evse_id=0, stack_level=1)) == [2]


def test_clear_everything_but_external():
    s = sample()
    assert ids(s.clear()) == [1, 2, 3, 4, 5]
    assert s.ids() == [] and len(s) == 2
    assert s.get_local(-7) is not None and s.get_local(-6) is not None
    assert s.clear() == []


def test_end_transaction_drops_its_tx_profiles():
    s = sample()
    s.add(P(8, 1, "TxProfile", stack=1, tx="old"))
    assert ids(s.end_transaction(1, "t1")) == [4]
    assert 8 in s and 3 in s
    assert ids(s.end_transaction(1)) == [8]
    assert ids(s.end_transaction(2, "t2")) == [5]
    assert s.end_transaction(2) == []


def test_csms_and_local_ids_are_separate_spaces():
    # issue 10: a CSMS profile with the id a local limit happens to use
    s = ProfileSet(5)
    local = P(-6, 0, "ChargingStationExternalConstraints", source="EMS")
    csms = P(-6, 0, "ChargingStationMaxProfile")
    assert s.add(local) is None
    assert s.add(csms) is None                     # nothing replaced
    assert len(s) == 2 and s.get(-6) is csms and s.get_local(-6) is local
    assert s.same(csms) is csms and s.same(local) is local
    # a new local limit replaces only the local one, never the CSMS profile
    local2 = P(-6, 0, "ChargingStationExternalConstraints", stack=1, source="EMS")
    assert s.add(local2) is local and s.get(-6) is csms and len(s) == 2
    # the CSMS can neither clear nor select the local one by id
    assert s.clear(profile_id=-6) == [csms] and s.get_local(-6) is local2
    s.add(csms)
    assert ids(s.select(ids=[-6])) == [-6] and s.select(ids=[-6])[0] is csms
    assert s.remove(-6) is csms and s.get_local(-6) is local2
    assert s.remove_local(-6) is local2 and len(s) == 0 and s.ordered() == []


def test_ordered_by_stack_then_id():
    s = ProfileSet(10)
    for pid, stack in ((5, 1), (2, 1), (9, 3), (-4, 0), (7, 3)):
        s.add(P(pid, 1, stack=stack))
    assert [(p.stack, p.id) for p in s.ordered()] == [(3, 7), (3, 9), (1, 2), (1, 5), (0, -4)]
    s.add(P(9, 1, stack=0))      # replaced: moves
    assert [(p.stack, p.id) for p in s.ordered()] == [(3, 7), (1, 2), (1, 5), (0, -4), (0, 9)]
    s.remove(2)
    s.clear(profile_id=7)
    assert [p.id for p in s] == [5, -4, 9]
