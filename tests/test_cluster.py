"""``verify(scheduler=ADDRESS)``: experiments as tasks on a dask cluster (two local worker processes) give the serial
run's report and traces bit for bit, written by the client; clear errors before any compute otherwise."""

import json
import sys

import numpy as np
import pytest

import ratelab as rl
from ratelab import cli, cluster
from ratelab.errors import RatelabError

# the two cheapest registered experiments, quick configs (about 2.5 s and 3 s of CPU cold): between them an extra
# figure (collapse.png) and a control's trace come back from the workers too
IDS = ["pm-collapse", "ngdiff-unlearning"]
UNREACHABLE = "tcp://127.0.0.1:1"  # port 1: nothing listens there
NO_DASK = "dask distributed not installed (pip install -e .[cluster])"


@pytest.fixture(scope="module")
def scheduler():
    distributed = pytest.importorskip("distributed", reason=NO_DASK)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        yield lc.scheduler_address


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if "time" not in k and not k.endswith("_s")}


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "block_wall_s"}  # wall-clock times, not results


@pytest.fixture
def compilation_cache():
    """The persistent cache on (conftest's temporary folder, which the workers inherit as $RATELAB_CACHE_DIR): the
    workers load the serial run's programs instead of compiling them again (the same executables, bit for bit)."""
    from ratelab import cache

    yield cache.enable()
    cache.disable()


def test_cluster_verify_equals_serial(tmp_path, scheduler, compilation_cache):
    serial = rl.verify(IDS, out=tmp_path / "serial")
    logged: list[str] = []
    dist = rl.verify(IDS, out=tmp_path / "dist", scheduler=scheduler, log=logged.append)
    assert any("2 worker(s)" in m for m in logged)
    assert [_strip(r) for r in dist.rows] == [_strip(r) for r in serial.rows]
    assert dist.passed == serial.passed
    for exp_id in IDS:
        ra = json.loads((tmp_path / "serial" / exp_id / "result.json").read_text())
        rb = json.loads((tmp_path / "dist" / exp_id / "result.json").read_text())
        assert ra["verdicts"] == rb["verdicts"] and ra["config_hash"] == rb["config_hash"]
        assert ra["code_version"] == rb["code_version"] and ra["files"] == rb["files"]
        for name in ra["files"].values():  # the trace, the figure and every control's trace came back
            assert (tmp_path / "dist" / exp_id / name).is_file(), name
            if name.endswith(".npz"):
                a, b = _arrays(tmp_path / "serial" / exp_id / name), _arrays(tmp_path / "dist" / exp_id / name)
                assert sorted(a) == sorted(b)
                for key in a:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{exp_id}/{name}/{key}")
        leftovers = [p.name for p in (tmp_path / "dist" / exp_id).iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []  # no temporary file of the atomic writes
    js = json.loads((tmp_path / "dist" / "report.json").read_text())
    assert [c["experiment"] for c in js["claims"]] == [r["experiment"] for r in serial.rows]
    assert (tmp_path / "dist" / "REPORT.md").exists() and (tmp_path / "dist" / "index.html").exists()

    again = rl.verify(IDS, out=tmp_path / "dist", scheduler=scheduler)  # unchanged: no task sent
    assert all(r["reused"] for r in again.results)
    assert [_strip(r) for r in again.rows] == [_strip(r) for r in serial.rows]


def test_unreachable_scheduler_is_an_input_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason=NO_DASK)
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(RatelabError, match="cannot be reached within 0.5 s"):
        rl.verify(IDS, out=tmp_path, scheduler=UNREACHABLE)
    assert not any((tmp_path / i).exists() for i in IDS)  # nothing computed


def test_missing_distributed_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(RatelabError, match=r"pip install ratelab\[cluster\]"):
        rl.verify(IDS, out=tmp_path, scheduler=UNREACHABLE)
    code = cli.main(["verify", "--scheduler", UNREACHABLE, "--out", str(tmp_path)])  # every experiment, none run
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install ratelab[cluster]" in err
    assert not any((tmp_path / i).exists() for i in IDS)


@pytest.mark.parametrize("kwargs, match", [({"jobs": 2}, "give one of them"), ({"scheduler": " "}, "address")])
def test_scheduler_arguments_are_checked(tmp_path, kwargs, match):
    with pytest.raises(RatelabError, match=match):
        rl.verify(IDS, out=tmp_path, **{"scheduler": UNREACHABLE, **kwargs})
