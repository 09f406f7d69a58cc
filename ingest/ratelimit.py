"""Per-source token buckets for rejected input, so one gateway's garbage stays cheap.

Every rejected message or batch item costs ingest a dead-letter record on Kafka,
produced and acknowledged before the message is acknowledged, on the same
connection as everyone else's readings. A gateway flooding garbage would make
all tenants wait behind its dead letters. Each *source* therefore gets a token
bucket of `burst` dead letters refilled at `rate` per second; a rejection without
a token is counted (``tmiot_ingest_rejections_rate_limited_total``) and dropped
instead of dead-lettered. Good readings are never limited.

A source is what the topic says about the publisher, coarse enough that it
cannot be multiplied by inventing device ids: ``{company}/gateways/{gateway}`` for
batches, ``{company}/sensors`` for a tenant's single-sensor topics, the first
levels of anything else. At most `max_sources` buckets are kept; past that, new
sources share one overflow bucket.

The validator asks for a token per rejection, before it builds the dead letter:
past the limit a rejection costs little more than finding out that it is one.
And once a source has no token, a batch of it that fails validation as a whole is
dropped (one rejection, counted) instead of being searched item by item for its
good readings, which costs as much as the dead letters; a search that runs out
of tokens stops there, the rest of the batch counted as one rejection.

Example:
    >>> limiter = RejectionLimiter(rate=1.0, burst=2, max_sources=10)
    >>> [limiter.take("c/gateways/g", now=0.0) for _ in range(3)]
    [True, True, False]
    >>> limiter.take("c/gateways/g", now=1.0), limiter.take("c/gateways/other", now=1.0)
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["RejectionLimiter", "source_of"]

_OVERFLOW: Final = "(overflow)"
_SWEEP_SECONDS: Final = 1.0  # at most one sweep of full buckets per second (each is O(n))
_MAX_LEVEL: Final = 128  # characters of a topic level kept in a source name


def source_of(topic: str) -> str:
    """The rate-limited source of a message on `topic`.

    >>> source_of("tenants/6f1c/gateways/gw-1/readings")
    '6f1c/gateways/gw-1'
    >>> source_of("tenants/6f1c/sensors/anything/readings")
    '6f1c/sensors'
    >>> source_of("devices/x/y")
    '(other)'
    """
    parts = topic.split("/", 4)
    if len(parts) < 3 or parts[0] != "tenants":  # noqa: PLR2004 - tenants/{company}/{kind}
        return "(other)"
    company, kind = parts[1][:_MAX_LEVEL], parts[2][:_MAX_LEVEL]
    if kind == "gateways" and len(parts) > 3:  # noqa: PLR2004 - .../gateways/{gateway}
        return f"{company}/gateways/{parts[3][:_MAX_LEVEL]}"
    return f"{company}/{kind}"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # monotonic time of the last refill


class RejectionLimiter:
    """Token buckets per source: may this rejection be dead-lettered?"""

    def __init__(self, *, rate: float, burst: int, max_sources: int) -> None:
        """Refill `rate` tokens per second up to `burst`, for at most `max_sources` sources."""
        self._rate = rate
        self._burst = float(burst)
        self._max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}
        self._swept = float("-inf")

    def __len__(self) -> int:
        """Sources with a bucket of their own."""
        return len(self._buckets)

    def take(self, source: str, now: float) -> bool:
        """Take a token from `source`'s bucket at time `now` (seconds); False if it has none."""
        bucket = self._refilled(source, now)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def exhausted(self, source: str, now: float) -> bool:
        """Whether `source` has no token at time `now` (takes none)."""
        return self._refilled(source, now).tokens < 1

    def _refilled(self, source: str, now: float) -> _Bucket:
        bucket = self._bucket(source, now)
        if now > bucket.at:  # a clock that steps back refills nothing
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
        return bucket

    def _bucket(self, source: str, now: float) -> _Bucket:
        bucket = self._buckets.get(source)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self._max_sources and now - self._swept >= _SWEEP_SECONDS:
            self._swept = now
            self._forget_full(now)
        if len(self._buckets) >= self._max_sources:
            source = _OVERFLOW
            bucket = self._buckets.get(source)
            if bucket is not None:
                return bucket
        bucket = self._buckets[source] = _Bucket(self._burst, now)
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: a fresh one would be the same."""
        for source, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) * self._rate >= self._burst:
                del self._buckets[source]
