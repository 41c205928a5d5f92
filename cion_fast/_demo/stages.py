"""Stages keyed by what they were computed from.

A stage's marker ``out/stages/<name>.json`` holds the digest of its inputs (its config slice, the
output digests of the stages it reads and the package version, so an upgrade recomputes) and the digest of its output (new at every computation).
A marker with the same input digest, a result and its outputs on disk is reused; a stage whose
marker has the same input digest but no result (interrupted) resumes from its outputs; any other
stage removes its outputs and runs afresh. A computed stage has a new output digest, so every
stage downstream runs again too. The log says which and why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import cion_fast
from cion_fast._io import atomic_write_json


def digest(inputs: Any) -> str:
    """A short stable digest of JSON-ready ``inputs`` (key order does not matter).

    Example:
        >>> digest({"a": 1, "b": [2]}) == digest({"b": [2], "a": 1}), len(digest({}))
        (True, 16)
    """
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two JSON-ready dicts, with old -> new values.

    Example:
        >>> changes({"config": {"steps": 40, "lr": 1}}, {"config": {"steps": 80, "lr": 1}})
        ['config.steps 40 -> 80']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in sorted(set(old) | set(new)) for c in changes(old.get(key), new.get(key), f"{prefix}{key}.")]
    if old == new:
        return []
    return [f"{prefix.rstrip('.')} {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]


class Stages:
    """Runs named stages once per set of inputs (see the module docstring).

    Example:
        >>> import tempfile
        >>> out, said = Path(tempfile.mkdtemp()), []
        >>> stages = Stages(out, said.append)
        >>> stages.run("a", lambda: {"x": 1}, config={"steps": 40})
        {'x': 1}
        >>> _ = Stages(out, said.append).run("a", lambda: {"x": 2}, config={"steps": 80})
        >>> said[-2]
        '[a] recomputing: config.steps 40 -> 80'
    """

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.out = Path(out)
        self.log = log
        self.timings: dict[str, float] = {}
        self.digests: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        (self.out / "stages").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, work: Callable[[], dict], config: Any = None, after: Iterable[str] = (),
            outputs: Iterable[Path] = ()) -> dict:
        """``work()``'s result for these inputs: ``config`` (JSON-ready) and the stages ``after``
        reads; ``outputs`` (files or directories) are removed before a fresh computation, and a
        stage whose outputs are gone runs again."""
        inputs = {"config": config, "after": {stage: self.digests[stage] for stage in after},
                  "version": cion_fast.__version__}
        key, outputs = digest(inputs), [Path(path) for path in outputs]
        marker = self.out / "stages" / f"{name}.json"
        record = json.loads(marker.read_text()) if marker.exists() else {}
        if record.get("digest") == key and "result" in record and all(path.exists() for path in outputs):
            self.log(f"[{name}] reused: inputs unchanged since an earlier run ({record['seconds']:.1f} s)")
        else:
            self._announce(name, record, inputs, key, outputs)
            atomic_write_json(marker, {"digest": key, "inputs": inputs})
            start = time.perf_counter()
            result = work()
            record = {"digest": key, "inputs": inputs, "seconds": time.perf_counter() - start, "result": result,
                      "output": digest([key, time.time_ns()])}
            atomic_write_json(marker, record)
            self.log(f"[{name}] done in {record['seconds']:.1f} s")
        self.digests[name] = record.get("output", key)
        self.timings[name], self.results[name] = record["seconds"], record["result"]
        return record["result"]

    def _announce(self, name: str, record: dict, inputs: dict, key: str, outputs: list[Path]) -> None:
        """Says why the stage runs; clears its outputs unless it resumes an interrupted run."""
        if record.get("digest") == key and "result" not in record:
            self.log(f"[{name}] resuming: interrupted earlier with the same inputs")
            return
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if not record:
            self.log(f"[{name}] computing: not run before")
        elif record.get("digest") == key:
            self.log(f"[{name}] recomputing: its outputs are gone")
        else:
            why = changes(record.get("inputs", {}), inputs) or ["a marker without inputs"]
            self.log(f"[{name}] recomputing: {'; '.join(why[:4])}{' ...' if len(why) > 4 else ''}")
