"""OCPP-J RPC layer over the in-memory WebSocket pair (both runtimes)."""

import asyncio
import json

# rpc before fakews: on MicroPython it then compiles with the most free heap
from chargepilot.ocppj import errors, rpc
from chargepilot.ocppj.errors import OcppError
from chargepilot.ocpp.registration import refuse_all  # the agent's gate while Rejected
from fakews import FakeValidator, Setup, check_error, fails, heartbeat, pair, sync  # noqa: I001

E = errors
HB = {"currentTime": "2026-05-05T00:00:00Z"}


def _result(payload):
    return lambda call: json.dumps([3, call[1], payload])


async def _still_works(s, n):
    mid = "ok-%d" % n
    ans = await s.ask(json.dumps([2, mid, "Reset", {"type": "Immediate"}]))
    assert ans == [3, mid, {"status": "Accepted"}], ans


# ---------------------------------------------------------------- incoming CALLs


@sync
async def test_valid_call_answered():
    s = Setup()
    ans = await s.ask('[2, "a1", "Reset", {"type": "OnIdle", "evseId": 1}]')
    assert ans == [3, "a1", {"status": "Scheduled"}]
    ans = await s.ask('[2,"a2","Heartbeat",{}]')
    assert ans == [3, "a2", {"currentTime": "2026-01-01T00:00:00Z"}]
    assert ("Reset", "Request") in s.rpc.validator.checked
    assert ("Reset", "Response") in s.rpc.validator.checked
    await s.end()


# (frame, id expected in the CALLERROR, code)
MALFORMED = (
    ("this is not json", "-1", E.RPC_FRAMEWORK_ERROR),
    ('[2, "bad1", "Reset", {"type": ', "bad1", E.FORMAT_VIOLATION),
    ('{"type": "Reset"}', "-1", E.RPC_FRAMEWORK_ERROR),
    ('"just a string"', "-1", E.RPC_FRAMEWORK_ERROR),
    ("[]", "-1", E.RPC_FRAMEWORK_ERROR),
    ('[7, "m1", "Reset", {}]', "m1", E.MESSAGE_TYPE_NOT_SUPPORTED),
    ('["2", "m2", "Reset", {}]', "m2", E.RPC_FRAMEWORK_ERROR),
    ('[true, "m2b", "Reset", {}]', "m2b", E.RPC_FRAMEWORK_ERROR),
    ('[2, "m3", "Reset"]', "m3", E.RPC_FRAMEWORK_ERROR),
    ('[2, "m4", "Reset", {}, {}]', "m4", E.RPC_FRAMEWORK_ERROR),
    ('[2, 5, "Reset", {"type": "OnIdle"}]', "-1", E.RPC_FRAMEWORK_ERROR),
    ('[2, "", "Reset", {"type": "OnIdle"}]', "-1", E.RPC_FRAMEWORK_ERROR),
    ('[2, "' + "x" * 37 + '", "Reset", {"type": "OnIdle"}]', "-1", E.RPC_FRAMEWORK_ERROR),
    ('[2, "m5", 17, {}]', "m5", E.RPC_FRAMEWORK_ERROR),
    ('[2, "m6", "FlyToTheMoon", {}]', "m6", E.NOT_IMPLEMENTED),
    ('[2, "m7", "SetChargingProfile", {}]', "m7", E.NOT_SUPPORTED),
    ('[2, "m8", "Reset", null]', "m8", E.FORMAT_VIOLATION),
    ('[2, "m9", "Reset", {}]', "m9", E.OCCURRENCE_CONSTRAINT_VIOLATION),
    ('[2, "m10", "Reset", {"type": 5}]', "m10", E.TYPE_CONSTRAINT_VIOLATION),
    ('[2, "m11", "Reset", {"type": true}]', "m11", E.TYPE_CONSTRAINT_VIOLATION),
    ('[2, "m12", "Reset", {"type": "Later"}]', "m12", E.PROPERTY_CONSTRAINT_VIOLATION),
    ('[2, "m13", "Reset", {"type": "OnIdle", "evseId": -1}]', "m13", E.PROPERTY_CONSTRAINT_VIOLATION),
    ('[2, "m14", "Reset", {"type": "OnIdle", "colour": "red"}]', "m14", E.FORMAT_VIOLATION),
    # a lone surrogate escape in a frame that is neither a CALL nor an answer: it is
    # the frame's shape that is wrong, as without the escape (the fuzzer's finding:
    # kind 0 was taken for an answer and got nothing)
    ('[0, "m15" \\uD800', "-1", E.RPC_FRAMEWORK_ERROR),
    ('[7, "m16", "\\uD800", {}]', "m16", E.MESSAGE_TYPE_NOT_SUPPORTED),
    # not JSON is what is wrong first, with or without the escape
    ('[2, "m17" \\uD800', "m17", E.FORMAT_VIOLATION),
    # a CALL with a lone surrogate is refused whatever its id looks like (escaped here,
    # which the id salvage does not read): never handed to a handler
    ('[2, "m\\u0031\\u0038", "Reset", {"type": "\\uD800"}]', "m18", E.TYPE_CONSTRAINT_VIOLATION),
    ('[2, "m19", "Reset\\uD800"]', "m19", E.RPC_FRAMEWORK_ERROR),  # the shape first
    # an id holding the lone half is unreadable (as any id that is no 1-36 character
    # string): echoed, it would make our answer not Unicode text (MicroPython's
    # json.dumps writes the half raw; the answer was lost)
    ('[2, "m\\uD800", "Reset", {"type": "OnIdle"}]', "-1", E.RPC_FRAMEWORK_ERROR),
    # not JSON, an id with escapes (a pair here): the salvage reads no escapes, on the
    # frame as it came (the fuzzer's finding: it read the id after the pair was decoded)
    ('[2, "\\ud83d\\ude00x" "Reset", {}]', "-1", E.RPC_FRAMEWORK_ERROR),
    # not JSON, though MicroPython's json.loads gives each a meaning (a missing comma,
    # colon or value, a number as key, a trailing comma, 01, 1., an unknown escape)
    ('[2, "j1" "Reset", {"type": "OnIdle"}]', "j1", E.FORMAT_VIOLATION),
    ('[2, "j2", "Reset", {"type" "OnIdle"}]', "j2", E.FORMAT_VIOLATION),
    ('[2, "j3", "Reset", {"type": "OnIdle", "evseId": }]', "j3", E.FORMAT_VIOLATION),
    ('[2, "j4", "Reset", {1: "OnIdle"}]', "j4", E.FORMAT_VIOLATION),
    ('[2, "j5", "Reset", {"type": "OnIdle",}]', "j5", E.FORMAT_VIOLATION),
    ('[2, "j6", "Reset", {"type": "OnIdle", "evseId": 01}]', "j6", E.FORMAT_VIOLATION),
    ('[2, "j7", "Reset", {"type": "OnIdle", "evseId": 1.}]', "j7", E.FORMAT_VIOLATION),
    ('[2, "j8", "Reset", {"type": "On\\xIdle"}]', "j8", E.FORMAT_VIOLATION),
    ('[2, "j9",, "Reset", {"type": "OnIdle"}]', "j9", E.FORMAT_VIOLATION),
    ('[2, "j10", "Reset", {"type": "OnIdle"}] [', "j10", E.FORMAT_VIOLATION),
)


@sync
async def test_each_malformed_call_gets_its_callerror_and_next_call_works():
    s = Setup()
    n = 0
    for frame, mid, code in MALFORMED:
        ans = await s.ask(frame)
        try:
            check_error(ans, mid, code)
        except AssertionError:
            raise AssertionError("%s -> %s (wanted %s %s)" % (frame, ans, mid, code))
        n += 1
        await _still_works(s, n)
    assert not s.task.done()
    await s.end()


@sync
async def test_deep_nesting_is_answered():
    """CPython's json gives up (RecursionError), MicroPython's may run out of heap: either way a
    CALLERROR (RpcFrameworkError/FormatViolation, or InternalError for memory), and the reader lives."""
    s = Setup()
    ans = await s.ask("[" * 1200)
    check_error(ans, "-1", ans[2])
    assert ans[2] in (E.RPC_FRAMEWORK_ERROR, E.INTERNAL_ERROR), ans
    ans = await s.ask('[2, "d1", "Reset", {"type": "OnIdle", "x": ' + "[" * 1200 + "]" * 1200 + "}]")
    check_error(ans, "d1", ans[2])
    assert ans[2] in (E.FORMAT_VIOLATION, E.INTERNAL_ERROR), ans
    await _still_works(s, 1)
    await s.end()


class _NoMemJson:
    @staticmethod
    def loads(text):
        raise MemoryError

    dumps = staticmethod(json.dumps)


@sync
async def test_out_of_memory_reading_a_call_is_internal_error():
    s = Setup()
    rpc.json = _NoMemJson
    try:
        check_error(await s.ask('[2, "big1", "Reset", {"type": "OnIdle"}]'), "big1", E.INTERNAL_ERROR)
        # JSON (the grammar check passes it), no id to read: "-1"
        check_error(await s.ask('{"not": "a CALL"}'), "-1", E.INTERNAL_ERROR)
        await s.csms.send('[3, "x", {}]')  # an answer: never answered
        assert await s.silent()
    finally:
        rpc.json = json
    await _still_works(s, 1)
    await s.end()


@sync
async def test_never_echoes_invalid_json():
    s = Setup()
    ans = await s.ask('[2, "j1", "Reset", {"type": "<script>SECRET' + "Z" * 400)
    check_error(ans, "j1", E.FORMAT_VIOLATION)
    assert "SECRET" not in ans[3]
    ans = await s.ask("\x00\x01garbage SECRET")
    check_error(ans, "-1", E.RPC_FRAMEWORK_ERROR)
    assert "SECRET" not in ans[3]
    await s.end()


async def _refuses(payload):
    raise OcppError(E.NOT_SUPPORTED, "no resets today")


async def _old_spelling(payload):
    raise OcppError("OccurenceConstraintViolation", "d" * 300)


async def _odd_code(payload):
    raise OcppError("NoSuchCode", "x")


async def _crashes(payload):
    raise KeyError("boom")


async def _bad_answer(payload):
    return {"status": "Maybe"}


async def _not_a_dict(payload):
    return None


@sync
async def test_handler_errors():
    for handler, code, logged in (
        (_refuses, E.NOT_SUPPORTED, None),
        (_old_spelling, E.OCCURRENCE_CONSTRAINT_VIOLATION, None),
        (_odd_code, E.GENERIC_ERROR, "not an OCPP-J code"),
        (_crashes, E.INTERNAL_ERROR, "Reset handler failed"),
        (_bad_answer, E.INTERNAL_ERROR, "invalid ResetResponse not sent"),
        (_not_a_dict, E.INTERNAL_ERROR, "not a dict"),
    ):
        s = Setup({"Reset": handler, "Heartbeat": heartbeat})
        ans = await s.ask('[2, "h1", "Reset", {"type": "Immediate"}]')
        check_error(ans, "h1", code)
        assert "Maybe" not in json.dumps(ans)
        ans = await s.ask('[2, "h2", "Heartbeat", {}]')
        assert ans[0] == 3 and ans[1] == "h2"
        await s.end()
        assert logged is None or s.log.has(logged), s.log.lines


@sync
async def test_follow_up_work_starts_after_the_answer_is_sent():
    # GetChargingProfiles: the response goes out before the first report (FR.05)
    order = []

    async def reset(payload):
        async def after():
            order.append("after:%d" % len(s.frames))
            await s.rpc.call("Heartbeat", {})

        return {"status": "Accepted"}, after

    s = Setup({"Reset": reset, "Heartbeat": heartbeat})
    ans = await s.ask('[2, "f1", "Reset", {"type": "Immediate"}]')
    assert ans == [3, "f1", {"status": "Accepted"}]
    call = await s.answer_ours(lambda c: json.dumps([3, c[1], {"currentTime": "x"}]))
    assert call[2] == "Heartbeat"
    # the answer frame was already out (in + out = 2 frames) when `after` started
    assert order == ["after:2"], order
    await s.end()


async def _after_crashes():
    raise RuntimeError("boom")


@sync
async def test_failing_follow_up_is_logged_and_the_connection_lives():
    async def reset(payload):
        return {"status": "Accepted"}, _after_crashes

    s = Setup({"Reset": reset, "Heartbeat": heartbeat})
    ans = await s.ask('[2, "f2", "Reset", {"type": "Immediate"}]')
    assert ans == [3, "f2", {"status": "Accepted"}]
    ans = await s.ask('[2, "f3", "Heartbeat", {}]')
    assert ans[0] == 3 and ans[1] == "f3"
    assert s.log.has("follow-up of Reset failed"), s.log.lines
    await s.end()


@sync
async def test_gate_refuses_with_security_error():
    s = Setup(gate=refuse_all)
    check_error(await s.ask('[2, "g1", "Reset", {"type": "Immediate"}]'), "g1", E.SECURITY_ERROR)
    check_error(await s.ask('[2, "g2", "Unknown", {}]'), "g2", E.SECURITY_ERROR)
    # B03.FR.08 comes before what is wrong inside the payload, a lone surrogate too
    # (the fuzzer's finding); a CALL of the wrong shape is still the shape's error
    check_error(await s.ask('[2, "g3", "Reset", {"type": "\\uD800"}]'), "g3", E.SECURITY_ERROR)
    check_error(await s.ask('[2, "g4", "Reset\\uD800"]'), "g4", E.RPC_FRAMEWORK_ERROR)
    s.rpc.gate = None
    await _still_works(s, 1)
    await s.end()


@sync
async def test_slow_handlers_do_not_block_the_reader():
    release = asyncio.Event()

    async def slow(payload):
        await release.wait()
        return {"status": "Accepted"}

    s = Setup({"Reset": slow, "Heartbeat": heartbeat})
    await s.csms.send('[2, "s1", "Reset", {"type": "Immediate"}]')
    assert (await s.ask('[2, "s2", "Heartbeat", {}]'))[1] == "s2"
    release.set()
    assert json.loads(await s.csms.recv(500)) == [3, "s1", {"status": "Accepted"}]
    await s.end()


@sync
async def test_flood_of_calls_is_bounded():
    """More CALLs than max_tasks: the extra ones are handled inline; all answered."""
    release = asyncio.Event()
    running = [0, 0]

    async def slow(payload):
        running[0] += 1
        running[1] = max(running[1], running[0])
        await release.wait()
        running[0] -= 1
        return {"status": "Accepted"}

    s = Setup({"Reset": slow}, max_tasks=2)
    for i in range(5):
        await s.csms.send('[2, "f%d", "Reset", {"type": "Immediate"}]' % i)
    await asyncio.sleep_ms(30)
    assert running[1] == 3, running  # 2 tasks + 1 inline, the reader waits
    release.set()
    ids = []
    for _ in range(5):  # no await inside comprehensions on MicroPython
        ids.append(json.loads(await s.csms.recv(500))[1])
    ids.sort()
    assert ids == ["f0", "f1", "f2", "f3", "f4"]
    await s.end()


# ---------------------------------------------------------------- our CALLs


@sync
async def test_call_returns_result():
    s = Setup()
    t = asyncio.create_task(s.answer_ours(_result(HB)))
    assert await s.rpc.call("Heartbeat", {}) == HB
    call = await t
    assert call[0] == 2 and call[2] == "Heartbeat" and call[3] == {}
    assert type(call[1]) is str and 0 < len(call[1]) <= 36
    assert s.frames[0][0] == "out" and json.loads(s.frames[0][1]) == call
    assert s.frames[1][0] == "in" and json.loads(s.frames[1][1]) == [3, call[1], HB]
    await s.end()


def test_ids_unique_and_short():
    seen = []
    for r in (rpc.Rpc(pair()[0], {}, FakeValidator()), rpc.Rpc(pair()[0], {}, FakeValidator())):
        for _ in range(50):
            mid = r._next_id()
            assert 0 < len(mid) <= 36 and mid not in seen
            seen.append(mid)
    assert seen[0].split("-")[0] != seen[50].split("-")[0]  # a random prefix per Rpc
    r = rpc.Rpc(pair()[0], {}, FakeValidator(), id_prefix="boot7")
    assert r._next_id() == "boot7-1"


@sync
async def test_call_timeout_then_next_call_works():
    s = Setup(call_timeout_ms=60)
    e = await fails(rpc.CallTimeout, s.rpc.call("Heartbeat", {}))
    assert "Heartbeat" in str(e)
    late = json.loads(await s.csms.recv(100))
    # a late answer for the timed-out CALL is dropped, never answered
    await s.csms.send(json.dumps([3, late[1], HB]))
    assert await s.silent()
    assert s.log.has("unexpected id")
    t = asyncio.create_task(s.answer_ours(_result({"currentTime": "2026-05-05T00:00:01Z"})))
    assert (await s.rpc.call("Heartbeat", {}, 1000))["currentTime"] == "2026-05-05T00:00:01Z"
    assert (await t)[1] != late[1]
    await s.end()


@sync
async def test_result_for_unknown_id_dropped():
    s = Setup()
    await s.csms.send('[3, "nobody-asked", {"x": 1}]')
    await s.csms.send('[4, "nobody-asked", "GenericError", "", {}]')
    await s.csms.send('[3, "broken" ')
    assert await s.silent()
    assert s.log.has("unexpected id")

    async def csms():
        await s.answer_ours(lambda c: '[3, "wrong-id", {}]')
        await asyncio.sleep_ms(10)
        await s.csms.send(json.dumps([3, s.rpc._prefix + "-1", HB]))

    t = asyncio.create_task(csms())
    assert await s.rpc.call("Heartbeat", {}, 1000) == HB
    await t
    assert await s.silent()
    await s.end()


@sync
async def test_callerror_ends_call():
    s = Setup()
    err = [4, None, "OccurenceConstraintViolation", "evseId missing", {"k": 1}]
    t = asyncio.create_task(s.answer_ours(lambda c: json.dumps(err[:1] + [c[1]] + err[2:])))
    e = await fails(rpc.CallError, s.rpc.call("Reset", {"type": "OnIdle"}, 1000))
    await t
    assert e.code == E.OCCURRENCE_CONSTRAINT_VIOLATION  # old spelling accepted, normalised
    assert e.description == "evseId missing" and e.details == {"k": 1}
    assert isinstance(e, rpc.RpcError)
    await s.end()


@sync
async def test_bad_result_payload_raises_bad_response():
    s = Setup()
    t = asyncio.create_task(s.answer_ours(_result({"status": "Whatever"})))
    e = await fails(rpc.BadResponse, s.rpc.call("Reset", {"type": "OnIdle"}, 1000))
    await t
    assert e.code == E.PROPERTY_CONSTRAINT_VIOLATION
    t = asyncio.create_task(s.answer_ours(lambda c: json.dumps([3, c[1], "not an object"])))
    e = await fails(rpc.BadResponse, s.rpc.call("Reset", {"type": "OnIdle"}, 1000))
    await t
    assert e.code == E.RPC_FRAMEWORK_ERROR
    await s.end()


@sync
async def test_invalid_outgoing_payload_not_sent():
    s = Setup()
    e = await fails(OcppError, s.rpc.call("Reset", {"type": "Tomorrow"}))
    assert e.code == E.PROPERTY_CONSTRAINT_VIOLATION
    await fails(ValueError, s.rpc.call("Reset", None))
    await fails(ValueError, s.rpc.call("", {}))
    assert s.station.sent == []
    assert await s.silent(20)
    await s.end()


@sync
async def test_incoming_call_while_our_call_outstanding():
    s = Setup()

    async def csms():
        ours = json.loads(await s.csms.recv(1000))
        # the CSMS sends its own CALL before answering ours
        theirs = await s.ask('[2, "c-1", "Reset", {"type": "Immediate"}]')
        await s.csms.send(json.dumps([3, ours[1], HB]))
        return theirs

    t = asyncio.create_task(csms())
    assert await s.rpc.call("Heartbeat", {}, 1000) == HB
    assert await t == [3, "c-1", {"status": "Accepted"}]
    await s.end()


@sync
async def test_one_outstanding_call_at_a_time():
    s = Setup()
    r1 = asyncio.create_task(s.rpc.call("Heartbeat", {}, 1000))
    r2 = asyncio.create_task(s.rpc.call("Reset", {"type": "OnIdle"}, 1000))
    first = json.loads(await s.csms.recv(500))
    assert await s.silent(40)  # the second waits for the first answer
    answers = {"Heartbeat": HB, "Reset": {"status": "Accepted"}}
    await s.csms.send(json.dumps([3, first[1], answers[first[2]]]))
    second = json.loads(await s.csms.recv(500))
    assert second[2] != first[2]
    await s.csms.send(json.dumps([3, second[1], answers[second[2]]]))
    assert [await r1, await r2] == [HB, {"status": "Accepted"}]
    await s.end()


@sync
async def test_disconnect_during_call():
    s = Setup()

    async def hang_up():
        await s.csms.recv(1000)
        await s.csms.close()

    t = asyncio.create_task(hang_up())
    await fails(rpc.Disconnected, s.rpc.call("Heartbeat", {}, 2000))
    await t
    await asyncio.wait_for_ms(s.task, 500)
    assert s.rpc.closed
    await fails(rpc.Disconnected, s.rpc.call("Heartbeat", {}, 2000))  # at once, not after 2 s


def test_salvage_reads_only_a_plain_prefix():
    assert rpc._salvage(' [ 2 , "abc", "Reset", {') == (2, "abc")
    assert rpc._salvage('[3,"id-9"') == (3, "id-9")
    assert rpc._salvage('[2,"a\\"b"') is None
    assert rpc._salvage('[2,""') is None
    assert rpc._salvage('[2,"' + "q" * 37 + '"') is None
    assert rpc._salvage("{}") is None
    assert rpc._salvage("") is None


def test_normal_code_accepts_old_spelling():
    assert E.normal_code("OccurenceConstraintViolation") == "OccurrenceConstraintViolation"
    assert E.normal_code("FormationViolation") == "FormatViolation"
    assert E.normal_code("GenericError") == "GenericError"


def test_refuse_all_is_security_error():
    try:
        refuse_all("Reset")
    except OcppError as e:
        assert e.code == E.SECURITY_ERROR and "Reset" in e.description
        return
    raise AssertionError("refuse_all did not raise")
