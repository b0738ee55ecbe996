"""The README's example and every Python block in docs/ run, so they cannot rot;
the README's printed output is what the example really prints."""

import contextlib
import io
import re
import subprocess
import sys
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


def _examples(text):
    """``(code, expected output or None)`` of every Python block: a ``text``
    block right after it (at most a few lines of prose between) is its output."""
    fences = list(re.finditer(r"```(\w*)\n(.*?)```", text, flags=re.S))
    examples = []
    for here, after in zip(fences, [*fences[1:], None][: len(fences)], strict=True):
        if here.group(1) != "python":
            continue
        expected = None
        if after is not None and after.group(1) == "text":
            between = text[here.end() : after.start()].strip().splitlines()
            if len(between) <= 3:
                expected = after.group(2)
        examples.append((here.group(2), expected))
    return examples


def _run_as_script(code, directory):
    """Run ``code`` as ``python script.py`` would (a missing ``__main__`` guard
    around worker processes fails), in ``directory``; its printed output."""
    script = Path(directory) / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=directory, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in _SLOW_DOCS else [])
        for p in DOCS
    ],
)
def test_doc_examples_run_as_scripts_and_print_what_the_page_says(path, tmp_path):
    for code, expected in _examples(path.read_text()):
        out = _run_as_script(code, tmp_path)
        if expected is not None:
            _same_printout(out, expected, rel=2e-3)


def test_an_example_that_needs_a_main_guard_fails_without_one(tmp_path):
    code = (
        "import multiprocessing as mp\n"
        "ctx = mp.get_context('spawn')\n"
        "p = ctx.Process(target=print)\np.start()\np.join()\nassert p.exitcode == 0\n"
    )
    with pytest.raises(AssertionError):
        _run_as_script(code, tmp_path)


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


@pytest.mark.slow  # a Jupyter kernel and 600 numerical-gradient steps
def test_the_learners_notebook_runs(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")

    notebook = nbformat.read(ROOT / "docs" / "notebooks" / "chapters-4-5.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures, inline
    assert not any(o.output_type == "error" for o in outputs)


# command lines that need what a test machine may lack, and why they are left out
_NEEDS = {
    "--backend cupy": "an NVIDIA GPU",
    "--dataset mnist": "a download of MNIST",
    "tcp://10.0.0.5": "a Dask cluster of other machines",
    "pip install ": "the package index (CI installs the package itself)",
    "python -m pytest": "(the test suite itself)",
}
_COMMAND_PAGES = ["README.md", "docs/training.md", "docs/networks.md", "docs/distributed.md"]


def _command_lines():
    """Every ``xpnet`` command of the README and the user-facing pages' bash
    blocks, in page order (continuation lines joined)."""
    lines = []
    for page in _COMMAND_PAGES:
        for block in _blocks((ROOT / page).read_text(), "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("  #")[0].split(" # ")[0].strip()
                if " && xpnet " in command:  # an install, then a command: the command
                    command = command.split(" && ", 1)[1]
                if command.startswith("xpnet "):
                    lines.append(command)
    return lines


@pytest.mark.slow  # every command line of the pages, iterations divided by 100
def test_the_pages_command_lines_run_one_after_another(tmp_path):
    import os

    # the xpnet command installed beside this Python
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, XPNET_SHORTEN="100", PATH=path)
    ran = 0
    for command in _command_lines():
        if any(needs in command for needs in _NEEDS):
            continue
        result = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
        ran += 1
    assert ran >= 15
    # the default --out never collided: one directory per run without --out
    assert (tmp_path / "runs" / "digits-2" / "history.json").is_file()
