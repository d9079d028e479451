"""Strict CPython fake of the parts of MicroPython's `machine` the boards use.

Strict means it raises where the ESP32 C code raises (duty out of range, an
ADC on a pin that has none), so a host test cannot pass on a call the board
would refuse.
"""

_ADC1_PINS = (32, 33, 34, 35, 36, 37, 38, 39)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_pins = {}


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        if not isinstance(pin_id, int) or not 0 <= pin_id <= 39:
            raise ValueError("invalid pin")
        self.id = pin_id
        self.mode = mode
        self._value = 0 if value is None else (1 if value else 0)
        if mode == Pin.OUT and pin_id in _INPUT_ONLY:
            raise ValueError("pin can only be input")
        _pins[pin_id] = self
        self.history = [self._value] if value is not None else []

    def value(self, *args):
        if args:
            self._value = 1 if args[0] else 0
            self.history.append(self._value)
            return None
        return self._value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, *args):
        return self.value(*args)


class PWM:
    def __init__(self, pin, freq=None, duty_u16=None, duty_ns=None):
        if not isinstance(pin, Pin):
            raise TypeError("pin must be a Pin")
        self.pin = pin
        self._freq = 5000
        self._duty = 0
        self.deinited = False
        if freq is not None:
            self.freq(freq)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)

    def freq(self, *args):
        if args:
            f = args[0]
            if not 1 <= f <= 40000000:
                raise ValueError("frequency must be from 1Hz to 40MHz")
            self._freq = f
            return None
        return self._freq

    def duty_u16(self, *args):
        if args:
            d = args[0]
            if not isinstance(d, int) or not 0 <= d <= 65535:
                raise ValueError("duty_u16 must be from 0 to 65535")
            self._duty = d
            return None
        return self._duty

    def duty_ns(self, *args):
        period_ns = 1000000000 // self._freq
        if args:
            ns = args[0]
            if not isinstance(ns, int) or ns < 0:
                raise ValueError("duty_ns must be >= 0")
            self._duty = min(65535, (ns * 65535 + period_ns // 2) // period_ns)
            return None
        return self._duty * period_ns // 65535

    def deinit(self):
        self.deinited = True


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        pid = pin.id if isinstance(pin, Pin) else pin
        if pid not in _ADC1_PINS:
            raise ValueError("invalid Pin for ADC")
        self.id = pid
        self.samples = []  # tests push raw u16 readings here
        self.default = 0

    def atten(self, _a):
        pass

    def read_u16(self):
        if self.samples:
            return self.samples.pop(0)
        return self.default

    def read_uv(self):
        return self.read_u16() * 3300000 // 65535


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("timeout must be >= 1 ms")
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class RTC:
    def __init__(self):
        self._dt = (2000, 1, 1, 5, 0, 0, 0, 0)

    def datetime(self, *args):
        if args:
            self._dt = tuple(args[0])
            return None
        return self._dt


_reset_requested = []


def reset():
    _reset_requested.append(True)
    raise SystemExit("machine.reset()")


def unique_id():
    return b"\x02\x00\x00\x00\x00\x01"


def idle():
    pass
