from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import pytest

from stream import evaluate
from tmiot.cli import main
from tmiot.config import Settings


def write_series(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("timestamp", "value"))
        writer.writerows(rows)


def series(n: int, spike_at: int | None = None) -> list[tuple[str, str]]:
    rows = []
    for i in range(n):
        day, minute = divmod(i * 5, 1440)
        value = 50.0 + 10.0 * math.sin(2 * math.pi * i / 288) + (i * 7919 % 13) / 13
        if i == spike_at:
            value += 100.0
        rows.append(
            (f"2014-04-{1 + day:02d} {minute // 60:02d}:{minute % 60:02d}:00", f"{value:g}")
        )
    return rows


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_series(root / "artificial" / "spiky.csv", series(900, spike_at=800))
    write_series(root / "artificial" / "calm.csv", series(400))
    write_series(root / "real" / "short.csv", series(3))
    (root / "combined_windows.json").write_text("{}", encoding="utf-8")  # not a series
    return root


def test_evaluate_writes_one_scored_file_per_series(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = argparse.Namespace(data=data, out=out)
    assert evaluate.run(args, Settings()) == evaluate.EXIT_OK

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["artificial/calm.csv", "artificial/spiky.csv", "real/short.csv"]
    for name in written:
        source, result = read(data / name), read(out / name)
        assert list(result[0]) == ["timestamp", "value", "anomaly_score"]
        assert [(r["timestamp"], r["value"]) for r in result] == [
            (r["timestamp"], r["value"]) for r in source
        ]
        assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in result)
    spiky = [float(r["anomaly_score"]) for r in read(out / "artificial/spiky.csv")]
    assert max(range(len(spiky)), key=spiky.__getitem__) == 800
    assert spiky[800] >= 0.5
    summary = capsys.readouterr().out
    assert "scored 1303 readings of 3 series" in summary


def test_evaluate_through_the_cli(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main(["evaluate", "--data", str(data), "--out", str(out)]) == 0
    assert (out / "real" / "short.csv").is_file()


def test_evaluate_without_series_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(data=tmp_path, out=tmp_path / "out")
    assert evaluate.run(args, Settings()) == evaluate.EXIT_FAILURE
    assert "no <category>/<file>.csv" in capsys.readouterr().err


def test_evaluate_names_an_unreadable_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "data" / "c" / "bad.csv", [("2014-04-01 00:00:00", "1"), ("x", "2")])
    args = argparse.Namespace(data=tmp_path / "data", out=tmp_path / "out")
    assert evaluate.run(args, Settings()) == evaluate.EXIT_FAILURE
    assert "bad.csv:3" in capsys.readouterr().err
