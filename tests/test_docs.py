"""The README's example and every Python block in docs/ run, so they cannot rot;
the README's printed output is what the example really prints."""

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _run(code):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # run as a script would be (blocks that start worker processes keep the
        # `if __name__ == "__main__":` guard they need)
        exec(compile(code, "<doc>", "exec"), {"__name__": "__main__"})  # noqa: S102
    return out.getvalue()


def _same_printout(got, expected, rel):
    """Same words and layout; numbers equal to ``rel`` (the last printed digit of
    a difference of central differences depends on BLAS's summation order)."""
    got_lines, expected_lines = got.splitlines(), expected.splitlines()
    assert len(got_lines) == len(expected_lines), got
    for line, want in zip(got_lines, expected_lines, strict=True):
        words, wanted = line.split(), want.split()
        assert len(words) == len(wanted), (line, want)
        for word, expect in zip(words, wanted, strict=True):
            try:
                a, b = float(word), float(expect)
            except ValueError:
                assert word == expect, (line, want)
            else:
                assert a == pytest.approx(b, rel=rel), (line, want)


def test_readme_example_prints_what_readme_says():
    text = (ROOT / "README.md").read_text()
    (code,) = _blocks(text, "python")
    (expected,) = _blocks(text, "text")
    # differences of ~1e-10 between two gradients carry rounding noise in their
    # 4th digit; everything else printed is exact to the digits shown
    _same_printout(_run(code), expected, rel=2e-3)


def test_printout_comparison_can_fail():
    _same_printout("loss 2.2977\nok", "loss 2.2977\nok", rel=2e-3)
    with pytest.raises(AssertionError):
        _same_printout("loss 2.31\nok", "loss 2.2977\nok", rel=2e-3)
    with pytest.raises(AssertionError):
        _same_printout("loss 2.2977\nNO", "loss 2.2977\nok", rel=2e-3)


# index.md trains for 200 numerical-gradient steps (~7 s), distributed.md starts
# Dask clusters: the slow tier runs them
_SLOW_DOCS = {"index.md", "distributed.md"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in _SLOW_DOCS else [])
        for p in DOCS
    ],
)
def test_doc_code_blocks_run(path):
    for code in _blocks(path.read_text(), "python"):
        _run(code)


def test_docs_exist_and_are_linked_from_readme():
    readme = (ROOT / "README.md").read_text()
    names = {p.name for p in DOCS}
    required = {
        "index.md",
        "backends.md",
        "numerical-gradient.md",
        "training.md",
        "benchmarks.md",
        "design.md",
        "networks.md",
        "distributed.md",
    }
    assert required <= names
    for name in required:
        assert f"(docs/{name})" in readme


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"&& (python -m pytest[^\n`]*)", readme).group(1)
    assert test_command in ci
    assert 'pip install -e ".[test]"' in readme and '-e ".[test]"' in ci
