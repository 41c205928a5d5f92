"""benchmarks/RESULTS.md (or a GPU check's summary) from pytest-benchmark JSON files.

    pytest benchmarks --benchmark-only --benchmark-json benchmarks/out/cpu.json
    python benchmarks/report.py benchmarks/out/cpu.json [more.json ...] --out benchmarks/RESULTS.md

One section per JSON file: the machine (CPU, cores, load when the run started, GPU, versions,
build), a summary of every comparison group (cion_fast's median time; the plain-PyTorch reference
and today's baseline as "N x slower than cion_fast"; cion_fast against the group's floor, the least
work any implementation must do) and every row with its peak memory and notes. Ratios are taken
within one run, where the load was the same for every row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

NOTE_KEYS_SKIPPED = {"role", "device", "peak_mb", "cuda_peak_mb"}  # heap_peak_mb stays in the notes


def _time(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:,.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds * 1e6:,.1f} µs"


def _machine(data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    ours = machine.get("cion_fast_bench", {})
    build = ours.get("cion_fast", {})
    load = ours.get("load_average")
    parts = [f"{ours.get('cpu_model', machine.get('cpu', {}).get('brand_raw', 'unknown CPU'))} ({ours.get('cores', '?')} cores)",
             f"GPU: {ours.get('gpu', 'none')}", f"ops on: {ours.get('device', 'cpu')}",
             f"load average at the start: {', '.join(f'{v:.2f}' for v in load)}" if load else "load: unknown",
             f"Python {machine.get('python_version', '?')}, numpy {ours.get('numpy', '?')}, torch {ours.get('torch', '?')} "
             f"({ours.get('torch_threads', '?')} threads), cion_fast {build.get('version', '?')} "
             f"(OpenMP {build.get('openmp', '?')}, CUDA {build.get('cuda', '?')})",
             f"sizes: {'--full' if ours.get('full') else 'default'}"
             + (f", --denoise-fraction {ours['denoise_fraction']:g}" if ours.get("denoise_fraction") else ""),
             f"run {data.get('datetime', '?')[:19]}"]
    return "; ".join(parts)


def _groups(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in data.get("benchmarks", []):
        groups.setdefault(row.get("group") or row["name"], []).append(row)
    return groups


def _by_role(rows: list[dict[str, Any]], role: str) -> dict[str, Any] | None:
    found = [r for r in rows if r.get("extra_info", {}).get("role") == role]
    return min(found, key=lambda r: r["stats"]["median"]) if found else None


def _notes(row: dict[str, Any]) -> str:
    info = {k: v for k, v in row.get("extra_info", {}).items() if k not in NOTE_KEYS_SKIPPED}
    return "; ".join(f"{k} {v:.4g}" if isinstance(v, float) else (str(v) if k == "note" else f"{k} {v}") for k, v in info.items())


def section(path: Path) -> str:
    data = json.loads(path.read_text())
    groups = _groups(data)
    lines = [f"## `{path.name}`", "", f"Machine: {_machine(data)}.", "",
             "| comparison | cion_fast | plain-PyTorch reference | today's baseline | vs the floor | cion_fast peak memory |",
             "|---|---|---|---|---|---|"]
    for name, rows in groups.items():
        ours = _by_role(rows, "cion_fast")
        if ours is None:
            continue
        t = ours["stats"]["median"]
        cells = []
        for role in ("reference", "baseline"):
            other = _by_role(rows, role)
            cells.append(f"{_time(other['stats']['median'])} ({other['stats']['median'] / t:,.1f}× slower)" if other else "—")
        floor = _by_role(rows, "floor")
        vs_floor = f"{t / floor['stats']['median']:,.2f}× the floor ({floor['extra_info'].get('note', floor['name'])})" if floor else "—"
        peak = ours["extra_info"].get("cuda_peak_mb") or ours["extra_info"].get("peak_mb", 0.0)
        lines.append(f"| {name} | **{_time(t)}** | {cells[0]} | {cells[1]} | {vs_floor} | {peak:,.1f} MB |")
    lines += ["", "<details><summary>every row</summary>", "",
              "| comparison | test | role | median | min | rounds | vs cion_fast | peak memory | notes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in groups.items():
        ours = _by_role(rows, "cion_fast")
        for row in sorted(rows, key=lambda r: r["stats"]["median"]):
            info, stats = row.get("extra_info", {}), row["stats"]
            ratio = f"{stats['median'] / ours['stats']['median']:,.2f}×" if ours else "—"
            peak = info.get("cuda_peak_mb") or info.get("peak_mb", 0.0)
            lines.append(f"| {name} | `{row['name']}` | {info.get('role', '?')} | {_time(stats['median'])} | {_time(stats['min'])} | "
                         f"{stats['rounds']} | {ratio} | {peak:,.1f} MB | {_notes(row)} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark --benchmark-json files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.json if not p.is_file()]
    if missing:
        print(f"report.py: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    text = "\n".join([
        "# Benchmark results", "",
        "Generated by `python benchmarks/report.py` from `pytest benchmarks --benchmark-only --benchmark-json` "
        "(do not edit by hand: rerun and regenerate). Each comparison is one op at one size; its rows ran in "
        "the same session, so their ratios share the load. Times are medians; \"peak memory\" is resident "
        "memory above the starting point during the measurement (inputs excluded; the GPU allocator's peak "
        "on GPUs). Roles: **reference** = the plain-PyTorch reference in `cion_fast/reference/`; "
        "**baseline** = what ReID code does today (np.argsort before the Cython evaluators, PIL/torchvision "
        "augmentation); **floor** = the least work any implementation must do (the distance GEMM, one read "
        "of the input, the bytes of the output). Analyses, targets and earlier hand-run figures: "
        "[NOTES.md](NOTES.md).", "",
        *[section(path) for path in args.json],
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
