"""Progress bars: shown where someone is watching, never a warning.

Rules of this module: the default is to show a bar in a terminal (stderr is a
TTY) and in a notebook (an IPython kernel is running); elsewhere (CI, pipes,
files) none. In a notebook the bar is tqdm's widget where ipywidgets is
installed and its text bar otherwise (tqdm.auto would warn "IProgress not
found" there).
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["show_progress", "progress_bar"]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def show_progress(progress: bool | None) -> bool:
    """``progress`` as given, or the default: a terminal or a notebook."""
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() or _in_notebook()


def progress_bar(**options):
    """A tqdm bar: the notebook widget where it can be drawn, else the text bar."""
    if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(**options)
