"""The Data tab: rendering escapes text and marks divergence; the live app loads, filters and refuses bad sources."""

from __future__ import annotations

import json

import pytest

from lab.data import Pair, load_pairs
from lab.ui.data import diff_html, filter_indices, page_html, pair_html


def test_pair_card_escapes_dataset_text():
    pair = Pair("\n\nHuman: <script>alert(1)</script>\n\nAssistant:", " <img src=x onerror=alert(2)>", " fine")
    html = pair_html(pair, 0, 1)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x" in html


def test_divergence_is_marked_between_similar_answers_only():
    a, b = diff_html("The capital is Paris, of course.", "The capital is Lyon, of course.")
    assert '<mark class="diff">Paris,</mark>' in a and '<mark class="diff">Lyon,</mark>' in b
    assert "The capital is" in a and "of course." in b
    assert diff_html("Hello there", "Go away") == ("Hello there", "Go away")


def test_search_split_and_paging():
    pairs = load_pairs("bundled")
    test_only = filter_indices(pairs, "", "test")
    assert len(test_only) == len(pairs.split("test"))
    hits = filter_indices(pairs, "RESUME", "all")
    assert hits and all("resume" in (pairs.pairs[i].prompt + pairs.pairs[i].chosen).lower() for i in hits)
    cards, line = page_html(pairs, list(range(len(pairs))), 1)
    assert cards.count('class="pair-card"') == 5 and line.startswith("Page 2 of")
    assert page_html(pairs, [], 0)[1] == "0 matches"


@pytest.fixture
def app_client(runs_root, tmp_path):
    from gradio_client import Client

    from lab.jobs import JobManager
    from lab.presets import get_preset
    from lab.ui import build_app

    demo = build_app(JobManager(runs_root), get_preset("cpu"), allowed_dirs=[tmp_path])
    demo.queue().launch(prevent_thread_lock=True, server_port=None, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False), tmp_path
    finally:
        demo.close()


def test_data_tab_through_gradio_client(app_client):
    client, allowed = app_client
    stats, _plot, cards, page = client.predict("Bundled demo set", "", None, "", api_name="/data_load")
    assert "204" in stats or "pairs" in stats
    assert cards.count('class="pair-card"') == 5 and page.startswith("Page 1 of")
    good = allowed / "mine.jsonl"
    good.write_text(json.dumps({"chosen": "\n\nHuman: <b>hi</b>\n\nAssistant: hello", "rejected": "\n\nHuman: <b>hi</b>\n\nAssistant: go"}) + "\n")
    stats, _plot, cards, page = client.predict("Local file path", str(good), None, "", api_name="/data_load")
    assert "**1**" in stats and "&lt;b&gt;hi&lt;/b&gt;" in cards and "<b>hi</b>" not in cards


def test_bad_sources_keep_the_previous_view(app_client):
    client, _ = app_client
    # /etc/passwd is outside the allowed folders: a warning, and every output keeps its value (skipped).
    for source in ("/etc/passwd", "/nope/missing.jsonl"):
        result = client.predict("Local file path", source, None, "", api_name="/data_load")
        # gr.skip(): each output comes back as a bare update carrying no new value
        assert all(isinstance(v, dict) and "update" in json.dumps(v) and "value" not in json.dumps(v) for v in result)


def test_search_finds_british_and_american_spellings():
    pairs = load_pairs("bundled")
    text = " ".join(p.prompt + p.chosen + p.rejected for p in pairs.pairs).lower()
    if "neighbor" in text:
        assert filter_indices(pairs, "neighbour", "all") == filter_indices(pairs, "NEIGHBOR", "all") != []
    assert filter_indices(pairs, "Apologise", "all") == filter_indices(pairs, "apologize", "all")


def test_the_data_tab_says_who_judged_and_bins_both_lengths_alike():
    from lab.ui.data import length_figure, stats_markdown, who_judged

    pairs = load_pairs("bundled")
    text = stats_markdown(pairs)
    assert "Who judged" in text and "lab's authors" in text
    assert "crowdworkers" in who_judged("Anthropic/hh-rlhf/harmless-base:test")
    assert "voted on the Feedback tab" in who_judged("feedback:workshop+bundled") and "authors" in who_judged(
        "feedback:workshop+bundled")
    assert "whoever made the file" in who_judged("data/mine.jsonl")
    fig = length_figure(pairs).to_plotly_json()
    chosen, rejected = fig["data"]
    assert chosen["xbins"] == rejected["xbins"] and chosen["xbins"]["size"] > 0  # one set of edges for both
    lengths = [len(getattr(p, part).strip()) for p in pairs.pairs for part in ("chosen", "rejected")]
    assert chosen["xbins"]["start"] <= min(lengths) and chosen["xbins"]["end"] > max(lengths)
