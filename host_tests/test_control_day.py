"""A simulated day of the control loop + transactions (CPython, time-accelerated).

The same `day_scenario` runs on the MicroPython unix port with a shorter day
(host_tests/device/test_transactions.py::test_short_day_scenario). Here: a full
86400 s day sampled every 5 s (plus every next-change instant and 50 ms steps
after each event), the advertised current checked against min(reference limit,
rating) at every sample, and every message checked with jsonschema against the
official OCPP 2.0.1 schemas.
"""

import json
import os

import jsonschema
import ocpp.v201
from test_control import Rig
from test_transactions import check_day, day_scenario, remote_profile, start_req

SCHEMAS = os.path.join(os.path.dirname(ocpp.v201.__file__), "schemas")
_cache = {}


def schema_check(action, kind, payload):
    name = action + kind
    v = _cache.get(name)
    if v is None:
        with open(os.path.join(SCHEMAS, name + ".json")) as f:
            schema = json.load(f)
        cls = jsonschema.validators.validator_for(schema)
        v = cls(schema, format_checker=cls.FORMAT_CHECKER)
        _cache[name] = v
    v.validate(payload)


def test_full_day_never_above_the_limit_and_events_valid():
    seen = []
    fig = day_scenario(day_s=86400, sample_s=5,
                       send=lambda a, p: seen.append((a, json.loads(json.dumps(p)))))
    check_day(fig)
    assert fig["samples"] >= 86400 // 5
    # a handful of recomputes a day, not one per sample: the schedule is not polled
    assert fig["recomputes"] < 200, fig["recomputes"]
    actions = set(a for a, _ in seen)
    assert actions == {"TransactionEvent", "StatusNotification"}
    for action, payload in seen:
        schema_check(action, "Request", payload)
    print("day: %d samples, %d steps, %d recomputes, %d messages"
          % (fig["samples"], fig["steps"], fig["recomputes"], len(seen)))


def test_handler_payloads_match_the_official_schemas():
    r = Rig(tx=True)
    r.run(200)
    checked = 0
    reqs = [start_req(cp=remote_profile(7, 80)), start_req(evse=None),
            start_req(evse=2), start_req(cp=remote_profile(purpose="TxDefaultProfile"))]
    for req in reqs:
        schema_check("RequestStartTransaction", "Request", req)
        resp = r.txs.request_start(req)
        schema_check("RequestStartTransaction", "Response", resp)
        checked += 1
    r.board.ev(1).plug()
    r.run(500)
    tid = r.txs.transaction_id(1)
    for req in ({"transactionId": "unknown"}, {"transactionId": tid}):
        schema_check("RequestStopTransaction", "Request", req)
        resp = r.txs.request_stop(req)
        schema_check("RequestStopTransaction", "Response", resp)
        checked += 1
    assert r.events()[-1]["transactionInfo"]["stoppedReason"] == "Remote"
    for action, payload in r.sent:
        schema_check(action, "Request", payload)
        checked += 1
    assert checked >= 10
    # and a payload the schema refuses is refused by this checker (it is live)
    bad = dict(r.events()[0])
    bad["triggerReason"] = "Whenever"
    try:
        schema_check("TransactionEvent", "Request", bad)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("jsonschema accepted an invalid triggerReason")


def test_every_transactions_scenario_validates_with_jsonschema(monkeypatch):
    """Re-run the device tests of test_transactions with jsonschema on every message
    sent and every RequestStart/StopTransaction response."""
    import test_transactions as tt
    from chargepilot.ocpp import transactions

    counts = {"msg": 0, "resp": 0}
    send = Rig._send
    start = transactions.Transactions.request_start
    stop = transactions.Transactions.request_stop

    def checked_send(self, action, payload):
        schema_check(action, "Request", payload)
        counts["msg"] += 1
        send(self, action, payload)

    def checked_start(self, payload):
        resp = start(self, payload)
        schema_check("RequestStartTransaction", "Response", resp)
        counts["resp"] += 1
        return resp

    def checked_stop(self, payload):
        resp = stop(self, payload)
        schema_check("RequestStopTransaction", "Response", resp)
        counts["resp"] += 1
        return resp

    monkeypatch.setattr(Rig, "_send", checked_send)
    monkeypatch.setattr(transactions.Transactions, "request_start", checked_start)
    monkeypatch.setattr(transactions.Transactions, "request_stop", checked_stop)
    names = sorted(n for n in dir(tt) if n.startswith("test_"))
    assert len(names) >= 12
    for name in names:
        getattr(tt, name)()
    assert counts["msg"] > 100 and counts["resp"] > 15, counts
