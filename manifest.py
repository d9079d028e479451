# Freeze chargepilot into a custom MicroPython firmware for the ESP32.
#
# From ports/esp32 of a MicroPython checkout (v1.23 or later, ESP-IDF set up),
# with an ABSOLUTE path to this file:
#
#     make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/chargepilot/manifest.py
#     make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/chargepilot/manifest.py \
#          PORT=/dev/ttyUSB0 deploy
#
# then copy the rest with `tools/deploy flash --frozen --port PORT --config ...`
# (boot.py, main.py, board.json and the config stay on the filesystem).
# Details: docs/deploy.md. Paths below are relative to this file.

# The port's own frozen modules: _boot/inisetup (filesystem set-up), asyncio,
# ntptime, ... main.py needs asyncio and ntptime, so this line must stay.
include("$(PORT_DIR)/boards/manifest.py")

metadata(
    description="chargepilot: OCPP 2.0.1 smart-charging agent for MicroPython EVSE controllers",
    version="0.1.0",
)

# Every .py under lib/chargepilot (schemas/ included), as chargepilot/...;
# opt=1 as tools/build.py and tools/deploy compile it (asserts stripped).
package("chargepilot", base_path="lib", opt=1)

# The board module, importable as `board` (main.py's default "board" key).
# Another board: change the directory; its board.json goes on the filesystem.
module("board.py", base_path="boards/esp32_devkitc", opt=1)
