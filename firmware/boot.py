"""First code after every reset: relays open, pilots at steady +12 V, then return.

Runs before main.py and before anything that can fail or take long (Wi-Fi,
imports of the agent). It imports only `machine` (and the built-in `json`
for the pin numbers in board.json). If board.json cannot be read or parsed it
falls back to the compiled-in ESP32-DevKitC defaults below. It never raises:
every step is guarded, so main.py always gets to run.

board.json is read BEFORE any pin is driven: driving the default pins first
could close a relay on a board whose map differs (reading it takes a few ms).

Safe level: steady +12 V on the pilot ("not ready", no current offered; the
EV stops, yet a plug-in can still be seen) - see the "Board interface"
section of docs/ARCHITECTURE.md. The pilot GPIO drives a non-inverting
+-12 V stage, so GPIO high = +12 V.
"""

import machine

# Compiled-in defaults = boards/esp32_devkitc/board.json
_RELAYS = (26,)
_PILOTS = (25,)
_RELAY_ACTIVE_HIGH = True
# Output-capable GPIOs, less the SPI flash (6-11), UART0 (1, 3) and the
# input-only 34-39.
_OUTPUT_OK = (0, 2, 4, 5) + tuple(range(12, 20)) + (21, 22, 23, 25, 26, 27, 32, 33)


def _gpio(v):
    if type(v) is not int or v not in _OUTPUT_OK:
        raise ValueError("not an output GPIO: %r" % (v,))
    return v


def pin_map(path="board.json"):
    """(relay pins, pilot pins, relay_active_high) from board.json, else the defaults."""
    try:
        import json

        with open(path) as f:
            cfg = json.load(f)
        evses = cfg["evses"]
        if not isinstance(evses, list) or not evses:
            raise ValueError("no evses")
    except Exception:
        return _RELAYS, _PILOTS, _RELAY_ACTIVE_HIGH
    relays = []
    pilots = []
    for e in evses:
        # a bad entry is skipped, not replaced by a default pin that may be wired elsewhere
        try:
            relays.append(_gpio(e["relay_pin"]))
        except Exception:
            pass
        try:
            if e.get("mode", "pilot") == "pilot":
                pilots.append(_gpio(e["cp_pwm_pin"]))
        except Exception:
            pass
    active_high = cfg.get("relay_active_high", True) if isinstance(cfg, dict) else True
    if type(active_high) is not bool:
        active_high = True
    return tuple(relays), tuple(pilots), active_high


def safe_outputs(path="board.json"):
    """Drive every relay open, then every pilot to steady +12 V. Returns the map used."""
    relays, pilots, active_high = pin_map(path)
    off = 0 if active_high else 1
    for n in relays:
        try:
            machine.Pin(n, machine.Pin.OUT, value=off)
        except Exception:
            pass
    for n in pilots:
        try:
            machine.Pin(n, machine.Pin.OUT, value=1)
        except Exception:
            pass
    return relays, pilots, active_high


try:
    safe_outputs()
except Exception:  # boot.py must never stop the board from reaching main.py
    pass
