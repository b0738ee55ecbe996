"""Checkpoints are validated as a whole before anything of them is used: every
damaged one is one error naming the file and the field (through the API and
the real command line)."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpnet.cli import main
from xpnet.io import DamagedFileError, load_npz, save_npz
from xpnet.train import CHECKPOINT, TrainConfig, train

QUICK = dict(dataset="digits", iters=20, hidden=6, optimizer="adam", lr=0.01, seed=0)


@pytest.fixture
def run_dir(tmp_path):
    train(TrainConfig(**QUICK), out=tmp_path, log=None, progress=False)
    return tmp_path


def _rewrite(path, change):
    arrays = load_npz(path)
    meta = json.loads(str(arrays["meta"]))
    change(arrays, meta)
    arrays["meta"] = np.asarray(json.dumps(meta))
    save_npz(path, arrays)


def _history(**fields):
    return lambda arrays, meta: meta["history"].update(fields)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a, m: a.update({"extra": np.zeros(3)}), "'extra' is not a member"),
        (lambda a, m: a.pop("param/W2"), "'param/W2' is missing"),
        (lambda a, m: a.update({"param/W1": np.zeros((3, 3))}), "param/W1 has shape"),
        (lambda a, m: a.update({"param/b1": np.zeros(1)}), "param/b1 has shape"),
        (lambda a, m: a.update({"opt/m/W1": np.zeros(3)}), "opt/m/W1 has shape"),
        (lambda a, m: a.update({"param/W1": np.full_like(a["param/W1"], np.nan)}), "NaN"),
        (_history(iters_done=-5), "iters_done is -5"),
        (_history(iters_done="20"), "iters_done must be int"),
        (_history(loss="x"), "history.loss must be list"),
        (lambda a, m: m.update(rng={"bit_generator": "nonsense"}), "meta.rng"),
        (lambda a, m: m.pop("history"), "must hold a history"),
    ],
    ids=[
        "extra-member", "missing", "W1-shape", "b1-broadcast", "adam-slot", "nan",
        "negative-iters", "iters-type", "loss-type", "rng", "no-history",
    ],
)  # fmt: skip
def test_a_damaged_checkpoint_is_one_error_naming_the_field(run_dir, change, words):
    _rewrite(run_dir / CHECKPOINT, change)
    config = TrainConfig(**{**QUICK, "iters": 40})
    with pytest.raises(ValueError, match=f"{CHECKPOINT} is damaged: .*{words}"):
        train(config, out=run_dir, resume=True, log=None, progress=False)


def test_meta_that_is_not_json(run_dir):
    arrays = load_npz(run_dir / CHECKPOINT)
    arrays["meta"] = np.asarray("{not json")
    save_npz(run_dir / CHECKPOINT, arrays)
    with pytest.raises(ValueError, match="meta is not JSON"):
        train(TrainConfig(**{**QUICK, "iters": 40}), out=run_dir, resume=True, log=None,
              progress=False)  # fmt: skip


@pytest.mark.parametrize("offset", [40, 200, -30])
def test_a_flipped_byte_is_a_damaged_file_through_the_cli(run_dir, offset, capsys):
    path = run_dir / CHECKPOINT
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    args = ["train", "--hidden", "6", "--optimizer", "adam", "--lr", "0.01", "--iters", "40"]
    code = main([*args, "--out", str(run_dir), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err or "checkpoint" in err


def test_a_zip_bomb_member_is_never_read(tmp_path):
    import zipfile

    path = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("big.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {**header, "shape": (2**30,)})
            block = bytes(2**20)
            for _ in range(64):  # 64 MiB of zeros (the header says 8 GiB)
                member.write(block)
    with pytest.raises(DamagedFileError, match="more than the"):
        load_npz(path)
    assert load_npz(path, keys={"other"}) == {}  # not asked for: not read


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(TrainConfig(**QUICK), out=run_dir, log=None, progress=False)
    return (run_dir / CHECKPOINT).read_bytes()


@settings(
    max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(0, 10**6), value=st.integers(1, 255), truncate=st.booleans())
def test_a_mutated_checkpoint_resumes_or_is_one_clear_error(
    checkpoint_bytes, tmp_path_factory, position, value, truncate
):
    run_dir = tmp_path_factory.mktemp("resume")
    data = bytearray(checkpoint_bytes)
    at = position % len(data)
    if truncate:
        del data[at:]
    else:
        data[at] ^= value
    (run_dir / CHECKPOINT).write_bytes(bytes(data))
    try:
        train(TrainConfig(**{**QUICK, "iters": 40}), out=run_dir, resume=True, log=None,
              progress=False)  # fmt: skip
    except ValueError:  # DamagedFileError, a damaged field, or another setting
        return
