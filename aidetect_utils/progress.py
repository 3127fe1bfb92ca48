"""Progress bars: ``tqdm.auto`` (a widget in Jupyter, text in a terminal), switched off when
``TQDM_DISABLE`` is set, as the headless runner and the tests do (a saved notebook would
otherwise keep every redraw of every bar). tqdm's own ``TQDM_DISABLE`` handling does not reach
its notebook bars, hence this wrapper.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def enabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")


def progress(iterable=None, **kwargs):
    kwargs["disable"] = kwargs.get("disable", False) or not enabled()
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kwargs)
