"""variables.DeviceModel: statuses, types, mutability, persistence, damaged files."""

import json
import os

from chargepilot.ocpp import devicemodel as variables  # noqa: I001  (largest first: less fragmentation at 100K)
from chargepilot.ocppj import errors
from chargepilot.ocpp import handlers_core
from chargepilot.store import recfile
from devtest import raises, rmtree, tmpdir


def comp(name):
    return {"name": name}


def g(c, v, inst=None, attr=None):
    var = {"name": v}
    if inst is not None:
        var["instance"] = inst
    item = {"component": comp(c), "variable": var}
    if attr is not None:
        item["attributeType"] = attr
    return item


def s(c, v, value, inst=None, attr=None):
    item = g(c, v, inst, attr)
    item["attributeValue"] = value
    return item


def getv(dm, items):
    return handlers_core.get_variables(dm, items)


def setv(dm, items):
    return handlers_core.set_variables(dm, items)


def get1(dm, c, v, inst=None, attr=None):
    return getv(dm, [g(c, v, inst, attr)])[0]


def set1(dm, c, v, value, inst=None, attr=None):
    return setv(dm, [s(c, v, value, inst, attr)])[0]


def test_get_accepted_values_as_strings():
    dm = variables.DeviceModel()
    r = get1(dm, "OCPPCommCtrlr", "HeartbeatInterval")
    assert r["attributeStatus"] == "Accepted"
    assert r["attributeValue"] == "300"
    assert r["component"] == {"name": "OCPPCommCtrlr"}
    assert r["variable"] == {"name": "HeartbeatInterval"}
    assert "attributeType" not in r
    r = get1(dm, "SmartChargingCtrlr", "Enabled", attr="Actual")
    assert (r["attributeStatus"], r["attributeValue"], r["attributeType"]) == (
        "Accepted", "true", "Actual")
    assert get1(dm, "SmartChargingCtrlr", "RateUnit")["attributeValue"] == "A,W"
    assert get1(dm, "SmartChargingCtrlr", "LimitChangeSignificance")["attributeValue"] == "1"
    r = get1(dm, "OCPPCommCtrlr", "MessageTimeout", inst="Default")
    assert r["attributeValue"] == "30"
    assert r["variable"] == {"name": "MessageTimeout", "instance": "Default"}


def test_unknown_component_and_variable():
    dm = variables.DeviceModel()
    assert get1(dm, "NoSuchCtrlr", "Enabled")["attributeStatus"] == "UnknownComponent"
    assert get1(dm, "OCPPCommCtrlr", "NoSuchVar")["attributeStatus"] == "UnknownVariable"
    # the instance is part of the name: wrong or missing instance is unknown
    assert get1(dm, "OCPPCommCtrlr", "MessageTimeout")["attributeStatus"] == "UnknownVariable"
    assert get1(dm, "SmartChargingCtrlr", "Entries", inst="X")["attributeStatus"] == \
        "UnknownVariable"
    # station-level components only
    item = g("SmartChargingCtrlr", "Enabled")
    item["component"]["evse"] = {"id": 1}
    assert getv(dm, [item])[0]["attributeStatus"] == "UnknownComponent"
    item = s("SmartChargingCtrlr", "Enabled", "false")
    item["component"]["instance"] = "x"
    assert setv(dm, [item])[0]["attributeStatus"] == "UnknownComponent"
    assert set1(dm, "Nope", "X", "1")["attributeStatus"] == "UnknownComponent"
    assert set1(dm, "SecurityCtrlr", "X", "1")["attributeStatus"] == "UnknownVariable"


def test_not_supported_attribute_type():
    dm = variables.DeviceModel()
    for attr in ("Target", "MinSet", "MaxSet"):
        r = get1(dm, "OCPPCommCtrlr", "HeartbeatInterval", attr=attr)
        assert r["attributeStatus"] == "NotSupportedAttributeType"
        assert r["attributeType"] == attr
        assert "attributeValue" not in r
        r = set1(dm, "OCPPCommCtrlr", "HeartbeatInterval", "10", attr=attr)
        assert r["attributeStatus"] == "NotSupportedAttributeType"
    assert dm.get("HeartbeatInterval") == 300


def test_read_only_rejected_on_set():
    dm = variables.DeviceModel(fixed={"ProfileStackLevel": 3})
    r = set1(dm, "SmartChargingCtrlr", "ProfileStackLevel", "5")
    assert r["attributeStatus"] == "Rejected"
    assert r["attributeStatusInfo"]["reasonCode"] == "ReadOnly"
    assert dm.get("ProfileStackLevel") == 3
    assert get1(dm, "SmartChargingCtrlr", "ProfileStackLevel")["attributeValue"] == "3"
    assert dm.mutability("ProfileStackLevel") == "ReadOnly"


def test_write_only_rejected_on_get():
    dm = variables.DeviceModel()
    r = set1(dm, "SecurityCtrlr", "BasicAuthPassword", "0123456789abcdefXYZ")
    assert r["attributeStatus"] == "Accepted"
    assert dm.get("BasicAuthPassword") == "0123456789abcdefXYZ"
    r = get1(dm, "SecurityCtrlr", "BasicAuthPassword")
    assert r["attributeStatus"] == "Rejected"
    assert "attributeValue" not in r
    assert r["attributeStatusInfo"]["reasonCode"] == "WriteOnly"
    # too short for the spec's 16 characters
    r = set1(dm, "SecurityCtrlr", "BasicAuthPassword", "short")
    assert r["attributeStatus"] == "Rejected"
    assert dm.get("BasicAuthPassword") == "0123456789abcdefXYZ"


def test_integer_values_and_ranges():
    dm = variables.DeviceModel()
    assert set1(dm, "OCPPCommCtrlr", "WebSocketPingInterval", "0")["attributeStatus"] == \
        "Accepted"
    assert dm.get("WebSocketPingInterval") == 0
    r = set1(dm, "OCPPCommCtrlr", "WebSocketPingInterval", "-5")
    assert r["attributeStatus"] == "Rejected"
    assert r["attributeStatusInfo"]["reasonCode"] == "ValuePositiveOnly"
    assert dm.get("WebSocketPingInterval") == 0
    for bad in ("abc", "1.5", "", " ", "1e3", "0x10", "9999999999"):
        r = set1(dm, "OCPPCommCtrlr", "HeartbeatInterval", bad)
        assert r["attributeStatus"] == "Rejected", bad
        assert r["attributeStatusInfo"]["reasonCode"] == "InvalidValue", bad
        assert "HeartbeatInterval" in r["attributeStatusInfo"]["additionalInfo"]
    r = set1(dm, "OCPPCommCtrlr", "HeartbeatInterval", "0")
    assert r["attributeStatusInfo"]["reasonCode"] == "ValueTooLow"
    r = set1(dm, "OCPPCommCtrlr", "RetryBackOffRepeatTimes", "21")
    assert r["attributeStatusInfo"]["reasonCode"] == "ValueTooHigh"
    assert set1(dm, "OCPPCommCtrlr", "HeartbeatInterval", "42")["attributeStatus"] == "Accepted"
    assert dm.get("HeartbeatInterval") == 42
    assert get1(dm, "OCPPCommCtrlr", "HeartbeatInterval")["attributeValue"] == "42"


def test_boolean_and_decimal_values():
    dm = variables.DeviceModel()
    assert set1(dm, "SmartChargingCtrlr", "Enabled", "FALSE")["attributeStatus"] == "Accepted"
    assert dm.get("SmartChargingEnabled") is False
    assert get1(dm, "SmartChargingCtrlr", "Enabled")["attributeValue"] == "false"
    assert set1(dm, "SmartChargingCtrlr", "Enabled", "yes")["attributeStatus"] == "Rejected"
    assert set1(dm, "SmartChargingCtrlr", "LimitChangeSignificance", "2.5")[
        "attributeStatus"] == "Accepted"
    assert dm.get("LimitChangeSignificance") == 25
    assert get1(dm, "SmartChargingCtrlr", "LimitChangeSignificance")["attributeValue"] == "2.5"
    for bad in ("2.55", "-1", "101", "x", "."):
        r = set1(dm, "SmartChargingCtrlr", "LimitChangeSignificance", bad)
        assert r["attributeStatus"] == "Rejected", bad
    assert dm.get("LimitChangeSignificance") == 25


def test_reboot_required_identity():
    dm = variables.DeviceModel(fixed={"Identity": "CP1"})
    r = set1(dm, "SecurityCtrlr", "Identity", "CP2")
    assert r["attributeStatus"] == "RebootRequired"
    assert dm.get("Identity") == "CP1"  # running value unchanged until restart
    assert dm.pending("Identity") == "CP2"
    assert set1(dm, "SecurityCtrlr", "Identity", "a:b")["attributeStatus"] == "Rejected"


def test_mixed_request_keeps_order_and_on_change():
    dm = variables.DeviceModel()
    seen = []
    dm.on_change = lambda k, v: seen.append((k, v))
    res = setv(dm, [
        s("OCPPCommCtrlr", "HeartbeatInterval", "15"),
        s("Foo", "Bar", "1"),
        s("OCPPCommCtrlr", "OfflineThreshold", "x"),
        s("OCPPCommCtrlr", "HeartbeatInterval", "15"),
    ])
    assert [r["attributeStatus"] for r in res] == ["Accepted", "UnknownComponent",
                                                    "Rejected", "Accepted"]
    assert seen == [("HeartbeatInterval", 15)]  # second set is no change


def test_items_per_message_bound():
    dm = variables.DeviceModel()
    items = [g("OCPPCommCtrlr", "HeartbeatInterval")] * 17
    e = raises(errors.OcppError, getv, dm, items)
    assert e.code == errors.OCCURRENCE_CONSTRAINT_VIOLATION
    assert "16" in e.description
    e = raises(errors.OcppError, setv, dm, [s("A", "B", "1")] * 17)
    assert e.code == errors.OCCURRENCE_CONSTRAINT_VIOLATION
    assert len(getv(dm, items[:16])) == 16


def test_entries_reader_and_smart_config():
    dm = variables.DeviceModel(fixed={"ProfileStackLevel": 4, "PeriodsPerSchedule": 10,
                                      "RateUnit": "A"}, max_entries=7)
    n = [3]
    dm.set_reader("Entries", lambda: n[0])
    assert get1(dm, "SmartChargingCtrlr", "Entries", inst="ChargingProfiles")[
        "attributeValue"] == "3"
    n[0] = 5
    assert dm.get("Entries") == 5
    v = dm.smart_config_values()
    assert v["max_stack_level"] == 4
    assert v["max_periods"] == 10
    assert v["max_entries"] == 7
    assert v["rate_units"] == ("A",)
    assert v["enabled"] is True

    class Cfg:
        max_stack_level = 0
        max_periods = 0
        rate_units = (0, 1)

    c = dm.apply_smart_config(Cfg())
    assert (c.max_stack_level, c.max_periods, c.rate_units) == (4, 10, (0,))


def test_persisted_across_restart():
    d = tmpdir("vars")
    try:
        dm = variables.DeviceModel(d, fixed={"Identity": "CP1"})
        res = setv(dm, [
            s("OCPPCommCtrlr", "HeartbeatInterval", "17"),
            s("SmartChargingCtrlr", "Enabled", "false"),
            s("SecurityCtrlr", "BasicAuthPassword", "abcdefghijklmnopq"),
            s("SecurityCtrlr", "Identity", "CP9"),
        ])
        assert [r["attributeStatus"] for r in res] == [
            "Accepted", "Accepted", "Accepted", "RebootRequired"]
        names = os.listdir(d)
        assert names == ["settings.json"], names  # no .tmp left
        dm2 = variables.DeviceModel(d, fixed={"Identity": "CP1"})
        assert dm2.get("HeartbeatInterval") == 17
        assert dm2.get("SmartChargingEnabled") is False
        assert dm2.get("BasicAuthPassword") == "abcdefghijklmnopq"
        assert dm2.get("Identity") == "CP9"  # the reboot made it active
        assert dm2.get("MessageTimeout") == 30
        assert dm2.problems == []
    finally:
        rmtree(d)


def test_damaged_file_set_aside_defaults_used():
    d = tmpdir("vars")
    try:
        for garbage in ('{"version": 1, "values": {"OCPPCommCtrlr/Heart', "[1, 2]", "\xff\x00"):
            with open(d + "/settings.json", "w") as f:
                f.write(garbage)
            dm = variables.DeviceModel(d)
            assert dm.get("HeartbeatInterval") == 300
            assert len(dm.problems) == 1
            assert "damaged" in dm.problems[0]
        names = sorted(os.listdir(d))
        assert names == ["settings.json.1.bad", "settings.json.2.bad", "settings.json.bad"], names
        with open(d + "/settings.json.bad") as f:
            assert f.read().startswith('{"version": 1')  # kept, not deleted
        # a set after that writes a fresh good file
        dm = variables.DeviceModel(d)
        set1(dm, "OCPPCommCtrlr", "OfflineThreshold", "9")
        assert variables.DeviceModel(d).get("OfflineThreshold") == 9
    finally:
        rmtree(d)


def test_unknown_and_bad_entries_kept():
    d = tmpdir("vars")
    try:
        data = {"version": 1, "values": {
            "OCPPCommCtrlr/HeartbeatInterval": "-3",
            "FutureCtrlr/Thing": "x",
            "OCPPCommCtrlr/OfflineThreshold": "77"}}
        with open(d + "/settings.json", "w") as f:
            f.write(json.dumps(data))
        dm = variables.DeviceModel(d)
        assert dm.get("HeartbeatInterval") == 300  # bad value: default
        assert dm.get("OfflineThreshold") == 77
        assert len(dm.problems) == 2
        set1(dm, "OCPPCommCtrlr", "MessageTimeout", "12", inst="Default")
        with open(d + "/settings.json", "rb") as f:
            vals = json.loads(recfile.unframe(f.read()))["values"]
        assert vals["FutureCtrlr/Thing"] == "x"
        assert vals["OCPPCommCtrlr/HeartbeatInterval"] == "-3"
        assert vals["OCPPCommCtrlr/MessageTimeout[Default]"] == "12"
        assert vals["OCPPCommCtrlr/OfflineThreshold"] == "77"
    finally:
        rmtree(d)


def test_save_failure_rejects_and_keeps_value():
    d = tmpdir("vars")
    dm = variables.DeviceModel(d)
    rmtree(d)  # the flash is gone: the write must fail
    r = set1(dm, "OCPPCommCtrlr", "HeartbeatInterval", "11")
    assert r["attributeStatus"] == "Rejected"
    assert r["attributeStatusInfo"]["reasonCode"] == "InternalError"
    assert dm.get("HeartbeatInterval") == 300


def test_table_is_consistent():
    keys = set()
    for row in variables.TABLE:
        assert len(row) == 10
        assert row[0] not in keys
        keys.add(row[0])
        # every default passes its own check
        if row[4] != "string":
            assert variables.parse_value(row, variables.format_value(row, row[6])) == row[6]


def test_flipped_byte_in_settings_is_detected_never_read():
    # issue 11: one flipped byte turned SecurityProfile 2 into 1 and nothing was
    # reported. Every single-bit flip of the stored file must be refused (set
    # aside, reported), never read as another value.
    d = tmpdir("vars")
    try:
        dm = variables.DeviceModel(d)
        dm.set_local("SecurityProfile", 2)
        with open(d + "/settings.json", "rb") as f:
            good = f.read()
        i = good.index(b'SecurityProfile":"2"') + len(b'SecurityProfile":"')
        checked = 0
        for pos in (i, 0, len(good) // 2, len(good) - 2):
            for bit in range(8):
                bad = bytearray(good)
                bad[pos] ^= 1 << bit
                with open(d + "/settings.json", "wb") as f:
                    f.write(bytes(bad))
                dm2 = variables.DeviceModel(d)
                assert len(dm2.problems) == 1 and "damaged" in dm2.problems[0], (pos, bit)
                assert dm2.get("SecurityProfile") == 1  # the default, and reported
                assert dm2.stored("SecurityProfile") is None
                for n in os.listdir(d):
                    if n.endswith(".bad"):
                        os.remove(d + "/" + n)
                checked += 1
        assert checked == 32
        with open(d + "/settings.json", "wb") as f:
            f.write(good)
        assert variables.DeviceModel(d).get("SecurityProfile") == 2
    finally:
        rmtree(d)


def test_settings_of_the_previous_format_are_migrated():
    # A station upgraded in the field: settings.json of the format before the
    # integrity line (plain JSON) is read once and rewritten framed.
    d = tmpdir("vars")
    try:
        with open(d + "/settings.json", "w") as f:
            f.write('{"version": 1, "values": {"SecurityCtrlr/SecurityProfile": "2", '
                    '"OCPPCommCtrlr/HeartbeatInterval": "77"}}')
        dm = variables.DeviceModel(d)
        assert dm.problems == []
        assert dm.get("SecurityProfile") == 2 and dm.get("HeartbeatInterval") == 77
        with open(d + "/settings.json", "rb") as f:
            data = f.read()
        assert b"\n#crc32=" in data
        assert json.loads(recfile.unframe(data))["values"]["SecurityCtrlr/SecurityProfile"] == "2"
        dm = variables.DeviceModel(d)
        assert dm.get("SecurityProfile") == 2 and dm.problems == []
    finally:
        rmtree(d)
