"""A resumed run says so (issue 20 item 16): one line on stderr naming the checkpoint and the steps done."""

from ratelab import harmonic, run
from rl_theory.sa import make_scalar_sa, robbins_monro


def test_a_resume_is_announced(tmp_path, capsys, interrupted_run):
    problem = make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)
    solver = robbins_monro(harmonic(1.0, 10.0))
    ckpt = tmp_path / "checkpoint.npz"
    kw = dict(steps=400, seeds=4, log_every=10, chunks=4, progress=False, checkpoint=ckpt)
    interrupted_run(solver, problem, 0, **kw)
    assert ckpt.exists()
    capsys.readouterr()
    run(solver, problem, 0, **kw)
    err = capsys.readouterr().err
    assert f"resuming from {ckpt}: 100 of 400 steps done" in err, err
