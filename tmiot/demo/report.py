"""The demo's end: a summary against the simulator's ground truth, and a picture per sensor.

- Detection, per anomaly type: an injected anomaly is *found* when the stream
  flagged a reading of its sensor between its start and a grace period after its
  end (a ``missing`` anomaly: a ``missing`` event is a row-less event, so it is
  found through the sensor's offline mark in the scored stream, which the demo
  collects). Precision: the flagged episodes (runs of flagged readings of a
  sensor less than the grace apart) that overlap an injected anomaly.
- Work orders against the ground truth: a work order is *true* when an injected
  anomaly (a short ``missing`` dropout is not a fault) on its sensor's equipment
  spans its opening, plus ``WORK_ORDER_GRACE``; precision, recall per type (an
  anomaly whose sensor's incident requested or joined a work order), false work
  orders per 1,000 sensor-days; and the latency from publishing the reading that
  opened an incident to receiving its work-order event.
- Per affected sensor: readings, anomaly scores, the injected windows and the
  work orders, as a PNG and an HTML page, plus an ``index.html``.
"""

from __future__ import annotations

import datetime as dt
import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import matplotlib as mpl

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from tmiot.simulate.ground_truth import GroundTruth

__all__ = ["Reading", "Summary", "WorkOrder", "summarise", "write_pictures"]

GRACE: Final = dt.timedelta(minutes=30)
WORK_ORDER_GRACE: Final = dt.timedelta(hours=2)


@dataclass(frozen=True, slots=True)
class Reading:
    """One scored reading of a sensor, from ``sensor_readings``."""

    at: dt.datetime
    value: float
    score: float
    is_anomaly: bool
    anomaly_type: str | None


@dataclass(slots=True)
class WorkOrder:
    """A work-order event as received."""

    sensor_id: str
    trigger_number: str
    opened_at: dt.datetime
    received_at: dt.datetime
    published_at: dt.datetime  # when the opening reading was published (the pace's clock)
    update: bool = False  # an incident that joined an open work order (workorders.updated)
    true: bool | None = None  # judged by summarise()


@dataclass(slots=True)
class Summary:
    """What the demo prints at the end."""

    readings_published: int = 0
    readings_written: int = 0
    found: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (found, injected)
    episodes: int = 0
    true_episodes: int = 0
    incidents: int = 0
    work_orders: int = 0
    updates: int = 0
    true_orders: int = 0
    faults: int = 0
    recalled: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (got, injected)
    sensor_days: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The summary as text lines."""
        out = [
            f"readings published {self.readings_published:,}, written {self.readings_written:,}",
            "detection against the ground truth (found / injected):",
        ]
        out += [f"  {kind:8} {f} / {n}" for kind, (f, n) in sorted(self.found.items())]
        if self.episodes:
            share = self.true_episodes / self.episodes
            out.append(
                f"  precision: {self.true_episodes} of {self.episodes} flagged episodes"
                f" overlap an injected anomaly ({share:.0%})"
            )
        false = self.work_orders - self.true_orders
        out.append(
            f"work orders: {self.faults} faults injected, {self.work_orders} work orders"
            f" ({self.true_orders} true, {false} false), {self.updates} incidents joined an open"
            f" work order; {self.incidents} incidents"
        )
        if self.work_orders:
            out.append(f"  precision {self.true_orders / self.work_orders:.0%}")
        out += [
            f"  recall {kind:8} {got} / {n}" for kind, (got, n) in sorted(self.recalled.items())
        ]
        if self.sensor_days:
            out.append(
                f"  false work orders per 1,000 sensor-days: {1000 * false / self.sensor_days:.1f}"
                f" ({self.sensor_days:.1f} sensor-days simulated: one false work order is"
                f" {1000 / self.sensor_days:.1f})"
            )
        if self.latency_ms:
            lat = self.latency_ms
            out.append(
                "publish -> work order (ms; publish time from the simulator's pace): "
                + ", ".join(f"{k} {v:,.0f}" for k, v in lat.items())
            )
        return out


def _episodes(readings: Sequence[Reading]) -> list[tuple[dt.datetime, dt.datetime]]:
    runs: list[tuple[dt.datetime, dt.datetime]] = []
    for r in readings:
        if not r.is_anomaly:
            continue
        if runs and r.at - runs[-1][1] <= GRACE:
            runs[-1] = (runs[-1][0], r.at)
        else:
            runs.append((r.at, r.at))
    return runs


def summarise(  # noqa: PLR0913 - everything the summary is made of
    truth: Sequence[GroundTruth],
    readings: dict[str, list[Reading]],
    *,
    missing: dict[str, list[dt.datetime]],
    work_orders: Sequence[WorkOrder],
    timed: Sequence[WorkOrder],
    incidents: int,
    published: int,
    equipment: dict[str, str] | None = None,
    sensor_days: float = 0.0,
) -> Summary:
    """Compare what the pipeline flagged and ordered with what the simulator injected.

    `timed`: the work orders whose latency is reported (those a reading opens at once);
    `equipment`: each sensor's equipment (a work order is for the equipment). Sets each
    work order's ``true``.
    """
    requests = [w for w in work_orders if not w.update]
    s = Summary(
        readings_published=published,
        incidents=incidents,
        work_orders=len(requests),
        updates=len(work_orders) - len(requests),
        sensor_days=sensor_days,
    )
    unit = equipment or {}
    faults = [t for t in truth if t.anomaly_type.value != "missing"]
    s.faults = len(faults)
    for w in requests:
        w.true = any(
            unit.get(t.sensor_id, t.sensor_id) == unit.get(w.sensor_id, w.sensor_id)
            and t.start <= w.opened_at <= t.end + WORK_ORDER_GRACE
            for t in faults
        )
    s.true_orders = sum(bool(w.true) for w in requests)
    recalled: dict[str, list[int]] = {}
    for t in faults:
        tally = recalled.setdefault(t.anomaly_type.value, [0, 0])
        tally[1] += 1
        tally[0] += any(
            w.sensor_id == t.sensor_id and t.start <= w.opened_at <= t.end + WORK_ORDER_GRACE
            for w in work_orders
        )
    s.recalled = {k: (v[0], v[1]) for k, v in recalled.items()}
    s.readings_written = sum(len(v) for v in readings.values())
    found: dict[str, list[int]] = {}
    for t in truth:
        kind = t.anomaly_type.value
        tally = found.setdefault(kind, [0, 0])
        tally[1] += 1
        until = t.end + GRACE
        if kind == "missing":
            hit = any(t.start <= at <= until for at in missing.get(t.sensor_id, []))
        else:
            hit = any(
                r.is_anomaly and t.start <= r.at <= until for r in readings.get(t.sensor_id, [])
            )
        tally[0] += hit
    s.found = {k: (v[0], v[1]) for k, v in found.items()}
    for sensor_id, rows in readings.items():
        mine = [t for t in truth if t.sensor_id == sensor_id]
        for start, end in _episodes(rows):
            s.episodes += 1
            s.true_episodes += any(start <= t.end + GRACE and end >= t.start for t in mine)
    latencies = sorted((w.received_at - w.published_at).total_seconds() * 1000 for w in timed)
    if latencies:
        q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []
        s.latency_ms = {
            "p50": statistics.median(latencies),
            "p95": q[94] if q else latencies[0],
            "p99": q[98] if q else latencies[0],
            "max": latencies[-1],
        }
    return s


def write_pictures(  # noqa: PLR0913 - the report's inputs
    out: Path,
    *,
    names: dict[str, str],
    truth: Sequence[GroundTruth],
    readings: dict[str, list[Reading]],
    work_orders: Sequence[WorkOrder],
    threshold: float,
    limit: int = 24,
) -> list[Path]:
    """A PNG and an HTML page per affected sensor (injected or ordered); the files."""
    out.mkdir(parents=True, exist_ok=True)
    affected = list(
        dict.fromkeys([t.sensor_id for t in truth] + [w.sensor_id for w in work_orders])
    )
    written: list[Path] = []
    pages: list[tuple[str, str]] = []
    for sensor_id in affected[:limit]:
        rows = readings.get(sensor_id, [])
        if not rows:
            continue
        name = names.get(sensor_id, sensor_id)
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
        at = [r.at for r in rows]
        top.plot(at, [r.value for r in rows], lw=0.8, color="#1f77b4", label="reading")
        flagged = [r for r in rows if r.is_anomaly]
        top.scatter(
            [r.at for r in flagged],
            [r.value for r in flagged],
            s=12,
            color="#d62728",
            label="anomaly",
            zorder=3,
        )
        bottom.plot(at, [r.score for r in rows], lw=0.8, color="#555555", label="anomaly score")
        bottom.axhline(threshold, color="#d62728", lw=0.6, ls="--", label="threshold")
        for t in truth:
            if t.sensor_id == sensor_id:
                for ax in (top, bottom):
                    ax.axvspan(t.start, t.end, color="#ffbf00", alpha=0.3)
                top.annotate(
                    t.anomaly_type.value, (t.start, top.get_ylim()[1]), fontsize=8, va="top"
                )
        for w in work_orders:
            if w.sensor_id == sensor_id:
                false = w.true is False
                for ax in (top, bottom):
                    ax.axvline(
                        w.opened_at,
                        color="#d62728" if false else "#2ca02c",
                        lw=1.2,
                        ls="--" if false or w.update else "-",
                    )
        top.set_title(
            f"{name}: injected anomalies (amber), work orders (green: true, red dashed: false;"
            " dashed green: joined an open one)"
        )
        top.legend(loc="upper left", fontsize=8)
        bottom.set_ylim(0, 1)
        bottom.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        png = out / f"{name}.png"
        fig.savefig(png, dpi=100)
        plt.close(fig)
        items = [t for t in truth if t.sensor_id == sensor_id]
        orders = [w for w in work_orders if w.sensor_id == sensor_id]
        page = out / f"{name}.html"
        page.write_text(_page(name, png.name, items, orders))
        written += [png, page]
        pages.append((name, page.name))
    index = out / "index.html"
    links = "".join(f'<li><a href="{html.escape(p)}">{html.escape(n)}</a></li>' for n, p in pages)
    index.write_text(
        f"<!doctype html><title>tmiot demo</title><h1>Affected sensors</h1><ul>{links}</ul>"
    )
    written.append(index)
    return written


def _page(name: str, png: str, truth: Sequence[GroundTruth], orders: Sequence[WorkOrder]) -> str:
    rows = "".join(
        f"<tr><td>injected {html.escape(t.anomaly_type.value)}</td><td>{t.start:%H:%M:%S}</td>"
        f"<td>{t.end:%H:%M:%S}</td></tr>"
        for t in truth
    ) + "".join(
        f"<tr><td>{_what(w)} {html.escape(w.trigger_number)}</td><td>{w.opened_at:%H:%M:%S}</td>"
        f"<td>received {w.received_at:%H:%M:%S}</td></tr>"
        for w in orders
    )
    return (
        f"<!doctype html><title>{html.escape(name)}</title><h1>{html.escape(name)}</h1>"
        f'<img src="{html.escape(png)}" alt="readings and scores" style="max-width:100%">'
        f"<table border=1 cellpadding=4><tr><th>what</th><th>from</th><th>to</th></tr>{rows}"
        "</table>"
    )


def _what(w: WorkOrder) -> str:
    if w.update:
        return "joined work order"
    if w.true is None:
        return "work order"
    return "work order (true)" if w.true else "FALSE work order"
