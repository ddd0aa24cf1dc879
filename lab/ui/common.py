"""Shared UI pieces: the per-visitor context, error handling, job banners, HTML escaping and the job-tab skeleton."""

from __future__ import annotations

import functools
import html
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gradio as gr

from lab.config import field_type, label_of, widget_of
from lab.jobs import Job, JobManager
from lab.presets import Preset
from lab.runs import list_runs, open_run

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TICK_BUSY, TICK_IDLE = 1.5, 5.0  # seconds between a shown tab's refreshes while a job runs, and while none does
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
    vote_set: Any = None  # gr.State: a feedback set Compare filled with its answers (the Feedback tab opens it)
    allowed_dirs: list[Path] = field(default_factory=list)
    upload_dir: Path | None = None
    tab: Any = None  # the gr.Tab being built (its select event refreshes it at once)
    tab_name: str = ""
    timers: dict[str, list[Any]] = field(default_factory=dict)  # tab name -> its gr.Timers (ticking only when shown)

    def timer(self, seconds: float) -> Any:
        """A gr.Timer of the tab being built. It starts paused: only the tab on screen ticks (`timer_updates`),
        because every tick makes the browser copy the whole page's state (a hidden tab's ticks kept a 2-core
        visitor's browser busy most of a core)."""
        t = gr.Timer(seconds, active=False)
        self.timers.setdefault(self.tab_name, []).append(t)
        return t

    def ticks(self, timer: Any) -> list[Any]:
        """The events that refresh the tab being built: its timer, and the visitor opening the tab."""
        return [timer.tick, *([self.tab.select] if self.tab is not None else [])]


def timer_updates(timers: dict[str, list[Any]], shown: str | None) -> dict[Any, Any]:
    """Timer updates that let the tab `shown` tick and pause every other."""
    return {t: gr.Timer(active=name == shown) for name, ts in timers.items() for t in ts}


def new_visitor_id(current: str | None) -> str:
    return current or uuid.uuid4().hex


def guard(fn: Callable) -> Callable:
    """Turn a ValueError in a handler into a gr.Warning and leave every output as it was (one gr.skip() skips
    them all, however many the event has)."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            gr.Warning(str(e), duration=WARNING_SECONDS)
            return gr.skip()

    return inner


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


def require_numbers(values: dict[str, Any], labels: dict[str, str] | None = None) -> None:
    """ValueError naming the first numeric field that is empty or not a number. A gradio Number the visitor emptied
    (or typed letters into) arrives as None, which the configs would read as "the default": a run the visitor never
    asked for, holding the machine's only job slot. So nothing starts until every number is there."""
    labels = labels or {}
    for name, value in values.items():
        label = labels.get(name, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"'{label}' is empty: type a number (nothing was started)")
        if isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"'{label}' is not a number ({str(value)[:20]!r}): type a number "
                             "(nothing was started)") from None
        if number != number:  # NaN
            raise ValueError(f"'{label}' is not a number: type a number (nothing was started)")


def slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """gr.Slider whose number box may be emptied: Gradio's own compares the empty value with the minimum and fails
    with "TypeError: '<' not supported between instances of 'NoneType' and 'int'" before any handler runs (a
    student's walk at stop 43); this one hands None on, and the handlers refuse it by the field's label. The
    instance's preprocess is wrapped, not the class subclassed: Gradio writes a .pyi stub beside the module of every
    component subclass it imports."""
    component = gr.Slider(*args, **kwargs)
    checked = component.preprocess
    component.preprocess = lambda payload: None if payload is None else checked(payload)  # type: ignore[method-assign]
    return component


def field_input(f: Field, value: Any, note: str = "", maximum: float | None = None, **kwargs: Any) -> Any:
    """The form input for one config field, all from its metadata: the label (then `note`, e.g. the preset's limit),
    the help as info, the widget kind, the choices and the range (`maximum`: the preset's limit instead). Number boxes
    have no minimum or maximum in the browser: the handler checks them and says what is allowed, in the form's words."""
    meta, widget = f.metadata, widget_of(f)
    choices = list(kwargs.pop("choices", meta["choices"]))  # a dropdown of runs: the runs there are now
    common = {"label": label_of(f) + (f", {note}" if note else ""), "info": meta["help"], **kwargs}
    if widget == "checkbox":
        return gr.Checkbox(value, **common)
    if widget in ("dropdown", "radio"):
        return (gr.Radio if widget == "radio" else gr.Dropdown)(choices, value=value, **common)
    if widget == "slider":
        top = meta["maximum"] if maximum is None else maximum
        return slider(meta["minimum"], top, value=value, step=meta["step"] or 1, **common)
    if widget == "text":
        return gr.Textbox(value, **common)
    return gr.Number(value, precision=0 if field_type(f) is int else None, **common)


def form_labels(by_name: dict[str, Field], names: Sequence[str], folded: Sequence[str] = (),
                where: str = "") -> dict[str, str]:
    """Each form field's label (as `plain_names` puts it into refusals), saying `where` the folded-away ones are."""
    return {n: label_of(by_name[n]) + (f", {where}" if n in folded else "") for n in names if n in by_name}


def start_job(ctx: UIContext, visitor: str | None, kind: str, fn: Callable, config: dict[str, Any]) -> str:
    """Start a job owned by this visitor; returns the new run's id (JobBusy if one is running)."""
    if not visitor:
        raise ValueError("this page has no visitor id yet: reload it and try again")
    return ctx.manager.start(kind, fn, config, owner=visitor).id


def run_signature(run: Any, log: str = "metrics.jsonl") -> str:
    """Changes whenever the run appends to `log` or changes status: a tab's timer redraws only then. No run has
    a signature of its own, so a page's first tick (nothing drawn yet: "") draws the empty view once."""
    if run is None:
        return "no run"
    path = run.path / log
    return f"{run.id}:{path.stat().st_size if path.exists() else 0}:{run.status().get('status')}"


def run_choices(kind: str, root: Path | None = None, status: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(label, run id) pairs for a dropdown of earlier runs of one kind, newest first."""
    return [(r.label(), r.id) for r in list_runs(kind=kind, root=root, status=status)]


def find_run(ctx: UIContext, run_id: str | None) -> Any:
    """The run folder with this id under the manager's root, or None (no id, or not a run)."""
    if not run_id:
        return None
    try:
        return open_run(run_id, ctx.manager.root)
    except ValueError:
        return None


def current_run_id(ctx: UIContext, kind: str) -> str | None:
    """This process's job of `kind` if there is one (a reload reattaches to it), else the newest such run on disk."""
    job = ctx.manager.job
    if job is not None and job.kind == kind:
        return job.id
    runs = list_runs(kind=kind, root=ctx.manager.root)
    return runs[0].id if runs else None


# ---------------------------------------------------------------- the job-tab skeleton


@dataclass
class JobTab:
    """What the Reward, PPO and Compare tabs (and the Feedback tab's pair generation) share: the run this browser
    looks at, the banner, Start/Stop, the timer tick, the earlier-runs dropdown and a page load that reattaches to
    the running job. Handlers return dicts keyed by component name; `on` maps them onto `components`, so no event
    counts its outputs by hand."""

    ctx: UIContext
    kind: str
    view: Callable[..., dict[str, Any]] | None = None  # (run or None, *view_inputs) -> values by component name
    view_names: Sequence[str] = ()  # the components `view` draws
    view_inputs: Sequence[str] = ()  # components the view reads besides the run (Compare's sort and filter)
    log: str = "metrics.jsonl"  # the run file whose growth means "redraw"
    follow: bool = False  # the tick switches to a run of this kind that someone starts
    selected: Callable[[Any], None] | None = None  # called with the run picked from the dropdown (e.g. load it)
    components: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------ handlers (plain functions of names, tested directly)

    def banner(self, visitor: str | None) -> str:
        return job_banner(self.ctx.manager, visitor, self.kind)

    def runs_update(self, run_id: str | None) -> dict:
        return gr.update(choices=run_choices(self.kind, self.ctx.manager.root), value=run_id)

    def tick(self, visitor: str | None, run_id: str | None, seen: str, *view_args: Any) -> dict[str, Any]:
        """Timer: the banner always; the run's view and the runs list only when its files changed."""
        out: dict[str, Any] = {"banner": self.banner(visitor)}
        active = self.ctx.manager.active()
        if self.follow and active is not None and active.kind == self.kind and active.id != run_id:
            run_id = out["run"] = active.id  # someone started a run: follow it
        run = find_run(self.ctx, run_id)
        signature = run_signature(run, self.log)
        if signature == seen:
            return out
        runs = self.runs_update(run.id if run else None)
        return {**out, "seen": signature, **self.draw(run, *view_args), "runs": runs}

    def draw(self, run: Any, *view_args: Any) -> dict[str, Any]:
        return self.view(run, *view_args) if self.view else {}

    def select(self, run_id: str | None, *view_args: Any) -> dict[str, Any]:
        """A run picked from the dropdown: show it now."""
        run = find_run(self.ctx, run_id)
        if self.selected is not None:
            self.selected(run)
        return {"run": run_id, "seen": run_signature(run, self.log), **self.draw(run, *view_args)}

    def load(self, visitor: str | None, *view_args: Any) -> dict[str, Any]:
        """A page (re)load: reattach to this process's job of this kind, else the newest run."""
        run_id = current_run_id(self.ctx, self.kind)
        return {"run": run_id, **self.tick(visitor, run_id, "", *view_args)}

    def stop(self, visitor: str | None) -> dict[str, Any]:
        """Ask this visitor's job to stop after its current step."""
        self.ctx.manager.stop(visitor or "")
        return {"banner": self.banner(visitor)}

    # ------------------------------------------------ building

    def add(self, name: str, component: Any) -> Any:
        if name in self.components:
            raise KeyError(f"{self.kind} tab: two components named {name!r}")
        self.components[name] = component
        return component

    def header(self) -> None:
        """The per-browser run and signature states and the banner, at the top of the tab."""
        self.add("visitor", self.ctx.visitor)
        self.add("run", gr.State(None))  # the run this browser is looking at
        self.add("seen", gr.State(""))  # run_signature last drawn
        self.add("banner", gr.Markdown(elem_id=f"{self.kind}-banner"))

    @contextmanager
    def columns(self, form: Callable[["JobTab"], None], start_label: str, start_id: str | None = None,
                min_width: int = 380) -> Iterator[None]:
        """The header, then the form with Start/Stop on the left; the `with` body fills the results column."""
        self.header()
        with gr.Row():
            with gr.Column(scale=1, min_width=min_width):
                form(self)
                with gr.Row():
                    self.add("start", gr.Button(start_label, variant="primary",
                                                elem_id=start_id or f"{self.kind}-start"))
                    self.add("stop", gr.Button("Stop", variant="stop", elem_id=f"{self.kind}-stop"))
            with gr.Column(scale=2):
                yield

    def runs_dropdown(self, label: str, scale: int = 4) -> None:
        """The earlier runs of this kind: pick one to reopen it."""
        self.add("runs", gr.Dropdown(run_choices(self.kind, self.ctx.manager.root), label=label, scale=scale,
                                     elem_id=f"{self.kind}-runs"))

    def runs_row(self, label: str) -> None:
        """The earlier-runs dropdown with a Refresh button beside it."""
        with gr.Row():
            self.runs_dropdown(label)
            self.add("refresh", gr.Button("Refresh list", scale=1, size="sm"))

    def on(self, event: Callable, fn: Callable[..., dict[str, Any]], inputs: Sequence[str], outputs: Sequence[str],
           **kwargs: Any) -> None:
        """Wire `fn` (values by name) to `event`: what it leaves out stays as it is, and a ValueError becomes a warning
        and changes nothing."""
        c = self.components

        def by_component(*args: Any) -> Any:
            return {c[k]: v for k, v in fn(*args).items()} or gr.skip()  # gradio reads an empty dict as one value

        event(guard(by_component), [c[n] for n in inputs], [c[n] for n in outputs], **kwargs)

    def pace(self, current: float | None) -> dict[str, Any]:
        """Tick every TICK_BUSY seconds while a job runs, TICK_IDLE otherwise: the timer update only on a change."""
        wanted = TICK_BUSY if self.ctx.manager.active() is not None else TICK_IDLE
        return {} if wanted == current else {"timer": gr.Timer(value=wanted), "pace": wanted}

    def wire(self, start: Callable[[UIContext, str | None, dict[str, Any]], str], form: Sequence[str],
             also: tuple[Callable[..., dict[str, Any]], Sequence[str], Sequence[str]] | None = None) -> gr.Timer:
        """Start (`start(ctx, visitor, {input name: value})`), Stop, the tick, the dropdown, Refresh and the page
        load; returns the tab's timer. `also` = (fn, inputs, outputs) runs in the same tick event: each event makes
        the browser copy the page's whole state, so a tab ticks once, not once per handler."""
        quiet = {"show_progress": "hidden", "api_visibility": "private"}
        view, drawn = list(self.view_inputs), ["seen", *self.view_names]
        self.add("timer", self.ctx.timer(TICK_IDLE))
        self.add("pace", gr.State(TICK_IDLE))

        def started(visitor: str | None, *values: Any) -> dict[str, Any]:  # the form's values go on by name
            self.ctx.manager.check_free(visitor or "")  # busy: say so first, whatever the form holds
            run_id = start(self.ctx, visitor, dict(zip(form, values)))
            return {"run": run_id, "seen": "", "timer": gr.Timer(value=TICK_BUSY), "pace": TICK_BUSY}

        also_fn, also_in, also_out = also or (lambda: {}, (), ())
        tick_in = ["visitor", "run", "seen", *view]

        def ticked(*args: Any) -> dict[str, Any]:
            n = len(tick_in)
            return {**self.tick(*args[:n]), **also_fn(*args[n:-1]), **self.pace(args[-1])}

        self.on(self.components["start"].click, started, ["visitor", *form], ["run", "seen", "timer", "pace"],
                api_name=f"{self.kind}_start")
        self.on(self.components["stop"].click, self.stop, ["visitor"], ["banner"], api_name=f"{self.kind}_stop",
                show_progress="hidden")
        for event in self.ctx.ticks(self.components["timer"]):
            self.on(event, ticked, [*tick_in, *also_in, "pace"],
                    ["banner", "run", *drawn, "runs", *also_out, "timer", "pace"], **quiet)
        self.on(self.components["runs"].input, self.select, ["runs", *view], ["run", *drawn],
                api_name=f"{self.kind}_select")
        if "refresh" in self.components:
            self.on(self.components["refresh"].click, lambda r: {"runs": self.runs_update(r)}, ["run"], ["runs"],
                    api_visibility="private")
        if self.ctx.demo is not None:  # a reload reattaches to the running (or last) job of this kind
            self.on(self.ctx.demo.load, self.load, ["visitor", *view], ["run", "banner", *drawn, "runs"], **quiet)
        return self.components["timer"]
