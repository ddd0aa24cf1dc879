"""Job configs: a dataclass per stage whose fields carry their help, label, widget kind, choices and range in field
metadata (the single source of the CLI flags and the forms), and the one way from a dict of values to such a config."""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields
from typing import Any, TypeVar

T = TypeVar("T")
SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


WIDGETS = ("number", "slider", "checkbox", "dropdown", "radio", "text")


def setting(default: Any, help: str, cli: bool = True, *, label: str = "", widget: str = "",
            choices: tuple = (), minimum: float | None = None, maximum: float | None = None,
            step: float | None = None) -> Any:
    """A dataclass field with its help (the flag's and the form's) and, for the form, its label in plain words, its
    widget kind (one of WIDGETS; by default from the type), its choices and its range; `cli=False` for values the lab
    derives (no flag, no form input)."""
    if widget and widget not in WIDGETS:
        raise ValueError(f"widget '{widget}' is not one of {', '.join(WIDGETS)}")
    meta = {"help": help, "cli": cli, "label": label, "widget": widget, "choices": tuple(choices),
            "minimum": minimum, "maximum": maximum, "step": step}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_type(f: Field) -> type | None:
    """int, float, str or bool for a scalar field; None for lists and dicts."""
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")  # a string under postponed annotations
    return SCALARS.get(name)


def label_of(f: Field) -> str:
    """The form's label: the metadata's plain words with the field's name beside, as refusals and the CLI call it."""
    return f"{f.metadata.get('label') or f.name.replace('_', ' ')} ({f.name})"


def widget_of(f: Field) -> str:
    """The widget kind of a field: its metadata's, else a dropdown for choices, a checkbox for a bool, a number for
    an int or a float, else a text box."""
    if f.metadata.get("widget"):
        return f.metadata["widget"]
    if f.metadata.get("choices"):
        return "dropdown"
    return {bool: "checkbox", int: "number", float: "number"}.get(field_type(f), "text")  # type: ignore[arg-type]


def fields_by_name(*classes: type) -> dict[str, Field]:
    """Every field of the given config dataclasses by name (the first class wins a shared name)."""
    out: dict[str, Field] = {}
    for cls in classes:
        out.update({f.name: f for f in fields(cls) if f.name not in out})
    return out


def field_default(f: Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def user_fields(cls: type) -> list[Field]:
    """The fields a person sets (a flag, a form input): scalar ones not marked `cli=False`."""
    return [f for f in fields(cls) if f.metadata.get("cli", True) and field_type(f) is not None]


def coerce(f: Field, value: Any) -> Any:
    """A form's or a flag's value as the field's type (a form's Number gives 3.0 for an int)."""
    kind = field_type(f)
    if kind is int:
        return int(round(float(value)))
    if kind is str:
        return str(value).strip()
    return kind(value) if kind is not None else value


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The values actually given: None and empty text mean "the default"."""
    return {k: v for k, v in values.items() if v is not None and not (isinstance(v, str) and not v.strip())}


def check_known(cls: type, values: dict[str, Any], what: str) -> None:
    """ValueError listing every key that is not a field of cls."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(sorted(unknown))}")


def coerced(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    """The given values, each as its field's type; unknown keys raise ValueError naming them."""
    values = given(values)
    check_known(cls, values, what)
    by_name = {f.name: f for f in fields(cls)}
    return {k: coerce(by_name[k], v) for k, v in values.items()}


def build(cls: type[T], defaults: dict[str, Any], values: dict[str, Any], what: str) -> T:
    """cls from its dataclass defaults, then `defaults` (the preset's), then the given `values`, each coerced to its
    field's type; unknown keys raise ValueError naming them."""
    return cls(**coerced(cls, {**defaults, **given(values)}, what))


def from_job(cls: type[T], config: dict[str, Any]) -> T:
    """cls from a job config, which also holds other keys (policy, kind, ...): those are ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in config.items() if k in names})
