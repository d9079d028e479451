"""OCPP-J RPC error codes (Part 4 §4.3) and the exception that carries one.

Any layer (framing, validation, a handler) raises OcppError; the RPC layer
turns it into a CALLERROR for the CALL being answered.
"""

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
