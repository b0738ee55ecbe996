import json
import subprocess
import sys

import pytest
from matplotlib.image import imread

from xpnet.cli import main, parse_args


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("--dataset", "(default: digits)", "--batch-size", "(default: 100)", "--resume"):
        assert text in out


def test_dry_run_prints_configuration_and_writes_nothing(tmp_path, capsys):
    assert main(["train", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "dataset         digits" in out and "lr              0.5" in out
    assert "iters           1000" in out and "dry run" in out
    assert not (tmp_path / "o").exists()


def test_short_real_run_writes_all_outputs(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(
        ["train", "--iters", "30", "--hidden", "20", "--out", str(out_dir), "--no-progress"]
    )
    assert code == 0
    out = capsys.readouterr().out
    # 1438 training digits, batch 100: an epoch is 15 iterations
    assert (
        "epoch 1, train acc" in out and "epoch 2, train acc" in out and "done: 30 iterations" in out
    )
    history = json.loads((out_dir / "history.json").read_text())
    assert len(history["loss"]) == 30 and len(history["train_acc"]) == 2
    assert history["config"]["dataset"] == "digits" and history["config"]["grad"] == "numerical"
    for png in ("accuracy.png", "loss.png"):
        image = imread(out_dir / png)
        assert image.shape[0] > 100 and image.shape[1] > 100
    import xpnet

    net = xpnet.TwoLayerNet.load(out_dir / "params.npz")
    assert net.hidden_size == 20


def test_resume_via_cli(tmp_path, capsys):
    args = ["train", "--iters", "30", "--hidden", "8", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    first = json.loads((tmp_path / "history.json").read_text())
    assert main(args[:2] + ["60"] + args[3:] + ["--resume"]) == 0
    resumed = json.loads((tmp_path / "history.json").read_text())
    assert resumed["loss"][:30] == first["loss"] and len(resumed["loss"]) == 60


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--backend", "tensorflow", "--dry-run"], "backend='tensorflow' is not known"),
        (
            ["train", "--dataset", "mnist", "--data-dir", "/nonexistent", "--dry-run"],
            "/nonexistent",
        ),
        (["train", "--data-dir", "/tmp", "--dry-run"], "embedded"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XPNET_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("xpnet.datasets.MNIST_MIRROR", "http://127.0.0.1:9/")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("xpnet: error:") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "flag", [["--lr", "-1"], ["--iters", "0"], ["--dataset", "cifar"], ["--lr", "x"]]
)
def test_bad_flag_values_exit_2(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *flag])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_gradcheck_command(capsys):
    assert main(["gradcheck", "--hidden", "10", "--batch-size", "20"]) == 0
    out = capsys.readouterr().out
    assert "W1" in out and "PASSED" in out


def test_bench_command(capsys):
    code = main(
        [
            "bench",
            "--input",
            "16",
            "--hidden",
            "6",
            "--batch-size",
            "8",
            "--repeats",
            "2",
            "--loop-sample",
            "6",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for method in ("loop", "structured", "complex", "backprop"):
        assert f"{method}: " in out  # progress, one line as each method ends
    assert "batched is off on the CPU" in out and "batched     " not in out
    assert "BLAS threads: " in out and "load average" in out
    assert " ms " in out or " s " in out


def test_bench_methods_flag(capsys):
    args = ["bench", "--input", "16", "--hidden", "6", "--batch-size", "8", "--repeats", "1"]
    args += ["--loop-sample", "6", "--methods", "batched,structured"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "batched: " in out and "complex: " not in out
    assert main(args[:-1] + ["fast"]) == 2
    assert "--methods: unknown ['fast']" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "xpnet.cli", "train", "--dry-run", "--out", "/tmp/x-none"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stdout


def test_deep_network_with_decay_and_he_init_trains_and_saves(tmp_path, capsys):
    out_dir = tmp_path / "deep"
    args = ["train", "--iters", "15", "--hidden", "12,8", "--activation", "relu"]
    args += ["--init", "he", "--weight-decay", "0.01", "--out", str(out_dir), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "hidden          [12, 8]" in out and "epoch 1, train acc" in out
    import xpnet

    net = xpnet.MultiLayerNet.load(out_dir / "params.npz")
    assert net.sizes == (64, 12, 8, 10) and net.weight_decay_lambda == 0.01
    history = json.loads((out_dir / "history.json").read_text())
    assert history["config"]["weight_init_std"] == "he"


def test_regression_head_on_the_command_line_reports_loss(tmp_path, capsys):
    out_dir = tmp_path / "reg"
    args = ["train", "--iters", "15", "--hidden", "10", "--output", "identity"]
    args += ["--grad", "backprop", "--out", str(out_dir), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1, train loss" in out and "final train loss" in out
    assert (out_dir / "loss.png").is_file() and not (out_dir / "accuracy.png").exists()


def test_gradcheck_with_directions_and_a_deep_net(capsys):
    args = ["gradcheck", "--hidden", "10,6", "--batch-size", "10"]
    assert main(args + ["--directions", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 directions" in out and "W3" in out and "PASSED" in out


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--hidden", "10,0", "argument --hidden: item 1 must be a positive int, got 0"),
        ("--hidden", "a", "must be positive ints separated by commas (e.g. 100,100)"),
        ("--weight-decay", "-1", "argument --weight-decay: must be a finite float >= 0"),
        ("--weight-decay", "inf", "must be a finite float >= 0, got inf"),
        ("--init", "kaiming", "'kaiming' is not known; expected a float >= 0 or one of"),
        ("--output", "tanh", "invalid choice"),
    ],
)
def test_bad_network_flags_exit_2_with_one_line(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dry-run", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and flag in err and "Traceback" not in err


# ---- trustworthy runs: every fault is one line, nothing is lost -----------------
def _err_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def _quick(out, *extra):
    # batch 20: the CLI's behaviour is under test, not the gradient of 100 samples
    return [
        "train",
        "--iters",
        "15",
        "--hidden",
        "8",
        "--batch-size",
        "20",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_a_diverging_run_fails_with_a_sensible_hint(tmp_path, capsys):
    assert main(_quick(tmp_path / "d", "--lr", "1e6", "--iters", "60")) == 2
    err = _err_line(capsys)
    assert "diverged" in err and "--lr 100000" in err and "inf" not in err


def test_lr_inf_is_refused_up_front(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_quick(tmp_path / "i", "--lr", "inf"))
    assert exc.value.code == 2
    assert "argument --lr: must be a positive finite float, got inf" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_a_new_run_does_not_replace_an_earlier_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_quick(out)) == 0
    before = (out / "history.json").read_bytes()
    capsys.readouterr()
    assert main(_quick(out, "--seed", "1")) == 2
    err = _err_line(capsys)
    assert "already holds a run" in err and "--resume" in err and "--force" in err
    assert (out / "history.json").read_bytes() == before
    assert main(_quick(out, "--seed", "1", "--force")) == 0
    assert "replacing the earlier run" in capsys.readouterr().out
    assert (out / "history.json").read_bytes() != before
    assert not (out / ".xpnet.lock").exists()


def test_a_directory_locked_by_a_live_run_is_refused_and_freed_when_it_dies(tmp_path, capsys):
    out = tmp_path / "locked"
    hold = (
        "import sys, time\nfrom xpnet.rundir import RunDirectory\n"
        "with RunDirectory(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_quick(out)) == 2
        assert f"another xpnet run (pid {holder.pid})" in _err_line(capsys)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert main(_quick(out)) == 0  # its process is gone, and the kernel freed its lock
    assert not (out / ".xpnet.lock").exists()


def test_resume_says_what_it_does_and_refuses_what_it_cannot(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(_quick(out, "--resume")) == 2
    assert "no checkpoint.npz" in _err_line(capsys)
    assert main(_quick(out)) == 0
    capsys.readouterr()
    assert main(_quick(out, "--resume")) == 2
    assert "already has 15 iterations; give --iters" in _err_line(capsys)
    assert main(_quick(out, "--resume", "--iters", "30")) == 0
    assert "resuming from iteration 15 of 30" in capsys.readouterr().out


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import xpnet.optimizers

    calls = {"n": 0}
    real = xpnet.optimizers.SGD.update

    def interrupted(self, params, grads):
        calls["n"] += 1
        if calls["n"] == 20:  # after the first epoch's checkpoint (15 iterations)
            raise KeyboardInterrupt
        return real(self, params, grads)

    monkeypatch.setattr(xpnet.optimizers.SGD, "update", interrupted)
    # batch 100: epochs of 15 iterations, a checkpoint before the interruption
    assert main(_quick(tmp_path / "c", "--iters", "40", "--batch-size", "100")) == 130
    err = capsys.readouterr().err
    assert "xpnet: interrupted: at iteration 19" in err
    assert "iteration 15" in err and "--resume" in err
    assert not (tmp_path / "c" / ".xpnet.lock").exists()


@pytest.mark.parametrize("case", ["file", "under-file"])
def test_an_out_that_is_not_a_directory_fails_before_training(tmp_path, capsys, case):
    target = tmp_path / "f"
    target.write_text("mine")
    out = target if case == "file" else target / "sub"
    assert main(_quick(out)) == 2
    err = _err_line(capsys)
    assert str(out) in err
    assert target.read_text() == "mine"


def test_an_unwritable_out_fails_before_training(tmp_path, capsys, monkeypatch):
    import os

    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".xpnet.lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    assert main(_quick(tmp_path / "ro")) == 2
    assert "is not writable (Permission denied)" in _err_line(capsys)


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import xpnet.io

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(xpnet.io, "atomic_write_bytes", full)
    assert main(_quick(tmp_path / "full")) == 2
    assert "No space left on device" in _err_line(capsys)


def test_outputs_never_follow_links_out_of_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_quick(out)) == 0
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"mine")
    (out / "accuracy.png").unlink()
    (out / "accuracy.png").symlink_to(outside)
    stale = out / ".loss.png.0123.xpnet-tmp"
    stale.write_bytes(b"half")
    assert main(_quick(out, "--resume", "--iters", "30")) == 0
    assert outside.read_bytes() == b"mine"
    assert not (out / "accuracy.png").is_symlink() and not stale.exists()


def test_version_and_help_texts(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    import xpnet

    assert capsys.readouterr().out.strip() == f"xpnet {xpnet.__version__}"
    with pytest.raises(SystemExit):
        parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "minibatches (default: 0)" in out and "ignored by --grad backprop" in out
    with pytest.raises(SystemExit):
        parse_args(["bench", "--help"])
    assert "jax" in capsys.readouterr().out


def test_gradcheck_says_how_many_samples(capsys):
    assert main(["gradcheck", "--hidden", "6", "--batch-size", "12", "--directions", "2"]) == 0
    assert "on the first 12 samples" in capsys.readouterr().out


def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "dmg"
    assert main(_quick(out)) == 0
    (out / "checkpoint.npz").write_bytes(b"not a zip")
    capsys.readouterr()
    assert main(_quick(out, "--resume", "--iters", "30")) == 2
    err = _err_line(capsys)
    assert "checkpoint.npz is not an xpnet file or is damaged" in err and "pickle" not in err


def test_a_params_file_with_sizes_of_the_wrong_length_is_refused(tmp_path):
    import numpy as np

    import xpnet

    path = tmp_path / "p.npz"
    np.savez(path, sizes=np.array([4]), activation=np.asarray("relu"), W1=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'sizes' must be 2 or more integer layer sizes"):
        xpnet.MultiLayerNet.load(path)
    np.savez(path, sizes=np.array([4, 2]), activation=np.asarray("relu"), W1=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="missing 'b1'"):
        xpnet.MultiLayerNet.load(path)
    np.savez(
        path,
        sizes=np.array([4, 3, 2, 2]),
        activation=np.asarray("relu"),
        W1=np.zeros((4, 3)),
        b1=np.zeros(3),
        W2=np.zeros((3, 2)),
        b2=np.zeros(2),
    )
    with pytest.raises(ValueError, match="missing 'W3'"):
        xpnet.MultiLayerNet.load(path)


def test_train_and_gradcheck_flags_are_generated_from_train_config():
    """Every TrainConfig field has its flag (xpnet.cli.FLAGS), an option of the
    commands it names, and the flags' defaults give TrainConfig's defaults."""
    from dataclasses import fields

    from xpnet.cli import FLAGS, parse_args
    from xpnet.commands import _config
    from xpnet.config import TrainConfig

    assert set(FLAGS) == {f.name for f in fields(TrainConfig)}
    for command in ("train", "gradcheck"):
        args = parse_args([command])
        offered = {f.name for f in fields(TrainConfig) if command in FLAGS[f.name]["commands"]}
        assert offered <= set(vars(args))
        config = _config(args)
        for f in fields(TrainConfig):
            assert getattr(config, f.name) == f.default, (command, f.name)
    assert not {"grad", "optimizer", "lr", "iters", "epochs"} & set(vars(parse_args(["gradcheck"])))
    sweep = parse_args(["sweep"])
    assert {"lr", "weight_decay"}.isdisjoint(vars(sweep))  # what a sweep draws is no flag
    swept = _config(sweep)
    from xpnet.sweep import BOOK_SEARCH

    for f in fields(TrainConfig):  # the book's search, else TrainConfig's defaults
        if f.name not in ("lr", "weight_decay"):
            assert getattr(swept, f.name) == BOOK_SEARCH.get(f.name, f.default), f.name
    config = _config(parse_args(["train", "--init", "he", "--eval-batch", "7", "--hidden", "4,3"]))
    assert (config.weight_init_std, config.eval_batch, config.hidden) == ("he", 7, [4, 3])


def test_the_default_out_never_collides_and_errors_come_before_any_directory(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    quick = ["train", "--iters", "3", "--hidden", "5", "--no-progress"]
    assert main(quick) == 0
    assert main(quick) == 0
    assert (tmp_path / "runs" / "digits" / "history.json").is_file()
    assert (tmp_path / "runs" / "digits-2" / "history.json").is_file()
    assert "runs/digits-2" in capsys.readouterr().out
    # a backend that is not installed: one line, and no directory made for it
    assert main([*quick, "--backend", "jax_not_a_backend", "--out", "runs/bad"]) == 2
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "diverges"
    assert main(["train", "--iters", "30", "--lr", "1e9", "--out", str(out), "--no-progress"]) == 2
    assert "diverged" in _err_line(capsys)
    assert not out.exists()


def test_a_bad_flag_is_one_line_pointing_at_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--hidden", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "xpnet train: error: argument --hidden: item 0 must be a positive int, got 0 "
        "(see xpnet train --help)"
    ]


# every size needs over 10 TiB: beyond any one machine (a gradcheck of 10^8 hidden
# units, 112 GiB, was allocated on a 128 GiB GPU host and its worker killed)
@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--hidden", "1000000000"], "--hidden, --batch-size and --eval-batch"),
        (["train", "--batch-size", "10000000000"], "--hidden, --batch-size and --eval-batch"),
        (["gradcheck", "--hidden", "10000000000"], "the layer sizes"),
        (["gradcheck", "--directions", "1000000000"], "directions"),
        (["bench", "--input", "100000000000"], "the layer sizes"),
        (["sweep", "--hidden", "1000000000", "--workers", "1"], "--hidden, --batch-size"),
    ],
)
def test_sizes_beyond_the_machine_are_refused_before_allocation(tmp_path, args, words, capsys):
    out = ["--out", str(tmp_path / "o")] if args[0] in ("train", "sweep") else []
    assert main([*args, *out]) == 2
    err = _err_line(capsys)
    assert words in err and "GiB needed" in err
    assert not (tmp_path / "o").exists()
