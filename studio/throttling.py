"""Failed-credential throttling, one mechanism for password sign-in and for the API's tokens.

Failures are counted per subject (an account, a presented token, a client address) in Django's cache,
which every process shares: a file cache on one host, Redis in production. A subject's window opens at
its first failure and lasts `window_s` seconds; once `limit` failures fall in it, the subject is refused
until the window closes, and the refusal says how long that is. The window is exact: its start is
stored, and the count keeps the window's remaining lifetime (Django's file cache re-stores an incremented
value with the default five-minute timeout, which would otherwise stretch every window to five minutes).

Only failures are counted, so a subject nobody fails with is never refused. Subjects are hashed into the
cache keys: no username or token is written to the cache. IPv6 clients are counted per /64, the block one
host is usually given, so changing the low bits of an address does not buy a fresh budget.
"""

import hashlib
import math
import time
from dataclasses import dataclass

from django.core.cache import cache

_PREFIX = "studio-failures"


@dataclass(frozen=True)
class FailureLimit:
    """At most `limit` failures per subject in a window of `window_s` seconds; `scope` keeps kinds apart."""

    scope: str
    limit: int
    window_s: int

    def _base(self, subject: str) -> str:
        return f"{_PREFIX}:{self.scope}:{hashlib.sha256(subject.encode()).hexdigest()[:40]}"

    def retry_after(self, subject: str) -> int:
        """Seconds until `subject` may try again: 0 when it may try now."""
        base = self._base(subject)
        since = cache.get(f"{base}:since")
        if since is None:
            return 0
        # The count is keyed by its window's start, so a count left from an earlier window never adds up.
        if cache.get(f"{base}:{since}", 0) < self.limit:
            return 0
        return max(1, math.ceil(since / 1000 + self.window_s - time.time()))

    def note_failure(self, subject: str) -> int:
        """Count one failure of `subject`; the number of failures in its current window."""
        base = self._base(subject)
        now = time.time()
        since = int(now * 1000)
        if not cache.add(f"{base}:since", since, self.window_s):
            stored = cache.get(f"{base}:since")
            if stored is None:  # the window closed a moment ago: this failure opens the next one
                cache.set(f"{base}:since", since, self.window_s)
            else:
                since = stored
        remaining = max(1, math.ceil(since / 1000 + self.window_s - now))
        key = f"{base}:{since}"
        cache.add(key, 0, remaining)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between the two calls
            cache.set(key, 1, remaining)
            count = 1
        cache.touch(key, remaining)
        return count

    def forget(self, subject: str) -> None:
        """Clear `subject`'s failures, as after it proved itself."""
        cache.delete(f"{self._base(subject)}:since")


def wait_in_words(seconds: int) -> str:
    """`seconds` as a person says it: "in 40 seconds", "in 1 minute", "in 15 minutes"."""
    if seconds < 60:
        return f"in {seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"in {minutes} minute{'s' if minutes != 1 else ''}"
