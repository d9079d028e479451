# Foundation: logging, RFC 3339 time, the wall clock. Imports nothing of chargepilot.
