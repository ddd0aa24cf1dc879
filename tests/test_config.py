"""lab.config: fields carry their help, label, widget, choices and range; values are coerced, unknown keys named."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from lab.config import (build, coerce, coerced, fields_by_name, from_job, given, label_of, setting, user_fields,
                        widget_of)


@dataclass
class Demo:
    steps: int = setting(10, "how many steps", label="training steps")
    rate: float = setting(0.5, "a rate", widget="slider", minimum=0, maximum=1, step=0.1)
    on: bool = setting(True, "a switch")
    kind: str = setting("a", "which kind", choices=("a", "b"))
    name: str = setting("x", "a name")
    items: list[str] = setting(["p"], "a list")
    derived: int = setting(3, "set by the lab", cli=False)


def test_metadata_holds_help_label_widget_choices_and_range():
    by_name = fields_by_name(Demo)
    assert by_name["steps"].metadata["help"] == "how many steps"
    assert label_of(by_name["steps"]) == "training steps (steps)"
    assert label_of(by_name["name"]) == "name (name)"  # no label: the name in words
    assert [widget_of(by_name[n]) for n in ("steps", "rate", "on", "kind", "name")] == [
        "number", "slider", "checkbox", "dropdown", "text"]
    assert (by_name["rate"].metadata["minimum"], by_name["rate"].metadata["maximum"]) == (0, 1)
    with pytest.raises(ValueError, match="widget 'knob'"):
        setting(1, "x", widget="knob")


def test_list_defaults_are_not_shared():
    a, b = Demo(), Demo()
    a.items.append("q")
    assert b.items == ["p"]


def test_user_fields_are_the_scalar_ones_a_person_sets():
    assert [f.name for f in user_fields(Demo)] == ["steps", "rate", "on", "kind", "name"]


def test_values_are_coerced_to_the_field_type():
    by_name = {f.name: f for f in fields(Demo)}
    assert coerce(by_name["steps"], 3.0) == 3 and type(coerce(by_name["steps"], "4")) is int
    assert coerce(by_name["name"], "  y ") == "y"
    assert given({"a": None, "b": " ", "c": 0}) == {"c": 0}
    assert coerced(Demo, {"steps": 2.0, "name": ""}, "demo") == {"steps": 2}


def test_build_layers_defaults_then_preset_then_values_and_names_unknown_keys():
    cfg = build(Demo, {"steps": 20, "rate": 0.1}, {"rate": 0.9, "name": None}, "demo")
    assert (cfg.steps, cfg.rate, cfg.name) == (20, 0.9, "x")
    with pytest.raises(ValueError, match="unknown demo setting\\(s\\): bogus, lr"):
        build(Demo, {}, {"lr": 1, "bogus": 2}, "demo")


def test_from_job_ignores_other_keys():
    assert from_job(Demo, {"steps": 5, "policy": "p"}).steps == 5
