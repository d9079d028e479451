"""ProfileSet: the installed charging profiles in RAM (K01 add/replace, K09, K10).

Two id spaces that never meet: profiles from the CSMS (source CSO) are keyed
by their id (ids are station-wide, K01.FR.05; any int32, negative too);
station-local limits (external constraints set through
SmartCharging.set_external_limit, source EMS/SO/Other) have ids of their own
in a separate table. A CSMS id can therefore never replace, shadow or clear a
local limit, and `get`/`remove`/`clear`/`ids` and the K09 `ids` criterion see
only CSMS profiles; `get_local`/`remove_local` reach the local ones.

The set is bounded by `max_entries` (both spaces together);
`profile_checks.check` rejects before that, `add` enforces it again so nothing
can grow the set past it. `ordered()` lists every profile by (stackLevel
desc, id asc, CSMS before local): the composite's layer order, kept up to date
here at install time so a composite needs no sort.
"""

from chargepilot.smart.profile import CSO, EXTERNAL, TX, ProfileError


def is_local(p):
    """A station-local limit (not from the CSMS)?"""
    return p.source != CSO


def _before(p, q):
    """Does p come before q in ordered()?"""
    if p.stack != q.stack:
        return p.stack > q.stack
    if p.id != q.id:
        return p.id < q.id
    return not is_local(p) and is_local(q)


class ProfileSet:
    def __init__(self, max_entries=20):
        self.max_entries = max_entries
        self._by_id = {}
        self._local = {}
        self._ordered = []

    def __len__(self):
        return len(self._by_id) + len(self._local)

    def __iter__(self):
        return iter(self._ordered)

    def __contains__(self, profile_id):
        """Is a CSMS profile with this id installed?"""
        return profile_id in self._by_id

    def get(self, profile_id):
        """The CSMS profile with this id, or None."""
        return self._by_id.get(profile_id)

    def get_local(self, profile_id):
        """The station-local limit with this (local) id, or None."""
        return self._local.get(profile_id)

    def same(self, p):
        """The installed profile p would replace (same id in p's space), or None."""
        return (self._local if is_local(p) else self._by_id).get(p.id)

    def ids(self):
        """Ids of the CSMS profiles, sorted."""
        out = list(self._by_id)
        out.sort()
        return out

    def ordered(self):
        """Every profile by (stackLevel desc, id asc); the caller must not change it."""
        return self._ordered

    def _unlist(self, p):
        lst = self._ordered
        for i in range(len(lst)):
            if lst[i] is p:
                del lst[i]
                return

    def _list(self, p):
        lst = self._ordered
        i = len(lst)
        while i > 0 and _before(p, lst[i - 1]):
            i -= 1
        lst.insert(i, p)

    def add(self, p):
        """Install p, replacing the profile with the same id in its space (K01.FR.05).

        Returns the replaced profile or None. Raises ProfileError (OutOfStorage)
        when a new id would exceed max_entries."""
        table = self._local if is_local(p) else self._by_id
        old = table.get(p.id)
        if old is None and len(self) >= self.max_entries:
            raise ProfileError("OutOfStorage", "already %d profiles installed (the maximum)"
                               % len(self))
        if old is not None:
            self._unlist(old)
        table[p.id] = p
        self._list(p)
        return old

    def remove(self, profile_id):
        """Remove a CSMS profile by id; returns it or None."""
        p = self._by_id.pop(profile_id, None)
        if p is not None:
            self._unlist(p)
        return p

    def remove_local(self, profile_id):
        """Remove a station-local limit by its id; returns it or None."""
        p = self._local.pop(profile_id, None)
        if p is not None:
            self._unlist(p)
        return p

    def select(self, evse_id=None, ids=None, stack_level=None, source=None, purpose=None):
        """GetChargingProfiles (K09): profiles matching every given criterion, by id.

        evse_id None = all EVSEs (FR.06); 0 = profiles installed on the station
        itself (FR.05); k > 0 = profiles installed on EVSE k (FR.04). `ids` is a
        list of CSMS profile ids (a local limit never matches an id); `source`
        and `purpose` are the int constants of `profile`."""
        out = []
        for p in self._ordered:
            if evse_id is not None and p.evse_id != evse_id:
                continue
            if ids is not None and (is_local(p) or p.id not in ids):
                continue
            if stack_level is not None and p.stack != stack_level:
                continue
            if source is not None and p.source != source:
                continue
            if purpose is not None and p.purpose != purpose:
                continue
            out.append(p)
        out.sort(key=_by_id)
        return out

    def clear(self, profile_id=None, evse_id=None, purpose=None, stack_level=None):
        """ClearChargingProfile (K10); returns the removed profiles (by id).

        Only CSMS profiles are ever cleared (local limits are not the CSMS's).
        With profile_id: that profile unless it is ExternalConstraints (FR.03/09);
        the criteria are then ignored. Otherwise every non-external profile that
        matches all given criteria (FR.04/08); nothing given = all non-external.
        An empty result means the response status is Unknown (FR.01)."""
        removed = []
        if profile_id is not None:
            p = self._by_id.get(profile_id)
            if p is not None and p.purpose != EXTERNAL:
                self.remove(profile_id)
                removed.append(p)
            return removed
        for p in list(self._by_id.values()):
            if p.purpose == EXTERNAL:
                continue
            if evse_id is not None and p.evse_id != evse_id:
                continue
            if purpose is not None and p.purpose != purpose:
                continue
            if stack_level is not None and p.stack != stack_level:
                continue
            self.remove(p.id)
            removed.append(p)
        removed.sort(key=_by_id)
        return removed

    def end_transaction(self, evse_id, transaction_id=None):
        """Remove the TxProfiles of a transaction that ended (K02.FR.05).

        transaction_id None = every TxProfile on that EVSE. Returns them."""
        removed = []
        for p in list(self._by_id.values()):
            if p.purpose != TX or p.evse_id != evse_id:
                continue
            if transaction_id is not None and p.transaction_id != transaction_id:
                continue
            self.remove(p.id)
            removed.append(p)
        removed.sort(key=_by_id)
        return removed


def _by_id(p):
    return p.id
