# OCPP-J: CALL/CALLRESULT/CALLERROR, schema validation, error codes, the durable outbox.
# Imports net, store, base.
