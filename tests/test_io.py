"""Atomic writes: a failed write leaves the previous file intact and no temporary behind; JSON is strict."""

import json

import numpy as np
import pytest

from ratelab.io import atomic_savez, atomic_write, atomic_write_json, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old")

    def half_then_crash(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_json_is_strict_and_round_trips_numpy(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"x": np.float32(0.5), "a": np.arange(3), "bad": [np.nan, np.inf]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": 0.5, "a": [0, 1, 2], "bad": [None, None]}


def test_savez_round_trip(tmp_path):
    arrays = {"steps": np.arange(5), "metric/err": np.linspace(0, 1, 10).reshape(2, 5)}
    atomic_savez(tmp_path / "t.npz", arrays)
    with np.load(tmp_path / "t.npz") as z:
        for k, v in arrays.items():
            assert np.array_equal(z[k], v)


def test_savez_deflates_what_compresses_stores_noise_and_writes_equal_bytes_for_equal_arrays(tmp_path):
    import zipfile

    rng = np.random.default_rng(0)
    arrays = {"noise": rng.standard_normal(100_000), "ramp": np.repeat(np.arange(100.0), 1000),
              "flag": np.array(True), "empty": np.zeros((0, 3), np.float32), "names": np.array(["a", "bc"])}
    atomic_savez(tmp_path / "a.npz", arrays)
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds["noise.npy"] == zipfile.ZIP_STORED and kinds["ramp.npy"] == zipfile.ZIP_DEFLATED
    with np.load(tmp_path / "a.npz") as z:
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape and np.array_equal(z[k], v)
    atomic_savez(tmp_path / "b.npz", arrays)  # fixed entry timestamps: the bytes depend on the arrays only
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    path = atomic_write_text(tmp_path / "REPORT.md", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
