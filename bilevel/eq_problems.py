"""Equality-constrained stochastic bilevel problems with closed-form solutions (the AiPOD setting).

The problem class of Xiao, Shen, Yin and Chen, "Alternating Implicit Projected SGD and Its Efficient Variants for
Equality-constrained Bilevel Optimization", AISTATS 2023 (arXiv:2211.07096), with quadratic objectives:

    min_{x in X} F(x) = f(x, y*(x)),   X = {x : B x = e}
    y*(x) = argmin_{y in Y(x)} g(x, y),   Y(x) = {y : A y + H x = c}   (the paper's A y + h(x) = c, h linear)

    f(x, y) = 1/2 x'Fxx x + x'Fxy y + 1/2 y'Fyy y + fx'x + fy'y
    g(x, y) = 1/2 y'Q y - y'P x + q'y

Stochastic oracles add N(0, sigma^2) noise to the gradients of f and g and (``hess_sigma``) to the Hessian /
Jacobian samples of g; a minibatch of b lower-level gradients is drawn as one N(0, sigma^2 / b) vector (the same
distribution). The closed form comes from two KKT systems (scipy): the lower one gives y*(x) = Phi x + phi, the
upper one the constrained minimiser x* of the convex quadratic F on X.

Generators: :func:`make_quadratic_bilevel` (random, seeded, condition numbers of both levels set) and
:func:`make_federated_bilevel` (the paper's federated application in synthetic form: M clients with heterogeneous
quadratic data, consensus constraints x_1 = ... = x_M and y_1 = ... = y_M, projections = averaging).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from bilevel.precision import check_float_dtype, float_array
from ratelab.errors import RatelabError
from ratelab.validate import check_nonnegative, check_positive, check_positive_int


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class EqBilevelQuadratic:
    """A quadratic bilevel problem with linear equality constraints in both levels (symbols as in the module doc).

    Precomputed: the projectors ``PB = I - B^+ B``, ``PA = I - A^+ A``, the pseudo-inverses ``Bp = B^+``,
    ``Ap = A^+``, an orthonormal basis ``V`` of null(A), the affine response y*(x) = ``Phi`` x + ``phi``, the
    hypergradient ∇F(x) = ``hessF`` x + ``gradF0``, the solution ``x_star`` and ``lower_smoothness``, the largest
    eigenvalue of V'QV (the lower-level Hessian restricted to null(A), which sets the Neumann step).
    """

    Fxx: jax.Array
    Fxy: jax.Array
    Fyy: jax.Array
    fx: jax.Array
    fy: jax.Array
    Q: jax.Array
    P: jax.Array
    q: jax.Array
    B: jax.Array
    e: jax.Array
    A: jax.Array
    H: jax.Array
    c: jax.Array
    sigma: jax.Array
    hess_sigma: jax.Array
    x0: jax.Array
    y0: jax.Array
    PB: jax.Array
    Bp: jax.Array
    PA: jax.Array
    Ap: jax.Array
    V: jax.Array
    Phi: jax.Array
    phi: jax.Array
    hessF: jax.Array
    gradF0: jax.Array
    x_star: jax.Array
    lower_smoothness: jax.Array

    @property
    def dim_x(self) -> int:
        return self.fx.shape[0]

    @property
    def dim_y(self) -> int:
        return self.fy.shape[0]

    # --- projections -------------------------------------------------------------------------------------------
    def project_x(self, x: jax.Array) -> jax.Array:
        """Proj_X(x) = (I - B^+ B) x + B^+ e."""
        return self.PB @ x + self.Bp @ self.e

    def project_y(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Proj_{Y(x)}(y) = (I - A^+ A) y + A^+ (c - H x)."""
        return self.PA @ y + self.Ap @ (self.c - self.H @ x)

    # --- exact quantities --------------------------------------------------------------------------------------
    def y_star(self, x: jax.Array) -> jax.Array:
        return self.Phi @ x + self.phi

    def grad_F(self, x: jax.Array) -> jax.Array:
        """∇F(x) of F(x) = f(x, y*(x)) (closed form)."""
        return self.hessF @ x + self.gradF0

    def upper_value(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return (0.5 * x @ self.Fxx @ x + x @ self.Fxy @ y + 0.5 * y @ self.Fyy @ y + self.fx @ x + self.fy @ y)

    def lower_value(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return 0.5 * y @ self.Q @ y - y @ self.P @ x + self.q @ y

    def upper_violation(self, x: jax.Array) -> jax.Array:
        return jnp.max(jnp.abs(self.B @ x - self.e))

    def lower_violation(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.max(jnp.abs(self.A @ y + self.H @ x - self.c))

    # --- exact derivatives used by the stochastic oracles ------------------------------------------------------
    def grad_x_f(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return self.Fxx @ x + self.Fxy @ y + self.fx

    def grad_y_f(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return self.Fxy.T @ x + self.Fyy @ y + self.fy

    def grad_y_g(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return self.Q @ y - self.P @ x + self.q

    def solution(self) -> tuple[jax.Array, jax.Array]:
        return self.x_star, self.y_star(self.x_star)


def _orth(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _spd(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    q = _orth(rng, n)
    m = (q * np.geomspace(lo, hi, n)) @ q.T
    return 0.5 * (m + m.T)


def lower_response(Q: np.ndarray, P: np.ndarray, q: np.ndarray, A: np.ndarray, H: np.ndarray,
                   c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y*(x) = Phi x + phi from the lower-level KKT system [[Q, A'], [A, 0]] [y; lam] = [P x - q; c - H x]."""
    dy, m = Q.shape[0], A.shape[0]
    K = np.block([[Q, A.T], [A, np.zeros((m, m))]])
    rhs_x = np.vstack([P, -H])                       # coefficient of x
    rhs_0 = np.concatenate([-q, c])                  # constant part
    sol = scipy.linalg.lstsq(K, np.column_stack([rhs_x, rhs_0]))[0]
    return sol[:dy, :-1], sol[:dy, -1]


def solve_lower(Q, P, q, A, H, c, x) -> np.ndarray:
    """y*(x) for one x, from the lower-level KKT system (float64 NumPy; independent of the closed-form Phi)."""
    dy, m = Q.shape[0], A.shape[0]
    K = np.block([[Q, A.T], [A, np.zeros((m, m))]])
    sol = scipy.linalg.lstsq(K, np.concatenate([P @ x - q, c - H @ x]))[0]
    return sol[:dy]


def build_problem(*, Fxx, Fxy, Fyy, fx, fy, Q, P, q, B, e, A, H, c, sigma: float = 1.0, hess_sigma: float = 0.0,
                  x0=None, y0=None, dtype: Any = None) -> EqBilevelQuadratic:
    """Check shapes and conditions, solve both KKT systems and return an :class:`EqBilevelQuadratic`.

    Requires Q positive definite on null(A) (a strongly convex lower level on Y(x)), A of full row rank (so Y(x) is
    never empty), B x = e consistent, and F strongly convex on null(B) (a unique x*).

    Everything is computed in float64 and kept so (``dtype=None``: float64 NumPy arrays when JAX's x64 mode is off,
    so ``ratelab.run(..., x64=True)`` sees unrounded projectors; see :mod:`bilevel.precision`); an explicit
    ``dtype`` casts (a 64-bit one needs x64).
    """
    check_float_dtype("build_problem", dtype)
    arr = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in dict(
        Fxx=Fxx, Fxy=Fxy, Fyy=Fyy, fx=fx, fy=fy, Q=Q, P=P, q=q, B=B, e=e, A=A, H=H, c=c).items()}
    dx, dy = arr["fx"].shape[0], arr["fy"].shape[0]
    mx, my = np.atleast_2d(arr["B"]).shape[0], np.atleast_2d(arr["A"]).shape[0]
    shapes = dict(Fxx=(dx, dx), Fxy=(dx, dy), Fyy=(dy, dy), Q=(dy, dy), P=(dy, dx), q=(dy,), B=(mx, dx),
                  e=(mx,), A=(my, dy), H=(my, dx), c=(my,))
    for k, s in shapes.items():
        arr[k] = arr[k].reshape(s) if arr[k].size == int(np.prod(s)) and len(s) == 2 else arr[k]
        if arr[k].shape != s:
            raise RatelabError(f"{k} must have shape {s} (from fx: {dx}, fy: {dy}, B: {mx} rows, A: {my} rows), "
                               f"got {arr[k].shape}")
    check_nonnegative("sigma", sigma)
    check_nonnegative("hess_sigma", hess_sigma)
    A_np, B_np, Q_np = arr["A"], arr["B"], 0.5 * (arr["Q"] + arr["Q"].T)
    if np.linalg.matrix_rank(A_np) != my or my >= dy:
        raise RatelabError(f"A must have full row rank and fewer rows than dim_y = {dy} (a nonempty Y(x) with "
                           f"room to optimise), got shape {A_np.shape} and rank {np.linalg.matrix_rank(A_np)}")
    V = scipy.linalg.null_space(A_np)
    mu = float(np.linalg.eigvalsh(V.T @ Q_np @ V).min())
    if mu <= 0:
        raise RatelabError(f"Q must be positive definite on null(A) (strongly convex lower level), got min "
                           f"eigenvalue {mu:.3g}")
    Bp = np.linalg.pinv(B_np)
    if not np.allclose(B_np @ Bp @ arr["e"], arr["e"], atol=1e-8):
        raise RatelabError("e must lie in the range of B (the upper-level constraint set B x = e is empty)")
    Ap = np.linalg.pinv(A_np)
    PB = np.eye(dx) - Bp @ B_np
    PA = np.eye(dy) - Ap @ A_np
    Phi, phi = lower_response(Q_np, arr["P"], arr["q"], A_np, arr["H"], arr["c"])
    hessF = arr["Fxx"] + arr["Fxy"] @ Phi + Phi.T @ arr["Fxy"].T + Phi.T @ arr["Fyy"] @ Phi
    hessF = 0.5 * (hessF + hessF.T)
    gradF0 = arr["Fxy"] @ phi + Phi.T @ (arr["Fyy"] @ phi + arr["fy"]) + arr["fx"]
    VB = scipy.linalg.null_space(B_np)
    if VB.shape[1] == 0:
        raise RatelabError("B must leave a nontrivial feasible set (rank(B) < dim_x)")
    muF = float(np.linalg.eigvalsh(VB.T @ hessF @ VB).min())
    if muF <= 0:
        raise RatelabError(f"F must be strongly convex on null(B) for a unique solution, got min eigenvalue "
                           f"{muF:.3g}")
    K = np.block([[hessF, B_np.T], [B_np, np.zeros((mx, mx))]])
    x_star = scipy.linalg.lstsq(K, np.concatenate([-gradF0, arr["e"]]))[0][:dx]
    x0_np = np.zeros(dx) if x0 is None else np.asarray(x0, dtype=float)
    y0_np = np.zeros(dy) if y0 is None else np.asarray(y0, dtype=float)
    if x0_np.shape != (dx,) or y0_np.shape != (dy,):
        raise RatelabError(f"x0 and y0 must have shapes ({dx},) and ({dy},), got {x0_np.shape} and {y0_np.shape}")
    j = lambda a: float_array("build_problem", a, dtype)  # noqa: E731  (float64 kept: the projectors are exact)
    return EqBilevelQuadratic(
        Fxx=j(arr["Fxx"]), Fxy=j(arr["Fxy"]), Fyy=j(arr["Fyy"]), fx=j(arr["fx"]), fy=j(arr["fy"]), Q=j(Q_np),
        P=j(arr["P"]), q=j(arr["q"]), B=j(B_np), e=j(arr["e"]), A=j(A_np), H=j(arr["H"]), c=j(arr["c"]),
        sigma=j(sigma), hess_sigma=j(hess_sigma), x0=j(x0_np), y0=j(y0_np), PB=j(PB), Bp=j(Bp), PA=j(PA),
        Ap=j(Ap), V=j(V), Phi=j(Phi), phi=j(phi), hessF=j(hessF), gradF0=j(gradF0), x_star=j(x_star),
        lower_smoothness=j(np.linalg.eigvalsh(V.T @ Q_np @ V).max()))


def make_quadratic_bilevel(key: jax.Array, *, dim_x: int = 10, dim_y: int = 10, upper_constraints: int = 3,
                           lower_constraints: int = 3, lower_cond: float = 4.0, upper_cond: float = 4.0,
                           coupling: float = 0.5, sigma: float = 1.0, hess_sigma: float = 0.1,
                           x0_scale: float = 3.0) -> EqBilevelQuadratic:
    """A random, seeded equality-constrained quadratic bilevel problem.

    Args:
      key: PRNG key (the matrices are drawn from a NumPy generator seeded by it).
      dim_x, dim_y: upper / lower dimensions.
      upper_constraints, lower_constraints: rows of B (rank) and of A.
      lower_cond: condition number of Q (eigenvalues geometric in [1/lower_cond, 1]).
      upper_cond: condition number of Fxx (eigenvalues in [1/upper_cond, 1]).
      coupling: scale of P (how strongly y* moves with x), of H and of Fxy.
      sigma, hess_sigma: oracle noise of gradients and of Hessian / Jacobian samples.
      x0_scale: distance of the starting point from the origin.
    """
    for name, v in (("dim_x", dim_x), ("dim_y", dim_y), ("upper_constraints", upper_constraints),
                    ("lower_constraints", lower_constraints)):
        check_positive_int(name, v)
    if upper_constraints >= dim_x:
        raise RatelabError(f"upper_constraints must be < dim_x = {dim_x}, got {upper_constraints}")
    if lower_constraints >= dim_y:
        raise RatelabError(f"lower_constraints must be < dim_y = {dim_y}, got {lower_constraints}")
    for name, v in (("lower_cond", lower_cond), ("upper_cond", upper_cond)):
        check_positive(name, v)
        if v < 1:
            raise RatelabError(f"{name} must be >= 1, got {v}")
    check_nonnegative("coupling", coupling)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    Q = _spd(rng, dim_y, 1.0 / lower_cond, 1.0)
    Fxx = _spd(rng, dim_x, 1.0 / upper_cond, 1.0)
    Fyy = 0.5 * _spd(rng, dim_y, 0.1, 1.0)
    # Fxy small enough that [[Fxx, Fxy], [Fxy', Fyy]] stays PSD: F is then convex (strongly, via Fxx).
    Fxy = rng.standard_normal((dim_x, dim_y))
    bound = 0.5 * np.sqrt(np.linalg.eigvalsh(Fxx).min() * np.linalg.eigvalsh(Fyy).min())
    Fxy *= coupling * bound / max(np.linalg.norm(Fxy, 2), 1e-12)
    P = coupling * rng.standard_normal((dim_y, dim_x)) / np.sqrt(dim_x)
    A = rng.standard_normal((lower_constraints, dim_y))
    H = coupling * rng.standard_normal((lower_constraints, dim_x)) / np.sqrt(dim_x)
    B = rng.standard_normal((upper_constraints, dim_x))
    return build_problem(
        Fxx=Fxx, Fxy=Fxy, Fyy=Fyy, fx=rng.standard_normal(dim_x), fy=rng.standard_normal(dim_y), Q=Q, P=P,
        q=rng.standard_normal(dim_y), B=B, e=rng.standard_normal(upper_constraints), A=A, H=H,
        c=rng.standard_normal(lower_constraints), sigma=sigma, hess_sigma=hess_sigma,
        x0=x0_scale * rng.standard_normal(dim_x) / np.sqrt(dim_x), y0=rng.standard_normal(dim_y))


def consensus_matrix(clients: int, dim: int) -> np.ndarray:
    """Rows z_i - z_{i+1} = 0 (i < M), blockwise: z_1 = ... = z_M for z = (z_1, ..., z_M), z_i in R^dim."""
    D = np.eye(clients - 1, clients) - np.eye(clients - 1, clients, k=1)
    return np.kron(D, np.eye(dim))


def make_federated_bilevel(key: jax.Array, *, clients: int = 5, dim_x: int = 3, dim_y: int = 3,
                           heterogeneity: float = 1.0, samples_per_client: int = 20, sigma: float = 1.0,
                           hess_sigma: float = 0.1, ridge: float = 0.1) -> EqBilevelQuadratic:
    """The paper's federated bilevel application in synthetic form (each client m holds local copies x_m, y_m):

        min_x (1/M) sum_m f_m(x_m, y*_m(x))  s.t.  x_1 = ... = x_M
        y*(x) = argmin_y (1/M) sum_m g_m(x_m, y_m)  s.t.  y_1 = ... = y_M

    Client m has least-squares data (U_m, v_m) with feature shift ``heterogeneity`` * mean_m (non-IID):
    g_m(x_m, y_m) = 1/(2n) ||U_m y_m - v_m - W_m x_m||^2 + ridge/2 ||y_m||^2 (a head y fitted on features shifted
    by the shared representation parameter x) and f_m(x_m, y_m) = 1/(2n) ||U'_m y_m - v'_m||^2 + ridge/2 ||x_m||^2
    on held-out data. Projections onto both consensus sets are client averaging (a communication round).
    """
    check_positive_int("clients", clients)
    if clients < 2:
        raise RatelabError(f"clients must be >= 2 for a consensus constraint, got {clients}")
    check_positive_int("dim_x", dim_x)
    check_positive_int("dim_y", dim_y)
    check_positive_int("samples_per_client", samples_per_client)
    check_nonnegative("heterogeneity", heterogeneity)
    check_positive("ridge", ridge)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n, M = samples_per_client, clients
    truth = rng.standard_normal(dim_y)
    Qs, Ps, qs, Fyys, fys = [], [], [], [], []
    for _ in range(M):
        shift = heterogeneity * rng.standard_normal(dim_y)
        U = rng.standard_normal((n, dim_y)) + shift
        v = U @ (truth + heterogeneity * rng.standard_normal(dim_y)) + 0.1 * rng.standard_normal(n)
        W = rng.standard_normal((n, dim_x)) / np.sqrt(dim_x)
        Qs.append(U.T @ U / n + ridge * np.eye(dim_y))
        Ps.append(U.T @ W / n)
        qs.append(-U.T @ v / n)
        Uv = rng.standard_normal((n, dim_y)) + shift
        vv = Uv @ truth + 0.1 * rng.standard_normal(n)
        Fyys.append(Uv.T @ Uv / n)
        fys.append(-Uv.T @ vv / n)
    bd = scipy.linalg.block_diag
    A = consensus_matrix(M, dim_y)
    B = consensus_matrix(M, dim_x)
    return build_problem(
        Fxx=ridge * np.eye(M * dim_x) / M, Fxy=np.zeros((M * dim_x, M * dim_y)), Fyy=bd(*Fyys) / M,
        fx=np.zeros(M * dim_x), fy=np.concatenate(fys) / M, Q=bd(*Qs) / M, P=bd(*Ps) / M,
        q=np.concatenate(qs) / M, B=B, e=np.zeros(B.shape[0]), A=A, H=np.zeros((A.shape[0], M * dim_x)),
        c=np.zeros(A.shape[0]), sigma=sigma, hess_sigma=hess_sigma,
        x0=rng.standard_normal(M * dim_x), y0=rng.standard_normal(M * dim_y))
