"""Which instances of each service are alive: the last heartbeat of each, kept in memory by the leader.

A task records the instance processing it (from its progress reports). The sweeper asks :meth:`silent`
whether that instance still heartbeats: when it stopped, ``start`` goes to the service again (another
instance takes it). A cancel goes to the processing instance's own queue while it is alive
(:meth:`alive`), else to the service's queue. A new leader knows no heartbeat yet: it gives every
instance a full heartbeat timeout from the moment it started leading.
"""

from __future__ import annotations

from datetime import datetime, timedelta


class Instances:
    def __init__(self, heartbeat_timeout: timedelta) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self._last: dict[tuple[str, str], datetime] = {}
        self._since: datetime | None = None

    def lead(self, now: datetime) -> None:
        """A new session: what another leader heard is unknown."""
        self._last.clear()
        self._since = now

    def heard(self, service: str, instance_id: str, at: datetime) -> None:
        self._last[(service, instance_id)] = at

    def silent_for(self, service: str, instance_id: str, now: datetime) -> timedelta | None:
        """How long the instance has been silent, if longer than the heartbeat timeout; else None."""
        last = self._last.get((service, instance_id)) or self._since
        if last is None or now - last <= self.heartbeat_timeout:
            return None
        return now - last

    def alive(self, service: str, instance_id: str, now: datetime) -> bool:
        last = self._last.get((service, instance_id))
        return last is not None and now - last <= self.heartbeat_timeout
