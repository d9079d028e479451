"""Station settings the smart-charging engine needs (pure data, no I/O).

Units: limits in tenths of A or W, voltage in whole V, times in seconds since
2020-01-01Z. `rate_units` holds the unit constants of `profile` (UNIT_A/UNIT_W).
"""

from micropython import const

from chargepilot.smart.profile import UNIT_A, UNIT_NAMES, UNIT_W  # noqa: F401  (re-exported)

# Hard ceilings for the configurable bounds (keep every internal index small).
MAX_EVSES = const(16)
MAX_ENTRIES = const(200)
MAX_PERIODS = const(1024)


class SmartConfig:
    """Smart-charging settings of one station.

    evse_count       EVSEs 1..evse_count exist (0 = the station itself)
    supply_voltage   nominal line-to-neutral V for A<->W conversion (K01.FR.50)
    default_amps     local limit in tenths of A reported where no profile applies
    default_watts    the same in tenths of W
    default_phases   phases assumed for A<->W when a period has none
    rate_units       tuple of accepted units (UNIT_A, UNIT_W); first = preferred
    max_stack_level  SmartChargingCtrlr.ProfileStackLevel
    max_periods      SmartChargingCtrlr.PeriodsPerSchedule
    max_entries      maxLimit of SmartChargingCtrlr.Entries(ChargingProfiles)
    ac               AC station (absent numberPhases means 3, K01.FR.49)
    phase_switching  ACPhaseSwitchingSupported (phaseToUse allowed)
    transactions     evse_id -> (transaction_id, start_t) of running transactions
    """

    def __init__(self, evse_count=1, supply_voltage=230, default_amps=480,
                 default_watts=331200, default_phases=3, rate_units=(UNIT_A, UNIT_W),
                 max_stack_level=8, max_periods=24, max_entries=20, ac=True,
                 phase_switching=False):
        self.evse_count = evse_count
        self.supply_voltage = supply_voltage
        self.default_amps = default_amps
        self.default_watts = default_watts
        self.default_phases = default_phases
        self.rate_units = rate_units
        self.max_stack_level = max_stack_level
        self.max_periods = max_periods
        self.max_entries = max_entries
        self.ac = ac
        self.phase_switching = phase_switching
        self.transactions = {}
        self.validate()

    def validate(self):
        """Raise ValueError naming the first setting that is out of range."""
        _int_range("evse_count", self.evse_count, 1, MAX_EVSES)
        _int_range("supply_voltage", self.supply_voltage, 1, 100000)
        _int_range("default_amps", self.default_amps, 0, 100000000)
        _int_range("default_watts", self.default_watts, 0, 1000000000)
        _int_range("default_phases", self.default_phases, 1, 3)
        _int_range("max_stack_level", self.max_stack_level, 0, 1000)
        _int_range("max_periods", self.max_periods, 1, MAX_PERIODS)
        _int_range("max_entries", self.max_entries, 1, MAX_ENTRIES)
        if not self.rate_units:
            raise ValueError("rate_units: at least one unit is needed")
        for u in self.rate_units:
            if u != UNIT_A and u != UNIT_W:
                raise ValueError("rate_units: unknown unit %r" % (u,))

    def start_transaction(self, evse_id, transaction_id, start_t):
        self.transactions[evse_id] = (transaction_id, start_t)

    def end_transaction(self, evse_id):
        return self.transactions.pop(evse_id, None)

    def transaction(self, evse_id):
        """(transaction_id, start_t) on that EVSE, or None."""
        return self.transactions.get(evse_id)


def _int_range(name, v, lo, hi):
    if type(v) is bool or type(v) is not int or v < lo or v > hi:
        raise ValueError("%s must be an integer in %d..%d, got %r" % (name, lo, hi, v))
