# The board twin's frozen modules: what manifest.py freezes into ESP32 firmware,
# with the host board in place of boards/esp32_devkitc (the twin has no machine
# module). tools/twin.py builds the 32-bit unix port with this; the firmware
# manifest cannot be used as-is: its include("$(PORT_DIR)/boards/manifest.py")
# names the ESP32 port's own modules. Paths are relative to this file.

# Every .py under lib/chargepilot (schemas/ included), opt=1 as on the board.
package("chargepilot", base_path="../lib", opt=1)

# The host board (simulated pilot and EV), importable as `board`.
module("board.py", base_path="../boards/host", opt=1)
# Its relay guard thread (the host's stand-in for the ESP32's machine.Timer).
module("hostguard.py", base_path="../boards/host", opt=1)

# The host entry point (tools/agent --twin runs tools/twin_main.py, which
# imports it): frozen as a board's start-up code would be, so that its bytecode
# does not take heap (about 5 KB; tools/bench heap-agent).
module("agent_main.py", base_path=".", opt=1)
