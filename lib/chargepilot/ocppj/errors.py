"""OCPP-J RPC error codes (Part 4 §4.3), the exception that carries one, the
exceptions of a failed exchange of ours, and a frame's message id: from its
first bytes when it is not JSON (`salvage`), from the parsed list
(`readable_id`).

Any layer (framing, validation, a handler) raises OcppError; the RPC layer
turns it into a CALLERROR for the CALL being answered. rpc.py raises the
RpcError family; framefix.py (rare frames) uses them and `salvage` without
importing rpc.py, so the two do not import each other.
"""

from micropython import const

MAX_ID = const(36)  # longest message id (Part 4 §4.1.4)

FORMAT_VIOLATION = "FormatViolation"
GENERIC_ERROR = "GenericError"
INTERNAL_ERROR = "InternalError"
MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
OCCURRENCE_CONSTRAINT_VIOLATION = "OccurrenceConstraintViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
PROTOCOL_ERROR = "ProtocolError"
RPC_FRAMEWORK_ERROR = "RpcFrameworkError"
SECURITY_ERROR = "SecurityError"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
# Every code above. Literals, not the names: a tuple of constants only is kept
# in flash by frozen firmware; one naming variables is built in the heap.
CODES = ("FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported",
         "NotImplemented", "NotSupported", "OccurrenceConstraintViolation",
         "PropertyConstraintViolation", "ProtocolError", "RpcFrameworkError", "SecurityError",
         "TypeConstraintViolation")


def normal_code(code):
    """A received errorCode in today's spelling: older ones are accepted in the
    CALLERRORs we receive; we always send the Ed.3 ones. (Two compares, not a
    dict: a dict would be built in the heap at import.)"""
    if code == "OccurenceConstraintViolation":
        return OCCURRENCE_CONSTRAINT_VIOLATION
    if code == "FormationViolation":
        return FORMAT_VIOLATION
    return code


class OcppError(Exception):
    """An RPC-level error: `code` is one of the Part 4 codes above."""

    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        # Part 4: errorDescription is at most 255 characters.
        self.description = description[:255]
        self.details = details or {}

    def __str__(self):
        return "%s: %s" % (self.code, self.description)


class RpcError(Exception):
    """Base of everything call() raises for a failed exchange."""


class CallError(RpcError):
    """The CSMS answered our CALL with a CALLERROR."""

    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = details if details is not None else {}

    def __str__(self):
        return "%s: %s" % (self.code, self.description)


class CallTimeout(RpcError):
    """No answer within the timeout: the CALL counts as not delivered."""


class Disconnected(RpcError):
    """The connection ended (or could not send) before the answer came."""

    sent = False  # True (ClosedAfterSend): the CALL went out first


class ClosedAfterSend(Disconnected):
    """The CALL was sent and the connection ended before its answer (e.g. the
    CSMS closed with 1007 because of that frame): for the outbox this counts
    as an attempt of that message (E13), unlike a CALL never sent."""

    sent = True


class BadResponse(RpcError):
    """The CALLRESULT arrived but its payload is not valid for the action."""

    def __init__(self, code, description):
        super().__init__(code, description)
        self.code = code
        self.description = description

    def __str__(self):
        return "%s: %s" % (self.code, self.description)


def call_error(msg):
    """The CallError of a CALLERROR frame we received, [4, id, errorCode,
    errorDescription, errorDetails]: a field missing or of the wrong type reads
    as GenericError, "" or {}; an older code spelling as today's."""
    code = msg[2] if len(msg) > 2 and type(msg[2]) is str else GENERIC_ERROR
    desc = msg[3] if len(msg) > 3 and type(msg[3]) is str else ""
    details = msg[4] if len(msg) > 4 and type(msg[4]) is dict else {}
    return CallError(normal_code(code), desc[:255], details)


def salvage(text):
    """(type id, message id) from the start of a frame that is not JSON, else None.

    Reads only `[ <digit> , "<id>"` (no escapes, at most 36 characters).
    """
    n = len(text)
    i = 0
    ws = " \t\r\n"
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != "[":
        return None
    i += 1
    while i < n and text[i] in ws:
        i += 1
    if i >= n or not ("0" <= text[i] <= "9"):
        return None
    kind = ord(text[i]) - 48
    i += 1
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != ",":
        return None
    i += 1
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != '"':
        return None
    end = text.find('"', i + 1)
    if end < 0 or end - i - 1 > MAX_ID or end == i + 1:
        return None
    mid = text[i + 1 : end]
    if "\\" in mid:
        return None
    return kind, mid


def readable_id(msg, lone=False):
    """The message id of a parsed frame (list) when it is one (a str of 1-36
    characters), else "-1", the id of a CALLERROR for an unreadable frame.
    `lone`: the frame holds a lone surrogate; an id holding it is unreadable too
    (echoed, it would make our own frame not Unicode text)."""
    if len(msg) > 1:
        mid = msg[1]
        if type(mid) is str and 0 < len(mid) <= MAX_ID:
            if lone:
                for c in mid:
                    if 0xD800 <= ord(c) <= 0xDFFF:
                        return "-1"
            return mid
    return "-1"
