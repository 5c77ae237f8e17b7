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


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    path = atomic_write_text(tmp_path / "REPORT.md", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
