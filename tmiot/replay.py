"""`tmiot record` and `tmiot replay`: Kafka topics to a recording file and back.

Engineers record real traffic (a topic, or a time range of it) and replay it onto
the same or another topic, at its original pace, faster, or as fast as Kafka
takes it, to test a change against what the fleet really sent.

- ``record`` reads each partition from the start (or from ``--since``) until it has
  caught up with the partition's end (or passed ``--until``), and writes every record
  with its topic, partition, offset, timestamp, key, value and headers.
- ``replay`` produces them back in the recorded order, on their recorded
  partition when the target topic has it (else by key), with the records'
  headers; ``--speed`` scales the gaps between their timestamps, ``--fast`` drops
  them. Records get a new timestamp unless ``--keep-timestamps``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from tmiot.config import KafkaSettings, Settings
from tmiot.errors import TmiotError
from tmiot.kafka import client_options, producer
from tmiot.recording import Recorded, RecordingWriter, read_recording

__all__ = ["configure_parsers", "record", "replay"]

log = structlog.get_logger(__name__)

_PROGRESS_SECONDS: Final = 5.0
_INFLIGHT: Final = 20_000  # records sent before their acknowledgements are awaited


class NoSuchTopicError(TmiotError):
    """A topic to record has no partitions (it does not exist)."""


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


class _Progress:
    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.started = self.last = time.monotonic()

    def step(self) -> None:
        self.count += 1
        if self.count % 1000 == 0 and time.monotonic() - self.last >= _PROGRESS_SECONDS:
            self.last = time.monotonic()
            log.info(
                self.what,
                records=self.count,
                records_per_s=round(self.count / (self.last - self.started)),
            )

    def rate(self) -> float:
        return self.count / max(time.monotonic() - self.started, 1e-9)


def _recorded(m: ConsumerRecord[bytes, bytes]) -> Recorded:
    return Recorded(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, tuple(m.headers))


class _Window:
    """A time range of records, by their Kafka timestamps (either end open)."""

    def __init__(self, since: dt.datetime | None, until: dt.datetime | None) -> None:
        self.since_ms = _ms(since) if since is not None else None
        self.until_ms = _ms(until) if until is not None else None

    def before(self, m: ConsumerRecord[bytes, bytes]) -> bool:
        # Seeking by time is only a start: some brokers (tansu) answer at batch
        # granularity, and CreateTime need not grow with the offset.
        return self.since_ms is not None and m.timestamp < self.since_ms

    def after(self, m: ConsumerRecord[bytes, bytes]) -> bool:
        return self.until_ms is not None and m.timestamp > self.until_ms


async def _assign(
    consumer: AIOKafkaConsumer, topics: Sequence[str], since: dt.datetime | None
) -> dict[TopicPartition, int]:
    """Assign every partition of the topics, seek to `since`; their end offsets now."""
    await consumer.topics()  # metadata
    parts = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            msg = f"topic {topic!r} has no partitions (does it exist?)"
            raise NoSuchTopicError(msg)
        parts += [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(parts)
    end: dict[TopicPartition, int] = await consumer.end_offsets(parts)
    if since is None:
        await consumer.seek_to_beginning(*parts)
    else:
        starts = await consumer.offsets_for_times(dict.fromkeys(parts, _ms(since)))
        for tp, found_at in starts.items():
            consumer.seek(tp, found_at.offset if found_at is not None else end[tp])
    return end


async def record(  # noqa: PLR0913 - one keyword per option of the command
    kafka: KafkaSettings,
    topics: Sequence[str],
    out: Path,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> int:
    """Write the topics' records (from `since` up to `until`, at most `limit`) to `out`."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        # Earliest: the fetcher starts as soon as partitions are assigned, before the
        # seek below; from "latest" it skipped a partition's first records on tansu.
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=kafka.max_request_bytes,
    )
    await consumer.start()
    try:
        end = await _assign(consumer, topics, since)
        remaining = set(end)  # the first fetch of each partition tells where it ends
        with RecordingWriter(out) as writer:
            progress = await _drain(
                consumer, end, remaining, window=_Window(since, until), writer=writer, limit=limit
            )
        log.info(
            "recorded", records=writer.count, file=str(out), records_per_s=round(progress.rate())
        )
        return writer.count
    finally:
        await consumer.stop()


async def _drain(  # noqa: PLR0913 - the recording's whole state
    consumer: AIOKafkaConsumer,
    end: dict[TopicPartition, int],
    remaining: set[TopicPartition],
    *,
    window: _Window,
    writer: RecordingWriter,
    limit: int | None,
) -> _Progress:
    progress = _Progress("recording")
    quiet: dict[TopicPartition, int] = dict.fromkeys(remaining, 0)
    while remaining and writer.count != limit:
        batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
        for tp in remaining:
            # ListOffsets only gave a lower bound: tansu answers it (and some fetches'
            # high watermark) with the last batch's base offset, short of its records.
            end[tp] = max(end[tp], consumer.highwater(tp) or 0)
        for tp, messages in batch.items():
            for m in messages:
                if window.after(m) or writer.count == limit:
                    remaining.discard(tp)
                    break
                if not window.before(m):
                    writer.write(_recorded(m))
                    progress.step()
        for tp in list(remaining):
            # Done once past the end and two fetches in a row brought nothing new.
            caught_up = not batch.get(tp) and await consumer.position(tp) >= end[tp]
            quiet[tp] = quiet[tp] + 1 if caught_up else 0
            if quiet[tp] >= 2:  # noqa: PLR2004 - two quiet fetches
                remaining.discard(tp)
    return progress


async def replay(
    kafka: KafkaSettings,
    path: Path,
    *,
    topic_map: dict[str, str] | None = None,
    speed: float | None = 1.0,
    keep_timestamps: bool = False,
) -> tuple[int, float]:
    """Produce a recording back; (records, records/s). `speed` None: as fast as possible."""
    topic_map = topic_map or {}
    kafka_producer = producer(kafka, client_id="tmiot-replay")
    await kafka_producer.start()
    progress = _Progress("replaying")
    partitions: dict[str, int] = {}
    futures: list[asyncio.Future[Any]] = []
    first_ms: int | None = None
    try:
        for rec in read_recording(path):
            target = topic_map.get(rec.topic, rec.topic)
            if target not in partitions:
                partitions[target] = len(await kafka_producer.partitions_for(target))
            if speed is not None:
                first_ms = rec.timestamp_ms if first_ms is None else first_ms
                due = progress.started + (rec.timestamp_ms - first_ms) / 1000 / speed
                if (delay := due - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
            futures.append(
                await kafka_producer.send(
                    target,
                    rec.value,
                    key=rec.key,
                    partition=rec.partition if rec.partition < partitions[target] else None,
                    timestamp_ms=rec.timestamp_ms if keep_timestamps else None,
                    headers=[(name, value or b"") for name, value in rec.headers],
                )
            )
            progress.step()
            if len(futures) >= _INFLIGHT:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await kafka_producer.stop()
    rate = progress.rate()
    log.info("replayed", records=progress.count, file=str(path), records_per_s=round(rate))
    return progress.count, rate


def _when(text: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _mapping(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        msg = f"expected OLD=NEW, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return old, new


def _run_record(args: argparse.Namespace, settings: Settings) -> int:
    count = asyncio.run(
        record(
            settings.kafka,
            args.topic,
            args.out,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
    )
    sys.stdout.write(f"recorded {count} records to {args.out}\n")
    return 0


def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    count, rate = asyncio.run(
        replay(
            settings.kafka,
            args.file,
            topic_map=dict(args.to_topic or []),
            speed=None if args.fast else args.speed,
            keep_timestamps=args.keep_timestamps,
        )
    )
    sys.stdout.write(f"replayed {count} records from {args.file} ({rate:,.0f} records/s)\n")
    return 0


def configure_parsers(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    """Add the ``record`` and ``replay`` commands to the CLI."""
    rec = sub.add_parser("record", help="write Kafka topics (or a time range) to a recording file")
    rec.add_argument("--topic", action="append", required=True, help="topic to record (repeat)")
    rec.add_argument("--out", type=Path, required=True, help="recording file (.gz: compressed)")
    rec.add_argument("--since", type=_when, help="first record time (ISO 8601; UTC if naive)")
    rec.add_argument("--until", type=_when, help="last record time (ISO 8601; UTC if naive)")
    rec.add_argument("--limit", type=int, help="stop after this many records")
    rec.set_defaults(handler=_run_record, kafka_check=True)

    rep = sub.add_parser("replay", help="produce a recording back onto Kafka")
    rep.add_argument("file", type=Path, help="a recording written by `tmiot record`")
    rep.add_argument(
        "--to-topic",
        type=_mapping,
        action="append",
        metavar="OLD=NEW",
        help="replay the records of topic OLD onto NEW (repeat)",
    )
    pace = rep.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, default=1.0, help="multiple of the recorded pace (default 1)"
    )
    pace.add_argument("--fast", action="store_true", help="as fast as Kafka takes them")
    rep.add_argument(
        "--keep-timestamps",
        action="store_true",
        help="keep the recorded timestamps (default: the time of the replay)",
    )
    rep.set_defaults(handler=_run_replay, kafka_check=True)
