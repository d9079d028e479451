"""CPython stand-in for MicroPython's `network` module.

Only the WLAN station calls the firmware makes; it is "connected" at once
because the host's own network is used.
"""

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 1010


class WLAN:
    def __init__(self, interface=STA_IF):
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid interface")
        self._active = False
        self._connected = False

    def active(self, *args):
        if args:
            self._active = bool(args[0])
        return self._active

    def connect(self, ssid=None, key=None, **_kw):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._connected = True

    def disconnect(self):
        self._connected = False

    def isconnected(self):
        return self._connected

    def status(self, *args):
        return STAT_GOT_IP if self._connected else STAT_IDLE

    def ifconfig(self, *args):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, *args, **kw):
        if args == ("mac",):
            return b"\x02\x00\x00\x00\x00\x01"
        return None
