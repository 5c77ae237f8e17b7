"""How many programs XLA builds for a run: one start program (keys, split, init) and one chunk program, whatever the
chunking; results bitwise the same as before the split of keys moved into the start program."""

import jax
import numpy as np
import pytest
from jax._src import monitoring

from ratelab import harmonic
from ratelab.runner import _chunk_length, run
from rl_theory.sa import robbins_monro

_COMPILED: list[str] = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _COMPILED.append(kw.get("fun_name", "?"))
    if event.endswith("backend_compile_duration") else None)


@pytest.mark.parametrize("n_blocks, chunks", [(70, 1), (70, 3), (100, 7), (97, 5), (1, 1), (12, 12)])
def test_chunk_length_covers_the_blocks_in_at_least_the_requested_calls(n_blocks, chunks):
    per = _chunk_length(n_blocks, chunks)
    calls = -(-n_blocks // per)
    assert 1 <= per <= n_blocks and calls >= min(chunks, n_blocks)
    if any(n_blocks % -(-n_blocks // c) == 0 for c in range(chunks, min(2 * chunks, n_blocks) + 1)):
        assert n_blocks % per == 0  # even split available: one program


def test_a_chunked_run_builds_two_programs_and_matches_the_one_call_run(scalar_problem):
    solver = robbins_monro(harmonic(0.7, 10.0))
    key = jax.random.key(11)
    jax.block_until_ready(key)
    whole = run(solver, scalar_problem, key, steps=2100, seeds=8, log_every=30)
    _COMPILED.clear()
    parts = run(solver, scalar_problem, key, steps=2100, seeds=8, log_every=30, chunks=3)  # 70 blocks: 5 x 14
    assert _COMPILED == ["jit(one_seed)"]  # start program reused; one chunk program for every call
    assert np.array_equal(whole.metrics["sq_dist_to_opt"], parts.metrics["sq_dist_to_opt"])
    assert np.array_equal(whole.final_state.x, parts.final_state.x)


def test_keys_split_inside_the_start_program_as_they_were_outside(scalar_problem):
    solver = robbins_monro(harmonic(1.0, 10.0))
    keys = jax.random.split(jax.random.key(5), 6)
    trace = run(solver, scalar_problem, keys, steps=100, seeds=6, log_every=10)
    init_keys, run_keys = jax.vmap(jax.random.split)(keys)[:, 0], jax.vmap(jax.random.split)(keys)[:, 1]
    states = jax.vmap(solver.init, in_axes=(None, 0))(scalar_problem, init_keys)
    for s in range(6):  # seed s's first block by hand, from keys split outside any program
        xis = solver.sample(scalar_problem, jax.random.fold_in(run_keys[s], 0), 10)
        state = jax.tree_util.tree_map(lambda x, s=s: x[s], states)
        for i in range(10):
            state, metrics = solver.step(state, scalar_problem, xis[i])
        np.testing.assert_allclose(trace.metrics["sq_dist_to_opt"][s, 0], metrics["sq_dist_to_opt"], rtol=1e-6)


def test_a_deterministic_solver_logs_the_same_values_whatever_log_every():
    from riemannian.admm import radmm
    from riemannian.sparse_problems import make_sparse_pca

    with jax.enable_x64(True):
        problem = make_sparse_pca(jax.random.key(0), m=12, n=10, p=2, mu=0.1)
        solver = radmm(0.01, 10.0, 1e-3)
        every = run(solver, problem, 0, steps=40, seeds=1, log_every=1, x64=True)
        tenth = run(solver, problem, 0, steps=40, seeds=1, log_every=10, x64=True)
    assert np.array_equal(every.final_state.x, tenth.final_state.x)
    for name in tenth.metrics:
        assert np.array_equal(every.metrics[name][..., 9::10], tenth.metrics[name])
