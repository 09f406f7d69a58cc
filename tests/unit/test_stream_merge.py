"""Records merged per partition, in order, within the size cap; buffers cut into chunks."""

from __future__ import annotations

from stream.service import _MERGE_READINGS, _chunks, _merge, _Record
from tests.fix_stream import batch_of


def _record(partition: int, offset: int, n: int) -> _Record:
    rows = [(f"s{partition}", offset * 100_000 + i, float(i)) for i in range(n)]
    return _Record(partition, offset, batch_of("c", rows))


def test_small_records_merge_per_partition_in_offset_order() -> None:
    records = [_record(0, 1, 3), _record(1, 1, 2), _record(0, 2, 4), _record(1, 2, 1)]
    merged = _merge(records)
    assert [(m.partition, m.offset, len(m.batch["sensor_id"])) for m in merged] == [
        (0, 2, 7),
        (1, 2, 3),
    ]
    ts = merged[0].batch["ts_us"]
    assert ts == sorted(ts)
    assert all(len(merged[0].batch[c]) == 7 for c in ("value", "unit", "received_us"))


def test_a_merged_record_stays_under_the_cap() -> None:
    big = _MERGE_READINGS // 2 + 1
    records = [_record(0, i, big) for i in range(3)]
    merged = _merge(records)
    assert [len(m.batch["sensor_id"]) for m in merged] == [big, big, big]
    assert [m.offset for m in merged] == [0, 1, 2]


def test_a_buffer_is_cut_into_chunks_of_at_least_the_write_size_in_order() -> None:
    records = [_record(i % 3, i, 400) for i in range(10)]
    chunks = _chunks(records, 1000)
    assert [[r.offset for r in c] for c in chunks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [r for c in chunks for r in c] == records


def test_a_buffer_of_poison_records_only_still_has_one_chunk_to_ack_it() -> None:
    assert _chunks([], 1000) == [[]]
    assert [len(c) for c in _chunks([_record(0, 0, 5000)], 1000)] == [1]
