"""The Data tab: choose a preference-data source, see its statistics, page through pairs with the divergence marked."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from lab.data import Pair, PairSet
from lab.sources import load_pairs
from lab.ui.common import UIContext, esc, guard
from lab.ui.plots_common import shared_bins
from lab.ui.uploads import check_upload

PAGE_SIZE = 5
SOURCE_KINDS = ["Bundled demo set", "Local file path", "Upload a file", "Hub dataset id"]


# ---------------------------------------------------------------- rendering (pure: text in, HTML out)


def _turns_html(pair: Pair) -> str:
    rows = []
    for role, text in pair.turns:
        rows.append(f'<div class="turn turn-{role.lower()}"><b>{esc(role)}</b><div>{esc(text)}</div></div>')
    return "".join(rows) or '<div class="turn"><i>(no shared dialogue: a single-turn pair)</i></div>'


def diff_html(a: str, b: str) -> tuple[str, str]:
    """Both texts escaped with where they diverge marked: word differences when the answers are
    variations of each other, else everything after their shared opening words (nothing if none)."""
    wa, wb = a.split(" "), b.split(" ")
    matcher = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    if matcher.ratio() < 0.5:
        shared = 0
        while shared < min(len(wa), len(wb)) and wa[shared] == wb[shared]:
            shared += 1
        if shared == 0:
            return esc(a), esc(b)
        return tuple(  # type: ignore[return-value]
            esc(" ".join(w[:shared])) + (f' <mark class="diff">{esc(" ".join(w[shared:]))}</mark>' if w[shared:] else "")
            for w in (wa, wb)
        )
    out_a: list[str] = []
    out_b: list[str] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        seg_a, seg_b = esc(" ".join(wa[i1:i2])), esc(" ".join(wb[j1:j2]))
        if op == "equal":
            out_a.append(seg_a)
            out_b.append(seg_b)
            continue
        if seg_a:
            out_a.append(f'<mark class="diff">{seg_a}</mark>')
        if seg_b:
            out_b.append(f'<mark class="diff">{seg_b}</mark>')
    return " ".join(out_a), " ".join(out_b)


def pair_html(pair: Pair, index: int, total: int) -> str:
    """One pair as a card: the shared dialogue once, then the two final answers side by side."""
    chosen, rejected = diff_html(pair.chosen.strip(), pair.rejected.strip())
    split = f' <span class="badge">{esc(pair.split)}</span>' if pair.split else ""
    return (
        f'<div class="pair-card"><div class="pair-head">Pair {index + 1} of {total}{split}</div>'
        f'<div class="dialogue">{_turns_html(pair)}</div>'
        f'<div class="answers"><div class="answer chosen"><div class="answer-label">✓ Chosen</div>{chosen}</div>'
        f'<div class="answer rejected"><div class="answer-label">✗ Rejected</div>{rejected}</div></div></div>'
    )


def who_judged(source: str) -> str:
    """Who decided which answer is "chosen", and on what grounds: a reward model learns their taste, not a truth."""
    parts = [p.strip() for p in source.split("+") if p.strip()]
    said = []
    for part in parts:
        name = part.lower()
        if name.startswith("bundled"):
            said.append("in the bundled demo set, the lab's authors wrote both answers and marked the kind, correct, "
                        "specific one as chosen and the rude, wrong or lazy one as rejected")
        elif name.startswith("feedback:"):
            said.append(f"in '{esc(part)}', visitors of this lab voted on the Feedback tab which of two model answers "
                        "was better (ties and 'both bad' left out)")
        elif "hh-rlhf" in name:
            said.append("in Anthropic's hh-rlhf, paid crowdworkers chatted with a model and picked the more helpful "
                        "of its two answers (helpful-* subsets) or the less harmful one (harmless-base); each pair is "
                        "one person's judgement, and many are close calls")
        else:
            said.append(f"in '{esc(part)}', whoever made the file: its 'chosen' column says which answer they "
                        "preferred; check the dataset's card for who judged and by what rule")
    if not said:
        return ""
    return ("**Who judged \"chosen\":** " + "; ".join(said) + ". A reward model trained on these pairs learns "
            "their preferences, not what is true or safe.")


def stats_markdown(pairs: PairSet) -> str:
    s = pairs.stats()
    judged = who_judged(str(s["source"]))
    lines = [
        f"**{esc(s['source'])}** — **{s['pairs']}** pairs, **{s['prompts']}** distinct prompts"
        + (f", {s['dropped_identical']} dropped (chosen = rejected)" if s["dropped_identical"] else ""),
        "",
        "| characters | median | 90th percentile |",
        "|---|---|---|",
    ]
    for part in ("prompt", "chosen", "rejected"):
        lines.append(f"| {part} | {s[f'{part}_chars_median']:.0f} | {s[f'{part}_chars_p90']:.0f} |")
    if "splits" in s:
        lines.append("\nSplits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()))
    if "subsets" in s:
        lines.append("\nSubsets: " + ", ".join(f"{esc(k)} {v}" for k, v in s["subsets"].items()))
    if judged:
        lines.append("\n" + judged)
    return "\n".join(lines)


def length_figure(pairs: PairSet) -> go.Figure:
    """Chosen and rejected final-answer lengths, overlaid on the same bin edges (else each side gets bins of its
    own, and one looks twice as common as the other)."""
    fig = go.Figure()
    lengths = {part: [len(getattr(p, part).strip()) for p in pairs.pairs] for part in ("chosen", "rejected")}
    bins = shared_bins(*lengths.values(), n=40)
    for part, colour in (("chosen", "#2e7d32"), ("rejected", "#c62828")):
        fig.add_histogram(x=lengths[part], name=part, opacity=0.6, marker_color=colour, xbins=bins)
    fig.update_layout(barmode="overlay", height=260, margin=dict(l=40, r=10, t=30, b=40),
                      title="Final-answer length (characters)", legend=dict(orientation="h", y=1.15))
    return fig


# British -> American spellings, applied to both the query and the text, so "neighbour" finds "neighbor",
# "apologise" finds "apologize" and "centre" finds "center" (and the other way round).
SPELLINGS = [
    (re.compile(r"(?<=[a-z]{3})our(?=s?\b|ed\b|ing\b|ful\b|hood\b|able\b|ite\b)"), "or"),
    (re.compile(r"(?<=[a-z]{3})is(?=e\b|es\b|ed\b|ing\b|ation\b|ations\b)"), "iz"),
    (re.compile(r"(?<=[a-z]{2})ys(?=e\b|es\b|ed\b|ing\b)"), "yz"),
    (re.compile(r"(?<=[a-z]{3})tre(?=s?\b)"), "ter"),
    (re.compile(r"(?<=[aeiou])ll(?=ed\b|ing\b|er\b)"), "l"),
]


def normalise(text: str) -> str:
    """Lower case, one space between words, American spelling: what search compares."""
    text = " ".join(text.lower().split())
    for pattern, replacement in SPELLINGS:
        text = pattern.sub(replacement, text)
    return text


def filter_indices(pairs: PairSet, query: str, split: str) -> list[int]:
    """Indices of pairs matching the search text (any case, British or American spelling, any part) and split."""
    q = normalise(query)
    out = []
    for i, p in enumerate(pairs.pairs):
        if split not in ("all", "") and p.split != split:
            continue
        if q and q not in normalise(p.prompt + " " + p.chosen + " " + p.rejected):
            continue
        out.append(i)
    return out


def page_html(pairs: PairSet | None, indices: list[int], page: int) -> tuple[str, str]:
    """The cards of one page and its 'page x of y' line."""
    if pairs is None:
        return "<p>No data loaded.</p>", ""
    if not indices:
        return "<p>No pair matches.</p>", "0 matches"
    pages = max(1, -(-len(indices) // PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    chunk = indices[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    cards = "".join(pair_html(pairs.pairs[i], i, len(pairs)) for i in chunk)
    return cards, f"Page {page + 1} of {pages} · {len(indices)} matching pairs"


# ---------------------------------------------------------------- the tab


def build_data_tab(ctx: UIContext) -> None:
    pairs_state = gr.State(None)  # the loaded PairSet of this browser
    indices_state = gr.State([])
    page_state = gr.State(0)

    kind, path, upload, hub_id, load_btn, source_md, lengths = _source_row()
    with gr.Row():
        search = gr.Textbox(label="Search text", placeholder="words in the dialogue or answers (any case; "
                            "British or American spelling), then Enter", scale=3)
        split = gr.Dropdown(["all", "train", "test"], value="all", label="Split", scale=1)
    with gr.Row():
        prev_btn = gr.Button("◀ Previous", size="sm")
        page_md = gr.Markdown(elem_id="data-page")
        next_btn = gr.Button("Next ▶", size="sm")
    cards = gr.HTML(elem_id="data-cards")

    def choose_kind(k: str) -> tuple:
        return (gr.update(visible=k == SOURCE_KINDS[1]), gr.update(visible=k == SOURCE_KINDS[2]),
                gr.update(visible=k == SOURCE_KINDS[3]))

    @guard
    def load(k: str, p: str, up: Any, hub: str) -> tuple:
        source = _source_for(ctx, k, p, up, hub)
        # Typed paths must lie in the allowed folders; an upload was already checked for size and rows.
        allowed = None if k == SOURCE_KINDS[2] else ctx.allowed_dirs or None
        pairs = load_pairs(source, allowed_dirs=allowed)
        indices = list(range(len(pairs)))
        html, page_line = page_html(pairs, indices, 0)
        return pairs, indices, 0, stats_markdown(pairs), length_figure(pairs), html, page_line, source

    def refilter(pairs: PairSet | None, q: str, s: str) -> tuple:
        if pairs is None:
            return [], 0, *page_html(None, [], 0)
        indices = filter_indices(pairs, q, s)
        return indices, 0, *page_html(pairs, indices, 0)

    def turn(pairs: PairSet | None, indices: list[int], page: int, delta: int) -> tuple:
        pages = max(1, -(-len(indices) // PAGE_SIZE))
        page = min(max(page + delta, 0), pages - 1)
        return page, *page_html(pairs, indices, page)

    kind.change(choose_kind, kind, [path, upload, hub_id])
    load_btn.click(
        load, [kind, path, upload, hub_id],
        [pairs_state, indices_state, page_state, source_md, lengths, cards, page_md, ctx.data_source],
        api_name="data_load",
    )
    # always_last: a search typed while the previous one is still running is run after it (gradio's default for a
    # submit ignores it, and the page kept showing the old matches)
    for trigger in (search.submit, split.change):
        trigger(refilter, [pairs_state, search, split], [indices_state, page_state, cards, page_md],
                api_name="data_filter" if trigger == search.submit else False, trigger_mode="always_last")
    prev_btn.click(lambda a, b, c: turn(a, b, c, -1), [pairs_state, indices_state, page_state], [page_state, cards, page_md])
    next_btn.click(lambda a, b, c: turn(a, b, c, 1), [pairs_state, indices_state, page_state], [page_state, cards, page_md])
    # Show the bundled data straight away, so the first view is never empty.
    ctx.demo.load(load, [kind, path, upload, hub_id],
                  [pairs_state, indices_state, page_state, source_md, lengths, cards, page_md, ctx.data_source])


def _source_row() -> tuple:
    """The source chooser and Load on the left, the stats below it, the lengths plot on the right."""
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            kind = gr.Radio(SOURCE_KINDS, value=SOURCE_KINDS[0], label="Source")
            path = gr.Textbox(label="Local file (.jsonl, .jsonl.gz, .csv, .parquet)", visible=False,
                              placeholder="data/prefs.jsonl", elem_id="data-path")
            upload = gr.File(label="Upload a file", visible=False, file_types=[".jsonl", ".gz", ".csv", ".parquet", ".json"])
            hub_id = gr.Textbox(label="Hub dataset (owner/name[/data_dir][:split]; needs the hub, e.g. on the Space), "
                                      "or feedback:NAME for the Feedback tab's votes", visible=False,
                                placeholder="Anthropic/hh-rlhf/harmless-base:test")
            load_btn = gr.Button("Load", variant="primary", elem_id="data-load")
            source_md = gr.Markdown(elem_id="data-stats")
        with gr.Column(scale=2):
            lengths = gr.Plot(label="Lengths", elem_id="data-lengths")
            gr.Markdown("How long the final answers are. Where chosen answers are mostly longer than rejected ones, "
                        "a reward model can learn that longer is better, and PPO will then learn to write more.",
                        elem_classes="explain")
    return kind, path, upload, hub_id, load_btn, source_md, lengths


def _source_for(ctx: UIContext, kind: str, path: str, upload: Any, hub: str) -> str:
    """The data source string for the chosen kind, checked against the Space's limits."""
    if kind == SOURCE_KINDS[0]:
        return "bundled"
    if kind == SOURCE_KINDS[1]:
        if not (path or "").strip():
            raise ValueError("type a file path first")
        return path.strip()
    if kind == SOURCE_KINDS[2]:
        if upload is None:
            raise ValueError("choose a file to upload first")
        return str(check_upload(Path(upload if isinstance(upload, str) else upload.name), ctx.preset.limits))
    if not (hub or "").strip():
        raise ValueError("type a hub dataset id first")
    return hub.strip()
