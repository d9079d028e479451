"""Strict CPython fake of the parts of MicroPython's `machine` the boards use.

Strict means it raises where the ESP32 C code raises (duty out of range, a
GPIO the chip does not have, an ADC on a pin that has none, an output on an
input-only pin), so a host test cannot pass on a call the board would refuse.
It models the ESP32 port (ports/esp32/machine_pwm.c semantics):

* `PWM.duty_u16(65535)` is a true 100 %; any other value v is applied as
  (v >> (16 - bits)) / 2**bits of the period, bits = LEDC resolution for the
  frequency (16 at 1 kHz on the ESP32); `applied_fraction()` returns that.
* ADC1 = GPIO 32-39, ADC2 = GPIO 0, 2, 4, 12-15, 25-27 (accepted here as on
  the chip; ADC2 is unusable while Wi-Fi runs, which the board must reject).

Tests inspect the module-level registries (`pins`, `pwms`, `adcs`, `wdts`,
`events`) and call `reset_fake()` between tests.
"""

_GPIOS = tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27) + tuple(range(32, 40))
_ADC1_PINS = (32, 33, 34, 35, 36, 37, 38, 39)
_ADC2_PINS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_LEDC_APB_HZ = 80000000
_LEDC_TIMER_BITS = 20  # SOC_LEDC_TIMER_BIT_WIDTH on the ESP32

pins = {}
pwms = {}
adcs = {}
wdts = []
timers = {}
# Every output change in order: ("pin", id, level) / ("pwm", id, duty_u16)
events = []
_reset_requested = []


def reset_fake():
    """Forget every object (a fresh power-on for the next test)."""
    pins.clear()
    pwms.clear()
    adcs.clear()
    del wdts[:]
    timers.clear()
    del events[:]
    del _reset_requested[:]


def _need_int(x, what):
    if type(x) is bool or not isinstance(x, int):
        raise TypeError("%s must be an int" % what)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        _need_int(pin_id, "pin id")
        if pin_id not in _GPIOS:
            raise ValueError("invalid pin")
        if mode not in (-1, Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
            raise ValueError("invalid pin mode")
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and pin_id in _INPUT_ONLY:
            raise ValueError("pin can only be input")
        old = pins.get(pin_id)
        self.id = pin_id
        self.mode = mode if mode != -1 else (old.mode if old else Pin.IN)
        self._value = old._value if old else 0
        self.history = old.history if old else []
        pins[pin_id] = self
        if value is not None:
            self.value(value)

    def value(self, *args):
        if args:
            self._value = 1 if args[0] else 0
            self.history.append(self._value)
            if self.mode in (Pin.OUT, Pin.OPEN_DRAIN):
                events.append(("pin", self.id, self._value))
            return None
        return self._value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, *args):
        return self.value(*args)


def _resolution_bits(freq):
    res = 0
    n = _LEDC_APB_HZ // freq
    while n > 1:
        n >>= 1
        res += 1
    if res > 16:
        res = 16
    if res >= _LEDC_TIMER_BITS:
        res -= 1
    return res


class PWM:
    def __init__(self, pin, freq=None, duty_u16=None, duty_ns=None, invert=None):
        if not isinstance(pin, Pin):
            raise TypeError("pin must be a Pin")
        if pin.id in _INPUT_ONLY:
            raise ValueError("PWM not supported on pin %d" % pin.id)
        self.pin = pin
        self._freq = 5000
        self._duty = 32768
        self.deinited = False
        self.history = []
        pwms[pin.id] = self
        self.init(freq=freq, duty_u16=duty_u16, duty_ns=duty_ns, invert=invert)

    def init(self, freq=None, duty_u16=None, duty_ns=None, invert=None):
        if invert:
            raise ValueError("invert is not supported by this fake")
        self.deinited = False
        if freq is not None:
            self.freq(freq)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)

    def _active(self):
        if self.deinited:
            raise RuntimeError("PWM is inactive")

    def freq(self, *args):
        if args:
            f = args[0]
            _need_int(f, "freq")
            if not 1 <= f <= 40000000:
                raise ValueError("frequency must be from 1Hz to 40MHz")
            self._freq = f
            return None
        self._active()
        return self._freq

    @property
    def resolution_bits(self):
        return _resolution_bits(self._freq)

    def duty_u16(self, *args):
        if args:
            d = args[0]
            _need_int(d, "duty_u16")
            if not 0 <= d <= 65535:
                raise ValueError("duty_u16 must be from 0 to 65535")
            self._active()
            self._duty = d
            self.history.append(d)
            events.append(("pwm", self.pin.id, d))
            return None
        self._active()
        return self._duty

    def applied_fraction(self):
        """(numerator, denominator) of the duty the LEDC really produces."""
        if self._duty == 65535:
            return 1, 1
        shift = 16 - self.resolution_bits
        return (self._duty >> shift) << shift, 65536

    def duty_ns(self, *args):
        self._active()
        if args:
            ns = args[0]
            _need_int(ns, "duty_ns")
            if ns < 0 or ns > 1000000000 // self._freq:
                raise ValueError("duty_ns out of range")
            d = (ns * 65536 * self._freq + 500000000) // 1000000000
            self.duty_u16(65535 if d >= 65536 else d)
            return None
        return (self._duty * 1000000000 + self._freq * 32768) // (self._freq * 65536)

    def deinit(self):
        self.deinited = True


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        pid = pin.id if isinstance(pin, Pin) else pin
        if pid not in _ADC1_PINS and pid not in _ADC2_PINS:
            raise ValueError("invalid pin")
        self.id = pid
        self.block = 1 if pid in _ADC1_PINS else 2
        self._atten = ADC.ATTN_0DB
        self.samples = []  # tests push raw readings (microvolts) here ...
        self.source = None  # ... or set a callable returning microvolts
        self.default_uv = 0
        self.reads = 0
        adcs[pid] = self
        if atten is not None:
            self.atten(atten)

    def atten(self, a):
        if a not in (0, 1, 2, 3):
            raise ValueError("invalid attenuation")
        self._atten = a

    def read_uv(self):
        self.reads += 1
        if self.source is not None:
            uv = self.source()
        elif self.samples:
            uv = self.samples.pop(0)
        else:
            uv = self.default_uv
        if uv < 0:
            uv = 0
        if uv > 3300000:
            uv = 3300000
        return uv

    def read_u16(self):
        return self.read_uv() * 65535 // 3300000


class WDT:
    def __init__(self, id=0, timeout=5000):
        _need_int(timeout, "timeout")
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self.feeds = 0
        wdts.append(self)

    def feed(self):
        self.feeds += 1


class Timer:
    """Hardware timer 0-3 of the ESP32. Its callback is soft on the ESP32 port
    (scheduled: it runs between bytecodes); here a test calls `fire()`."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, **kw):
        _need_int(id, "timer id")
        if not 0 <= id <= 3:
            raise ValueError("invalid Timer number")
        self.id = id
        self.mode = None
        self.period = None
        self.callback = None
        timers[id] = self
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=-1, callback=None, freq=-1):
        if mode not in (Timer.ONE_SHOT, Timer.PERIODIC):
            raise ValueError("invalid mode")
        _need_int(period, "period")
        if period < 1:
            raise ValueError("period must be >= 1 ms in this fake")
        self.mode = mode
        self.period = period
        self.callback = callback

    def deinit(self):
        self.callback = None
        self.mode = None

    def fire(self):
        """One expiry (what the ESP32 schedules every `period` ms)."""
        if self.callback is not None:
            self.callback(self)
            if self.mode == Timer.ONE_SHOT:
                self.deinit()


class RTC:
    def __init__(self):
        self._dt = (2000, 1, 1, 5, 0, 0, 0, 0)

    def datetime(self, *args):
        if args:
            self._dt = tuple(args[0])
            return None
        return self._dt


def reset():
    _reset_requested.append(True)
    raise SystemExit("machine.reset()")


def unique_id():
    return b"\x02\x00\x00\x00\x00\x01"


def idle():
    pass
