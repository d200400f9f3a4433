"""One loader for every YAML config file: the agent's ``migrated.yaml`` and the console's ``console.yaml``.

A config is a tree of :class:`StrictModel` (pydantic: unknown keys refused, no type coercion, frozen,
defaults next to their fields). :func:`load_file` / :func:`parse_text` read YAML, validate it whole and
raise one :class:`~migrated.errors.ConfigError` listing **every** error at once, one line each, in the
same form for both programs::

    /etc/migrated/migrated.yaml: line 3, column 13: heartbeat.interval: must be > 0, got 0
    /etc/migrated/migrated.yaml: line 5, column 3: console.endpiont: unknown key; valid keys here: endpoint, ...

``ConfigError.path`` is the first error's key path (``heartbeat.interval``, ``ignore_checks[1]``);
``ConfigError.issues`` has them all as :class:`Issue`. Line and column come from the YAML node the
error is about (the key itself for an unknown or duplicate key, the parent for a missing one).

Writing a config model: subclass :class:`StrictModel`; put bounds in ``Field(gt=..)``; a validator that
checks one value raises ``ValueError("must be ...")``; one that blames a key below its own (a
cross-field rule, an item of a list) raises :func:`issue_at`. Messages read ``must ...``: they follow
the key path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from migrated.errors import ConfigError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

TOP_LEVEL = "(top level)"


class StrictModel(BaseModel):
    """Base of every config section: unknown keys refused, no coercion ("10" is not a number), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def __setattr__(self, name: str, value: Any) -> None:  # frozen like a frozen dataclass: AttributeError
        raise AttributeError(f"{type(self).__name__} is frozen; cannot set {name}")


def as_tuple(value: Any) -> Any:
    """BeforeValidator for tuple fields: YAML gives lists, strict mode wants tuples."""
    return tuple(value) if isinstance(value, list) else value


def issue_at(below: Loc, message: str) -> PydanticCustomError:
    """An error for a validator to raise about the key ``below`` its own (e.g. ``("max",)``, ``(1,)``)."""
    return PydanticCustomError("config", "{message}", {"message": message, "below": tuple(below)})


@dataclass(frozen=True)
class Issue:
    path: str  # dotted key path, "" for the whole file
    message: str
    line: int | None = None  # 1-based, None when not from a file
    column: int | None = None

    def render(self, source: str) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{source}: {where}{self.path or TOP_LEVEL}: {self.message}"


def config_error(source: str, issues: list[Issue]) -> ConfigError:
    err = ConfigError("\n".join(i.render(source) for i in issues))
    err.path = issues[0].path if issues[0].path != TOP_LEVEL else ""
    err.issues = issues  # type: ignore[attr-defined]
    return err


# ---------------------------------------------------------------- YAML with positions


@dataclass
class _Positions:
    values: dict[Loc, tuple[int, int]]
    keys: dict[Loc, tuple[int, int]]

    def of(self, loc: Loc, *, key: bool = False) -> tuple[int, int] | None:
        if key and loc in self.keys:
            return self.keys[loc]
        while loc not in self.values and loc:
            loc = loc[:-1]
        return self.values.get(loc)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, pos: _Positions, dups: list[Issue],
          walked: set[int]) -> None:
    pos.values[loc] = _mark(node)
    if id(node) in walked:  # an alias (&a [*a], or a "billion laughs" bomb): located once, at its anchor
        return
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, tuple[int, int]] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(knode)
            if not isinstance(key, str | int):
                continue
            if key in seen:
                line, col = _mark(knode)
                dups.append(Issue(_path((*loc, key)), f"duplicate key (first at line {seen[key][0]})", line, col))
            seen[key] = _mark(knode)
            pos.keys[(*loc, key)] = _mark(knode)
            _walk(loader, vnode, (*loc, key), pos, dups, walked)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, (*loc, i), pos, dups, walked)


def parse_yaml(text: str, source: str) -> tuple[Any, _Positions, list[Issue]]:
    """YAML text -> (data, positions of its keys and values, duplicate-key issues)."""
    loader = yaml.SafeLoader(text)
    pos = _Positions({}, {})
    dups: list[Issue] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos, dups
        _walk(loader, node, (), pos, dups, set())
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    return data, pos, dups


# ---------------------------------------------------------------- validation


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The config section (model class) found at ``loc`` below ``model``, if ``loc`` names one."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _unwrap_model(current.model_fields[str(part)].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(tp: Any) -> Any:
    if get_origin(tp) in (Union, type(int | None)):
        models = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else tp
    return tp


def _empty_sections_as_defaults(model: type[BaseModel], data: dict[Any, Any]) -> dict[Any, Any]:
    """``section:`` with nothing under it (YAML null, e.g. every line commented out) means the section's
    defaults, where the section may not be null itself (``cloud:`` may: null there means "no cloud")."""
    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        section = _unwrap_model(field.annotation)
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        if value is None and section is field.annotation:  # not Optional: null is not a choice there
            out[key] = {}
        elif isinstance(value, dict):
            out[key] = _empty_sections_as_defaults(section, value)
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND = {dict: "a mapping", list: "a list", tuple: "a list", str: "a string", bool: "true/false", int: "a number",
         float: "a number", type(None): "empty (null)"}

_TYPE_WANTED = {
    "bool_type": "must be true or false", "float_type": "must be a number", "int_type": "must be an integer",
    "string_type": "must be a string", "model_type": "must be a mapping of keys",
    "dict_type": "must be a mapping of keys",
    "tuple_type": "must be a list", "list_type": "must be a list", "none_required": "must be empty (null)",
}


def _message(model: type[BaseModel], e: Any) -> str:
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "extra_forbidden":
        section = _model_at(model, tuple(e["loc"][:-1]))
        return "unknown key" + (f"; valid keys here: {', '.join(section.model_fields)}" if section else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "config":
        return str(ctx["message"])
    if kind in _TYPE_WANTED:
        return f"{_TYPE_WANTED[kind]}, got {_KIND.get(type(value), type(value).__name__)} {_shown(value)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}; got {_shown(value)}"
    bounds = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
              "less_than_equal": ("le", "<=")}
    if kind in bounds:
        name, op = bounds[kind]
        bound = ctx[name]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"must be {op} {bound}, got {_shown(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(e["msg"]).removeprefix("Value error, ")
    return str(e["msg"])


def validate(model: type[M], data: Any, source: str, positions: _Positions | None = None,
             earlier: list[Issue] | None = None) -> M:
    """Validate parsed YAML ``data`` against ``model``; raise one ConfigError naming every bad key."""
    issues = list(earlier or [])
    pos = positions or _Positions({}, {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        at = pos.of(())
        kind = _KIND.get(type(data), "a value")
        issues.append(Issue(TOP_LEVEL, f"the top level must be a mapping of keys, got {kind} {_shown(data)}",
                            *(at or (None, None))))
        raise config_error(source, issues)
    try:
        result = model.model_validate(_empty_sections_as_defaults(model, data))
    except ValidationError as exc:
        for e in exc.errors():
            loc = tuple(e["loc"]) + tuple((e.get("ctx") or {}).get("below", ()))
            at = pos.of(loc, key=e["type"] == "extra_forbidden")
            issues.append(Issue(_path(loc), _message(model, e), *(at or (None, None))))
        issues.sort(key=lambda i: (i.line or 0, i.column or 0))
        raise config_error(source, issues) from None
    if issues:
        raise config_error(source, issues)
    return result


def parse_text(model: type[M], text: str, source: str = "<config>") -> M:
    data, pos, dups = parse_yaml(text, source)
    return validate(model, data, source, pos, dups)


def load_file(model: type[M], path: str | os.PathLike[str], *, missing_ok: bool = False) -> M:
    """Read, parse and validate a config file. ``missing_ok``: a missing file is all defaults."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return model()
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {getattr(e, 'strerror', None) or e}") from None
    return parse_text(model, text, str(p))
