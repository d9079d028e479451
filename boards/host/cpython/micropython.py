"""CPython stand-in for MicroPython's `micropython` module (host tests only)."""


def const(x):
    return x


def native(f):
    return f


def viper(f):
    return f


def mem_info(*_args):
    pass


def alloc_emergency_exception_buf(_size):
    pass


def schedule(func, arg):
    func(arg)
