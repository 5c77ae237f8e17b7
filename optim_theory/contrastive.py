"""EMC^2: Metropolis-Hastings negative sampling for the global contrastive loss, with its exact loss and gradient.

Yau, Wai, Raman, Sarkar, Hong (2024), "EMC^2: Efficient MCMC Negative Sampling for Contrastive Learning with Global
Convergence", ICML 2024, arXiv:2404.10575 (restated, not copied; public code amazon-science/contrastive_emc2, read for
the sampler's update, not copied). It lives in ``optim_theory`` (not a package of its own): it is a stochastic
optimizer with Markovian (state-dependent) gradient noise, analysed like the other solvers here, with a closed-form
objective; one module is enough.

Problem (the paper's finite-augmentation setting; the code's ``--finite_aug --n_aug 2``): n data points, each with two
fixed views x_{i,0}, x_{i,1} in R^p (``views`` [n, 2, p]). The 2n views are the anchors r = 2 i + a; anchor r's
positive is the other view of its point, r XOR 1, and its negative set N_r is the 2n - 2 views of the other points.
Encoder: a linear map W in R^{k x p} followed by normalisation, f(x) = W x / ||W x|| (bounded features, as the paper
assumes). With beta = 1 / tau (``beta``, the code's ``--beta``) and phi(u, v) = <f(u), f(v)>, the global contrastive
loss (the paper's objective, after SogCLR, Yuan et al. 2022) is

    L(W) = (1 / 2n) sum_r [ -beta phi(r, r XOR 1) + log( (1 / |N_r|) sum_{s in N_r} exp(beta phi(r, s)) ) ],

exactly computable here (:func:`global_loss`, :func:`global_grad` in closed form). The gradient of anchor r's log
term is beta E_{s ~ pi_r} grad phi(r, s), pi_r(s) = softmax_s(beta phi(r, s)) over N_r: one negative drawn from pi_r
gives an unbiased estimate, which EMC^2 draws by MCMC instead of computing the partition function.

EMC^2 (the paper's Algorithm; symbols -> arguments): one Markov chain state zeta_r in N_r per anchor (``chains``
[n, 2], a view index). Each iteration draws a batch of b points (``batch_size``, b = 1 is the paper's headline
regime), and for each of its two anchors r runs one Metropolis-Hastings step at the current theta_t = W_t:
propose s' uniformly from N_r, accept with probability min{1, exp(beta phi(r, s')) / exp(beta phi(r, zeta_r))}
(the code's ``alphas = new_score / current_score`` with score exp(beta * similarity), the current state's score
recomputed at the current model, as its finite-augmentation sampler does); the other anchors' chains are left as
they are. The gradient estimate is

    g_t = (1 / b) sum_{i in batch} [ -beta grad phi(i0, i1) + (beta / 2) sum_a grad phi(ia, zeta_{ia}) ],

(the code's positive term ``-beta <f(a_0), f(a_1)>`` plus ``beta <f(a), f(negative)>`` per accepted negative), and
theta_{t+1} = theta_t - gamma_{t+1} g_t: ``optax.sgd(learning_rate)`` by default, any optax transformation through
``optimizer`` (the code also runs Adam and LARS). Reconstructed: the paper's experiments propose the other batch
members in turn and average the post-burn-in states (``--mcmc_burn_in 0.5``); here, as in the analysis, one
proposal uniform over the whole negative set per visit (with b = 1 there is no other batch member to propose).
Theorem (reconstructed form, the biased-SA template of Karimi et al. 2019 that the paper adapts): a constant step
gamma = c / sqrt(T) gives (1/T) sum_{t<T} E ||grad L(theta_t)||^2 = O(1/sqrt(T)) (the abstract's rate; the template
carries a log T factor) for every batch size.

Baselines, as ``sampler``: ``"mh"`` (EMC^2), ``"uniform"`` (acceptance forced to 1: the state is the uniform
proposal, negatives drawn uniformly without correction, a biased estimate of the softmax expectation) and
``"in_batch"`` (SimCLR-style: the anchors' log-sum-exp over the other batch members' views only, the batch's own
loss gradient, biased for small b). ``sampler`` may be a traced index (0, 1, 2) so arms share one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_positive, check_positive_int, is_traced

SAMPLERS = ("mh", "uniform", "in_batch")


class ContrastiveProblem(NamedTuple):
    views: jax.Array  # [n, 2, p]: two fixed views (augmentations) of each of n points
    beta: Any  # inverse temperature 1 / tau


class EMC2State(NamedTuple):
    params: jax.Array  # W [k, p]
    chains: jax.Array  # [n, 2] int32: each anchor's current negative (a view index in 0 .. 2n - 1)
    opt_state: Any
    key: jax.Array


def make_problem(views: Any, beta: Any) -> ContrastiveProblem:
    """A problem from the user's own views [n, 2, p] (n >= 2 points, two views each) and beta = 1/tau > 0."""
    arr = np.asarray(views, dtype=float) if not is_traced(views) else None
    if arr is not None:
        if arr.ndim != 3 or arr.shape[0] < 2 or arr.shape[1] != 2 or arr.shape[2] < 1:
            raise RatelabError(f"views must have shape [n >= 2, 2, p >= 1] (two views of each point), got "
                               f"{arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise RatelabError("views must be finite")
    check_positive("beta", beta)
    return ContrastiveProblem(jnp.asarray(views), beta)


def random_problem(seed: int, n: int, p: int, noise: float, beta: float) -> ContrastiveProblem:
    """n points x_i ~ N(0, I_p / p) and two views x_i + noise * eps (eps ~ N(0, I_p / p)), drawn in NumPy."""
    check_positive_int("n", n)
    check_positive_int("p", p)
    check_positive("noise", noise)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, p)) / np.sqrt(p)
    views = x + noise * rng.standard_normal((n, 2, p)) / np.sqrt(p)
    return make_problem(views, beta)


def features(params: jax.Array, x: jax.Array) -> jax.Array:
    """f(x) = W x / ||W x|| for x [..., p]."""
    h = x @ params.T
    return h / jnp.linalg.norm(h, axis=-1, keepdims=True)


def _negative_mask(n: int) -> np.ndarray:
    view_point = np.arange(2 * n) // 2
    return view_point[:, None] != view_point[None, :]


def global_loss(params: jax.Array, problem: ContrastiveProblem) -> jax.Array:
    """L(W): all 2n anchors, the softmax over all 2n - 2 negatives of each (module docstring)."""
    n = problem.views.shape[0]
    f = features(params, problem.views.reshape(2 * n, -1))
    s = problem.beta * f @ f.T
    neg = _negative_mask(n)
    pos = s[np.arange(2 * n), np.arange(2 * n) ^ 1]
    lse = jax.scipy.special.logsumexp(jnp.where(neg, s, -jnp.inf), axis=1) - np.log(2 * n - 2)
    return jnp.mean(-pos + lse)


def global_grad(params: jax.Array, problem: ContrastiveProblem) -> jax.Array:
    """grad L(W) in closed form: with F the normalised features, S = beta F F^T and pi_r the softmax of row r over
    N_r, dL/dS = (1/2n) (Pi - E_pos) (Pi the rows pi_r, E_pos the positive pairs), dL/dF = beta (G + G^T) F, and the
    normalisation's Jacobian (I - f f^T) / ||h|| maps it to dL/dh; dL/dW = sum_r (dL/dh_r) x_r^T."""
    n = problem.views.shape[0]
    x = problem.views.reshape(2 * n, -1)
    h = x @ params.T
    norm = jnp.linalg.norm(h, axis=1, keepdims=True)
    f = h / norm
    s = problem.beta * f @ f.T
    neg = _negative_mask(n)
    pi = jax.nn.softmax(jnp.where(neg, s, -jnp.inf), axis=1)
    g = (pi - np.eye(2 * n)[np.arange(2 * n) ^ 1]) / (2 * n)
    df = problem.beta * (g + g.T) @ f
    dh = (df - jnp.sum(df * f, axis=1, keepdims=True) * f) / norm
    return dh.T @ x


def softmax_targets(params: Any, views: Any, beta: float) -> np.ndarray:
    """[2n, 2n] rows pi_r (zero off N_r), in NumPy float64: the distributions EMC^2's chains target."""
    v = np.asarray(views, float)
    n = v.shape[0]
    h = v.reshape(2 * n, -1) @ np.asarray(params, float).T
    f = h / np.linalg.norm(h, axis=1, keepdims=True)
    s = beta * f @ f.T
    s = np.where(_negative_mask(n), s, -np.inf)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mh_kernel(scores: Any, accept_all: bool = False) -> np.ndarray:
    """The transition matrix [N, N] of one EMC^2 step on a chain over N candidates with log-scores ``scores``
    (beta phi(r, s)): propose s' uniformly among all N, accept with min{1, exp(score' - score)} (``accept_all``: always,
    the uncorrected control). NumPy float64. The proposal may return the current state (a self-proposal is a stay)."""
    s = np.asarray(scores, float)
    if s.ndim != 1 or s.size < 2:
        raise RatelabError(f"scores must be a 1-D array of >= 2 log-scores, got shape {s.shape}")
    acc = np.ones((s.size, s.size)) if accept_all else np.minimum(1.0, np.exp(s[None, :] - s[:, None]))
    p = acc / s.size
    np.fill_diagonal(p, 0.0)
    np.fill_diagonal(p, 1.0 - p.sum(axis=1))
    return p


def _sampler_index(sampler: Any) -> Any:
    if isinstance(sampler, str):
        check_choice("sampler", sampler, SAMPLERS)
        return SAMPLERS.index(sampler)
    if not is_traced(sampler) and int(sampler) not in (0, 1, 2):
        raise RatelabError(f"sampler must be one of {SAMPLERS} or its index 0, 1, 2, got {sampler!r}")
    return sampler


def _phi(fa: jax.Array, fb: jax.Array) -> jax.Array:
    return jnp.sum(fa * fb, axis=-1)


def chain_surrogate(params: jax.Array, x_anchor: jax.Array, x_neg: jax.Array, beta: Any,
                    weights: Any) -> jax.Array:
    """The scalar whose gradient is EMC^2's estimate: sum_j weights_j [-beta phi(j0, j1) + (beta / 2) sum_a
    phi(ja, zeta_ja)] for the points' views ``x_anchor`` [b, 2, p] and their chains' negatives ``x_neg`` [b, 2, p]."""
    fv = features(params, x_anchor)
    neg = _phi(fv, features(params, x_neg)).sum(axis=1)
    return jnp.sum(weights * (-beta * _phi(fv[:, 0], fv[:, 1]) + 0.5 * beta * neg))


def in_batch_surrogate(params: jax.Array, x_batch: jax.Array, beta: Any) -> jax.Array:
    """SimCLR-style loss of a batch of b points' views [b, 2, p]: each view against its positive and, in the
    log-sum-exp, the other points' 2 (b - 1) views only."""
    bb = x_batch.shape[0]
    fb = features(params, x_batch.reshape(2 * bb, -1))
    s = beta * fb @ fb.T
    lse = jax.scipy.special.logsumexp(jnp.where(_negative_mask(bb), s, -jnp.inf), axis=1)
    return jnp.mean(-s[np.arange(2 * bb), np.arange(2 * bb) ^ 1] + lse)


def _randint(u: jax.Array, high: int) -> jax.Array:
    """floor(u * high) for u ~ U[0, 1): uniform on {0, ..., high - 1} (clipped against rounding up to high)."""
    return jnp.minimum((u * high).astype(jnp.int32), high - 1)


def _distinct(u: jax.Array, n: int) -> jax.Array:
    """A uniformly random subset of {0, ..., n - 1} of size len(u) from len(u) uniforms (Floyd's algorithm: draw t
    in [0, top]; if t is taken, take top; for one element a uniform draw)."""
    size = u.shape[0]
    out = []
    for j in range(size):
        top = n - size + j
        t = _randint(u[j], top + 1)
        taken = jnp.any(jnp.stack([o == t for o in out])) if out else False
        out.append(jnp.where(taken, top, t))
    return jnp.stack(out)


def _uniforms_per_step(batch_size: int, in_batch_size: int) -> int:
    B = max(batch_size, in_batch_size)
    return batch_size + in_batch_size + 4 * B  # chain batch, in-batch batch, proposals, acceptance tests


def _step_fn(problem: ContrastiveProblem, sampler: Any, batch_size: int, in_batch_size: int,
             optimizer: optax.GradientTransformation) -> Callable[[EMC2State, jax.Array], EMC2State]:
    n = problem.views.shape[0]
    beta = problem.beta
    flat = problem.views.reshape(2 * n, -1)
    B = max(batch_size, in_batch_size)
    active = np.arange(B) < batch_size  # the chain samplers use the first b slots
    arm = _sampler_index(sampler)
    b, bb = batch_size, in_batch_size

    phi = _phi

    def gather(v: jax.Array) -> jax.Array:
        return flat[v]

    def step(state: EMC2State, u: jax.Array) -> EMC2State:
        idx_chain = jnp.concatenate([_distinct(u[:b], n), np.zeros(B - b, np.int32)])
        idx_batch = jnp.concatenate([_distinct(u[b:b + bb], n), np.zeros(B - bb, np.int32)])
        idx = jnp.where(arm == 2, idx_batch, idx_chain)
        anchors = 2 * idx[:, None] + np.arange(2)[None, :]  # [B, 2]
        # proposal uniform over N_r: an index in [0, 2n - 2), skipping the point's own two views
        w = _randint(u[b + bb:b + bb + 2 * B].reshape(B, 2), 2 * n - 2)
        prop = jnp.where(w < 2 * idx[:, None], w, w + 2)
        cur = state.chains[idx]
        fa, fc, fp = (features(jax.lax.stop_gradient(state.params), gather(v)) for v in (anchors, cur, prop))
        log_ratio = beta * (phi(fa, fp) - phi(fa, fc))
        accept = u[b + bb + 2 * B:].reshape(B, 2) < jnp.exp(jnp.minimum(log_ratio, 0.0))
        new = jnp.where(accept | (arm == 1), prop, cur)
        chains = state.chains.at[jnp.where(active, idx, n)].set(new, mode="drop")  # the chain slots' points
        x_anchor, x_new = gather(anchors), gather(new)

        def surrogate(params):
            chain = chain_surrogate(params, x_anchor, x_new, beta, active / b)
            batch = in_batch_surrogate(params, x_anchor[:bb], beta)
            return jnp.where(arm == 2, batch, chain)

        g = jax.grad(surrogate)(state.params)
        updates, opt_state = optimizer.update(g, state.opt_state, state.params)
        return EMC2State(optax.apply_updates(state.params, updates), chains, opt_state, state.key)

    return step


def init_state(problem: ContrastiveProblem, key: jax.Array, params0: jax.Array,
               optimizer: optax.GradientTransformation) -> EMC2State:
    """The initial state: W_0 = ``params0``, each chain at a uniform negative of its anchor."""
    n = problem.views.shape[0]
    k_chain, k_run = jax.random.split(key)
    u = jax.random.randint(k_chain, (n, 2), 0, 2 * n - 2)
    chains = jnp.where(u < 2 * np.arange(n)[:, None], u, u + 2).astype(jnp.int32)
    return EMC2State(params0, chains, optimizer.init(params0), k_run)


def run(problem: ContrastiveProblem, key: jax.Array, params0: jax.Array, *, steps: int, eval_every: int,
        learning_rate: Any = None, sampler: Any = "mh", batch_size: int = 1, in_batch_size: int = 4,
        optimizer: optax.GradientTransformation | None = None) -> tuple[jax.Array, EMC2State]:
    """``steps`` iterations of ``sampler`` from W_0 = ``params0``; returns (||grad L(W_t)||^2 at t = 0, m, 2m, ...,
    steps - m for m = ``eval_every``, the final state). Pure and jit/vmap-able (``sampler`` and ``learning_rate``
    may be traced). ``learning_rate`` (a float or an optax schedule) builds ``optax.sgd``; or pass ``optimizer``.
    ``batch_size`` = b for the chain samplers, ``in_batch_size`` for ``in_batch`` (its negatives: the other
    members' 2 (b - 1) views)."""
    check_positive_int("steps", steps)
    check_positive_int("eval_every", eval_every)
    check_positive_int("batch_size", batch_size)
    check_positive_int("in_batch_size", in_batch_size)
    if steps % eval_every:
        raise RatelabError(f"steps must be a multiple of eval_every={eval_every}, got {steps}")
    n = int(problem.views.shape[0])
    if max(batch_size, in_batch_size) > n:
        raise RatelabError(f"batch_size and in_batch_size must be <= n={n} (distinct points), got "
                           f"{batch_size}, {in_batch_size}")
    if in_batch_size < 2:
        raise RatelabError(f"in_batch_size must be >= 2 (in-batch negatives need another point), got {in_batch_size}")
    if (optimizer is None) == (learning_rate is None):
        raise RatelabError("give exactly one of learning_rate (a float or an optax schedule) and optimizer")
    if optimizer is None:
        check_positive("learning_rate", learning_rate)
        optimizer = optax.sgd(learning_rate)
    step = _step_fn(problem, sampler, batch_size, in_batch_size, optimizer)

    per_step = _uniforms_per_step(batch_size, in_batch_size)

    def block(state: EMC2State, _: None) -> tuple[EMC2State, jax.Array]:
        gn2 = jnp.sum(global_grad(state.params, problem) ** 2)
        k_block, k_next = jax.random.split(state.key)
        u = jax.random.uniform(k_block, (eval_every, per_step), jnp.float32).astype(problem.views.dtype)
        state = jax.lax.fori_loop(0, eval_every, lambda t, s: step(s, u[t]), state)
        return state._replace(key=k_next), gn2

    state, gn2 = jax.lax.scan(block, init_state(problem, key, params0, optimizer), None, length=steps // eval_every)
    return gn2, state
