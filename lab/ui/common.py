"""Shared UI pieces: the per-visitor context, error handling, job banners and HTML escaping."""

from __future__ import annotations

import functools
import html
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from lab.jobs import Job, JobManager
from lab.presets import Preset

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WARNING_SECONDS = 8  # a refusal fades after this, so it never lingers on a tab the visitor moves to


def esc(text: Any) -> str:
    """HTML-escape dataset or model text before it reaches the page."""
    return html.escape(str(text), quote=True)


@dataclass
class UIContext:
    """What every tab needs. `visitor` and `data_source` are per-browser components, never module globals."""

    manager: JobManager
    preset: Preset
    demo: Any = None  # the gr.Blocks being built, for tabs' own `demo.load` hooks
    visitor: Any = None  # gr.BrowserState holding this browser's id (survives reloads)
    data_source: Any = None  # gr.State: the pairs source chosen on the Data tab
    allowed_dirs: list[Path] = field(default_factory=list)
    upload_dir: Path | None = None


def new_visitor_id(current: str | None) -> str:
    return current or uuid.uuid4().hex


def guard(n_outputs: int) -> Callable:
    """Turn a ValueError in a handler into a gr.Warning and leave every output as it was."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ValueError as e:
                gr.Warning(str(e), duration=WARNING_SECONDS)
                skips = tuple(gr.skip() for _ in range(n_outputs))
                return skips[0] if n_outputs == 1 else skips

        return inner

    return wrap


def job_line(job: Job) -> str:
    """What runs, how far and for how long, in one line; the state is said once (the banner's lead word)."""
    elapsed = (job.finished or time.time()) - job.started
    bits = [f"{job.kind} job `{esc(job.id)}`"]
    if job.active:
        if job.ctx.progress:
            bits.append(f"{job.ctx.progress:.0%}")
        if job.ctx.message:
            bits.append(esc(job.ctx.message))
    else:
        bits.append(esc(job.status))
    line = " · ".join(bits) + f" ({elapsed:.0f} s)"
    return line + (f" — error: {esc(job.error)}" if job.error else "")


def job_banner(manager: JobManager, visitor: str | None, kind: str | None = None) -> str:
    """Markdown telling this visitor what is running, whose job it is and whether it is theirs to stop."""
    job: Job | None = manager.job
    if job is None:
        return "No job is running. Start one below."
    mine = job.owner == visitor
    who = "you" if mine else "another visitor"
    if job.active:
        note = " You can stop it." if mine else " One job runs at a time: you can watch it here, and start yours when it ends."
        if kind and job.kind != kind:
            note += f" (It is a {job.kind} job, not {kind}.)"
        lead = "Stopping" if job.status == "stopping" else "Running"
        return f"**{lead}** — {job_line(job)}, started by {who}.{note}"
    return f"Last job: {job_line(job)}, started by {who}."


def running_tab(manager: JobManager, tabs: list[str]) -> str | None:
    """The tab of the job running now (a reload reopens it), or None."""
    job = manager.active()
    return job.kind if job is not None and job.kind in tabs else None


def plain_names(message: str, labels: dict[str, str]) -> str:
    """A validation message with each setting's code name replaced by the label the form shows for it (one pass)."""
    if not labels:
        return message
    names = "|".join(re.escape(n) for n in sorted(labels, key=len, reverse=True))
    return re.sub(rf"(?<![\w/`'(])({names})(?![\w`'])", lambda m: f"'{labels[m.group(1)]}'", message)


def start_job(ctx: UIContext, visitor: str | None, kind: str, fn: Callable, config: dict[str, Any]) -> str:
    """Start a job owned by this visitor; returns the new run's id (JobBusy if one is running)."""
    if not visitor:
        raise ValueError("this page has no visitor id yet: reload it and try again")
    return ctx.manager.start(kind, fn, config, owner=visitor).id


def stop_job(ctx: UIContext, visitor: str | None, kind: str) -> str:
    """Ask this visitor's job to stop after its current step; returns the refreshed banner."""
    ctx.manager.stop(visitor or "")
    return job_banner(ctx.manager, visitor, kind)


def run_signature(run: Any, log: str = "metrics.jsonl") -> str:
    """Changes whenever the run appends to `log` or changes status: a tab's timer redraws only then. No run has
    a signature of its own, so a page's first tick (nothing drawn yet: "") draws the empty view once."""
    if run is None:
        return "no run"
    path = run.path / log
    return f"{run.id}:{path.stat().st_size if path.exists() else 0}:{run.status().get('status')}"


def run_choices(kind: str, root: Path | None = None, status: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(label, run id) pairs for a dropdown of earlier runs of one kind, newest first."""
    from lab.runs import list_runs

    return [(r.label(), r.id) for r in list_runs(kind=kind, root=root, status=status)]


def find_run(ctx: UIContext, run_id: str | None) -> Any:
    """The run folder with this id under the manager's root, or None (no id, or not a run)."""
    from lab.runs import open_run

    if not run_id:
        return None
    try:
        return open_run(run_id, ctx.manager.root)
    except ValueError:
        return None


def current_run_id(ctx: UIContext, kind: str) -> str | None:
    """This process's job of `kind` if there is one (a reload reattaches to it), else the newest such run on disk."""
    from lab.runs import list_runs

    job = ctx.manager.job
    if job is not None and job.kind == kind:
        return job.id
    runs = list_runs(kind=kind, root=ctx.manager.root)
    return runs[0].id if runs else None
