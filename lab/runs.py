"""Run folders: `runs/<id>/config.json, status.json, metrics.jsonl, samples.jsonl, model/`; listing and reloading."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIVE = ("queued", "running", "stopping")
FINISHED = ("done", "failed", "stopped", "interrupted")


PERSISTENT_DIR = Path("/data")  # a Hugging Face Space's persistent storage, where it has some
PERSISTENT_RUNS = "rlhf-lab-runs"


def runs_root() -> Path:
    """`LAB_RUNS_DIR` if set, else a folder in /data where it exists and is writable (so runs survive a Space
    restart), else `runs/`."""
    if os.environ.get("LAB_RUNS_DIR"):
        return Path(os.environ["LAB_RUNS_DIR"]).expanduser().resolve()
    if PERSISTENT_DIR.is_dir() and os.access(PERSISTENT_DIR, os.W_OK):
        return (PERSISTENT_DIR / PERSISTENT_RUNS).resolve()
    return Path("runs").resolve()


_STATUS_LOCK = threading.Lock()  # the worker and a visitor's Stop may write one status at the same moment


def _write_json(path: Path, data: dict) -> None:
    """Write atomically so a reader never sees half a file; each writer has its own temporary name."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file ([] when it does not exist); a line cut off mid-write is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by a crash mid-write: skip it, keep the rest
            continue
    return rows


@dataclass
class Run:
    """One job's folder on disk."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    @property
    def kind(self) -> str:
        return self.config.get("kind", "")

    def status(self) -> dict[str, Any]:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.exists() else {"status": "unknown"}

    def set_status(self, status: str, **extra: Any) -> None:
        """Record a status; a finished run never goes back to an active one (a late Stop cannot undo `done`)."""
        with _STATUS_LOCK:
            data = self.status() if (self.path / "status.json").exists() else {}
            if data.get("status") in FINISHED and status in ACTIVE:
                return
            data.update(extra, status=status, updated=time.time())
            _write_json(self.path / "status.json", data)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        row = {"time": round(time.time(), 3), **metrics}
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=float) + "\n")

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path / "samples.jsonl", "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=str) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "samples.jsonl")

    def summary(self) -> dict[str, Any]:
        return self.status().get("summary") or {}

    def label(self) -> str:
        """One short line for a dropdown: id, status and the headline number in words."""
        st = self.status()
        summary = st.get("summary") or {}
        bits = [self.id, st.get("status", "?")]
        for key, name in (("eval_accuracy", "accuracy"), ("reward_last", "reward"), ("toxicity_rlhf", "toxicity")):
            if isinstance(summary.get(key), (int, float)):
                bits.append(f"{name} {summary[key]:.3f}")
        return " · ".join(bits)


def new_run(kind: str, config: dict[str, Any], root: Path | None = None, path: Path | None = None) -> Run:
    """Create `runs/<kind>-<time>-<random>/` (or `path`, new or empty) with its config and a `queued` status."""
    if path is None:
        root = Path(root) if root else runs_root()
        root.mkdir(parents=True, exist_ok=True)
        run_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        path = root / run_id
        path.mkdir()
    else:
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ValueError(f"'{path}' already exists and is not an empty folder: choose a new run folder")
        path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "config.json", {"kind": kind, "created": time.time(), **config})
    run = Run(path)
    run.set_status("queued")
    return run


def open_run(run_id_or_path: str | Path, root: Path | None = None) -> Run:
    """A run by id (under root) or by path; ValueError if it is not a run folder."""
    path = Path(run_id_or_path)
    if not path.is_dir():
        path = (Path(root) if root else runs_root()) / str(run_id_or_path)
    if not (path / "config.json").exists():
        raise ValueError(f"'{run_id_or_path}' is not a run folder (no config.json)")
    return Run(path)


def list_runs(kind: str | None = None, root: Path | None = None, status: tuple[str, ...] | None = None) -> list[Run]:
    """Runs newest first, optionally of one kind and status."""
    root = Path(root) if root else runs_root()
    if not root.exists():
        return []
    runs = []
    for path in root.iterdir():
        if not (path / "config.json").exists():
            continue
        run = Run(path)
        try:
            if kind and run.kind != kind:
                continue
            if status and run.status().get("status") not in status:
                continue
        except (json.JSONDecodeError, OSError):
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: r.config.get("created", 0), reverse=True)


def mark_interrupted(root: Path | None = None) -> list[str]:
    """After a restart no job is alive: runs still marked active were cut off. Mark them, keep their metrics."""
    marked = []
    for run in list_runs(root=root, status=ACTIVE):
        run.set_status("interrupted", error="the process stopped while this run was active")
        marked.append(run.id)
    return marked
