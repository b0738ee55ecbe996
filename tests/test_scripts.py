"""Every script in scripts/ runs end to end (dry runs) on numpy and on
array-api-strict's non-default device, and writes what it promises."""

import importlib
import importlib.util
import json
import statistics
from pathlib import Path

import pytest
from matplotlib.image import imread

import xpnet

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# the scripts on array-api-strict's non-default device run in the slow tier
HOST_BACKENDS = [
    "numpy",
    pytest.param("array_api_strict:device1", marks=pytest.mark.slow),
]


@pytest.fixture(autouse=True)
def _scripts_on_path(monkeypatch):
    """As ``python scripts/NAME.py`` does: the scripts' folder (harness.py) on sys.path."""
    monkeypatch.syspath_prepend(str(SCRIPTS))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_bench_gradient(tmp_path, backend, capsys):
    out = tmp_path / "g.json"
    assert (
        _load("bench_gradient").main(["--dry-run", "--backends", backend, "--out", str(out)]) == 0
    )
    data = json.loads(out.read_text())
    assert {r["method"] for r in data["rows"]} == {
        "loop",
        "structured",
        "complex",
        "batched",
        "backprop",
    }
    assert data["machine"]["cpu"] and data["command"].startswith("python scripts/bench_gradient.py")
    assert "vs loop" in capsys.readouterr().out


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_bench_backends(tmp_path, backend):
    assert (
        _load("bench_backends").main(["--dry-run", "--backends", backend, "--out", str(tmp_path)])
        == 0
    )
    rows = json.loads((tmp_path / "backends.json").read_text())["rows"]
    measured = {r["method"] for r in rows if "median_s" in r}
    assert {"forward", "backprop", "structured", "complex", "batched", "loop"} <= measured
    assert "| method |" in (tmp_path / "backends.md").read_text()
    assert imread(tmp_path / "backends.png").shape[0] > 100


@pytest.mark.slow  # 28 s: the --quick sweep
def test_bench_backends_quick_skips_by_prediction(tmp_path):
    """--quick is what CPU users run: it must finish and record skips, not guesses."""
    module = _load("bench_backends")
    assert module.main(["--quick", "--backends", "numpy", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "backends.json").read_text())["rows"]
    assert {(r["hidden"], r["batch"]) for r in rows} == {(20, 50), (50, 50), (20, 100), (50, 100)}
    for r in rows:
        assert "median_s" in r or r.get("skipped", "").startswith("predicted")
    # both happen: the fast methods are measured, the loop/batched skipped by prediction
    assert any("median_s" in r for r in rows)
    assert any(r.get("skipped", "").startswith("predicted") for r in rows)


def test_cost_model_orders_methods():
    cost = _load("bench_backends").cost
    args = (784, 50, 10, 100, 39200)
    assert cost("forward", *args) < cost("structured", *args) < cost("batched", *args)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_bench_train(tmp_path, backend, capsys):
    assert (
        _load("bench_train").main(
            ["--dry-run", "--backends", backend, "--out", str(tmp_path), "--no-progress"]
        )
        == 0
    )
    data = json.loads((tmp_path / "train.json").read_text())
    (result,) = data["results"]
    assert result["iters"] == 20 and result["final_test_acc"] == result["test_acc"][-1]
    # an accuracy is a count of hits over the test set: a multiple of 1/N
    n_test = len(xpnet.load_digits()[1][1])
    assert abs(result["final_test_acc"] * n_test - round(result["final_test_acc"] * n_test)) < 1e-9
    assert list(tmp_path.glob("accuracy-*.png"))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_bench_accuracy(tmp_path, capsys, backend):
    out = tmp_path / "a.json"
    assert _load("bench_accuracy").main(["--dry-run", "--backend", backend, "--out", str(out)]) == 0
    rows = {(r["method"], r["dtype"], r["h"]): r for r in json.loads(out.read_text())["rows"]}
    assert max(rows[("complex", "float64", 1e-20)]["normwise"].values()) < 1e-12
    assert max(rows[("structured", "float64", 1e-4)]["normwise"].values()) < 1e-5
    assert "median coord" in capsys.readouterr().out


def test_gpu_suite_is_a_valid_bash_script():
    import subprocess

    script = SCRIPTS / "gpu_suite.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    for needed in ("pytest", "bench_gradient.py", "bench_backends.py", "bench_train.py"):
        assert needed in text


def test_bench_threads(tmp_path, capsys):
    out = tmp_path / "t.json"
    args = ["--dry-run", "--no-progress", "--threads", "2", "--out", str(out)]
    assert _load("bench_threads").main(args) == 0
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["rows"]] == [
        "xpnet, 1 thread",
        "xpnet, 2 threads",
        "xpnet, 2 cores (helper processes)",
        "xpnet, 2 cores, sample blocks",
        "2 processes at once",
        "2 processes one after another",
    ]
    assert all(r["median_s"] > 0 for r in data["rows"])
    assert {"switches", "cpu_s"} <= set(data["rows"][1]) & set(data["rows"][3])
    assert set(data["speedups"]) == {"threads", "helper_processes", "sample_blocks", "processes"}
    assert all(v > 0 for v in data["speedups"].values())
    (granularity,) = data["granularity"]  # one operation size in a dry run
    assert granularity["elements"] == 10_000 and granularity["op_us"] > 0
    assert granularity["threads"] > 0 and granularity["processes"] > 0
    assert data["hand_off_us"] > 0
    kinds = data["kinds"]  # the ceiling's kernel beside streaming ones
    assert [k["kind"] for k in kinds] == ["exp", "stream", "stream"]
    assert all(k["processes"] == statistics.median(k["runs"]) > 0 for k in kinds)
    printed = capsys.readouterr().out
    assert "speed-up:" in printed and "(in sample blocks" in printed
    assert "paired by round: the default" in printed and "of 1 rounds" in printed
    assert data["paired"]["median"] > 0 and data["paired"]["faster"] in (0, 1)
    assert "granularity: ops of  10,000 elements" in printed
    assert "hand-off: one thread wakes another" in printed
    assert "kinds: multiply and add, 512 KiB" in printed
    assert _load("bench_threads").main(["--net", "no such net", "--out", str(out)]) == 2


def test_bench_malloc(tmp_path, capsys):
    """Each setting is timed in fresh processes (the settings cannot be undone)."""
    out = tmp_path / "m.json"
    args = ["--dry-run", "--no-progress", "--nets", "784-50-10 sigmoid (book)", "--out", str(out)]
    assert _load("bench_malloc").main(args) == 0
    data = json.loads(out.read_text())
    assert [r["malloc"] for r in data["rows"]] == [
        "tuned (xpnet's default)",
        "glibc's own (XPNET_TUNE_MALLOC=0)",
    ]
    assert data["data"]  # the parent's batch, sent to each timing process as a file
    assert all(r["median_s"] > 0 and len(r["per_round_s"]) == 1 for r in data["rows"])
    assert data["rows"][0]["vs_tuned"] == 1.0
    assert data["command"].startswith("python scripts/bench_malloc.py")
    assert "vs tuned" in capsys.readouterr().out
    assert _load("bench_malloc").main(["--nets", "no such net", "--out", str(out)]) == 2


def test_bench_depth(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert _load("bench_depth").main(["--dry-run", "--no-progress", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    nets = {r["net"] for r in data["rows"]}
    assert len(nets) == 4
    threads = data["threads"]
    for net in nets:
        methods = {r["method"] for r in data["rows"] if r["net"] == net}
        assert {
            "book loop (plain NumPy, 1 BLAS thread)",
            "structured, 1 thread",
            f"structured, {threads} cores (helper processes)",
            f"structured, {threads} threads",
            f"complex, {threads} cores",
            "backprop",
            f"helper processes speed-up ({threads} vs 1)",
            f"threads speed-up ({threads} vs 1)",
        } == methods
    assert all(r["vs_loop"] > 0 for r in data["rows"] if "vs_loop" in r)
    assert all(0 < c["processes"] for per_net in data["ceilings"].values() for c in per_net)
    out = capsys.readouterr().out
    assert "BLAS threads" in out and "parallel ceiling" in out and data["machine"]["blas_threads"]


def test_regression_demo(tmp_path, capsys):
    args = ["--steps", "60", "--ranges", "1,10", "--no-progress", "--out", str(tmp_path)]
    assert _load("regression_demo").main(args) == 0
    summary = json.loads((tmp_path / "regression.json").read_text())
    assert set(summary["test_loss"]) == {"1", "10"}
    assert all(v > 0 for v in summary["test_loss"].values())
    assert imread(tmp_path / "regression-loss.png").shape[0] > 100
    assert "test loss" in capsys.readouterr().out


@pytest.mark.slow  # two child processes importing xpnet
def test_bench_before_after_against_this_checkout(tmp_path, capsys):
    """Both sides may be the same code: the script's mechanics are what is tested."""
    out = tmp_path / "ab.json"
    root = str(SCRIPTS.parent)
    args = ["--baseline-src", root, "--rounds", "1", "--repeats", "1", "--out", str(out)]
    args += ["--nets", "784-50-10 sigmoid (book)"]
    assert _load("bench_before_after").main(args) == 0
    rows = {r["side"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"before", "now"} and all(r["n"] == 1 for r in rows.values())
    assert _load("bench_before_after").main(["--baseline-src", str(tmp_path)]) == 2


@pytest.mark.slow  # two kept child processes importing xpnet
def test_bench_before_after_paired_takes_turns(tmp_path):
    """``--paired``: each side times the asked count of gradients per round, one
    at a time, in new children each round; the pairs' differences are reported
    per net."""
    out = tmp_path / "pairs.json"
    args = ["--baseline-src", str(SCRIPTS.parent), "--paired", "2", "--rounds", "2"]
    args += ["--out", str(out)]
    args += ["--nets", "784-50-10 sigmoid (book),784-100-100-10 relu"]
    assert _load("bench_before_after").main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    sides = [r for r in rows if r["side"] in ("before", "now")]
    assert len(sides) == 4 and all(r["n"] == 4 and r["min_s"] > 0 for r in sides)
    pairs = {r["net"]: r for r in rows if r["side"] == "now - before (paired)"}
    assert set(pairs) == {"784-50-10 sigmoid (book)", "784-100-100-10 relu"}
    for net, row in pairs.items():
        now, before = (
            next(r for r in sides if r["net"] == net and r["side"] == s) for s in ("now", "before")
        )
        assert row["n"] == 4 and 0 <= row["now_faster"] <= 1
        assert (
            now["min_s"] - before["max_s"] <= row["median_diff_s"] <= now["max_s"] - before["min_s"]
        )


def test_machine_info():
    info = _load("harness").machine_info([("numpy", None)])
    assert info["cpu"] and info["cpu_count"] >= 1 and "numpy" in info["versions"]
    assert info["devices"] == {"numpy:default": "cpu"}


def test_parallel_ceiling():
    # imported (not _load-ed): its pool's workers find the kernel by module name
    harness = importlib.import_module("harness")
    one = harness.parallel_ceiling(1, repeats=2, elements=1_000)
    assert one["processes"] == one["threads"] == 1.0 and one["op_us"] > 0
    for _ in range(2):  # the second call runs in the kept workers
        two = harness.parallel_ceiling(2, repeats=3, elements=10_000, pairs=3)
        assert two["n"] == 2 and two["op_us"] > 0
        for kind in ("processes", "threads"):
            pairs = two[f"{kind}_pairs"]
            # throughputs, not bounded above: a hiccup of the lone run inflates one
            assert len(pairs) == 3 and all(0 < r < float("inf") for r in pairs)
            assert two[kind] == statistics.median(pairs)
    streaming = harness.parallel_ceiling(2, repeats=3, elements=10_000, pairs=3, kind="stream")
    assert streaming["processes"] > 0 and streaming["op_us"] > 0
    with pytest.raises(ValueError, match="kind must be one of"):
        harness.parallel_ceiling(2, kind="copy")


def test_share_of_ceiling_is_the_median_round_and_none_beyond_the_ceilings_spread():
    share_of_ceiling = _load("harness").share_of_ceiling
    # speed-ups 2.0, 1.5, 1.6, 1.2, 1.9 against ceilings 1.6, 2.0, 2.0, 2.0, 2.0
    one, many = [4.0, 3.0, 3.2, 2.4, 3.8], [2.0] * 5
    got = share_of_ceiling(one, many, [1.6, 2.0, 2.0, 2.0, 2.0])
    assert got["per_round"] == pytest.approx([1.25, 0.75, 0.8, 0.6, 0.95])
    assert got["share"] == pytest.approx(0.8)  # the median: one round above 1 moves it little
    assert got["rounds_above_ceiling"] == 1
    assert share_of_ceiling([2.0], [1.0], [2.0])["share"] == 1.0  # at the ceiling: kept
    # the ceiling's kernel below the gradient's speed-up in most rounds: not measured
    failed = share_of_ceiling([3.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.9, 1.1, 1.8])
    assert failed["share"] is None and failed["rounds_above_ceiling"] == 2
    # a speed-up at the ceiling reads above 1 within the ceiling's own spread: kept
    pairs = [1.6, 1.7, 1.8, 1.8, 1.9, 2.0]  # quartiles 1.675 and 1.925 (median 1.8)
    close = share_of_ceiling([1.85] * 3, [1.0] * 3, [1.8] * 3, pairs)
    assert close["ceiling_spread"] == pytest.approx(0.125 / 1.8)
    assert close["share"] == pytest.approx(1.85 / 1.8)
    # ... and beyond that spread it is not
    assert share_of_ceiling([2.0] * 3, [1.0] * 3, [1.8] * 3, pairs)["share"] is None
    with pytest.raises(ValueError):
        share_of_ceiling([1.0, 2.0], [1.0], [1.0, 1.0])


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_available_backends_includes_host(name):
    assert (name, None) in _load("harness").available_backends(("numpy", "array_api_strict"))


@pytest.mark.slow  # starts two local clusters
def test_bench_dask(tmp_path, capsys):
    out = tmp_path / "dask.json"
    assert _load("bench_dask").main(["--dry-run", "--out", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert set(data["full_batch"]) == {"this process", "1 worker", "2 workers"}
    assert data["worst_relative_difference"] < 1e-9
    assert data["sweep"]["same_val_acc"] is True
    assert "per task" in capsys.readouterr().out
