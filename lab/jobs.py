"""The job manager: one job at a time per process (one accelerator), a worker thread, a stop event, a run folder.

Job functions take a `JobContext` and return a summary dict; they report through `ctx.log(metrics)` and
check `ctx.check_stop()` between steps. Nothing here knows about gradio.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab import runs
from lab.models import free_memory

JobFn = Callable[["JobContext"], "dict[str, Any] | None"]


class JobStopped(Exception):
    """Raised by `JobContext.check_stop` to leave a job between steps."""


class JobBusy(ValueError):
    """A job is already running in this process."""


@dataclass
class JobContext:
    """What a job function gets: its config, its run folder, a stop flag and progress/metric reporting."""

    run: runs.Run
    config: dict[str, Any]
    stop_event: threading.Event = field(default_factory=threading.Event)
    listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    progress: float = 0.0
    message: str = ""

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def check_stop(self) -> None:
        if self.stop_event.is_set():
            raise JobStopped()

    def log(self, metrics: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl and tell listeners (the CLI prints it)."""
        self.run.log_metrics(metrics)
        for listener in self.listeners:
            listener(metrics)

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        self.run.log_samples(rows)

    def set_progress(self, fraction: float, message: str = "") -> None:
        self.progress = max(0.0, min(1.0, fraction))
        self.message = message


@dataclass
class Job:
    """One job: its run, owner, state and the thread doing the work."""

    kind: str
    owner: str
    ctx: JobContext
    status: str = "queued"
    error: str | None = None
    exception: BaseException | None = None  # what failed the job, in this process only (the CLI's exit code)
    summary: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    thread: threading.Thread | None = None

    @property
    def id(self) -> str:
        return self.ctx.run.id

    @property
    def run(self) -> runs.Run:
        return self.ctx.run

    @property
    def active(self) -> bool:
        return self.status in runs.ACTIVE

    def describe(self) -> str:
        """One human line: what runs, how far, for how long."""
        elapsed = (self.finished or time.time()) - self.started
        pct = f" {self.ctx.progress:.0%}" if self.ctx.progress else ""
        msg = f" — {self.ctx.message}" if self.ctx.message else ""
        text = f"{self.kind} job {self.id}: {self.status}{pct}{msg} ({elapsed:.0f} s)"
        return text + (f" — error: {self.error}" if self.error else "")


def _oom_message(kind: str) -> str:
    return f"out of memory during the {kind} job: try a smaller batch size, fewer tokens or a shorter max length"


def _is_oom(error: BaseException) -> bool:
    import torch  # late: lab.jobs is imported at app start

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class JobManager:
    """Runs one job at a time in a worker thread; safe to share between browser sessions."""

    def __init__(self, root: Path | None = None, mark_interrupted: bool = True) -> None:
        self.root = Path(root) if root else runs.runs_root()
        self._lock = threading.Lock()
        self._state = threading.Lock()  # job.status moves under this: a Stop and the worker's end may race
        self._job: Job | None = None
        if mark_interrupted:
            runs.mark_interrupted(self.root)

    @property
    def job(self) -> Job | None:
        """The running job, or the last one that ran in this process."""
        return self._job

    def active(self) -> Job | None:
        job = self._job
        return job if job and job.active else None

    def check_free(self, owner: str = "cli") -> None:
        """JobBusy if a job is running: the first thing a visitor pressing Start must hear, before any form check."""
        current = self.active()
        if current:
            who = "you" if current.owner == owner else "another visitor"
            raise JobBusy(
                f"a {current.kind} job started by {who} is running ({current.describe()}); "
                "one job runs at a time: wait for it to finish"
            )

    def start(self, kind: str, fn: JobFn, config: dict[str, Any], owner: str = "cli") -> Job:
        """Create a run folder and start `fn` in a worker thread; JobBusy if a job is running."""
        with self._lock:
            self.check_free(owner)
            run = runs.new_run(kind, config, self.root)
            job = Job(kind=kind, owner=owner, ctx=JobContext(run=run, config=config))
            job.thread = threading.Thread(target=self._work, args=(job, fn), name=f"job-{run.id}", daemon=True)
            self._job = job
            job.thread.start()
            return job

    def stop(self, owner: str) -> Job:
        """Ask the running job to stop after its current step; only its owner may."""
        job = self.active()
        if job is None:
            raise ValueError("no job is running")
        if job.owner != owner:
            raise ValueError("only the visitor who started this job can stop it")
        job.ctx.stop_event.set()
        with self._state:
            if job.status == "running":
                job.status = "stopping"
                job.run.set_status("stopping")
        return job

    def wait(self, timeout: float | None = None) -> Job | None:
        job = self._job
        if job and job.thread:
            job.thread.join(timeout)
        return job

    def run_sync(
        self,
        kind: str,
        fn: JobFn,
        config: dict[str, Any],
        on_metrics: Callable[[dict], None] | None = None,
        path: Path | None = None,
    ) -> Job:
        """Run a job and wait for it (the CLI), in `path` if given; Ctrl-C stops it cleanly after the current step."""
        with self._lock:
            if self.active():
                raise JobBusy("a job is already running")
        run = runs.new_run(kind, config, self.root, path=path)
        job = Job(kind=kind, owner="cli", ctx=JobContext(run=run, config=config))
        if on_metrics:
            job.ctx.listeners.append(on_metrics)
        self._job = job
        job.thread = threading.Thread(target=self._work, args=(job, fn), daemon=True)
        # Ctrl-C (SIGINT) only asks the job to stop: a KeyboardInterrupt raised anywhere in this thread could end the
        # process while the worker is inside torch, which aborts it ("terminate called ...") and loses the run.
        previous = signal.signal(signal.SIGINT, lambda *_: job.ctx.stop_event.set()) if _main_thread() else None
        try:
            job.thread.start()
            while job.thread.is_alive():
                job.thread.join(0.2)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return job

    def _work(self, job: Job, fn: JobFn) -> None:
        end, error = "done", None
        try:
            with self._state:
                job.status = "running"
                job.run.set_status("running", owner=job.owner, started=job.started)
            job.summary = fn(job.ctx) or {}
            end = "stopped" if job.ctx.stopping else "done"
        except JobStopped:
            end = "stopped"
        except Exception as e:  # any failure ends the job; the error is kept, the process lives on
            end = "failed"
            job.exception = e
            error = _oom_message(job.kind) if _is_oom(e) else f"{type(e).__name__}: {e}"
            (job.run.path / "error.txt").write_text(traceback.format_exc())
        finally:
            self._finalize(job, end, error)

    def _finalize(self, job: Job, end: str, error: str | None) -> None:
        """Always: record the end state and free accelerator memory."""
        with self._state:
            job.finished = time.time()
            job.error = error
            job.run.set_status(
                end, error=error, summary=job.summary, finished=job.finished, seconds=job.finished - job.started
            )
            job.status = end
        free_memory()
