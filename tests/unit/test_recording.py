from __future__ import annotations

from pathlib import Path

import pytest

from tmiot.recording import Recorded, RecordingError, RecordingWriter, read_recording

RECORDS = [
    Recorded("raw", 3, 41, 1_700_000_000_123, b"k1", b'{"v":1}', (("schema", b"raw/1"),)),
    Recorded("raw", 0, 0, 1_700_000_000_124, None, None, ()),  # no key, a tombstone
    Recorded("scored", 7, 2**40, 0, b"", b"", (("a", None), ("b", b"\x00\xff"))),
]


@pytest.mark.parametrize("name", ["r.tmrec", "r.tmrec.gz"])
def test_records_come_back_as_written(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with RecordingWriter(path) as out:
        for r in RECORDS:
            out.write(r)
    assert out.count == len(RECORDS)
    assert list(read_recording(path)) == RECORDS


def test_a_cut_file_and_a_foreign_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.tmrec"
    with RecordingWriter(path) as out:
        for r in RECORDS:
            out.write(r)
    cut = tmp_path / "cut.tmrec"
    cut.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RecordingError, match="cut short"):
        list(read_recording(cut))
    other = tmp_path / "other.tmrec"
    other.write_bytes(b"PAR1 not ours")
    with pytest.raises(RecordingError, match="not a tmiot recording"):
        list(read_recording(other))
