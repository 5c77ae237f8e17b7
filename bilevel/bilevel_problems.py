"""Bilevel problem generators for PBGD (Shen, Xiao & Chen, arXiv:2302.05185) with known solutions.

Each problem is a pytree (arrays as data) with ``upper(x, y, batch)`` (f), ``lower(x, y, batch)`` (g),
``initial(key) -> (x, y)``, ``metrics(x, y)`` and, where known, ``solution()`` / ``value_function(x)``:

* :func:`make_quadratic`: f = 1/2||x - a||^2 + 1/2||y - b||^2, g = 1/2 y'Hy - y'(Bx + c), H > 0. Closed forms for the
  bilevel solution and for the penalised solutions of both penalties (:meth:`QuadraticBilevel.penalised_solution`).
* :func:`make_many_minimisers`: a lower level with a continuum of minimisers (convex, PL, not strongly convex),
  f = 1/2||x - y2||^2 + 1/2||y1 - 1||^2, g = 1/2||y1||^2 - x'y1 (the standard non-singleton example of Liu, Mu, Yuan,
  Zeng & Zhang, "A Generic First-Order Algorithmic Framework for Bi-Level Programming Beyond Lower-Level
  Singleton", ICML 2020). S(x) = {(x, y2)}; the bilevel solution is x = y1 = y2 = 1. Implicit-gradient / unrolled
  methods keep y2 at its initial value (grad_{y2} g = 0) and converge to x = (1 + y2_0)/2.
* :func:`make_box_constrained`: g = 1/2||y - x||^2 over U = [-r, r]^d (y*(x) = clip(x)), f = 1/2||x - a||^2 +
  1/2||y - b||^2: a constrained lower level handled by projection; per-coordinate closed-form bilevel solution.
* :func:`make_toy`: the paper's numerical-verification toy (authors' public code ``V-PBGD/toy/toy.py``):
  f = cos(4y + 2) / (1 + exp(2 - 4x)) + 1/2 log((4x - 2)^2 + 1), g = (x + y)^2 + x sin^2(x + y), x in C = [0, 3].
  For x >= 0, S(x) = {-x} and v(x) = 0; the hyper-objective F(x) = f(x, -x) has several local minima on C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.precision import check_float_dtype, float_array
from ratelab.errors import RatelabError
from ratelab.validate import check_positive, check_positive_int


def _sq(v: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(v))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class QuadraticBilevel:
    """f = 1/2||x - a||^2 + 1/2||y - b||^2, g = 1/2 y'Hy - y'(Bx + c): y*(x) = H^{-1}(Bx + c), v(x) = -1/2 q'H^{-1}q."""

    a: jax.Array
    b: jax.Array
    c: jax.Array
    H: jax.Array
    B: jax.Array
    init_scale: jax.Array

    def upper(self, x, y, batch=None):
        return 0.5 * _sq(x - self.a) + 0.5 * _sq(y - self.b)

    def lower(self, x, y, batch=None):
        return 0.5 * y @ (self.H @ y) - y @ (self.B @ x + self.c)

    def lower_solution(self, x):
        return jnp.linalg.solve(self.H, self.B @ x + self.c)

    def value_function(self, x):
        return self.lower(x, self.lower_solution(x))

    def initial(self, key):
        kx, ky = jax.random.split(key)
        return (self.a + self.init_scale * jax.random.normal(kx, self.a.shape, jnp.result_type(self.a)),
                self.b + self.init_scale * jax.random.normal(ky, self.b.shape, jnp.result_type(self.b)))

    def solution(self):
        """(x*, y*) of BP: (I + M'M) x = a + M'(b - H^{-1}c), M = H^{-1}B, y* = y*(x*)."""
        M = jnp.linalg.solve(self.H, self.B)
        d = jnp.linalg.solve(self.H, self.c)
        eye = jnp.eye(self.a.shape[0], dtype=jnp.result_type(self.a))
        x = jnp.linalg.solve(eye + M.T @ M, self.a + M.T @ (self.b - d))
        return x, self.lower_solution(x)

    def penalised_solution(self, gamma, penalty: str = "value"):
        """The unique minimiser of f + gamma p (p = g - v for ``"value"``, ||grad_y g||^2 for ``"gradient"``): the
        stationarity equations are linear, so one solve. Differentiable and vmappable in gamma."""
        dx, dy = self.a.shape[0], self.b.shape[0]
        M = jnp.linalg.solve(self.H, self.B)
        d = jnp.linalg.solve(self.H, self.c)
        if penalty == "value":  # p = 1/2 (y - Mx - d)' H (y - Mx - d)
            W, r, J = self.H, d, M
        elif penalty == "gradient":  # p = ||H y - B x - c||^2 = (y - Mx - d)' (2 H^2) (y - Mx - d) / 2
            W, r, J = 2 * self.H @ self.H, d, M
        else:
            raise RatelabError(f"penalty must be 'value' or 'gradient', got {penalty!r}")
        # F = 1/2||x-a||^2 + 1/2||y-b||^2 + gamma/2 (y - Jx - r)' W (y - Jx - r)
        dt = jnp.result_type(self.a)
        Ix, Iy = jnp.eye(dx, dtype=dt), jnp.eye(dy, dtype=dt)
        top = jnp.concatenate([Ix + gamma * J.T @ W @ J, -gamma * J.T @ W], axis=1)
        bot = jnp.concatenate([-gamma * W @ J, Iy + gamma * W], axis=1)
        rhs = jnp.concatenate([self.a - gamma * J.T @ W @ r, self.b + gamma * W @ r])
        sol = jnp.linalg.solve(jnp.concatenate([top, bot], axis=0), rhs)
        return sol[:dx], sol[dx:]

    def metrics(self, x, y):
        xs, ys = self.solution()
        return {"dist_to_opt": jnp.sqrt(_sq(x - xs) + _sq(y - ys)),
                "ll_dist": jnp.sqrt(_sq(y - self.lower_solution(x)))}


def make_quadratic(key: jax.Array, *, dx: int = 4, dy: int = 6, mu: float = 1.0, L: float = 4.0,
                   coupling: float = 1.0, init_scale: float = 1.0, dtype: Any = None) -> QuadraticBilevel:
    """A random quadratic bilevel problem: H with spectrum evenly spread in [mu, L], B ~ coupling N(0, 1/dx).
    The draws are float32 whatever the x64 setting, so a key gives the same problem in both precisions; the matrices
    built from them are float64 and kept so (``dtype=None``; see :mod:`bilevel.precision`), or cast to ``dtype``."""
    check_float_dtype("make_quadratic", dtype)
    dx = check_positive_int("dx", dx)
    dy = check_positive_int("dy", dy)
    check_positive("mu", mu)
    check_positive("L", L)
    check_positive("coupling", coupling)
    check_positive("init_scale", init_scale)
    if L < mu:
        raise RatelabError(f"L must be >= mu ({mu}), got {L}")
    ka, kb, kc, kq, kB = jax.random.split(key, 5)
    q, _ = np.linalg.qr(np.asarray(jax.random.normal(kq, (dy, dy), jnp.float32), dtype=float))
    H = (q * np.linspace(mu, L, dy)) @ q.T
    arr = lambda v: float_array("make_quadratic", np.asarray(v, dtype=float), dtype)  # noqa: E731
    return QuadraticBilevel(
        a=arr(jax.random.normal(ka, (dx,), jnp.float32)), b=arr(jax.random.normal(kb, (dy,), jnp.float32)),
        c=arr(jax.random.normal(kc, (dy,), jnp.float32)), H=arr(0.5 * (H + H.T)),
        B=arr(coupling * np.asarray(jax.random.normal(kB, (dy, dx), jnp.float32)) / np.sqrt(dx)),
        init_scale=arr(init_scale))


def _vector(name: str, v: Any, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(v, dtype=float)
    if arr.ndim != 1 or (dim is not None and arr.shape[0] != dim) or not np.all(np.isfinite(arr)):
        want = f"a finite vector of length {dim}" if dim is not None else "a finite 1-D vector"
        raise RatelabError(f"{name} must be {want}, got shape {arr.shape}")
    return arr


def build_quadratic(*, a: Any, b: Any, c: Any, H: Any, B: Any, init_scale: float = 1.0,
                    dtype: Any = None) -> QuadraticBilevel:
    """:class:`QuadraticBilevel` from the user's own arrays: a (dx,), b (dy,), c (dy,), H (dy, dy) symmetric positive
    definite (the smallest eigenvalue is named in the error), B (dy, dx)."""
    check_float_dtype("build_quadratic", dtype)
    a_, b_ = _vector("a", a), _vector("b", b)
    dx, dy = a_.shape[0], b_.shape[0]
    c_ = _vector("c", c, dy)
    H_, B_ = np.asarray(H, dtype=float), np.asarray(B, dtype=float)
    if H_.shape != (dy, dy):
        raise RatelabError(f"H must have shape ({dy}, {dy}) (dy = len(b)), got {H_.shape}")
    if B_.shape != (dy, dx):
        raise RatelabError(f"B must have shape ({dy}, {dx}) (len(b), len(a)), got {B_.shape}")
    if not (np.all(np.isfinite(H_)) and np.all(np.isfinite(B_))):
        raise RatelabError("H and B must be finite")
    asym = float(np.max(np.abs(H_ - H_.T)))
    if asym > 1e-10 * max(1.0, float(np.max(np.abs(H_)))):
        raise RatelabError(f"H must be symmetric; max |H - H'| = {asym:.3g}")
    lam = float(np.linalg.eigvalsh(0.5 * (H_ + H_.T))[0])
    if lam <= 0:
        raise RatelabError(f"H must be positive definite (strongly convex lower level); its smallest eigenvalue is "
                           f"{lam:.3g}")
    check_positive("init_scale", init_scale)
    arr = lambda v: float_array("build_quadratic", np.asarray(v, dtype=float), dtype)  # noqa: E731
    return QuadraticBilevel(a=arr(a_), b=arr(b_), c=arr(c_), H=arr(0.5 * (H_ + H_.T)), B=arr(B_),
                            init_scale=arr(init_scale))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ManyMinimisers:
    """y = {"y1", "y2"}; f = 1/2||x - y2||^2 + 1/2||y1 - 1||^2, g = 1/2||y1||^2 - x'y1; S(x) = {(x, y2): y2 free}."""

    init_scale: jax.Array
    dim: int = field(default=2, metadata={"static": True})

    def upper(self, x, y, batch=None):
        return 0.5 * _sq(x - y["y2"]) + 0.5 * _sq(y["y1"] - 1.0)

    def lower(self, x, y, batch=None):
        return 0.5 * _sq(y["y1"]) - x @ y["y1"]

    def value_function(self, x):
        return -0.5 * _sq(x)

    def initial(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        s, dt = self.init_scale, jnp.result_type(self.init_scale)
        return (s * jax.random.normal(k1, (self.dim,), dt),
                {"y1": s * jax.random.normal(k2, (self.dim,), dt),
                 "y2": s * jax.random.normal(k3, (self.dim,), dt)})

    def solution(self):
        one = jnp.ones((self.dim,), jnp.result_type(self.init_scale))
        return one, {"y1": one, "y2": one}

    def metrics(self, x, y):
        return {"dist_to_opt": jnp.sqrt(_sq(x - 1.0) + _sq(y["y1"] - 1.0) + _sq(y["y2"] - 1.0)),
                "ll_dist": jnp.sqrt(_sq(y["y1"] - x))}


def make_many_minimisers(key: jax.Array | None = None, *, dim: int = 2, init_scale: float = 1.0,
                         dtype: Any = None) -> ManyMinimisers:
    """The non-singleton lower level of Liu et al. (ICML 2020) in ``dim`` dimensions (``key`` unused; ``dtype`` as
    in :func:`make_quadratic`)."""
    del key
    check_float_dtype("make_many_minimisers", dtype)
    dim = check_positive_int("dim", dim)
    check_positive("init_scale", init_scale)
    return ManyMinimisers(dim=dim, init_scale=float_array("make_many_minimisers", init_scale, dtype))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BoxConstrained:
    """g = 1/2||y - x||^2 on U = [-r, r]^d, f = 1/2||x - a||^2 + 1/2||y - b||^2 (y*(x) = clip(x, -r, r))."""

    a: jax.Array
    b: jax.Array
    r: jax.Array
    init_scale: jax.Array

    def upper(self, x, y, batch=None):
        return 0.5 * _sq(x - self.a) + 0.5 * _sq(y - self.b)

    def lower(self, x, y, batch=None):
        return 0.5 * _sq(y - x)

    def project_y(self, x, y):
        return jnp.clip(y, -self.r, self.r)

    def lower_solution(self, x):
        return jnp.clip(x, -self.r, self.r)

    def value_function(self, x):
        return self.lower(x, self.lower_solution(x))

    def initial(self, key):
        kx, ky = jax.random.split(key)
        return (self.init_scale * jax.random.normal(kx, self.a.shape, jnp.result_type(self.a)),
                self.init_scale * jax.random.normal(ky, self.b.shape, jnp.result_type(self.b)))

    def solution(self):
        """Per coordinate minimise phi(x) = 1/2(x - a)^2 + 1/2(clip(x) - b)^2: the candidates are the stationary
        points of each piece (x = a outside [-r, r], x = (a + b)/2 inside) and the kinks +-r; the minimum of phi
        over a candidate set that contains them is the minimiser."""
        a, b, r = self.a, self.b, self.r
        cands = jnp.stack([a, jnp.clip((a + b) / 2, -r, r), -r * jnp.ones_like(a), r * jnp.ones_like(a)])
        phi = 0.5 * (cands - a) ** 2 + 0.5 * (jnp.clip(cands, -r, r) - b) ** 2
        x = jnp.take_along_axis(cands, jnp.argmin(phi, axis=0)[None], axis=0)[0]
        return x, self.lower_solution(x)

    def metrics(self, x, y):
        xs, ys = self.solution()
        viol = jnp.max(jnp.maximum(jnp.abs(y) - self.r, 0.0))
        return {"dist_to_opt": jnp.sqrt(_sq(x - xs) + _sq(y - ys)), "ll_violation": viol}


def make_box_constrained(key: jax.Array, *, dim: int = 4, radius: float = 0.5, init_scale: float = 1.0,
                         dtype: Any = None) -> BoxConstrained:
    """Random a, b ~ N(0, I); lower level constrained to the box [-radius, radius]^dim (``dtype`` as in
    :func:`make_quadratic`)."""
    check_float_dtype("make_box_constrained", dtype)
    dim = check_positive_int("dim", dim)
    check_positive("radius", radius)
    check_positive("init_scale", init_scale)
    ka, kb = jax.random.split(key)
    arr = lambda v: float_array("make_box_constrained", v, dtype)  # noqa: E731
    draw = lambda k: arr(np.asarray(jax.random.normal(k, (dim,), jnp.float32), dtype=float))  # noqa: E731 (same in x64)
    return BoxConstrained(a=draw(ka), b=draw(kb), r=arr(radius), init_scale=arr(init_scale))


def build_box_constrained(*, a: Any, b: Any, radius: Any, init_scale: float = 1.0,
                          dtype: Any = None) -> BoxConstrained:
    """:class:`BoxConstrained` from the user's a, b (same length d) and box radius r > 0 (a scalar or a (d,) vector
    of per-coordinate radii)."""
    check_float_dtype("build_box_constrained", dtype)
    a_ = _vector("a", a)
    b_ = _vector("b", b, a_.shape[0])
    r = np.asarray(radius, dtype=float)
    if r.ndim > 1 or (r.ndim == 1 and r.shape[0] != a_.shape[0]):
        raise RatelabError(f"radius must be a scalar or a vector of length {a_.shape[0]}, got shape {r.shape}")
    check_positive("radius", r)
    check_positive("init_scale", init_scale)
    arr = lambda v: float_array("build_box_constrained", np.asarray(v, dtype=float), dtype)  # noqa: E731
    return BoxConstrained(a=arr(a_), b=arr(b_), r=arr(r), init_scale=arr(init_scale))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Toy:
    """The paper's toy: x, y scalars (shape ``()``), C = [lo, hi]."""

    lo: jax.Array
    hi: jax.Array
    init_lo: jax.Array
    init_hi: jax.Array

    def upper(self, x, y, batch=None):
        return jnp.cos(4 * y + 2) / (1 + jnp.exp(2 - 4 * x)) + 0.5 * jnp.log((4 * x - 2) ** 2 + 1)

    def lower(self, x, y, batch=None):
        return (x + y) ** 2 + x * jnp.sin(x + y) ** 2

    def project_x(self, x):
        return jnp.clip(x, self.lo, self.hi)

    def lower_solution(self, x):
        return -x

    def value_function(self, x):
        return jnp.zeros_like(x)

    def hyper_objective(self, x):
        """F(x) = f(x, y*(x)) = f(x, -x)."""
        return self.upper(x, -x)

    def initial(self, key):
        """The authors' initialisation: x ~ U(0, 3.5), y ~ U(-5, 8.5) (x is then projected onto C)."""
        kx, ky = jax.random.split(key)
        dt = jnp.result_type(self.lo)
        return (jax.random.uniform(kx, (), dt, 0.0, 3.5), jax.random.uniform(ky, (), dt, self.init_lo, self.init_hi))

    def local_minimisers(self, n: int = 30001) -> np.ndarray:
        """Local minimisers of F on C, located on a fine grid (interior minima and minimal endpoints)."""
        xs = np.linspace(float(self.lo), float(self.hi), n)
        F = np.cos(2 - 4 * xs) / (1 + np.exp(2 - 4 * xs)) + 0.5 * np.log((4 * xs - 2) ** 2 + 1)  # f(x, -x), float64
        left = np.r_[np.inf, F[:-1]]
        right = np.r_[F[1:], np.inf]
        return xs[(F < left) & (F <= right)]

    def metrics(self, x, y):
        return {"ll_dist": jnp.abs(x + y), "hyper_objective": self.hyper_objective(x)}


def make_toy(key: jax.Array | None = None, *, lo: float = 0.0, hi: float = 3.0, dtype: Any = None) -> Toy:
    """The toy example of the paper's numerical verification (``key`` unused; ``dtype`` as in
    :func:`make_quadratic`)."""
    del key
    check_float_dtype("make_toy", dtype)
    if not (0.0 <= lo < hi):
        raise RatelabError(f"lo and hi must satisfy 0 <= lo < hi (the lower level needs x >= 0), got {lo}, {hi}")
    a = lambda v: float_array("make_toy", v, dtype)  # noqa: E731
    return Toy(lo=a(lo), hi=a(hi), init_lo=a(-5.0), init_hi=a(8.5))

