"""The hyperparameter sweep: draws, validation split, records, resume, the CLI.

The default tier runs sweeps on an in-process cluster (no socket); the slow
tier runs ``xpnet sweep --workers 2`` end to end with worker processes on
127.0.0.1.
"""

import json
import sys

import numpy as np
import pytest
from matplotlib.image import imread

import xpnet
from xpnet.cli import main
from xpnet.rundir import RunDirectoryError
from xpnet.sweep import SWEEP_JSON, SWEEP_PNG, SweepConfig, sweep, trial_values
from xpnet.train import TrainConfig

distributed = pytest.importorskip("distributed")


@pytest.fixture
def client(inproc_client):
    return inproc_client


def _small(trials=3, **train):
    """A sweep that takes a second: 64-8-10 on 100 digits, 2 epochs."""
    settings = {"grad": "backprop", "hidden": 8, "epochs": 2, "seed": 0, **train}
    return SweepConfig(train=TrainConfig(**settings), trials=trials, train_size=100)


def test_trial_values_are_log_uniform_and_do_not_depend_on_the_trial_count():
    config = SweepConfig().checked()
    draws = np.array([trial_values(config, i) for i in range(2000)])
    lr, decay = np.log10(draws[:, 0]), np.log10(draws[:, 1])
    assert lr.min() >= -6 and lr.max() <= -2 and decay.min() >= -8 and decay.max() <= -4
    # log-uniform: each decade holds about a quarter of the draws (binomial sd ~1%)
    counts = np.histogram(lr, bins=[-6, -5, -4, -3, -2])[0] / len(lr)
    assert np.all(np.abs(counts - 0.25) < 0.05), counts
    more = SweepConfig(trials=50).checked()
    assert trial_values(more, 7) == trial_values(config, 7)
    other_seed = SweepConfig(train=TrainConfig(seed=1)).checked()
    assert trial_values(other_seed, 7) != trial_values(config, 7)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trials": 0}, "trials must be a positive int"),
        ({"lr_range": (1e-2, 1e-6)}, "lr_range must satisfy 0 < low <= high"),
        ({"weight_decay_range": (0, 1e-4)}, "weight_decay_range must satisfy"),
        ({"lr_range": "fast"}, "lr_range must be two numbers"),
        ({"validation": 1.0}, r"validation must be a share in \(0, 1\)"),
        ({"train_size": 1}, "train_size must be an int >= 2"),
        ({"train": TrainConfig(output="identity")}, "no accuracy to score trials by"),
    ],
)
def test_bad_settings_are_one_clear_error(changes, message):
    from dataclasses import replace

    with pytest.raises(ValueError, match=message):
        sweep(replace(SweepConfig(), **changes))


def test_a_sweep_scores_on_a_validation_split_and_never_reads_the_test_set(
    client, monkeypatch, tmp_path
):
    (x, t), _ = xpnet.load_digits()
    poisoned = (np.full((5, 3), np.nan), np.zeros(5))  # any use of the test set fails

    module = sys.modules["xpnet.sweep"]  # (xpnet.sweep is the function)
    monkeypatch.setattr(module, "load_dataset", lambda name, path=None: ((x, t), poisoned))
    result = sweep(_small(), client=client, out=tmp_path, log=None, progress=False)
    trials = result["trials"]
    assert [r["trial"] for r in trials] == [0, 1, 2]
    for r in trials:
        assert (r["lr"], r["weight_decay"]) == trial_values(_small().checked(), r["trial"])
        # accuracies are counts of hits: multiples of 1 / (samples scored)
        n_val = round(_small().checked().validation * _small().checked().train_size)
        assert abs(r["val_acc"] * n_val - round(r["val_acc"] * n_val)) < 1e-9
        assert r["train_acc"] == r["train_acc_curve"][-1] and r["loss"] > 0
        assert len(r["val_acc_curve"]) == 2 and r["val_acc_curve"][-1] == r["val_acc"]
        assert r["seconds"] > 0 and r["worker"].startswith("inproc://")
        assert r["diverged"] is None
    written = json.loads((tmp_path / SWEEP_JSON).read_text())
    assert written["trials"] == json.loads(json.dumps(trials))
    assert written["settings"]["validation"] == 0.2
    assert imread(tmp_path / SWEEP_PNG).shape[2] in (3, 4)


def test_the_validation_split_is_a_held_out_part_of_the_training_set():
    from xpnet.sweep import _split

    config = _small().checked()
    (train_x, train_t), (val_x, val_t) = _split(config)
    assert len(val_t) == 20 and len(train_t) == 80  # 0.2 of the first 100 samples
    (x, _), _ = xpnet.load_digits()
    first = sorted(row.tobytes() for row in x[:100])
    assert len(set(first)) == 100  # no duplicate images: rows identify samples
    # a partition of the first 100 training samples: nothing lost, nothing shared
    assert sorted(r.tobytes() for r in np.concatenate([train_x, val_x])) == first
    assert not {r.tobytes() for r in train_x} & {r.tobytes() for r in val_x}


def test_resume_runs_only_the_missing_trials_and_keeps_the_finished_ones(client, tmp_path):
    first = sweep(_small(trials=2), client=client, out=tmp_path, log=None, progress=False)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        sweep(_small(trials=2), client=client, out=tmp_path, log=None, progress=False)
    more = sweep(
        _small(trials=4), client=client, out=tmp_path, resume=True, log=None, progress=False
    )
    assert [r["trial"] for r in more["trials"]] == [0, 1, 2, 3]
    # the finished trials were read back, not run again (their timings are kept)
    assert more["trials"][:2] == json.loads(json.dumps(first["trials"]))
    with pytest.raises(RunDirectoryError, match="other settings .*train"):
        sweep(
            _small(trials=4, hidden=9),
            client=client,
            out=tmp_path,
            resume=True,
            log=None,
            progress=False,
        )
    with pytest.raises(RunDirectoryError, match="holds no sweep.json"):
        sweep(_small(), client=client, out=tmp_path / "new", resume=True, log=None)


@pytest.mark.parametrize("threads, expected", [(None, 1), (2, 2)])
def test_a_trial_uses_one_core_unless_told(client, monkeypatch, threads, expected):
    """Trials run side by side on the workers: each on one core by default (all
    cores each would start helper processes in every worker)."""
    module = sys.modules["xpnet.sweep"]  # the package's name `sweep` is the function
    seen = []

    def recording(config, **kwargs):
        seen.append(config.threads)
        return train(config, **kwargs)

    train = module.train
    monkeypatch.setattr(module, "train", recording)
    sweep(_small(trials=2, threads=threads), client=client, log=None, progress=False)
    assert seen == [expected, expected]


def test_a_diverged_trial_is_a_record_not_an_error(client):
    config = _small(trials=2, lr=None)
    config.lr_range = (1e4, 1e5)  # far too large: the loss overflows
    result = sweep(config, client=client, log=None, progress=False)
    assert all(r["diverged"] and r["val_acc"] is None for r in result["trials"])


def test_cli_sweep_errors_are_one_line(tmp_path, capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "0.2s"}):
        assert main(["sweep", "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach a Dask scheduler" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--lr-range", "1e-2,1e-6"])
    assert exit_info.value.code == 2
    assert "argument --lr-range: must satisfy 0 < low <= high" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_sweep_with_two_worker_processes_end_to_end_and_resumed(tmp_path, capsys):
    args = ["sweep", "--trials", "4", "--workers", "2", "--hidden", "8", "--epochs", "3"]
    args += ["--train-size", "200", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best: trial" in out and "local cluster of 2 workers on 127.0.0.1" in out
    record = json.loads((tmp_path / SWEEP_JSON).read_text())
    assert [r["trial"] for r in record["trials"]] == [0, 1, 2, 3]
    workers = {r["worker"] for r in record["trials"]}
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
    assert (tmp_path / SWEEP_PNG).stat().st_size > 0
    assert main(args) == 2  # a second sweep into the same directory is refused
    assert "already holds a run" in capsys.readouterr().err
    resumed = [*args[:2], "6", *args[3:], "--resume"]
    assert main(resumed) == 0
    again = json.loads((tmp_path / SWEEP_JSON).read_text())
    assert [r["trial"] for r in again["trials"]] == list(range(6))
    assert again["trials"][:4] == record["trials"]


@pytest.mark.parametrize(
    "backend, has_dask_cuda, cuda",
    [
        ("numpy", True, False),
        ("cupy", False, False),
        ("cupy", True, True),
    ],
)
def test_local_cluster_kind_follows_the_backend_and_dask_cuda(
    monkeypatch, backend, has_dask_cuda, cuda
):
    """--workers starts dask-cuda's LocalCUDACluster (one worker per GPU) for the
    cupy backend when dask-cuda is installed, a LocalCluster otherwise (the GPU
    path itself needs a GPU; here only the choice is checked)."""
    import importlib.util

    module = sys.modules["xpnet.sweep"]
    calls = []

    class Stop(Exception):
        pass

    def fake_connect(scheduler, *, workers, cuda):
        calls.append((scheduler, workers, cuda))
        raise Stop

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(module, "connect", fake_connect)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if has_dask_cuda else None)
            if name == "dask_cuda"
            else real_find_spec(name, *a)
        ),
    )
    config = _small(backend=backend)
    # validation resolves the backend first: skip it (no GPU here), keep the choice
    monkeypatch.setattr(TrainConfig, "resolved", lambda self, n: self)
    with pytest.raises(Stop):
        sweep(config, workers=3, log=None, progress=False)
    with pytest.raises(Stop):  # the default: 2 local workers, or one per GPU
        sweep(config, log=None, progress=False)
    assert calls == [(None, 3, cuda), (None, None if cuda else 2, cuda)]


def test_an_interrupted_sweep_keeps_its_finished_trials_and_says_how_to_resume(
    client, tmp_path, monkeypatch
):
    module = sys.modules["xpnet.sweep"]
    real = module.save_json
    saved = []

    def save_then_interrupt(path, record):
        real(path, record)
        saved.append(len(record["trials"]))
        if len(saved) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_json", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match=r"1 of 3 trials finished; --resume continues"):
        sweep(_small(), client=client, out=tmp_path, log=None, progress=False)
    monkeypatch.setattr(module, "save_json", real)
    kept = json.loads((tmp_path / SWEEP_JSON).read_text())["trials"]
    assert len(kept) == 1
    resumed = sweep(_small(), client=client, out=tmp_path, resume=True, log=None, progress=False)
    assert [r["trial"] for r in resumed["trials"]] == [0, 1, 2]
    assert resumed["trials"][kept[0]["trial"]] == kept[0]


@pytest.mark.parametrize(
    "trials, words",
    [
        ("not a list", "'trials' must be a list"),
        (["a string"], "trial record 0 is not a record"),
        ([{"lr": 0.1}], "'trial' must be int"),
        ([{"trial": 0, "lr": 0.1, "weight_decay": 1e-6, "seconds": 1.0, "worker": "w",
           "val_acc_curve": [], "train_acc_curve": [], "diverged": None}], "'val_acc' must be"),
        ([{"trial": 99, "lr": 0.1, "weight_decay": 1e-6, "seconds": 1.0, "worker": "w",
           "val_acc_curve": [], "train_acc_curve": [], "val_acc": 0.5, "diverged": None}],
         "out of range"),
    ],
)  # fmt: skip
def test_a_damaged_sweep_record_is_refused_before_any_work(tmp_path, trials, words):
    config = _small().checked()
    (tmp_path / SWEEP_JSON).write_text(
        json.dumps({"format": 1, "settings": config.record(), "trials": trials})
    )
    with pytest.raises(RunDirectoryError, match=words):
        sweep(_small(), client=object(), out=tmp_path, resume=True, log=None, progress=False)


def test_more_workers_than_the_machine_can_hold_are_refused():
    import os

    too_many = 4 * (os.cpu_count() or 1) + 1
    with pytest.raises(ValueError, match=f"workers={too_many}: this machine has"):
        sweep(_small(), workers=too_many, log=None, progress=False)


def test_missing_data_is_reported_before_a_cluster_starts(tmp_path, monkeypatch):
    import xpnet.cluster

    monkeypatch.setattr(
        sys.modules["xpnet.sweep"], "connect", lambda *a, **k: pytest.fail("a cluster started")
    )
    config = _small()
    config.train.dataset, config.train.data_dir = "fashion-mnist", str(tmp_path / "empty")
    with pytest.raises(xpnet.datasets.DataNotFoundError):
        sweep(config, workers=1, log=None, progress=False)
    assert xpnet.cluster  # the module stays importable without a cluster
