"""OCPP 2.0.1 payload tables for chargepilot.ocppj.validate (generated; do not edit).

One module per <Action><Request|Response>, plus _<Definition> modules shared by
several messages. Each defines T, the root node; chargepilot.ocppj.validate imports a
module on demand and drops it after the check.
"""

ACTIONS = (
    "BootNotification",
    "Heartbeat",
    "StatusNotification",
    "GetVariables",
    "SetVariables",
    "SetChargingProfile",
    "GetChargingProfiles",
    "ReportChargingProfiles",
    "ClearChargingProfile",
    "GetCompositeSchedule",
    "NotifyChargingLimit",
    "ClearedChargingLimit",
    "TransactionEvent",
    "RequestStartTransaction",
    "RequestStopTransaction",
    "NotifyEvent",
    "SecurityEventNotification",
    "TriggerMessage",
    "Reset",
    "ChangeAvailability",
    "GetBaseReport",
    "NotifyReport",
    "SetNetworkProfile",
    "MeterValues",
)
