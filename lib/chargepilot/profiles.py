"""ProfileSet: the installed charging profiles in RAM (K01 add/replace, K09, K10).

Keyed by profile id (ids are station-wide, K01.FR.05). The set is bounded by
`max_entries`; `profile_checks.check` rejects before that, `add` enforces it
again so nothing can grow the set past it.
"""

from chargepilot.profile import EXTERNAL, TX, ProfileError


class ProfileSet:
    def __init__(self, max_entries=20):
        self.max_entries = max_entries
        self._by_id = {}

    def __len__(self):
        return len(self._by_id)

    def __iter__(self):
        return iter(self._by_id.values())

    def __contains__(self, profile_id):
        return profile_id in self._by_id

    def get(self, profile_id):
        return self._by_id.get(profile_id)

    def ids(self):
        out = list(self._by_id)
        out.sort()
        return out

    def add(self, p):
        """Install p, replacing the profile with the same id (K01.FR.05).

        Returns the replaced profile or None. Raises ProfileError (OutOfStorage)
        when a new id would exceed max_entries."""
        old = self._by_id.get(p.id)
        if old is None and len(self._by_id) >= self.max_entries:
            raise ProfileError("OutOfStorage", "already %d profiles installed (the maximum)"
                               % len(self._by_id))
        self._by_id[p.id] = p
        return old

    def remove(self, profile_id):
        """Remove by id; returns the removed profile or None."""
        return self._by_id.pop(profile_id, None)

    def select(self, evse_id=None, ids=None, stack_level=None, source=None, purpose=None):
        """GetChargingProfiles (K09): profiles matching every given criterion, by id.

        evse_id None = all EVSEs (FR.06); 0 = profiles installed on the station
        itself (FR.05); k > 0 = profiles installed on EVSE k (FR.04). `ids` is a
        list of profile ids; `source` and `purpose` are the int constants of
        `profile`."""
        out = []
        for p in self._by_id.values():
            if evse_id is not None and p.evse_id != evse_id:
                continue
            if ids is not None and p.id not in ids:
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

        With profile_id: that profile unless it is ExternalConstraints (FR.03/09);
        the criteria are then ignored. Otherwise every non-external profile that
        matches all given criteria (FR.04/08); nothing given = all non-external.
        An empty result means the response status is Unknown (FR.01)."""
        removed = []
        if profile_id is not None:
            p = self._by_id.get(profile_id)
            if p is not None and p.purpose != EXTERNAL:
                del self._by_id[profile_id]
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
            del self._by_id[p.id]
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
            del self._by_id[p.id]
            removed.append(p)
        removed.sort(key=_by_id)
        return removed


def _by_id(p):
    return p.id
