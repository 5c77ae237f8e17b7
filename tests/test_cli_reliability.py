"""Reliability of the command line (issue 20): contradictory or absurd input, corrupt or foreign files."""

import json

import pytest

from ratelab.cli import main


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "rm-fast", "--set", "seeds=5", "--seeds", "10"], "--set seeds=5 and --seeds 10 disagree"),
        (["run", "rm-fast", "--set", "steps=100", "--steps", "200"], "--set steps=100 and --steps 200 disagree"),
        (["run", "rm-fast", "--set", "seeds=abc"], "seeds must be an integer, got 'abc'"),
        (["run", "rm-fast", "--set", "steps=1e400"], "steps must be a finite integer, got '1e400'"),
    ],
)
def test_contradictory_or_absurd_settings_are_one_line_exit_2(argv, fragment, capsys, tmp_path):
    out = tmp_path / "out"
    assert _exit_code([*argv, "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith("ratelab: error:") and fragment in err, err
    assert not out.exists()


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"claims": [{"experiment": "rm-fast"}]}',
                                     '{"claims": 3}', "\x00\xff garbage"])
def test_list_treats_a_foreign_report_as_absent(content, capsys, tmp_path):
    (tmp_path / "report.json").write_text(content, errors="surrogateescape")
    assert main(["list", "--results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warning = captured.err.strip()
    assert warning.count("\n") == 0 and "warning: ignoring" in warning and "Traceback" not in warning, warning
    assert "rm-fast" in captured.out and "not run" in captured.out


def test_a_foreign_result_json_is_recomputed(capsys, tmp_path):
    folder = tmp_path / "rm-fast"
    folder.mkdir()
    (folder / "result.json").write_text("[1, 2]")
    code = main(["run", "rm-fast", "--out", str(tmp_path), "--seeds", "8", "--steps", "200", "--no-progress"])
    assert code in (0, 1)
    result = json.loads((folder / "result.json").read_text())
    assert result["id"] == "rm-fast" and result["config"]["seeds"] == 8


def test_scale_batch_error_names_the_option():
    from ratelab.errors import RatelabError
    from ratelab.scale import scale_config

    with pytest.raises(RatelabError, match=r"batch \(--batch\) must be a multiple of .* = 3, got 32, the default.*"
                                           r"--batch 30"):
        scale_config("tiny", "fsdp=3")


def test_scale_json_into_an_unwritable_place_fails_before_compute(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["scale", "--plan", "--json", str(blocker / "sub" / "plan.json")]) == 2
    err = _one_line(capsys)
    assert "--json must name a file in a writable folder" in err, err


def test_scale_json_into_a_missing_folder_is_created_and_written_whole(capsys, tmp_path):
    target = tmp_path / "new" / "plan.json"
    assert main(["scale", "--plan", "--json", str(target)]) == 0
    plan = json.loads(target.read_text())
    assert plan["peak_bytes_per_device"] > 0
    assert [p.name for p in target.parent.iterdir()] == ["plan.json"]


def test_a_full_disk_is_one_line_exit_1_and_leaves_nothing_half_written(capsys, tmp_path, monkeypatch):
    import errno
    import os

    real_fsync = os.fsync

    def full(fd):  # the disk fills when the results are written (after the compute)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    code = main(["run", "rm-fast", "--out", str(tmp_path), "--seeds", "8", "--steps", "200", "--no-progress",
                 "--no-cache"])
    assert code == 1
    full_err = capsys.readouterr().err.strip()
    assert "Traceback" not in full_err, full_err
    err = full_err.splitlines()[-1]
    assert err.startswith("ratelab: error: could not write") and str(tmp_path) in err and "No space left" in err
    left = sorted(p.name for p in (tmp_path / "rm-fast").iterdir())
    assert "result.json" not in left and not [n for n in left if n.endswith(".tmp")], left


def test_an_absurd_seed_count_is_refused_before_compute_with_the_estimate(capsys, tmp_path):
    from ratelab.budget import physical_memory

    out = tmp_path / "out"
    assert _exit_code(["run", "rm-fast", "--seeds", "20000000", "--out", str(out), "--no-progress"]) == 2
    err = _one_line(capsys)
    assert "seeds=20000000 x 1000 logged steps" in err and "for the trace alone" in err, err
    assert f"{physical_memory() / 2**30:.3g} GiB" in err, err
    assert not out.exists()


def test_the_memory_estimate_is_seeds_times_logged_points_times_metrics():
    from ratelab.budget import check_memory, metrics_bytes
    from ratelab.errors import RatelabError

    cfg = {"seeds": 1000, "steps": 5000, "log_every": 50}
    assert metrics_bytes(cfg, 3) == 1000 * 100 * 3 * 4
    check_memory("x", cfg, 3, limit=int(1.25 * 1.2e6) + 1)  # exactly 80 % fits
    with pytest.raises(RatelabError, match="need at least"):
        check_memory("x", cfg, 3, limit=1_000_000)


def test_the_figure_title_shows_the_overrides(tmp_path, monkeypatch, capsys):
    import ratelab.figures as figures

    titles = []
    real = figures.save_figure

    def keep_title(fig, path):
        titles.append(fig._suptitle.get_text() if fig._suptitle is not None else "")
        real(fig, path)

    monkeypatch.setattr(figures, "save_figure", keep_title)
    main(["run", "rm-fast", "--out", str(tmp_path), "--set", "a=1e4", "--set", "k0=1", "--seeds", "4",
          "--steps", "200", "--no-progress"])
    assert titles and "overrides: a=1e4, k0=1, seeds=4, steps=200" in titles[0], titles


def test_the_fit_and_figure_phase_is_announced(tmp_path, capsys):
    main(["run", "rm-fast", "--out", str(tmp_path), "--seeds", "8", "--steps", "200", "--no-progress"])
    assert "rm-fast: judging 2 claim(s) and drawing the figure" in capsys.readouterr().err
