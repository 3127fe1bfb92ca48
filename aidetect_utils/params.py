"""A notebook's parameters: the chosen profile's values from ``notebooks/profiles.yaml``.

Every notebook opens with one visible choice, ``profile = "cpu"`` (and optional ``overrides``),
then ``P = params.load(profile, "04_efficientnet_two_phase", overrides)``: the notebook's
``defaults`` (what every parameter means, with the ``smoke`` values), then the profile's
changes (a profile may ``extends`` another), then the overrides. The code reads ``P.input_size``
and so on, so a profile is only a set of values and the notebooks never branch on its name.
A name that is not a parameter of the notebook is an error, not a silent no-op. The headless
runner injects ``profile`` and ``overrides`` with papermill, and nothing else.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .paths import project_root

DEFAULTS = "defaults"
_active: str | None = None    # the profile of this process's last params.load (see active_profile)


def profiles_file() -> Path:
    return project_root() / "notebooks" / "profiles.yaml"


def load_profiles(path: str | os.PathLike | None = None) -> dict:
    """The whole profiles file: ``defaults`` and every profile."""
    path = Path(path) if path else profiles_file()
    profiles = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(profiles, dict) or not profiles:
        raise ValueError(f"{path}: expected a mapping of profile name -> notebook parameters")
    return profiles


def profile_names(profiles: dict) -> list[str]:
    return sorted(k for k in profiles if k != DEFAULTS)


def _entry(section: dict, notebook: str) -> dict:
    stem = Path(notebook).stem
    return dict(section.get(stem) or section.get(stem[:2]) or {})


def profile_values(profiles: dict, profile: str, notebook: str, _seen: tuple = ()) -> dict:
    """What ``profile`` sets for one notebook: those of the profile it ``extends`` (if any), then
    its ``all`` entry, then the notebook's own; later entries override earlier ones."""
    if profile == DEFAULTS or profile not in profiles:
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
    of the notebook (a typo in a profile or an override would otherwise change nothing)."""
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
    global _active
    _active = profile
    return Params(profile, notebook, values, changed)
