"""ReMax: REINFORCE with the greedy response's reward as baseline, on a token-by-token generation tree.

Paper: Z. Li, T. Xu, Y. Zhang, Z. Lin, Y. Yu, R. Sun, Z.-Q. Luo, "ReMax: A Simple, Effective, and Efficient
Reinforcement Learning Method for Aligning Large Language Models", arXiv:2310.10505 (2023); code liziniu/ReMax.

Model (the deterministic generation MDP of the paper's Sec. 3): a response is H tokens from a vocabulary of V; the
state at step t is the prefix a_{1:t-1} (one of 1 + V + ... + V^(H-1) prefixes), the transition appends the token,
the reward r(a_{1:H}) arrives at the end. The policy is tabular softmax, ``theta[prefix, token]``.

ReMax (the paper's Algorithm 1), restated: for each prompt draw a response a ~ pi_theta and the greedy response
a_bar (argmax token at every step; ties broken at random, independently of a), and step along

    g = sum_t grad log pi_theta(a_t | a_{1:t-1}) (r(a) - r(a_bar)).

With the RLHF objective J_beta = E r - beta KL(pi_theta || pi_ref) the reward is the KL-penalised sequence reward
r_beta(a) = r(a) - beta log(pi_theta(a) / pi_ref(a)) for both responses (the code penalises the KL per token with
``kl_ctl``; we use the sequence-level form, whose gradient is exactly that of J_beta). Unbiasedness: the baseline
does not depend on a, so E[grad log pi(a) r_beta(a_bar)] = 0, and E[grad r_beta] = -beta E[grad log pi] = 0.

Symbols -> arguments: V (``vocab``), H (``horizon``), theta (``theta``), pi_ref (``ref_theta``), r (``rewards``,
one per complete response, indexed like :attr:`Tree.sequences`), beta (``beta``), the sampler's uniforms
(``uniforms``: inverse-CDF draws, generated outside the compiled programs).

Baselines compared (``Baseline``): ReMax's greedy response; none (vanilla REINFORCE); the mean reward of a pair of
samples *including* the sample itself (a sample-dependent, hence biased, baseline: E g = grad J / 2); the greedy
response used as the sample too (no exploration: g = 0). The value-baseline learner (the PPO family's critic
without clipping, reconstructed for the state count) keeps a value table V(prefix) trained by squared error.

Derived here (tested): exact gradient and exact estimator covariances by enumerating the V^H responses,
tr Cov g = sum_a pi(a) |grad log pi(a)|^2 (r_beta(a) - b)^2 - |grad J_beta|^2, with |grad log pi(a)|^2 =
sum_t |e_{a_t} - pi(.|a_{1:t-1})|^2; ReMax's estimator is invariant to a reward offset r + c, vanilla REINFORCE's
variance grows like c^2; the optimum of J_beta is pi_ref(a) exp(r(a)/beta) / Z (the tree policy can represent any
distribution over responses).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignment.bandits import kl_regularized_value
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.validate import check_nonnegative, check_positive_int

BASELINES = ("greedy", "none", "pair-mean", "greedy-sample")


class Tree(NamedTuple):
    """Index arrays of the generation tree: ``sequences[n, H]`` (every response, lexicographic), ``prefixes[n, H]``
    (the prefix index of each step), ``offsets[H]`` (index of the first prefix of length t), ``n_prefixes``."""

    sequences: np.ndarray
    prefixes: np.ndarray
    offsets: np.ndarray
    n_prefixes: int
    vocab: int
    horizon: int


def tree(vocab: int, horizon: int) -> Tree:
    """The generation tree of ``vocab ** horizon`` responses (prefix of length t, code c -> offsets[t] + c)."""
    check_positive_int("vocab", vocab)
    check_positive_int("horizon", horizon)
    if vocab < 2:
        raise RatelabError(f"vocab must be >= 2, got {vocab}")
    if vocab**horizon > 2**16:
        raise RatelabError(f"vocab ** horizon must be <= 65536 (every response is enumerated), got {vocab**horizon}")
    seqs = np.array(np.unravel_index(np.arange(vocab**horizon), (vocab,) * horizon)).T
    offsets = np.concatenate([[0], np.cumsum(vocab ** np.arange(horizon - 1))]).astype(int)
    codes = np.zeros((seqs.shape[0], horizon), int)
    for t in range(1, horizon):
        codes[:, t] = codes[:, t - 1] * vocab + seqs[:, t - 1]
    return Tree(seqs, offsets[None, :] + codes, offsets, int(offsets[-1] + vocab ** (horizon - 1)), vocab, horizon)


def sequence_logprobs(theta: jax.Array, tr: Tree) -> jax.Array:
    """log pi_theta(a) for every response a (``[V^H]``)."""
    logp = jax.nn.log_softmax(theta, axis=-1)
    return jnp.sum(logp[tr.prefixes, tr.sequences], axis=-1)


def regularized_rewards(theta: jax.Array, ref_theta: jax.Array, rewards: jax.Array, beta: Any, tr: Tree) -> jax.Array:
    """r_beta(a) = r(a) - beta log(pi_theta(a) / pi_ref(a)) for every response."""
    return rewards - beta * (sequence_logprobs(theta, tr) - sequence_logprobs(ref_theta, tr))


def objective(theta: jax.Array, ref_theta: jax.Array, rewards: jax.Array, beta: Any, tr: Tree) -> jax.Array:
    """J_beta(theta) = E_pi r - beta KL(pi_theta || pi_ref) (exact, by enumeration)."""
    lp = sequence_logprobs(theta, tr)
    return jnp.sum(jnp.exp(lp) * (rewards - beta * (lp - sequence_logprobs(ref_theta, tr))))


def optimum_value(ref_theta: jax.Array, rewards: jax.Array, beta: Any, tr: Tree) -> jax.Array:
    """max J_beta = beta log sum_a pi_ref(a) exp(r(a)/beta) (derived here: the tree policy is unrestricted)."""
    return kl_regularized_value(rewards, sequence_logprobs(ref_theta, tr), beta)


def _code(seq: jax.Array, tr: Tree) -> jax.Array:
    """Index of a response (``[..., H]`` tokens) in :attr:`Tree.sequences`."""
    return jnp.sum(seq * tr.vocab ** jnp.arange(tr.horizon - 1, -1, -1), axis=-1)


def generate(theta: jax.Array, uniforms: jax.Array, tr: Tree) -> jax.Array:
    """Responses drawn token by token by inverse CDF from ``uniforms[..., H]`` (response indices ``[...]``)."""
    prob = jax.nn.softmax(theta, axis=-1)
    code = jnp.zeros(uniforms.shape[:-1], jnp.int32)
    for t in range(tr.horizon):
        cdf = jnp.cumsum(prob[tr.offsets[t] + code], axis=-1)
        tok = jnp.minimum(jnp.sum(uniforms[..., t, None] > cdf, axis=-1), tr.vocab - 1)
        code = code * tr.vocab + tok
    return code


def greedy(theta: jax.Array, tie_uniforms: jax.Array, tr: Tree, tol: float = 1e-12) -> jax.Array:
    """The greedy response: the most probable token at every step, ties (within ``tol``) broken uniformly at random
    by ``tie_uniforms[H]`` (independent of the sampled response, so the baseline stays sample-independent)."""
    prob = jax.nn.softmax(theta, axis=-1)
    code = jnp.zeros((), jnp.int32)
    for t in range(tr.horizon):
        p = prob[tr.offsets[t] + code]
        best = p >= jnp.max(p) - tol
        pick = jnp.cumsum(best) > tie_uniforms[t] * jnp.sum(best)
        code = code * tr.vocab + jnp.argmax(best & pick)
    return code


def score_norms(theta: jax.Array, tr: Tree) -> jax.Array:
    """|grad_theta log pi(a)|^2 = sum_t |e_{a_t} - pi(.|a_{1:t-1})|^2 for every response (distinct prefixes are
    distinct parameters, so the steps are orthogonal)."""
    prob = jax.nn.softmax(theta, axis=-1)[tr.prefixes]
    onehot = jax.nn.one_hot(tr.sequences, tr.vocab, dtype=prob.dtype)
    return jnp.sum((onehot - prob) ** 2, axis=(-1, -2))


def exact_moments(theta: jax.Array, ref_theta: jax.Array, rewards: jax.Array, beta: Any, baseline: jax.Array,
                  tr: Tree) -> tuple[jax.Array, jax.Array]:
    """(grad J_beta, tr Cov g) for the estimator g = grad log pi(a) (r_beta(a) - baseline) with a sample-independent
    ``baseline`` (0 for vanilla REINFORCE), by enumeration (derived here)."""
    grad = jax.grad(objective)(theta, ref_theta, rewards, beta, tr)
    p = jnp.exp(sequence_logprobs(theta, tr))
    adv = regularized_rewards(theta, ref_theta, rewards, beta, tr) - baseline
    return grad, jnp.sum(p * score_norms(theta, tr) * adv**2) - jnp.sum(grad**2)


def sample_scores(theta: jax.Array, codes: jax.Array, tr: Tree) -> jax.Array:
    """grad_theta log pi(a) for responses ``codes[B]`` (dense ``[B, n_prefixes, V]``)."""
    prob = jax.nn.softmax(theta, axis=-1)
    seq, pre = jnp.asarray(tr.sequences)[codes], jnp.asarray(tr.prefixes)[codes]
    out = jnp.zeros((codes.shape[0],) + theta.shape, theta.dtype)
    rows = jnp.broadcast_to(jnp.arange(codes.shape[0])[:, None], pre.shape)
    out = out.at[rows, pre].add(-prob[pre])
    return out.at[rows, pre, seq].add(1.0)


def estimates(theta: jax.Array, ref_theta: jax.Array, rewards: jax.Array, beta: Any, uniforms: jax.Array,
              tie_uniforms: jax.Array, tr: Tree) -> dict[str, jax.Array]:
    """Per-sample gradient estimates ``[B, n_prefixes, V]`` of every baseline from ``uniforms[2, B, H]`` (two
    independent batches: the second one feeds the pair-mean baseline and the independent REINFORCE batch)."""
    rb = regularized_rewards(theta, ref_theta, rewards, beta, tr)
    a, a2 = generate(theta, uniforms[0], tr), generate(theta, uniforms[1], tr)
    s, s2 = sample_scores(theta, a, tr), sample_scores(theta, a2, tr)
    b = rb[greedy(theta, tie_uniforms, tr)]
    w = lambda x: x[:, None, None]  # noqa: E731
    return {"greedy": s * w(rb[a] - b), "none": s * w(rb[a]), "none2": s2 * w(rb[a2]),
            "pair-mean": s * w((rb[a] - rb[a2]) / 2)}


def estimator_study(theta: jax.Array, ref_theta: jax.Array, rewards: jax.Array, beta: Any, uniforms: jax.Array,
                    tie_uniforms: jax.Array, tr: Tree, chunk: int) -> dict[str, jax.Array]:
    """Monte Carlo means over growing numbers of samples M = chunk, 2 chunk, ... (``uniforms[n_chunks, 2, chunk,
    H]``): per chunk end the squared error |g_M - grad J|^2 of each estimator (normalised by its exact tr Cov for
    the unbiased ones), and the sample variances (trace of the covariance) of every estimator at the end, with the
    exact ones."""
    grad, var_greedy = exact_moments(theta, ref_theta, rewards, beta,
                                     regularized_rewards(theta, ref_theta, rewards, beta, tr)[
                                         greedy(theta, tie_uniforms, tr)], tr)
    _, var_none = exact_moments(theta, ref_theta, rewards, beta, 0.0, tr)
    names = ("greedy", "none", "none2", "pair-mean")

    def body(carry, u):
        sums, sq = carry
        est = estimates(theta, ref_theta, rewards, beta, u, tie_uniforms, tr)
        sums = {k: sums[k] + est[k].sum(0) for k in names}
        sq = {k: sq[k] + jnp.sum(est[k] ** 2) for k in names}
        return (sums, sq), sums

    zero = {k: jnp.zeros_like(theta) for k in names}
    (sums, sq), path = jax.lax.scan(body, (zero, {k: jnp.zeros((), theta.dtype) for k in names}), uniforms)
    m = chunk * jnp.arange(1, uniforms.shape[0] + 1, dtype=theta.dtype)
    err = {k: jnp.sum((path[k] / m[:, None, None] - grad) ** 2, axis=(-1, -2)) for k in names}
    total = m[-1]
    var = {k: (sq[k] - jnp.sum(sums[k] ** 2) / total) / (total - 1) for k in names}
    return {"err_greedy": err["greedy"] / var_greedy, "err_none": err["none"] / var_none,
            "err_pair_mean": err["pair-mean"] / var_greedy,
            "var_greedy": var["greedy"], "var_none": var["none"], "var_none2": var["none2"],
            "exact_var_greedy": var_greedy, "exact_var_none": var_none}


class Learner(NamedTuple):
    """A learner's state: the policy, the value table (empty for ReMax), the optimiser state."""

    theta: jax.Array
    value: jax.Array
    opt_state: Any


def state_size(state: Learner) -> int:
    """Floats held by a learner's state (policy, value model, optimiser moments)."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(state)))


def learner_init(theta0: jax.Array, tr: Tree, optimizer: optax.GradientTransformation,
                 value_model: bool) -> Learner:
    """ReMax (``value_model=False``: the policy alone) or the value-baseline learner (a value per prefix)."""
    value = jnp.zeros((tr.n_prefixes if value_model else 0,), theta0.dtype)
    return Learner(theta0, value, optimizer.init((theta0, value)))


def remax_step(state: Learner, ref_theta: jax.Array, rewards: jax.Array, beta: Any, uniforms: jax.Array,
               tie_uniforms: jax.Array, explore: Any, optimizer: optax.GradientTransformation,
               tr: Tree) -> Learner:
    """One ReMax update from a batch ``uniforms[B, H]``: ascend mean_i grad log pi(a_i) (r_beta(a_i) - r_beta(a_bar))
    (``explore = 0`` replaces every sample by the greedy response: the no-exploration control)."""
    theta = state.theta
    rb = regularized_rewards(theta, ref_theta, rewards, beta, tr)
    bar = greedy(theta, tie_uniforms, tr)
    a = jnp.where(explore > 0, generate(theta, uniforms, tr), bar)
    adv = jax.lax.stop_gradient(rb[a] - rb[bar])

    def surrogate(params):
        logp = sequence_logprobs(params[0], tr)[a]
        return -jnp.mean(logp * adv)

    grads = jax.grad(surrogate)((theta, state.value))
    updates, opt_state = optimizer.update(grads, state.opt_state, (theta, state.value))
    theta, value = optax.apply_updates((theta, state.value), updates)
    return Learner(theta, value, opt_state)


def train(theta0: jax.Array, ref_theta: jax.Array, rewards: jax.Array, beta: Any, uniforms: jax.Array,
          tie_uniforms: jax.Array, explore: Any, learning_rate: Any, tr: Tree, log_every: int) -> dict[str, jax.Array]:
    """ReMax with Adam (optax) for ``uniforms.shape[0]`` steps (``uniforms[T, B, H]``, ``tie_uniforms[T, H]``),
    logging the exact J_beta every ``log_every`` steps, with exact policy-gradient ascent under the same optimiser
    and schedule as a reference. ``learning_rate`` is a float or an optax schedule."""
    check_positive_int("log_every", log_every)
    check_nonnegative("beta", beta)
    opt = optax.adam(as_schedule(learning_rate))
    exact_opt = optax.adam(as_schedule(learning_rate))
    value = lambda th: objective(th, ref_theta, rewards, beta, tr)  # noqa: E731
    steps = uniforms.shape[0]
    if steps % log_every:
        raise RatelabError(f"log_every must divide the number of steps ({steps}), got {log_every}")

    def block(carry, xs):
        state, th_exact, st_exact = carry
        us, ts = xs

        def one(c, x):
            s, te, se = c
            s = remax_step(s, ref_theta, rewards, beta, x[0], x[1], explore, opt, tr)
            upd, se = exact_opt.update(jax.tree_util.tree_map(jnp.negative, jax.grad(value)(te)), se, te)
            return (s, optax.apply_updates(te, upd), se), None

        (state, th_exact, st_exact), _ = jax.lax.scan(one, (state, th_exact, st_exact), (us, ts))
        return (state, th_exact, st_exact), (value(state.theta), value(th_exact))

    init = learner_init(theta0, tr, opt, value_model=False)
    shape = (steps // log_every, log_every)
    xs = (uniforms.reshape(shape + uniforms.shape[1:]), tie_uniforms.reshape(shape + tie_uniforms.shape[1:]))
    _, (j_remax, j_exact) = jax.lax.scan(block, (init, theta0, exact_opt.init(theta0)), xs)
    return {"j_remax": j_remax, "j_exact_pg": j_exact, "j_start": value(theta0)}


def value_baseline_step(state: Learner, ref_theta: jax.Array, rewards: jax.Array, beta: Any, uniforms: jax.Array,
                        optimizer: optax.GradientTransformation, tr: Tree) -> Learner:
    """One update of the value-baseline learner (reconstructed PPO-family critic, no clipping): per token the
    advantage r_beta(a) - V(a_{1:t-1}), and V regressed on r_beta(a) by squared error, both by one optimiser."""
    theta = state.theta
    rb = regularized_rewards(theta, ref_theta, rewards, beta, tr)
    a = generate(theta, uniforms, tr)
    pre, seq = jnp.asarray(tr.prefixes)[a], jnp.asarray(tr.sequences)[a]
    target = jax.lax.stop_gradient(rb[a])

    def loss(params):
        th, v = params
        logp = jax.nn.log_softmax(th, axis=-1)[pre, seq]
        adv = jax.lax.stop_gradient(target[:, None] - v[pre])
        return -jnp.mean(jnp.sum(logp * adv, -1)) + 0.5 * jnp.mean((target[:, None] - v[pre]) ** 2)

    grads = jax.grad(loss)((theta, state.value))
    updates, opt_state = optimizer.update(grads, state.opt_state, (theta, state.value))
    theta, value = optax.apply_updates((theta, state.value), updates)
    return Learner(theta, value, opt_state)
