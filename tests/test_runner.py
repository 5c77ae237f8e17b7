"""The runner's guarantees: vmap == loop, bitwise reproducibility, chunking/resume invariance, sweeps, x64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import RatelabError, Solver, harmonic
from ratelab.runner import run, sweep
from rl_theory.sa import exact_second_moment, linear_sa, make_linear_sa, robbins_monro


def test_vmapped_run_equals_per_seed_loop(scalar_problem, rm_solver):
    keys = jax.random.split(jax.random.key(3), 5)
    batched = run(rm_solver, scalar_problem, keys, steps=400, seeds=5, log_every=8)
    for s in range(5):
        single = run(rm_solver, scalar_problem, keys[s:s + 1], steps=400, seeds=1, log_every=8)
        for name, values in batched.metrics.items():
            np.testing.assert_allclose(values[s], single.metrics[name][0], rtol=1e-6, atol=0)
        np.testing.assert_allclose(batched.final_state.x[s], single.final_state.x[0], rtol=1e-6)


def test_same_seed_is_bitwise_reproducible(scalar_problem, rm_solver):
    a = run(rm_solver, scalar_problem, 7, steps=1000, seeds=16, log_every=10)
    b = run(rm_solver, scalar_problem, 7, steps=1000, seeds=16, log_every=10)
    for name in a.metrics:
        assert np.array_equal(a.metrics[name], b.metrics[name])
    c = run(rm_solver, scalar_problem, 8, steps=1000, seeds=16, log_every=10)
    assert not np.array_equal(a.metrics["sq_dist_to_opt"], c.metrics["sq_dist_to_opt"])


@pytest.mark.parametrize("chunks", [2, 3, 7])
def test_chunked_run_equals_unchunked(scalar_problem, rm_solver, chunks):
    whole = run(rm_solver, scalar_problem, 1, steps=2100, seeds=8, log_every=30)
    parts = run(rm_solver, scalar_problem, 1, steps=2100, seeds=8, log_every=30, chunks=chunks)
    assert np.array_equal(whole.metrics["sq_dist_to_opt"], parts.metrics["sq_dist_to_opt"])
    assert np.array_equal(whole.final_state.x, parts.final_state.x)


def _reference_loop(solver, problem, keys, steps, log_every):
    """The runner's documented semantics as a plain loop, float64: per-step metric values [seeds, steps].

    Seed s uses init/run keys split(keys[s]); block b draws sample(problem, fold_in(run_key, b), log_every).
    """
    step = jax.jit(solver.step)
    out = []
    with jax.enable_x64(True):
        problem = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), problem)
        for key in keys:
            init_key, run_key = jax.random.split(key)
            state, values = solver.init(problem, init_key), []
            for b in range(steps // log_every):
                xis = solver.sample(problem, jax.random.fold_in(run_key, b), log_every)
                for i in range(log_every):
                    state, metrics = step(state, problem, xis[i])
                    values.append(float(metrics["sq_dist_to_opt"]))
            out.append(values)
    return np.asarray(out)


def test_run_follows_its_documented_noise_schedule(scalar_problem, rm_solver):
    keys = jax.random.split(jax.random.key(2), 3)
    trace = run(rm_solver, scalar_problem, keys, steps=60, seeds=3, log_every=20, x64=True)
    reference = _reference_loop(rm_solver, scalar_problem, keys, 60, 20)
    np.testing.assert_allclose(trace.metrics["sq_dist_to_opt"], reference[:, 19::20], rtol=1e-12)


def test_sample_must_batch_over_steps(scalar_problem):
    one_draw = Solver(init=lambda p, k: jnp.zeros(1), step=lambda s, p, xi: (s + xi, {"m": jnp.sum(s)}),
                      sample=lambda p, k, n: jax.random.normal(k, (1,)))
    with pytest.raises(RatelabError, match="leading axis of length n; for n = 2 got shapes"):
        run(one_draw, scalar_problem, 0, steps=10)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, scalar_problem, rm_solver):
    ckpt = tmp_path / "ckpt.npz"
    full = run(rm_solver, scalar_problem, 4, steps=1000, seeds=6, log_every=10, chunks=5)

    def stop_after_two(blocks_done):
        if blocks_done >= 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(rm_solver, scalar_problem, 4, steps=1000, seeds=6, log_every=10, chunks=5, checkpoint=ckpt,
            on_chunk=stop_after_two)
    assert ckpt.exists()
    resumed = run(rm_solver, scalar_problem, 4, steps=1000, seeds=6, log_every=10, chunks=5, checkpoint=ckpt)
    assert np.array_equal(full.metrics["sq_dist_to_opt"], resumed.metrics["sq_dist_to_opt"])
    assert not ckpt.exists()


def test_stale_checkpoint_is_ignored(tmp_path, scalar_problem, rm_solver):
    ckpt = tmp_path / "ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        run(rm_solver, scalar_problem, 4, steps=1000, seeds=6, log_every=10, chunks=5, checkpoint=ckpt,
            on_chunk=lambda b: (_ for _ in ()).throw(KeyboardInterrupt))
    other = run(rm_solver, scalar_problem, 5, steps=1000, seeds=6, log_every=10, chunks=5, checkpoint=ckpt)
    fresh = run(rm_solver, scalar_problem, 5, steps=1000, seeds=6, log_every=10)
    assert np.array_equal(other.metrics["sq_dist_to_opt"], fresh.metrics["sq_dist_to_opt"])


def test_sweep_equals_loop_over_values(scalar_problem):
    values = [0.3, 0.8, 1.5]
    swept = sweep(lambda a: robbins_monro(harmonic(a, 10.0)), values, scalar_problem, 0, steps=300, seeds=4,
                  log_every=10)
    assert swept.metrics["sq_dist_to_opt"].shape == (3, 4, 30)
    for i, a in enumerate(values):
        single = run(robbins_monro(harmonic(a, 10.0)), scalar_problem, 0, steps=300, seeds=4, log_every=10)
        np.testing.assert_allclose(swept.metrics["sq_dist_to_opt"][i], single.metrics["sq_dist_to_opt"], rtol=1e-5)


def test_sweep_rejects_a_bad_value_before_compute(scalar_problem):
    with pytest.raises(RatelabError, match="a must be a finite number > 0, got -1.0"):
        sweep(lambda a: robbins_monro(harmonic(a, 10.0)), [0.5, -1.0], scalar_problem, 0, steps=10)


def test_mean_aggregate_is_the_exact_block_average(scalar_problem, rm_solver):
    keys = jax.random.split(jax.random.key(9), 3)
    per_step = _reference_loop(rm_solver, scalar_problem, keys, 200, 20).reshape(3, 10, 20)
    blocked = run(rm_solver, scalar_problem, keys, steps=200, seeds=3, log_every=20, aggregate="mean", x64=True)
    np.testing.assert_allclose(blocked.metrics["sq_dist_to_opt"], per_step.mean(-1), rtol=1e-12)
    mins = run(rm_solver, scalar_problem, keys, steps=200, seeds=3, log_every=20, aggregate="min", x64=True)
    np.testing.assert_allclose(mins.metrics["sq_dist_to_opt"], per_step.min(-1), rtol=1e-12)


def test_x64_on_request(scalar_problem, rm_solver):
    t = run(rm_solver, scalar_problem, 0, steps=100, seeds=2, log_every=10, x64=True)
    assert t.metrics["sq_dist_to_opt"].dtype == np.float64
    assert t.final_state.x.dtype == np.float64
    assert run(rm_solver, scalar_problem, 0, steps=100, seeds=2, log_every=10).final_state.x.dtype == np.float32


def test_monte_carlo_matches_exact_second_moment():
    """The mean over seeds of ||x_k - x*||^2 agrees with the exact covariance recursion within 4 standard errors."""
    problem = make_linear_sa(jax.random.key(1), dim=3, lam_min=0.6, lam_max=2.0, sigma=0.7)
    step = harmonic(1.0, 5.0)
    t = run(robbins_monro(step), problem, 11, steps=2000, seeds=4000, log_every=100, x64=True)
    exact = exact_second_moment(problem, step, 2000)[t.steps - 1]
    v = t.metrics["sq_dist_to_opt"]
    se = v.std(0, ddof=1) / np.sqrt(v.shape[0])
    assert np.all(np.abs(v.mean(0) - exact) < 4 * se + 1e-12)


def test_divergence_is_flagged_per_seed(scalar_problem):
    """Step 3 on lambda = 1 overshoots: |1 - 3| = 2 per step, so every seed blows up to inf, then NaN."""
    t = run(robbins_monro(3.0), scalar_problem, 0, steps=2000, seeds=3, log_every=100)
    assert t.diverged.all()
    assert np.all(t.diverged_at > 0)
    ok = run(robbins_monro(0.5), scalar_problem, 0, steps=2000, seeds=3, log_every=100)
    assert not ok.diverged.any()
    assert np.all(ok.diverged_at == -1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": 10, "seeds": -2}, "seeds must be an integer >= 1"),
        ({"steps": 10, "log_every": 3}, "steps must be a multiple of log_every"),
        ({"steps": 10, "chunks": 20}, "chunks must be at most"),
        ({"steps": 10, "aggregate": "median"}, "aggregate must be one of"),
        ({"steps": 10.5}, "steps must be an integer >= 1"),
    ],
)
def test_bad_run_arguments(scalar_problem, rm_solver, kwargs, message):
    with pytest.raises(RatelabError, match=message):
        run(rm_solver, scalar_problem, 0, **kwargs)


def test_bad_key_and_solver(scalar_problem, rm_solver):
    with pytest.raises(RatelabError, match="key must be one key or 4 keys"):
        run(rm_solver, scalar_problem, jax.random.split(jax.random.key(0), 3), steps=10, seeds=4)
    with pytest.raises(RatelabError, match="key must be an int seed"):
        run(rm_solver, scalar_problem, "seed", steps=10)
    with pytest.raises(RatelabError, match="solver must be a ratelab.Solver"):
        run(lambda s: s, scalar_problem, 0, steps=10)


def test_mismatched_problem_shapes_are_reported(rm_solver):
    good = linear_sa(np.eye(3), np.ones(3))
    bad = type(good)(A=good.A, b=good.b, sigma=good.sigma, x0=jnp.zeros(2), x_star=good.x_star)
    with pytest.raises(RatelabError, match="mismatched shapes"):
        run(rm_solver, bad, 0, steps=10)


def test_step_that_changes_state_dtype_is_reported(scalar_problem):
    bad = Solver(init=lambda p, k: jnp.zeros(2, jnp.float32),
                 step=lambda s, p, k: (s.astype(jnp.int32), {"m": jnp.sum(s)}))
    with pytest.raises(RatelabError, match="must keep the state's structure"):
        run(bad, scalar_problem, 0, steps=10)
    vector_metric = Solver(init=lambda p, k: jnp.zeros(2), step=lambda s, p, k: (s, {"m": s}))
    with pytest.raises(RatelabError, match="metrics must be scalars"):
        run(vector_metric, scalar_problem, 0, steps=10)


def test_compiled_code_is_reused_only_for_the_same_solver(scalar_problem, rm_solver):
    first = run(rm_solver, scalar_problem, 4, steps=500, seeds=8, log_every=50)
    again = run(rm_solver, scalar_problem, 5, steps=500, seeds=8, log_every=50)
    assert again.timings["compile_s"] == 0.0
    fresh = run(rm_solver, scalar_problem, 4, steps=500, seeds=8, log_every=50)
    assert np.array_equal(first.metrics["sq_dist_to_opt"], fresh.metrics["sq_dist_to_opt"])
    other = run(robbins_monro(harmonic(2.0, 10.0)), scalar_problem, 4, steps=500, seeds=8, log_every=50)
    assert other.timings["compile_s"] > 0.0
    assert not np.array_equal(first.metrics["sq_dist_to_opt"], other.metrics["sq_dist_to_opt"])


def test_call_compiler_options_are_part_of_the_program_key(monkeypatch):
    """``call`` with XLA options compiles a program of its own (not the default one's) with the same result."""
    import collections

    import jax.numpy as jnp

    from ratelab.runner import call

    def f(x):
        return jnp.sum(jnp.sin(x) ** 2)

    from ratelab import runner

    monkeypatch.setattr(runner, "_CACHE", collections.OrderedDict())
    x = jnp.linspace(0.0, 1.0, 64)
    opts = {"xla_cpu_use_fusion_emitters": False}
    a, _ = call(f, x, progress=False)
    n = len(runner._CACHE)
    b, _ = call(f, x, progress=False, compiler_options=opts)
    assert len(runner._CACHE) == n + 1  # its own executable
    c, _ = call(f, x, progress=False, compiler_options=dict(opts))
    assert len(runner._CACHE) == n + 1 and b == c  # reused
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_sweep_row_gives_floats_when_concrete_and_the_same_row_when_traced():
    from ratelab.runner import sweep_row

    table = np.array([[1.0, 0.5, 0.6], [16.0, 0.0625, 1.0]])
    assert sweep_row(table, 1) == (16.0, 0.0625, 1.0) and all(type(v) is float for v in sweep_row(table, 1))
    traced = jax.jit(lambda i: jnp.stack(sweep_row(table, i)))(jnp.asarray(1.0))
    assert np.array_equal(np.asarray(traced), table[1])
