"""The runtime ratelab pins: jaxlib 0.10.0 to 0.11.1 can deadlock XLA:CPU on concurrent batched LAPACK calls.

Those versions split a batched LAPACK call (LU, Cholesky, eigh, ...) into chunks on XLA's intra-op thread pool and
block the pool thread they run on until the chunks finish. When the pool's threads (one per core) are all inside
such calls, no thread is left to run the chunks and the program waits forever with the CPU idle. On 2 cores two
independent batched 100 x 100 solves in one program are enough (found as a hang of the A3C-TD(0) sweep with 12 or
more seeds: its exact metrics solve for V_pi and d_pi side by side). ``pyproject.toml`` excludes those versions;
this test runs the smallest program that hung, in a subprocess with a timeout, and checks its answers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
B, n = 40, 100
A1 = jax.random.normal(jax.random.key(0), (B, n, n)) + n * jnp.eye(n)
A2 = jax.random.normal(jax.random.key(1), (B, n, n)) + n * jnp.eye(n)
b = jnp.ones((B, n, 1))
two = jax.jit(lambda A1, A2, b: (jnp.linalg.solve(A1, b), jnp.linalg.solve(A2, b)))
worst = 0.0
for i in range(20):
    x1, x2 = jax.block_until_ready(two(A1 + i, A2, b))
    worst = max(worst, float(jnp.abs((A1 + i) @ x1 - b).max()), float(jnp.abs(A2 @ x2 - b).max()))
print(worst)
"""


def test_two_independent_batched_solves_in_one_program_finish_and_solve():
    try:
        out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        import jaxlib

        pytest.fail(f"two batched solves in one jit did not finish in 180 s (jaxlib {jaxlib.__version__}): the "
                    "batched-LAPACK deadlock that pyproject.toml's jax pin excludes")
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1e-10  # the residual |A x - b| of every solve: both answers are the solutions
