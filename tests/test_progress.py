"""Progress bars where someone watches: a terminal or a notebook; no warning."""

import importlib.util
import sys
import types

from xpnet import progress


def _notebook(monkeypatch):
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_an_explicit_choice_is_kept():
    assert progress.show_progress(True) is True
    assert progress.show_progress(False) is False


def test_no_bar_in_a_pipe_and_a_bar_in_a_notebook(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setitem(sys.modules, "IPython", None)
    assert progress.show_progress(None) is False
    _notebook(monkeypatch)
    assert progress.show_progress(None) is True


def test_a_notebook_without_ipywidgets_gets_the_text_bar_and_no_warning(monkeypatch):
    _notebook(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name)
    )
    from tqdm.std import tqdm

    bar = progress.progress_bar(total=3, disable=True)  # warnings are errors in the tests
    try:
        assert type(bar) is tqdm
    finally:
        bar.close()
