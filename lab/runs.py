"""Run folders: `runs/<id>/config.json, status.json, metrics.jsonl, samples.jsonl, model/`; listing and reloading."""

from __future__ import annotations

import json
import os
import platform
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIVE = ("queued", "running", "stopping")
FINISHED = ("done", "failed", "stopped", "interrupted")
TRAINED = ("reward", "ppo")  # kinds whose runs count training steps


HOST = platform.node() or "?"  # a run records where it ran: seconds per step measured elsewhere say nothing here
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

    def trained_steps(self) -> int:
        """Training steps this run finished: its summary's count, else the metric rows with a step."""
        steps = self.summary().get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool):
            return steps
        return sum(1 for r in self.metrics() if isinstance(r.get("step"), int))

    def finished_ok(self) -> bool:
        """Ran to its end (`done`); a stopped, interrupted or failed run is never a default."""
        return self.status().get("status") == "done"

    def label(self) -> str:
        """One short line for a dropdown: id, status (a run that did not finish says so, and how far it got) and the
        headline number in words."""
        st = self.status()
        summary = st.get("summary") or {}
        state = st.get("status", "?")
        if state in FINISHED and state != "done":
            steps = self.trained_steps() if self.kind in TRAINED else None
            after = "" if steps is None else f" after {steps} step{'' if steps == 1 else 's'}"
            state = f"{state.upper()}{after} (not finished)"
        bits = [self.id, state]
        headline = (("eval_accuracy", "accuracy"), ("reward_last", "rollout reward"), ("toxicity_rlhf", "toxicity"))
        for key, name in headline:
            if isinstance(summary.get(key), (int, float)):
                bits.append(f"{name} {summary[key]:.3f}" + (self._scored_by() if key == "reward_last" else ""))
        if self.kind == "reward":
            bits.append(self._trained_on(summary))
        return " · ".join(b for b in bits if b)

    def _trained_on(self, summary: dict[str, Any]) -> str:
        """'all-minilm-l6-v2 × 2 on bundled, 248 pairs': what a reward run was trained from, so two runs of equal
        accuracy read apart in a dropdown (the backbone, an ensemble's size, the data and its training pairs)."""
        try:
            cfg = self.config
        except (json.JSONDecodeError, OSError):
            return ""
        backbone = str(cfg.get("backbone") or "").split(":")[-1].rstrip("/").split("/")[-1]
        members = summary.get("members") or cfg.get("ensemble") or 1
        data = str(summary.get("data") or cfg.get("data") or "")
        data = "+".join(Path(part).name if Path(part).is_absolute() or part.startswith(".") else part
                        for part in data.split("+"))  # a file by its name, never the server's path; hub ids whole
        pairs = summary.get("train_pairs")
        text = backbone + (f" × {members}" if isinstance(members, int) and members > 1 else "")
        if data:
            text += f" on {data[:40] + '…' if len(data) > 41 else data}"
        if isinstance(pairs, int):
            text += f", {pairs} pairs"
        return text.strip()

    def _scored_by(self) -> str:
        """' by RM': whose scale a PPO run's reward is on (two runs' rewards from different reward models do not
        compare)."""
        try:
            spec = self.config.get("reward_model")
        except (json.JSONDecodeError, OSError):
            return ""
        return f" by {reward_model_name(spec)}" if spec else ""


def reward_model_name(path: Any) -> str:
    """A reward model as the visitor knows it: its run id (the folder above `model/`), never the server's path."""
    text = str(path or "?")
    parts = Path(text).parts
    return parts[-2] if len(parts) >= 2 and parts[-1] == "model" else Path(text).name or text


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
    _write_json(path / "config.json", {"kind": kind, "created": time.time(), "host": HOST, **config})
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


def seconds_per_step(rows: list[dict[str, Any]]) -> tuple[float, int] | None:
    """(wall-clock seconds per training step, steps timed) from metric rows' `time` and `step`: each gap in which the
    step count rose (evaluations and saving included, as a visitor waits for them). None without two timed steps."""
    timed = [(r["time"], r["step"]) for r in rows
             if isinstance(r.get("time"), (int, float)) and isinstance(r.get("step"), (int, float))]
    seconds = steps = 0.0
    for (t0, s0), (t1, s1) in zip(timed, timed[1:]):
        if s1 > s0:
            seconds, steps = seconds + (t1 - t0), steps + (s1 - s0)
    return (seconds / steps, int(steps)) if steps else None


def measured_pace(kind: str, root: Path | None = None, same: dict[str, Any] | None = None,
                  where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
    """The newest run of `kind` on this machine with at least two timed steps: {"run", "seconds_per_step", "steps",
    "config", "summary", "seconds" (its whole wall-clock time, loading included)}; None when this machine has measured
    nothing yet (runs from elsewhere do not count).
    `same`: config values the run must share (a reward step on a 135M backbone takes ~9x one on a 22M backbone, so its
    pace says nothing about the other's); `where`: a test on the run's config for what a value cannot say."""
    for run in list_runs(kind=kind, root=root):
        try:
            config, status = run.config, run.status()
            if config.get("host") != HOST or status.get("status") in ACTIVE:
                continue
            if any(config.get(k) != v for k, v in (same or {}).items()) or (where and not where(config)):
                continue
            pace = seconds_per_step(run.metrics())
        except (json.JSONDecodeError, OSError):
            continue
        if pace is not None:
            return {"run": run.id, "seconds_per_step": pace[0], "steps": pace[1], "config": config,
                    "summary": status.get("summary") or {}, "seconds": status.get("seconds")}
    return None


def seconds_outside_steps(pace: dict[str, Any], steps: Any) -> float:
    """What the run behind `pace` (from `measured_pace`) spent outside its `steps` timed steps: loading, held-out
    checks, the last save (its whole wall-clock time less steps × its pace); 0 when it cannot be told."""
    seconds = pace.get("seconds") or (pace.get("summary") or {}).get("seconds")
    if not isinstance(seconds, (int, float)) or not isinstance(steps, int) or steps <= 0:
        return 0.0
    return max(float(seconds) - steps * pace["seconds_per_step"], 0.0)


def duration(seconds: float) -> str:
    """Seconds in words a visitor reads at a glance: '40 s', '12 min', '1 h 05 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def default_choice(choices: list[tuple[str, str]], runs: list[Run], current: str | None = None) -> str | None:
    """The value a run dropdown defaults to: `current` while it is still offered, else the newest run that finished
    (`done`), else None. A stopped or failed run stays in the list but is never picked for the visitor."""
    ids = [value for _, value in choices]
    if current and current in ids:
        return current
    done = {r.id for r in runs if r.finished_ok()}
    return next((value for value in ids if value in done), None)


def mark_interrupted(root: Path | None = None) -> list[str]:
    """After a restart no job is alive: runs still marked active were cut off. Mark them, keep their metrics."""
    marked = []
    for run in list_runs(root=root, status=ACTIVE):
        run.set_status("interrupted", error="the process stopped while this run was active")
        marked.append(run.id)
    return marked
