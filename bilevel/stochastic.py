"""Single-loop stochastic bilevel solvers: SOBA, SABA (Dagreou et al. 2022) and F2SA (Kwon et al. 2023).

Notation: inner g(x, z) (strongly convex in z), outer f(x, z), h(x) = f(x, z*(x)). Hypergradient
grad h = grad_x f + grad^2_xz g v*, with v* = -[grad^2_zz g]^{-1} grad_z f (all at z*(x)).

SOBA / SABA -- M. Dagreou, P. Ablin, S. Vaiter and T. Moreau, "A framework for bilevel optimization that enables
stochastic and global variance reduction algorithms", NeurIPS 2022, arXiv:2201.13409. The framework moves (z, v, x)
jointly along unbiased estimates of

    D_z = grad_z g(x, z),  D_v = grad^2_zz g(x, z) v + grad_z f(x, z),  D_x = grad^2_xz g(x, z) v + grad_x f(x, z)

with z <- z - rho D_z, v <- v - rho D_v, x <- x - gamma D_x. SOBA uses one inner minibatch (for the g terms) and
one outer minibatch (for the f terms) per step; with decreasing steps rho_t ~ t^{-2/5}, gamma_t ~ t^{-3/5} the paper's
Theorem 1 gives min_t E||grad h(x_t)||^2 = O(log T / T^{2/5}). SABA replaces each estimate by its SAGA version
(per-sample memory of the five quantities, estimate = new_i - memory_i + mean(memory)) and converges with fixed steps
at O(1/T); under a PL value function (our strongly convex quadratic) linearly (the paper's Theorem 3).
Symbols -> arguments: rho -> ``inner_lr``, gamma -> ``outer_lr`` (floats or schedules). Reconstructed: the SABA
memory starts from one full pass at the initial point; minibatches larger than one sample update every drawn index.

F2SA -- J. Kwon, D. Kwon, S. Wright and R. Nowak, "A fully first-order method for stochastic bilevel optimization",
ICML 2023, arXiv:2301.10945, Algorithm 1. Only gradients: with the Lagrangian L_lam(x, y, z) = f(x, y) +
lam (g(x, y) - g(x, z)), each outer step k runs T inner steps (fresh samples each)

    z <- z - gamma_k grad_y g(x_k, z),   y <- y - alpha_k (grad_y f(x_k, y) + lam_k grad_y g(x_k, y))

then x_{k+1} = x_k - xi_k (grad_x f(x_k, y) + lam_k (grad_x g(x_k, y) - grad_x g(x_k, z))) and the multiplier grows,
lam_{k+1} = lam_k + delta_k. Symbols -> arguments: alpha -> ``y_lr``, gamma -> ``z_lr``, xi -> ``x_lr``, lam_k ->
``multiplier`` (float or schedule), T -> ``inner_steps``. :func:`f2sa_schedules` gives the polynomial schedules of the
paper's stochastic theorem, alpha_k ~ k^{-5/7}, gamma_k ~ k^{-4/7}, lam_k ~ k^{2/7} (exponents reconstructed from the
paper's statement of the O(eps^{-7/2}) rate; check against its Theorem before citing).

Problem protocol: ``lower(x, z, batch)``, ``upper(x, z, batch)``, ``initial(key) -> (x, z)``, ``sample_batch(key)``,
optional ``metrics(x, z)``; SABA also needs ``lower_i(x, z, i)``, ``upper_j(x, z, j)``, ``n_inner``, ``n_outer`` and a
batch ``(inner_idx, outer_idx)`` (as :class:`bilevel.finite_sum.FiniteSumQuadratic`). Every solver logs
``oracle_calls``: the cumulative number of per-sample first-order oracle evaluations (a gradient, or a Hessian-vector
product, of one sample's g or f each count one).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bilevel.pbgd import _check_problem, pbgd_sample
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule, power_decay
from ratelab.solver import Solver
from ratelab.validate import check_positive, check_positive_int, is_traced


def _check_lr(name: str, value: Any) -> Any:
    if not callable(value):
        check_positive(name, value)
    return as_schedule(value)


def _batch_sizes(batch: Any, problem: Any = None) -> tuple[int, int]:
    if getattr(problem, "full_batch", False):
        return int(problem.n_inner), int(problem.n_outer)
    if isinstance(batch, tuple) and len(batch) == 2:
        return int(batch[0].shape[0]), int(batch[1].shape[0])
    return 1, 1


def _extra(problem: Any, x: Any, z: Any) -> dict[str, jax.Array]:
    fn = getattr(problem, "metrics", None)
    return {k: jnp.asarray(v) for k, v in fn(x, z).items()} if callable(fn) else {}


def _directions(problem: Any, x, z, v, batch):
    """(D_z, D_v, D_x) of the SOBA framework from one minibatch (autodiff Hessian-vector products)."""
    gz = jax.grad(problem.lower, argnums=1)(x, z, batch)
    cx, hv = jax.grad(lambda x_, z_: jnp.vdot(jax.grad(problem.lower, argnums=1)(x_, z_, batch), v),
                      argnums=(0, 1))(x, z)
    fx, fz = jax.grad(problem.upper, argnums=(0, 1))(x, z, batch)
    return gz, hv + fz, cx + fx


def _framework_step(state: Any, problem: Any, rho: Any, gam: Any, directions: tuple, calls: jax.Array, **fields: Any):
    """The step tail SOBA and SABA share: z <- z - rho D_z, v <- v - rho D_v, x <- x - gamma D_x, the counters, and
    the logged metrics (at the pre-step iterate). ``fields`` replaces other state fields (SABA's memory)."""
    dz, dv, dx = directions
    new = state._replace(x=state.x - gam * dx, z=state.z - rho * dz, v=state.v - rho * dv, k=state.k + 1,
                         calls=calls, **fields)
    return new, {"oracle_calls": calls, "hypergrad_sq": jnp.vdot(dx, dx), **_extra(problem, state.x, state.z)}


def framework_map(problem: Any, x: Any, z: Any, *, inner_lr: float, outer_lr: float) -> jax.Array:
    """The Jacobian at (x, z, v = 0) of the full-batch framework step (z, v, x) <- (z - rho D_z, v - rho D_v, x -
    gamma D_x) on the state ordered (x, z, v) (``batch=None``: the full sums). On a quadratic the directions are
    affine and SAGA's (SABA's) estimates conditionally unbiased, so E s_{k+1} = s* + M (E s_k - s*) with this M
    (derived here); its spectral radius is the deterministic single-loop rate."""
    dx = x.shape[0]
    dz = z.shape[0]

    def step(s):
        x_, z_, v_ = s[:dx], s[dx:dx + dz], s[dx + dz:]
        gz, gv, gx = _directions(problem, x_, z_, v_, None)
        return jnp.concatenate([x_ - outer_lr * gx, z_ - inner_lr * gz, v_ - inner_lr * gv])

    return jax.jacfwd(step)(jnp.concatenate([x, z, jnp.zeros_like(z)]))


class SOBAState(NamedTuple):
    x: jax.Array
    z: jax.Array
    v: jax.Array
    k: jax.Array
    calls: jax.Array


def soba(*, inner_lr: Any, outer_lr: Any) -> Solver:
    """SOBA (Dagreou et al., arXiv:2201.13409, Algorithm 1 with the plain stochastic directions)."""
    rho_s, gam_s = _check_lr("inner_lr", inner_lr), _check_lr("outer_lr", outer_lr)

    def init(problem: Any, key: jax.Array) -> SOBAState:
        _check_problem(problem)
        x, z = problem.initial(key)
        return SOBAState(x=x, z=z, v=jnp.zeros_like(z), k=jnp.zeros((), jnp.int32), calls=jnp.zeros(()))

    def step(state: SOBAState, problem: Any, batch: Any):
        rho, gam = rho_s(state.k), gam_s(state.k)
        bi, bo = _batch_sizes(batch, problem)
        return _framework_step(state, problem, rho, gam, _directions(problem, state.x, state.z, state.v, batch),
                               state.calls + 3 * bi + 2 * bo)

    return Solver(init=init, step=step, sample=pbgd_sample)


class SABAState(NamedTuple):
    x: jax.Array
    z: jax.Array
    v: jax.Array
    k: jax.Array
    calls: jax.Array
    mem: tuple  # (gz (n, p), hv (n, p), cx (n, d), fz (m, p), fx (m, d))


def _per_sample(problem: Any, x, z, v, idx_in, idx_out):
    def inner(i):
        gz = jax.grad(problem.lower_i, argnums=1)(x, z, i)
        cx, hv = jax.grad(lambda x_, z_: jnp.vdot(jax.grad(problem.lower_i, argnums=1)(x_, z_, i), v),
                          argnums=(0, 1))(x, z)
        return gz, hv, cx

    def outer(j):
        fx, fz = jax.grad(problem.upper_j, argnums=(0, 1))(x, z, j)
        return fz, fx

    return (*jax.vmap(inner)(idx_in), *jax.vmap(outer)(idx_out))


def saba(*, inner_lr: Any, outer_lr: Any, refresh: Any = True) -> Solver:
    """SABA (Dagreou et al., arXiv:2201.13409, Algorithm 1 with SAGA directions). ``refresh=False`` freezes the
    memory at its initial full pass (a negative control: the estimates stay unbiased, but their variance, set by
    the distance to the initial point, no longer vanishes, so with fixed steps x stalls at a noise floor); a traced
    value (a :func:`ratelab.sweep` over it) refreshes where it is nonzero, so both share one compiled program."""
    rho_s, gam_s = _check_lr("inner_lr", inner_lr), _check_lr("outer_lr", outer_lr)
    if not isinstance(refresh, bool) and not is_traced(refresh):
        raise RatelabError(f"refresh must be True or False (or a traced value in a sweep), got {refresh!r}")

    def init(problem: Any, key: jax.Array) -> SABAState:
        _check_problem(problem)
        missing = [m for m in ("lower_i", "upper_j", "n_inner", "n_outer") if not hasattr(problem, m)]
        if missing:
            raise RatelabError(f"saba needs a finite-sum problem with per-sample lower_i/upper_j and n_inner/n_outer; "
                               f"{type(problem).__name__} lacks {', '.join(missing)}")
        if getattr(problem, "full_batch", False):
            raise RatelabError("saba needs sampled minibatch indices: build the problem with full_batch=False")
        x, z = problem.initial(key)
        v = jnp.zeros_like(z)
        mem = _per_sample(problem, x, z, v, jnp.arange(problem.n_inner), jnp.arange(problem.n_outer))
        calls = jnp.asarray(3.0 * problem.n_inner + 2.0 * problem.n_outer)
        return SABAState(x=x, z=z, v=v, k=jnp.zeros((), jnp.int32), calls=calls, mem=mem)

    def step(state: SABAState, problem: Any, batch: Any):
        rho, gam = rho_s(state.k), gam_s(state.k)
        idx_in, idx_out = batch
        new = _per_sample(problem, state.x, state.z, state.v, idx_in, idx_out)
        idx = (idx_in, idx_in, idx_in, idx_out, idx_out)
        est = tuple(jnp.mean(nw - m[i], 0) + jnp.mean(m, 0) for nw, m, i in zip(new, state.mem, idx, strict=True))
        gz, hv, cx, fz, fx = est
        mem = state.mem
        if refresh is not False:
            mem = tuple(m.at[i].set(nw) for nw, m, i in zip(new, state.mem, idx, strict=True))
            if refresh is not True:
                mem = tuple(jnp.where(refresh != 0, a, b) for a, b in zip(mem, state.mem, strict=True))
        return _framework_step(state, problem, rho, gam, (gz, hv + fz, cx + fx),
                               state.calls + 3 * idx_in.shape[0] + 2 * idx_out.shape[0], mem=mem)

    return Solver(init=init, step=step, sample=pbgd_sample)


class F2SAState(NamedTuple):
    x: jax.Array
    y: jax.Array
    z: jax.Array
    k: jax.Array
    calls: jax.Array


def f2sa(*, x_lr: Any, y_lr: Any, z_lr: Any, multiplier: Any, inner_steps: int = 1) -> Solver:
    """F2SA (Kwon et al., arXiv:2301.10945, Algorithm 1); metrics add ``multiplier`` lam_k."""
    xi_s, al_s, ga_s = _check_lr("x_lr", x_lr), _check_lr("y_lr", y_lr), _check_lr("z_lr", z_lr)
    lam_s = _check_lr("multiplier", multiplier)
    inner_steps = check_positive_int("inner_steps", inner_steps)

    def sample(problem: Any, key: jax.Array, n: int) -> Any:
        per_step = lambda k: jax.vmap(problem.sample_batch)(jax.random.split(k, inner_steps + 1))  # noqa: E731
        return jax.vmap(per_step)(jax.random.split(key, n))

    def init(problem: Any, key: jax.Array) -> F2SAState:
        _check_problem(problem)
        x, z = problem.initial(key)
        return F2SAState(x=x, y=z, z=z, k=jnp.zeros((), jnp.int32), calls=jnp.zeros(()))

    def step(state: F2SAState, problem: Any, batches: Any):
        k, x = state.k, state.x
        lam, al, ga, xi = lam_s(k), al_s(k), ga_s(k), xi_s(k)

        def inner(t, yz):
            y, z = yz
            b = jax.tree.map(lambda a: a[t], batches)
            gz = jax.grad(problem.lower, argnums=1)(x, z, b)
            gy = jax.grad(problem.upper, argnums=1)(x, y, b) + lam * jax.grad(problem.lower, argnums=1)(x, y, b)
            return y - al * gy, z - ga * gz

        y, z = jax.lax.fori_loop(0, inner_steps, inner, (state.y, state.z))
        b = jax.tree.map(lambda a: a[inner_steps], batches)
        gx = (jax.grad(problem.upper)(x, y, b)
              + lam * (jax.grad(problem.lower)(x, y, b) - jax.grad(problem.lower)(x, z, b)))
        bi, bo = _batch_sizes(b, problem)
        calls = state.calls + (inner_steps + 1) * (2 * bi + bo)
        new = F2SAState(x=x - xi * gx, y=y, z=z, k=k + 1, calls=calls)
        return new, {"oracle_calls": calls, "hypergrad_sq": jnp.vdot(gx, gx), "multiplier": jnp.asarray(lam),
                     **_extra(problem, x, z)}

    return Solver(init=init, step=step, sample=sample)


def f2sa_schedules(*, alpha: float, gamma: float, lam: float, xi: float, k0: float = 1.0,
                   decay: Any = 1.0) -> dict[str, Any]:
    """The stochastic-regime polynomial schedules (reconstructed, see the module docstring): y_lr = alpha
    (k + k0)^{-5/7}, z_lr = gamma (k + k0)^{-4/7}, multiplier = lam (k + k0)^{2/7}, x_lr = xi y_lr. ``decay``
    scales every exponent (1: the paper's; 0: every step and the multiplier held at their initial values); it may
    be a tracer, so both share one compiled program in a sweep."""
    for name, v in (("alpha", alpha), ("gamma", gamma), ("lam", lam), ("xi", xi), ("k0", k0)):
        check_positive(name, v)
    if not is_traced(decay) and not 0 <= float(decay) <= 1:
        raise RatelabError(f"decay must lie in [0, 1], got {decay!r}")
    return {"y_lr": power_decay(alpha, k0, 5 / 7 * decay), "z_lr": power_decay(gamma, k0, 4 / 7 * decay),
            "multiplier": lambda k: lam * (jnp.asarray(k, jnp.result_type(float)) + k0) ** (2 / 7 * decay),
            "x_lr": power_decay(alpha * xi, k0, 5 / 7 * decay)}
