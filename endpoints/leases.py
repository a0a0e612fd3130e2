"""Leases: one holder at a time for a named piece of work, with no lock that outlives its holder.

A lease is a row taken by compare-and-swap: an UPDATE that matches only while nobody holds it or the
holder's time ran out, or the INSERT of a row that did not exist yet (the primary key lets one insert win).
A holder renews it while it works; a holder that is killed stops renewing, and the lease lapses at
`expires_at`, so the next taker needs no clean-up. A holder that finds its lease taken over (it froze past
the expiry) learns it from `renew`, which raises `LeaseLost`: it must stop acting.

Time comes from an injectable clock, so tests can move it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from endpoints.models import Lease

Clock = Callable[[], datetime]


class LeaseLost(Exception):
    """The lease expired and another holder took it: whatever the old holder was doing must stop."""


def new_owner() -> str:
    """A name for one holder: host, process and a random part (one process may hold several)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Held:
    """A lease this process holds until `release`, or until it stops renewing for `ttl`."""

    name: str
    owner: str
    ttl: timedelta
    renewed_at: datetime  # the lease runs out at renewed_at + ttl unless renewed again
    clock: Clock = timezone.now

    def renew(self) -> None:
        """Push the expiry forward; raises LeaseLost if the lease is no longer ours."""
        now = self.clock()
        renewed = Lease.objects.filter(name=self.name, owner=self.owner).update(expires_at=now + self.ttl)
        if not renewed:
            raise LeaseLost(f"the lease {self.name!r} lapsed and was taken by another holder")
        self.renewed_at = now

    def release(self) -> None:
        """Give the lease up (a lease that lapsed meanwhile stays with whoever took it)."""
        Lease.objects.filter(name=self.name, owner=self.owner).update(owner="", expires_at=None)


def acquire(name: str, ttl: timedelta, owner: str | None = None, clock: Clock = timezone.now) -> Held | None:
    """Take the lease `name` for `ttl`, or None if another holder has it and its time has not run out."""
    owner = owner or new_owner()
    now = clock()
    free = Q(owner="") | Q(expires_at__lt=now)
    taken = Lease.objects.filter(free, name=name).update(owner=owner, acquired_at=now, expires_at=now + ttl)
    if not taken:
        try:
            with transaction.atomic():
                Lease.objects.create(name=name, owner=owner, acquired_at=now, expires_at=now + ttl)
        except IntegrityError:
            return None  # the row exists and is held
    return Held(name, owner, ttl, now, clock)


def forget(*names: str) -> None:
    """Remove the rows of leases whose work is gone for good (a deleted deployment's); a holder that
    comes late finds nothing to do and leaves."""
    Lease.objects.filter(name__in=names).delete()


def holder(name: str, clock: Clock = timezone.now) -> str | None:
    """Who holds `name` now, or None."""
    lease = Lease.objects.filter(name=name).first()
    if lease is None or not lease.owner or lease.expires_at is None or lease.expires_at < clock():
        return None
    return lease.owner
