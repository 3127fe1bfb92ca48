"""A notebook's parameters: the chosen profile's values from ``notebooks/profiles.yaml``.

Every notebook opens with one visible choice, ``profile = "cpu"`` (and optional ``overrides``),
then ``P = params.load(profile, "04_efficientnet_two_phase", overrides)``: the notebook's
``defaults`` (what every parameter means, with the ``smoke`` values), then the profile's
changes (a profile may ``extends`` another), then the overrides. The code reads ``P.input_size``
and so on, so a profile is only a set of values and the notebooks never branch on its name.
A name that is not a parameter of the notebook is an error, not a silent no-op. The headless
runner injects ``profile`` and ``overrides`` with papermill, and nothing else.

Values are checked where they are read: the file's ``types`` section declares, beside the
defaults, what each parameter may be (``int>=1``, ``float>0<1``, ``str|null``, ``vit|timm``; see
:func:`check_value`), and :func:`load` refuses a value outside it before any work, with one line
naming the notebook, the parameter, the value, where it came from and what is allowed (a ``-p``
value of the wrong type would otherwise fail later, in an unrelated cell). A ``profiles.yaml``
that is not valid YAML, or whose profile is not a mapping, is one line naming the file and the line.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import yaml

from . import paths
from .paths import project_root

DEFAULTS = "defaults"
TYPES = "types"               # not a profile: what each parameter may be (see check_value)
_active: str | None = None    # the profile of this process's last params.load (see active_profile)


class ProfilesError(ValueError):
    """``profiles.yaml`` cannot be read as profiles; ``str(err)`` is one line naming the file and the line."""


class ParameterError(ValueError):
    """A parameter value outside what ``profiles.yaml`` declares; ``str(err)`` is one line."""


def profiles_file() -> Path:
    return project_root() / "notebooks" / "profiles.yaml"


def load_profiles(path: str | os.PathLike | None = None) -> dict:
    """The whole profiles file: ``defaults``, ``types`` and every profile. Raises
    :class:`ProfilesError` (one line naming the file and the line) for a file that is not YAML
    or not shaped as profiles."""
    path = Path(path) if path else profiles_file()
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        profiles = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfilesError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ProfilesError(f"{path}{_line(mark)}: not valid YAML ({problem})") from None
    _check_shape(path, root)
    return profiles


def _line(mark) -> str:
    return f", line {mark.line + 1}" if mark is not None else ""


def _check_shape(path: Path, root) -> None:
    """Every profile (and ``defaults``, ``types``) a mapping of notebook -> mapping of values."""
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise ProfilesError(f"{path}{_line(getattr(root, 'start_mark', None))}: expected a mapping of "
                            "profile name -> notebook parameters")
    for key, value in root.value:
        name = key.value
        if _is_null(value):
            continue
        if not isinstance(value, yaml.MappingNode):
            raise ProfilesError(f"{path}{_line(value.start_mark)}: {name!r} must be a mapping of notebook -> "
                                f"parameters, not a {_kind(value)}")
        for k, v in value.value:
            if k.value == "extends" and name not in (DEFAULTS, TYPES):
                if not isinstance(v, yaml.ScalarNode) or _is_null(v):
                    raise ProfilesError(f"{path}{_line(v.start_mark)}: {name!r}: extends must name a profile")
            elif not _is_null(v) and not isinstance(v, yaml.MappingNode):
                raise ProfilesError(f"{path}{_line(v.start_mark)}: {name!r}: {k.value!r} must be a mapping of "
                                    f"parameter -> value, not a {_kind(v)}")


def _is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node) -> str:
    return {yaml.SequenceNode: "list", yaml.ScalarNode: "single value"}.get(type(node), "mapping")


def profile_names(profiles: dict) -> list[str]:
    return sorted(k for k in profiles if k not in (DEFAULTS, TYPES))


def _entry(section: dict, notebook: str) -> dict:
    stem = Path(notebook).stem
    return dict(section.get(stem) or section.get(stem[:2]) or {})


def profile_values(profiles: dict, profile: str, notebook: str, _seen: tuple = ()) -> dict:
    """What ``profile`` sets for one notebook: those of the profile it ``extends`` (if any), then
    its ``all`` entry, then the notebook's own; later entries override earlier ones."""
    if profile in (DEFAULTS, TYPES) or profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; choose from {profile_names(profiles)}")
    if profile in _seen:
        raise ValueError(f"profiles extend each other in a cycle: {' -> '.join((*_seen, profile))}")
    p = profiles[profile] or {}
    values = profile_values(profiles, p["extends"], notebook, (*_seen, profile)) if p.get("extends") else {}
    values.update(p.get("all") or {})
    values.update(_entry(p, notebook))
    return values


def defaults_for(profiles: dict, notebook: str) -> dict:
    d = profiles.get(DEFAULTS) or {}
    return {**(d.get("all") or {}), **_entry(d, notebook)}


def types_for(profiles: dict, notebook: str) -> dict:
    """What each parameter of ``notebook`` may be: the ``types`` section's ``all`` entry, then the
    notebook's own (parameters it does not declare are not checked)."""
    t = profiles.get(TYPES) or {}
    return {**(t.get("all") or {}), **_entry(t, notebook)}


# ---------------------------------------------------------------- declared types and ranges
_BOUND = re.compile(r"(>=|<=|>|<)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def _parse_alt(alt: str) -> tuple[str, list[tuple[str, float]]]:
    """``"int>=1<=8"`` -> ("int", [(">=", 1.0), ("<=", 8.0)]); a bare word is a literal choice."""
    m = re.fullmatch(r"([A-Za-z_][\w.-]*)((?:(?:>=|<=|>|<)[^<>=]+)*)", alt)
    if not m:
        raise ValueError(f"cannot read the type {alt!r}")
    kind, rest = m.group(1), m.group(2)
    bounds = [(op, float(num)) for op, num in _BOUND.findall(rest)]
    if "".join(op + num for op, num in _BOUND.findall(rest)) != rest or (bounds and kind not in ("int", "float")):
        raise ValueError(f"cannot read the bounds of {alt!r} (write e.g. int>=1 or float>0<1)")
    return kind, bounds


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def describe_type(spec: str) -> str:
    """``"int>=1|null"`` -> ``"an int >= 1, or null"``: what a message says is allowed."""
    words = []
    for alt in spec.split("|"):
        kind, bounds = _parse_alt(alt.strip())
        if kind in ("int", "float"):
            words.append(f"a{'n' if kind == 'int' else ''} {kind}" + "".join(
                f"{' and' if i else ''} {op} {_fmt(v)}" for i, (op, v) in enumerate(bounds)))
        elif kind in ("null", "bool"):
            words.append(kind if kind == "null" else "true or false")
        elif kind in ("str", "list", "dict"):
            words.append({"str": "a string", "list": "a list", "dict": "a mapping"}[kind])
        else:
            words.append(repr(kind))
    return ", or ".join(words)


def check_value(value, spec: str) -> bool:
    """Whether ``value`` is allowed by ``spec``: alternatives separated by ``|``, each ``null``,
    ``bool``, ``str``, ``list``, ``dict``, ``int`` or ``float`` (an int is a float; a bool is
    neither) with optional bounds (``>=1``, ``>0<1``, ``>=0<=1``), or a literal word that the
    value must equal (``vit|timm``)."""
    for alt in spec.split("|"):
        kind, bounds = _parse_alt(alt.strip())
        if kind == "null":
            ok = value is None
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "list":
            ok = isinstance(value, (list, tuple))
        elif kind == "dict":
            ok = isinstance(value, dict)
        elif kind in ("int", "float"):
            ok = (isinstance(value, int) if kind == "int" else isinstance(value, (int, float))) \
                and not isinstance(value, bool) and math.isfinite(value) and all(
                    {">=": value >= b, ">": value > b, "<=": value <= b, "<": value < b}[op] for op, b in bounds)
        else:
            ok = isinstance(value, str) and value == kind
        if ok:
            return True
    return False


def _check(notebook: str, profile: str, values: dict, changed: dict, types: dict, path) -> None:
    for name, spec in types.items():
        if name not in values:
            continue
        value = values[name]
        try:
            ok = check_value(value, str(spec))
        except ValueError as exc:
            raise ProfilesError(f"{path}: types: {notebook}: {name}: {exc}") from None
        if ok:
            continue
        source = {"profile": f"profile {profile!r}", "override": "override"}.get(changed.get(name), "default")
        hint = ""
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()) \
                and "float" in str(spec):
            hint = f" (YAML reads {value} as text: write it with a dot, e.g. {float(value):.1e})"
        raise ParameterError(f"{notebook}: {name} = {value!r} ({source}) is not allowed: it must be "
                             f"{describe_type(str(spec))}{hint}")


class Params:
    """A notebook's parameters as attributes (``P.input_size``), shown as a table in Jupyter."""

    def __init__(self, profile: str, notebook: str, values: dict, changed: dict):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_changed", dict(changed))   # name -> "profile" | "override"
        object.__setattr__(self, "profile", profile)
        object.__setattr__(self, "notebook", notebook)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{self.notebook} has no parameter {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("parameters are read-only: change them in overrides (or profiles.yaml)")

    def __getitem__(self, name):
        return self._values[name]

    def as_dict(self) -> dict:
        return {"profile": self.profile, **self._values}

    def rows(self) -> list[tuple[str, object, str]]:
        return [(k, v, self._changed.get(k, "default")) for k, v in self._values.items()]

    def __repr__(self) -> str:
        width = max((len(k) for k in self._values), default=0)
        lines = [f"{self.notebook} · profile {self.profile!r}"]
        lines += [f"  {k:<{width}} = {v!r}" + ("" if src == "default" else f"   ({src})") for k, v, src in self.rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html
        body = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(repr(v))}</code></td>"
                       f"<td>{'' if src == 'default' else html.escape(src)}</td></tr>" for k, v, src in self.rows())
        return (f"<p><b>{html.escape(self.notebook)}</b> · profile <code>{html.escape(self.profile)}</code></p>"
                f"<table><tr><th>parameter</th><th>value</th><th>set by</th></tr>{body}</table>")


def active_profile() -> str | None:
    """The profile the running notebook chose (its last :func:`load`), or None. A notebook
    opened alone uses it to prepare the data it needs the way notebook 00 would under the same
    profile (``splits.load_prepared``)."""
    return _active


def load(profile: str, notebook: str, overrides: dict | None = None, path: str | os.PathLike | None = None) -> Params:
    """The parameters of ``notebook`` under ``profile``, with ``overrides`` on top.

    Raises ValueError with one line for an unknown profile or a name that is not a parameter
    of the notebook (a typo in a profile or an override would otherwise change nothing), and
    :class:`ParameterError` for a value outside its declared type and range (``types``)."""
    profiles = load_profiles(path)
    notebook = Path(notebook).stem
    values = defaults_for(profiles, notebook)
    if not values:
        raise ValueError(f"profiles.yaml has no defaults for {notebook!r}")
    changed = {}
    for source, extra in (("profile", profile_values(profiles, profile, notebook)), ("override", overrides or {})):
        unknown = sorted(set(extra) - set(values))
        if unknown:
            raise ValueError(f"{notebook}: {', '.join(map(repr, unknown))} "
                             f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} of this "
                             f"notebook ({source} {profile!r}); its parameters: {', '.join(values)}")
        for k, v in extra.items():
            if values[k] != v:
                changed[k] = source
            values[k] = v
    _check(notebook, profile, values, changed, types_for(profiles, notebook), path or profiles_file())
    global _active
    _active = profile
    paths.running = f"{notebook} (profile {profile!r})"   # named by paths.hold when another run asks for our folders
    return Params(profile, notebook, values, changed)
