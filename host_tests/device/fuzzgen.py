"""Seeded pseudo-random malformed OCPP-J frames, on both runtimes (no hypothesis).

    g = Gen(42)
    text = g.frame()

A frame is a template CALL (valid or nearly so) that is then broken in 0-3 ways:
cut short, a character dropped, inserted or replaced, an element retyped, the id
or action replaced, elements added or removed; or plain junk. The same seed gives
the same frames everywhere (xorshift32, no `random`).
"""

_TEMPLATES = (
    '[2,"%s","Heartbeat",{}]',
    '[2,"%s","GetVariables",{"getVariableData":[{"component":{"name":"OCPPCommCtrlr"},'
    '"variable":{"name":"HeartbeatInterval"}}]}]',
    '[2,"%s","SetVariables",{"setVariableData":[{"component":{"name":"OCPPCommCtrlr"},'
    '"variable":{"name":"HeartbeatInterval"},"attributeValue":"300"}]}]',
    '[2,"%s","GetVariables",{"getVariableData":[{"component":{"name":"SmartChargingCtrlr"},'
    '"variable":{"name":"Enabled"},"attributeType":"Target"}]}]',
    '[2,"%s","SetChargingProfile",{"evseId":1,"chargingProfile":{"id":1,"stackLevel":0,'
    '"chargingProfilePurpose":"TxDefaultProfile","chargingProfileKind":"Absolute",'
    '"chargingSchedule":[{"id":1,"chargingRateUnit":"A","startSchedule":"2025-06-01T00:00:00Z",'
    '"chargingSchedulePeriod":[{"startPeriod":0,"limit":16.0}]}]}}]',
    '[2,"%s","GetCompositeSchedule",{"evseId":0,"duration":3600}]',
    '[2,"%s","ClearChargingProfile",{"chargingProfileId":1}]',
    '[2,"%s","Reset",{"type":"Immediate"}]',
    '[2,"%s","FlyToTheMoon",{}]',
    '[3,"%s",{}]',
    '[4,"%s","GenericError","",{}]',
)
_CHARS = '[]{}",:0123456789-.eE\\ tfnul\t\u00e9\x00'
_VALUES = ("null", "true", "2", "2.0", "-1", '"2"', '""', "[]", "{}", "1e999", '"' + "x" * 40 + '"')


class Gen:
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 1
        self.n = 0

    def rand(self, n):
        """0 <= r < n (n >= 1)."""
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s % n

    def pick(self, seq):
        return seq[self.rand(len(seq))]

    def frame(self):
        self.n += 1
        if self.rand(12) == 0:  # junk
            k = self.rand(40)
            return "".join([self.pick(_CHARS) for _ in range(k)])
        text = self.pick(_TEMPLATES) % ("f%d" % self.n)
        for _ in range(self.rand(4)):
            text = self._break(text)
        return text

    def _break(self, t):
        n = len(t)
        if n == 0:
            return t
        i = self.rand(n)
        how = self.rand(8)
        if how == 0:
            return t[:i]
        if how == 1:
            return t[:i] + t[i + 1:]
        if how == 2:
            return t[:i] + self.pick(_CHARS) + t[i:]
        if how == 3:
            return t[:i] + self.pick(_CHARS) + t[i + 1:]
        if how == 4:  # replace the MessageTypeId
            return "[" + self.pick(_VALUES) + t[t.find(","):] if t.startswith("[") else t
        if how == 5:  # replace the id
            j = t.find('"')
            k = t.find('"', j + 1)
            if j < 0 or k < 0:
                return t
            return t[:j] + self.pick(_VALUES + ('"' + "i" * 37 + '"',)) + t[k + 1:]
        if how == 6:  # replace the action
            j = t.find('",')
            k = t.find(",", j + 2)
            if j < 0 or k < 0:
                return t
            return t[:j + 2] + self.pick(_VALUES + ('"Reset"', '"GetBaseReport"', '"x"')) + t[k:]
        # an element more or fewer
        if t.endswith("]"):
            if self.rand(2):
                return t[:-1] + "," + self.pick(_VALUES) + "]"
            j = t.rfind(",")
            if j > 0:
                return t[:j] + "]"
        return t
