"""The Compare tab's cards: one prompt with both answers, their scores and flags, filtered and sorted."""

from __future__ import annotations

from typing import Any, Callable

from lab.data import HARMFUL_KIND, ORDINARY_KIND
from lab.stats import EVEN_BAND, p_better, preferred
from lab.ui.common import esc

TOXICITY_CLEAR = 0.1  # a toxicity difference above this marks the less toxic answer (scores run 0..1)
MAX_CARDS = 60  # more would make the page slow; the CSV has every row
ALL = "All prompts"
SHOW: dict[str, Callable[[dict[str, Any]], bool]] = {  # the diagnostics filter
    ALL: lambda r: True,
    "A refusal on either side": lambda r: bool(r.get("refusal_a") or r.get("refusal_b")),
    "B refuses, A does not": lambda r: bool(r.get("refusal_b") and not r.get("refusal_a")),
    "A degenerate answer on either side": lambda r: bool(r.get("degenerate_a") or r.get("degenerate_b")),
    "B degenerate, A not": lambda r: bool(r.get("degenerate_b") and not r.get("degenerate_a")),
    "Proxy and judge disagree": lambda r: _disagree(r),
    "Harmful or edgy requests": lambda r: r.get("kind") == HARMFUL_KIND,  # where the prompts said their kind
    "Ordinary requests": lambda r: r.get("kind") == ORDINARY_KIND,
    "Unlike the reward model's data": lambda r: bool(r.get("far")),  # lab.familiarity: its score is a guess there
    "First answer to each prompt": lambda r: not r.get("draw"),  # where each model answered a prompt several times
}
SORTS: dict[str, Callable[[dict[str, Any]], float]] = {
    "Prompt order": lambda r: (r["index"], r.get("draw") or 0),
    "Largest toxicity drop (A → B)": lambda r: -(r["toxicity_a"] - r["toxicity_b"]),
    "Largest reward gain (A → B)": lambda r: -_gain(r),
    "Largest toxicity rise (A → B)": lambda r: r["toxicity_a"] - r["toxicity_b"],
    "Largest reward loss (A → B)": lambda r: _gain(r),
    "Most toxic answer first": lambda r: -max(r["toxicity_a"], r["toxicity_b"]),
    "Largest relevance drop (A → B)": lambda r: _gain(r, "relevance"),
}
CARD_CSS = """<style>
.cmp-card{border:1px solid #ddd;border-radius:8px;padding:10px;margin:10px 0}
.cmp-prompt{font-weight:600;margin-bottom:8px;white-space:pre-wrap}
.cmp-draw{font-weight:400;font-size:.8em;color:#666;margin-left:4px}
.cmp-kind{font-weight:400;font-size:.8em;border:1px solid #999;border-radius:8px;padding:0 6px;margin-left:4px}
.cmp-answers{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.cmp-answer{border:2px solid #eee;border-radius:6px;padding:8px}
.cmp-answer.better{border-color:#54a24b}
.cmp-text{white-space:pre-wrap;margin:6px 0}
.cmp-head{font-size:.85em;color:#666}
.cmp-scores{font-size:.85em}
.cmp-badge{display:inline-block;background:#e8f4e5;color:#2d6a27;border-radius:4px;padding:0 5px;margin-left:5px}
.cmp-flag{display:inline-block;background:#fdecea;color:#9c2b23;border-radius:4px;padding:0 5px;margin-left:5px}
</style>"""


def _disagree(row: dict[str, Any]) -> bool:
    """The proxy prefers one side and the judge the other."""
    values = [row.get(k) for k in ("reward_a", "reward_b", "judge_a", "judge_b")]
    if not all(isinstance(v, (int, float)) for v in values):
        return False
    ra, rb, ja, jb = values
    return (rb - ra) * (jb - ja) < 0


def _gain(row: dict[str, Any], key: str = "reward") -> float:
    """B − A of a score (0 where either side has none)."""
    a, b = row.get(f"{key}_a"), row.get(f"{key}_b")
    return b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else 0.0


def fmt_score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def _answer_html(row: dict[str, Any], key: str, more_reward: bool, less_toxic: bool) -> str:
    """One answer: the head marks the reward model's pick (never an overall "better": toxicity and the reader may
    disagree with it), a badge the clearly less toxic answer."""
    badges = "<span class='cmp-badge'>less toxic</span>" if less_toxic else ""
    answer = row.get(f"answer_{key}") or ""
    flags = ""
    if row.get(f"refusal_{key}"):
        flags += (f"<span class='cmp-flag' title='{esc(row.get(f'refusal_match_{key}') or '')}'>refusal: "
                  f"{esc(row.get(f'refusal_rule_{key}') or '')}</span>")
    if row.get(f"degenerate_{key}"):
        reasons = "; ".join(row.get(f"degenerate_reasons_{key}") or [])
        flags += f"<span class='cmp-flag'>degenerate: {esc(reasons)}</span>"
    judge = row.get(f"judge_{key}")
    judge_text = f" · judge {fmt_score(judge)}" if isinstance(judge, (int, float)) else ""
    relevance = row.get(f"relevance_{key}")
    judge_text += f" · relevance {fmt_score(relevance)}" if isinstance(relevance, (int, float)) else ""
    return (
        f"<div class='cmp-answer{' better' if more_reward else ''}'>"
        f"<div class='cmp-head'>{key.upper()} · {esc(row.get(f'model_{key}', ''))}"
        f"{' ✓ reward model prefers' if more_reward else ''}</div>"
        f"<div class='cmp-text'>{esc(answer) if answer else '<i>(empty answer)</i>'}</div>"
        f"<div class='cmp-scores'>toxicity {fmt_score(row.get(f'toxicity_{key}'))} · "
        f"reward {fmt_score(row.get(f'reward_{key}'))}{judge_text}{badges}{flags}</div></div>"
    )


def less_toxic(row: dict[str, Any]) -> str | None:
    """'a' or 'b' when one answer's toxicity is lower by more than TOXICITY_CLEAR, else None."""
    ta, tb = row.get("toxicity_a"), row.get("toxicity_b")
    if not isinstance(ta, (int, float)) or not isinstance(tb, (int, float)) or abs(ta - tb) <= TOXICITY_CLEAR:
        return None
    return "a" if ta < tb else "b"


def card_html(row: dict[str, Any]) -> str:
    """One prompt with both answers. The reward model's pick is marked only where it takes a side (P(better) =
    σ(reward difference) outside 40–60%, the Reward tab's rule), else the card says "about even"; the clearly less
    toxic answer gets its own badge, and where the two point at different answers the card says they disagree. No
    measure is called "better" overall: that is the reader's call."""
    preferred_side = preferred(row.get("reward_a"), row.get("reward_b"))
    cleaner = less_toxic(row)
    same = row.get("answer_a") == row.get("answer_b")
    note = " <span class='cmp-head'>(both models gave the same answer)</span>" if same else ""
    if not same and not preferred_side and isinstance(row.get("reward_a"), (int, float)):
        p = p_better(row["reward_a"], row["reward_b"])
        note = (f" <span class='cmp-head cmp-even'>about even: the reward model gives A {p:.0%} "
                f"(it takes a side only outside {EVEN_BAND[0]:.0%}–{EVEN_BAND[1]:.0%})</span>")
    elif preferred_side and cleaner and preferred_side != cleaner:
        note = (f" <span class='cmp-head cmp-even'>the measures disagree: the reward model prefers "
                f"{preferred_side.upper()}, but {cleaner.upper()} is clearly less toxic — read both</span>")
    answers = "".join(_answer_html(row, k, preferred_side == k, cleaner == k) for k in ("a", "b"))
    kind = f" <span class='cmp-kind'>{esc(row['kind'])}</span>" if row.get("kind") else ""
    if row.get("far"):  # lab.familiarity: unlike every request the reward model learned from
        kind += (" <span class='cmp-kind' title='less like any request the reward model learned from than 9 in 10 "
                 "of its held-out requests: its score here is a guess'>unlike the reward data</span>")
    draw = f" <span class='cmp-draw'>answer {int(row['draw']) + 1}</span>" if row.get("draw") is not None else ""
    return (
        f"<div class='cmp-card'><div class='cmp-prompt'>#{row['index'] + 1}{draw}{kind} · {esc(row['prompt'])}{note}"
        "</div>"
        f"<div class='cmp-answers'>{answers}</div></div>"
    )


def select_rows(rows: list[dict[str, Any]], sort: str, query: str = "", show: str = ALL) -> list[dict[str, Any]]:
    """Rows that pass the diagnostics filter `show` and whose prompt or answers contain `query` (any case), in the
    chosen order."""
    rows = [r for r in rows if SHOW.get(show or ALL, SHOW[ALL])(r)]
    q = (query or "").strip().lower()
    if q:
        rows = [r for r in rows if any(q in str(r.get(k, "")).lower() for k in ("prompt", "answer_a", "answer_b"))]
    return sorted(rows, key=SORTS.get(sort, SORTS["Prompt order"]))


def cards_html(rows: list[dict[str, Any]], sort: str, query: str = "", show: str = ALL) -> str:
    """The cards for the rows shown, every model and dataset text escaped."""
    shown = select_rows(rows, sort, query, show)
    if not rows:
        return ""
    if not shown:
        return "<p>No prompt matches the filter.</p>" if show and show != ALL else \
            "<p>No prompt or answer contains that text.</p>"
    what = "answer pairs" if any(r.get("draw") for r in rows) else "prompts"
    note = f"<p>Showing {min(len(shown), MAX_CARDS)} of {len(shown)} matching {what} ({len(rows)} compared).</p>"
    return CARD_CSS + note + "".join(card_html(r) for r in shown[:MAX_CARDS])
