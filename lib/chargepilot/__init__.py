"""chargepilot: OCPP 2.0.1 smart-charging agent for MicroPython EVSE controllers."""

VERSION = "0.1.0"
