"""Issue 11 at the RPC layer (both runtimes): strings end to end, messages too big
to read, out of memory in the read path, bounded follow-up work.

Expected bytes come from RFC 3629 (U+1F600 is F0 9F 98 80 in UTF-8; its UTF-16
surrogates D83D DE00 are ED A0 BD ED B8 80 when each is encoded on its own).
"""

import asyncio
import json

from chargepilot.net import wsrare
from chargepilot.ocppj import errors, framefix, rpc
from chargepilot.net import wsframe as F
from chargepilot.ocppj.errors import OcppError
from fakews import Setup, check_error, fails, sync  # noqa: I001

E = errors
GRIN = b"\xf0\x9f\x98\x80"


class Open:
    """A validator that accepts every payload (the strings are what is tested)."""

    def known(self, action):
        return True

    def check(self, action, kind, payload):
        if type(payload) is not dict:
            raise OcppError(E.FORMAT_VIOLATION, "not an object")


class Echo:
    def __init__(self):
        self.got = []

    async def __call__(self, payload):
        self.got.append(payload)
        return {"s": payload.get("s"), "keys": sorted(payload)}


def setup(**kw):
    echo = Echo()
    return Setup({"Echo": echo}, validator=Open(), **kw), echo


# ---------------------------------------------------------------- item 1: strings


@sync
async def test_escaped_surrogate_pair_becomes_4_byte_utf8():
    s, echo = setup()
    # how CPython's json.dumps (and the ocpp package) sends an emoji, in a value and a key
    ans = await s.ask('[2,"u1","Echo",{"s":"a\\ud83d\\ude00b","k\\uD83D\\uDE00":1}]')
    got = echo.got[0]
    assert got["s"].encode() == b"a" + GRIN + b"b", got["s"].encode()
    assert sorted(k.encode() for k in got) == [b"k" + GRIN, b"s"]
    assert ans[0] == 3 and ans[2]["s"].encode() == b"a" + GRIN + b"b"
    for direction, text in s.frames:  # everything sent is strict UTF-8 as it is
        if direction == "out":
            assert F.utf8_out(text) == text.encode()
    # an escaped backslash is not an escape: "\\ud83d" stays six characters of text
    ans = await s.ask('[2,"u2","Echo",{"s":"\\\\ud83d\\\\\\ud83d\\ude00"}]')
    assert ans[0] == 3 and ans[2]["s"].encode() == b"\\ud83d\\" + GRIN, ans
    await s.end()


LONE = (
    '"\\ud83d"', '"\\ude00"', '"x\\ud83dx"', '"\\ud83d\\u0041"', '"\\uDBFF\\uDBFF"',
    '"\\ude00\\ud83d"', '"\\ud83d\\\\ude00"',
)


@sync
async def test_lone_surrogate_is_type_constraint_violation():
    s, echo = setup()
    for i, lit in enumerate(LONE):
        mid = "l%d" % i
        check_error(await s.ask('[2,"%s","Echo",{"s":%s}]' % (mid, lit)), mid, E.TYPE_CONSTRAINT_VIOLATION)
    check_error(await s.ask('[2,"lk","Echo",{"k\\uDE00":1}]'), "lk", E.TYPE_CONSTRAINT_VIOLATION)
    # a lone half before an escape JSON does not have (3 hex digits): the frame is not
    # JSON, which is what is wrong first (as without the half)
    check_error(await s.ask('[2,"lj","Echo",{"s":"\\ud83d\\ude0"}]'), "lj", E.FORMAT_VIOLATION)
    assert echo.got == []  # no handler ever saw one
    ans = await s.ask('[2,"ok","Echo",{"s":"fine"}]')
    assert ans == [3, "ok", {"s": "fine", "keys": ["s"]}]
    await s.end()


def test_unicode_text_leaves_plain_text_alone():
    t = '[2,"a","Echo",{"s":"\\u00e9\\\\u"}]'
    assert rpc.unicode_text(t) is t
    assert framefix.unicode_pairs('"\\ud83d\\ude00"').encode() == b'"' + GRIN + b'"'


def test_text_frames_out_are_strict_utf8():
    pair = "a" + chr(0xD83D) + chr(0xDE00) + "b"  # halves kept apart (MicroPython: CESU-8)
    assert F.utf8_out(pair) == b"a" + GRIN + b"b"
    frame = F.encode(F.OP_TEXT, pair, b"\x00\x00\x00\x00")
    assert bytes(frame[6:]) == b"a" + GRIN + b"b"
    for bad in ("a" + chr(0xD83D) + "b", chr(0xDE00), chr(0xDE00) + chr(0xD83D)):
        try:
            F.utf8_out(bad)
        except ValueError:
            continue
        raise AssertionError("sent: %r" % bad)
    assert F.cesu_repair(b"x\xed\xa0\xbd\xed\xb8\x80y\xed\x9f\xbf") == b"x" + GRIN + b"y\xed\x9f\xbf"
    assert F.cesu_repair(b"\xed\xa0\xbdy") is None


@sync
async def test_unsendable_payload_raises_value_error_and_nothing_is_sent():
    s, echo = setup()
    send = s.station.send

    async def checked(text):  # as ws.WebSocket.send: the frame carries wsframe.utf8_out(text)
        await send(F.utf8_out(text).decode())

    s.station.send = checked
    try:  # MicroPython: wsframe.encode's ValueError; CPython: the escaped half, OcppError
        await s.rpc.call("Echo", {"s": "a" + chr(0xDC00)}, 500)
        raise AssertionError("sent")
    except (ValueError, OcppError):
        pass
    assert s.csms.inbox == []
    task = asyncio.create_task(s.rpc.call("Echo", {"s": "a" + chr(0xD83D) + chr(0xDE00)}, 1000))
    call = json.loads(await s.csms.recv(1000))
    assert call[3]["s"].encode() == b"a" + GRIN
    await s.csms.send(json.dumps([3, call[1], {}]))
    assert await task == {}
    await s.end()


# ---------------------------------------------------------------- item 5: size, memory


class Scan:
    def __init__(self, most):
        self.most = most


def _oversize(action, scan):
    if action == "SetChargingProfile" and scan is not None and scan.most > 24:
        return {"status": "Rejected", "statusInfo": {"reasonCode": "TooManyElements"}}
    return None


@sync
async def test_message_too_big_is_answered_with_its_own_id():
    s, echo = setup(oversize=_oversize, max_bytes=4096)
    big = wsrare.MessageTooBig
    s.csms.peer._deliver(big(70000, b' [ 2 , "big-1" , "Echo", {"s": "' + b"x" * 90))
    check_error(json.loads(await s.csms.recv(1000)), "big-1", E.FORMAT_VIOLATION)
    s.csms.peer._deliver(big(5000, b'[2,"m-2","Echo",{"s":"\xf0\x9f', memory=True))
    check_error(json.loads(await s.csms.recv(1000)), "m-2", E.INTERNAL_ERROR)
    s.csms.peer._deliver(big(36000, b'[2,"p-3","SetChargingProfile",{"evseId":0,', Scan(1000)))
    ans = json.loads(await s.csms.recv(1000))
    assert ans == [3, "p-3", {"status": "Rejected", "statusInfo": {"reasonCode": "TooManyElements"}}]
    s.csms.peer._deliver(big(36000, b'[2,"p-4","SetChargingProfile",{"evseId":0,', Scan(24)))
    check_error(json.loads(await s.csms.recv(1000)), "p-4", E.FORMAT_VIOLATION)
    s.csms.peer._deliver(big(9000, b'{"no": "id"}'))
    check_error(json.loads(await s.csms.recv(1000)), "-1", E.FORMAT_VIOLATION)
    # an answer to our CALL that is too big ends the call now, not after its timeout
    task = asyncio.create_task(s.rpc.call("Echo", {"s": "x"}, 5000))
    call = json.loads(await s.csms.recv(1000))
    s.csms.peer._deliver(big(9000, ('[3,"%s",{"s":' % call[1]).encode()))
    e = await fails(rpc.BadResponse, task)
    assert e.code == E.FORMAT_VIOLATION
    assert echo.got == [] and not s.rpc.closed
    assert await s.ask('[2,"ok","Echo",{"s":"x"}]') == [3, "ok", {"s": "x", "keys": ["s"]}]
    await s.end()


class OomLog:
    """A log that is out of memory for every line."""

    def _fail(self, *a):
        raise MemoryError

    debug = info = warn = error = exception = _fail


async def _oom(payload):
    raise MemoryError


@sync
async def test_memory_error_anywhere_in_the_read_path_keeps_the_reader():
    s, echo = setup()
    s.rpc.log = OomLog()
    s.rpc.handlers["Oom"] = _oom
    check_error(await s.ask('[2,"h1","Oom",{}]'), "h1", E.INTERNAL_ERROR)
    s.rpc.max_tasks = 0  # handled inline by the reader itself
    check_error(await s.ask('[2,"h2","Oom",{}]'), "h2", E.INTERNAL_ERROR)
    check_error(await s.ask('[2,"j1","Echo",{"s":'), "j1", E.FORMAT_VIOLATION)
    s.rpc.validator.check = _raise_memory
    check_error(await s.ask('[2,"v1","Echo",{}]'), "v1", E.INTERNAL_ERROR)
    del s.rpc.validator.check
    assert not s.rpc.closed and not s.task.done()
    assert await s.ask('[2,"ok","Echo",{"s":"x"}]') == [3, "ok", {"s": "x", "keys": ["s"]}]
    await s.end()


def _raise_memory(action, kind, payload):
    raise MemoryError


# ---------------------------------------------------------------- item 6: follow-ups


@sync
async def test_follow_ups_are_capped_and_queued():
    gate = asyncio.Event()
    state = {"alive": 0, "most": 0, "done": 0, "calls": 0, "most_calls": 0}

    async def report():
        state["alive"] += 1
        state["most"] = max(state["most"], state["alive"])
        await gate.wait()
        try:  # as smart.py's reports: each one a CALL of ours, one outstanding at a time
            state["calls"] += 1
            state["most_calls"] = max(state["most_calls"], state["calls"])
            await s.rpc.call("Echo", {"s": "report"}, 300)
        except rpc.CallTimeout:
            pass
        finally:
            state["calls"] -= 1
        state["alive"] -= 1
        state["done"] += 1

    async def get_profiles(payload):
        return {"status": "Accepted"}, report

    s = Setup({"Get": get_profiles}, validator=Open())
    answers = []
    for i in range(12):
        answers.append(await s.ask('[2,"g%d","Get",{}]' % i))
    ok = [a for a in answers if a[0] == 3]
    refused = [a for a in answers if a[0] == 4]
    # MAX_FOLLOW_UPS alive at once: the rest refused before anything is accepted
    assert len(ok) == rpc.MAX_FOLLOW_UPS, answers
    assert [a[1] for a in ok] == ["g%d" % i for i in range(len(ok))]
    for a in refused:
        check_error(a, a[1], E.GENERIC_ERROR)
    assert state["most"] == rpc.MAX_FOLLOW_UPS
    gate.set()  # the CSMS never answers the reports: each waits its timeout, in turn
    for _ in range(300):
        if state["done"] == len(ok):
            break
        await asyncio.sleep_ms(10)
    assert state["done"] == len(ok) and state["most_calls"] <= rpc.MAX_FOLLOW_UPS
    reports = [json.loads(t) for t in s.csms.inbox]
    assert len(reports) == len(ok) and all(m[0] == 2 and m[2] == "Echo" for m in reports)
    del s.csms.inbox[:]
    assert (await s.ask('[2,"again","Get",{}]'))[0] == 3  # room again
    await s.end()


# ---------------------------------------------------------------- the period count


def _profile(counts):
    periods = lambda c: [{"startPeriod": k * 60, "limit": 16.0} for k in range(c)]  # noqa: E731
    return json.dumps([2, "id1", "SetChargingProfile", {"evseId": 0, "chargingProfile": {
        "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": [
            {"id": i, "chargingRateUnit": "A", "chargingSchedulePeriod": periods(c)}
            for i, c in enumerate(counts)]}}]).encode()


def test_period_scan_counts_the_largest_schedule_in_any_chunking():
    for counts in ([3], [400], [5, 30, 2], [24, 24, 25], [25, 1, 1]):
        b = _profile(counts)
        for step in (1, 7, 13, 23, 24, 256, len(b)):
            sc = framefix.PeriodScan()
            for i in range(0, len(b), step):
                sc.feed(b[i : i + step])
            assert sc.most == max(counts), (counts, step, sc.most)


# ------------------------------------------------- no heap block for a frame's text


class NoBigText:
    """json as rpc sees it, with dumps out of memory for a frame over 300 bytes
    (a fragmented heap: small blocks free, no big one); json.dump still works."""

    def __init__(self, pieces_too=False):
        self.pieces_too = pieces_too
        self.refused = 0

    def dumps(self, obj):
        text = json.dumps(obj)
        if len(text) > 300:
            self.refused += 1
            raise MemoryError("no block of %d bytes" % len(text))
        return text

    def loads(self, text):
        return json.loads(text)


class Big:
    async def __call__(self, payload):
        return {"s": "\u20ac" * 50 + "y" * 400, "keys": ["s"]}


@sync
async def test_an_answer_with_no_block_for_its_text_goes_in_pieces():
    s, echo = setup()
    s.rpc.handlers["Big"] = Big()
    fake = NoBigText()
    s.rpc_json = rpc.json
    rpc.json = fake
    try:
        ans = await s.ask('[2,"b1","Big",{}]')
        assert ans == [3, "b1", {"s": "\u20ac" * 50 + "y" * 400, "keys": ["s"]}], ans
        assert fake.refused == 1 and s.station.pieced == 1
        assert ("out", None) in s.frames  # the timeline hook is told: no text
        # our own CALL too: the CSMS gets all of it
        task = asyncio.create_task(s.rpc.call("Echo", {"s": "z" * 500}))
        call = await s.answer_ours(lambda c: json.dumps([3, c[1], {}]))
        assert call[2:] == ["Echo", {"s": "z" * 500}] and s.station.pieced == 2
        assert await task == {}
        # small frames take the fast way as before
        assert await s.ask('[2,"e1","Echo",{"s":"x"}]') == [3, "e1", {"s": "x", "keys": ["s"]}]
        assert s.station.pieced == 2
    finally:
        rpc.json = s.rpc_json
    await s.end()


@sync
async def test_an_answer_that_fits_nowhere_is_an_internal_error_not_silence():
    s, echo = setup()
    s.rpc.handlers["Big"] = Big()
    fake = NoBigText()
    real = s.station.send_pieces

    async def no_memory(chunks, n):
        raise MemoryError("not even pieces")

    s.station.send_pieces = no_memory
    rpc.json, old = fake, rpc.json
    try:
        check_error(await s.ask('[2,"b2","Big",{}]'), "b2", E.INTERNAL_ERROR)
    finally:
        rpc.json = old
        s.station.send_pieces = real
    assert not s.rpc.closed
    await s.end()


@sync
async def test_an_answer_the_socket_cannot_take_is_an_internal_error():
    """ws.send raises MemoryError (no block, and the text needs a repair that
    only the one-buffer way makes): the CSMS gets InternalError, not silence."""
    s, echo = setup()
    s.rpc.handlers["Big"] = Big()
    real = s.station.send

    async def no_memory_for_big(text):
        if len(text) > 300:
            raise MemoryError("text needs repair (CESU-8); no memory to repair it")
        await real(text)

    s.station.send = no_memory_for_big
    try:
        check_error(await s.ask('[2,"b3","Big",{}]'), "b3", E.INTERNAL_ERROR)
    finally:
        s.station.send = real
    assert not s.rpc.closed
    assert await s.ask('[2,"ok","Echo",{"s":"x"}]') == [3, "ok", {"s": "x", "keys": ["s"]}]
    await s.end()
