"""The e2e benchmark's markdown table and its plot of latency against rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SERVICES = ("ingest", "stream", "triggers", "kafka", "mosquitto", "postgres", "naive", "load")


def grouped(x: float | None) -> str:
    """`x` rounded, with thousands separators; empty for None."""
    return "" if x is None else f"{x:,.0f}"


def _config(s: dict[str, Any]) -> tuple[str, str, int]:
    return s["system"], s["form"], s["sensors"]


def best_step(steps: list[dict[str, Any]], system: str, form: str, sensors: int) -> dict[str, Any]:
    """The sustained step of that configuration with the highest offered rate ({} if none)."""
    held = [s for s in steps if _config(s) == (system, form, sensors) and s["sustained"]]
    return max(held, key=lambda s: s["offered"]) if held else {}


def markdown(r: dict[str, Any]) -> str:
    """The results as a markdown page."""
    steps: list[dict[str, Any]] = r["steps"]
    lim: dict[str, int] = r.get("stages", {})
    out = [
        "# End-to-end benchmark",
        "",
        f"{r['when']}, {r['machine']}; `{r['command']}`",
        "",
        (
            f"Steps of {r['seconds']:.0f} s after a warm-up; sustained = the generator kept >= 97 %"
            f" of the offered rate, every reading was stored within {r['drain_limit']:.0f} s of the"
            f" end, and p99 publish -> committed row <= {r['latency_limit'] * 1000:.0f} ms."
            " Latencies to the row are upper bounds (rows polled every 50 ms)."
        ),
        "",
    ]
    if lim:
        stage_cpu: dict[str, float] = r.get("stage_cpu_us", {})
        out += [
            "## Stage limits (each stage alone)",
            "",
            "| stage | readings/s | machine CPU per reading (µs) |",
            "|---|---:|---:|",
            *(f"| {k} | {v:,} | {stage_cpu.get(k, '')} |" for k, v in lim.items()),
            "",
        ]
    out += [
        "## Highest sustained rate",
        "",
        (
            "| system | messages | sensors | readings/s | p50 / p95 / p99 to row (ms)"
            " | p99 to work order (ms) | stream worker RSS (MB) |"
        ),
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for key in r["configs"]:
        system, form, sensors = key["system"], key["form"], key["sensors"]
        best = best_step(steps, system, form, sensors)
        if not best:
            out.append(f"| {system} | {form} | {sensors:,} | none held | | | |")
            continue
        lat = best["row_latency_ms"]
        wo = best.get("workorder_latency_ms", {}).get("p99")
        rss = best["rss_peak_mb"].get("stream")
        out.append(
            f"| {system} | {form} | {sensors:,} | **{grouped(best['achieved'])}** |"
            f" {lat['p50']} / {lat['p95']} / {lat['p99']} | {grouped(wo)} | {rss or ''} |"
        )
    out.append("")
    for line in r.get("verdicts", []):
        out.append(f"- {line}")
    out += [
        "",
        "## Every step",
        "",
        (
            "| system | msgs | sensors | offered | achieved | held | p50 / p99 row (ms)"
            " | p99 WO (ms) | backlog at end | drain (s) | CPU cores by process"
            " | machine cores | µs/reading | why not |"
        ),
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for s in steps:
        lat = s["row_latency_ms"]
        wo = s.get("workorder_latency_ms", {}).get("p99")
        cpu = ", ".join(f"{k} {v}" for k, v in s["cpu_cores"].items() if k in _SERVICES)
        out.append(
            f"| {s['system']} | {s['form']} | {s['sensors']:,} | {grouped(s['offered'])} |"
            f" {grouped(s['achieved'])} | {'yes' if s['sustained'] else 'no'} |"
            f" {lat['p50']} / {lat['p99']} | {grouped(wo)} | {s['backlog_at_end']:,} |"
            f" {s['drain_seconds']} | {cpu} | {s.get('machine_cores', '')} |"
            f" {grouped(s.get('cpu_us_per_reading'))} | {s['why_not']} |"
        )
    mem = r.get("memory")
    if mem:
        out += [
            "",
            "## Stream worker memory",
            "",
            (
                f"Resident set of the stream worker(s) at the end of the first"
                f" {mem['sensors']:,}-sensor step: {mem['rss_mb']} MB at its peak, against"
                f" {mem['baseline_mb']} MB before any reading:"
                f" **{mem['bytes_per_sensor']:,} bytes per monitored sensor**"
                f" (at most {mem['max_bytes_per_sensor']:,} over that config's steps, whose"
                " larger buffers count too)."
            ),
        ]
    out.append("")
    return "\n".join(out)


def plot(r: dict[str, Any], path: Path) -> None:
    """p50 and p99 publish -> row latency against the offered rate, one line per config."""
    import matplotlib as mpl  # noqa: PLC0415 - only the plot needs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for key in r["configs"]:
        pts = sorted(
            (s["offered"], s["row_latency_ms"]["p50"], s["row_latency_ms"]["p99"])
            for s in r["steps"]
            if _config(s) == _config(key) and s["row_latency_ms"]["p99"] is not None
        )
        if not pts:
            continue
        label = f"{key['system']} {key['form']} {key['sensors'] // 1000}k"
        line = ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=f"{label} p99")
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker=".",
            linestyle=":",
            color=line[0].get_color(),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(1000 * r["latency_limit"], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("offered readings/s")
    ax.set_ylabel("publish -> committed row, ms (p99 solid, p50 dotted)")
    ax.set_title("TradesMate IoT pipeline vs naive bridge, latency against rate")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(visible=True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
