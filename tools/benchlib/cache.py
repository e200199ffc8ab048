"""The per-model results cache, docs/results/bench-<model>.json: load, and save merged under a lock."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

from .plan import MODELS, ROOT

RESULTS = ROOT / "docs" / "results"


def results_path(model: str, results_dir: Path = RESULTS) -> Path:
    return results_dir / f"bench-{model}.json"


def load_results(model: str, results_dir: Path = RESULTS) -> dict:
    path = results_path(model, results_dir)
    if path.exists():
        return json.loads(path.read_text())
    return {"model": model, "baseline": None, "matches": {}, "runs": {}}


def load_all(results_dir: Path = RESULTS) -> dict[str, dict]:
    """Every planned model's cached results (models with no file left out)."""
    return {name: load_results(name, results_dir) for name in MODELS if results_path(name, results_dir).exists()}


def save_results(data: dict, results_dir: Path = RESULTS) -> None:
    """Write ``data``, merged with what is on disk (so runs of one model may go on in several processes)."""
    path = results_path(data["model"], results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / f"onnxprune-bench-{data['model']}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            disk = json.loads(path.read_text())
            for key in ("runs", "matches"):
                data[key] = {**disk.get(key, {}), **data[key]}
            data["baseline"] = data.get("baseline") or disk.get("baseline")
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
