"""Matrix manifolds as small hashable objects: Sphere, Stiefel, Grassmann (embedded metric).

In the spirit of Manopt / pymanopt (Boumal, "An Introduction to Optimization on Smooth Manifolds", CUP 2023;
Absil, Mahony, Sepulchre, "Optimization Algorithms on Matrix Manifolds", PUP 2008; Edelman, Arias, Smith,
"The Geometry of Algorithms with Orthogonality Constraints", SIMAX 1998). Every manifold is a frozen dataclass
whose sizes are static: instances are hashable, can be closed over, passed to ``jax.jit`` as static arguments, or
held inside a pytree (they are registered as static pytree nodes, i.e. they carry no leaves).

Common API (points and tangent vectors are plain arrays; vmap for batches)::

    m.proj(x, u)                 orthogonal projection of an ambient u onto T_x M
    m.egrad2rgrad(x, egrad)      Riemannian gradient from the Euclidean one (embedded metric: a projection)
    m.rgrad(f, x)                Riemannian gradient of f: ambient -> scalar, via jax.grad
    m.retr(x, v, method=...)     retraction
    m.exp(x, v), m.log(x, y)     exponential / logarithm where closed-form
    m.inv_retr(x, y, method=...) inverse retraction
    m.transp(x, y, v)            vector transport by projection, proj(y, v)
    m.parallel_transp(x, y, v)   parallel transport along the minimising geodesic, where closed-form
    m.inner(x, u, v), m.norm(x, u), m.dist(x, y)
    m.random_point(key), m.random_tangent(key, x)   (random_tangent has unit norm)
    m.dim                        manifold dimension
    m.feasibility(x)             distance-from-the-manifold measure (0 on M), for feasibility checks

Methods that the geometry does not provide in closed form (``Stiefel.log``, ``Stiefel.parallel_transp``) raise
``RatelabError`` saying what to use instead. Bad method names raise ``RatelabError`` before any compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_positive_int

Array = jax.Array


# ----------------------------------------------------------------------------------------------------------------
# Small linear-algebra helpers
# ----------------------------------------------------------------------------------------------------------------


def sym(a: Array) -> Array:
    """Symmetric part (a + a^T) / 2 of a square matrix."""
    return 0.5 * (a + a.T)


def skew(a: Array) -> Array:
    """Skew-symmetric part (a - a^T) / 2 of a square matrix."""
    return 0.5 * (a - a.T)


def qf(a: Array) -> Array:
    """Q factor of the thin QR decomposition with a positive diagonal of R (unique for full column rank)."""
    q, r = jnp.linalg.qr(a)
    s = jnp.sign(jnp.diagonal(r))
    s = jnp.where(s == 0, 1.0, s).astype(a.dtype)
    return q * s[None, :]


def _polar_gram(a: Array) -> tuple[Array, Array, Array, Array]:
    """(Q, H^{-1}, s, V): a = Q H, H = (a^T a)^{1/2} = V diag(s) V^T, from the eigendecomposition of the p x p Gram
    matrix."""
    w, v = jnp.linalg.eigh(a.T @ a)
    s = jnp.sqrt(jnp.maximum(w, jnp.finfo(a.dtype).tiny))
    h_inv = (v / s) @ v.T
    return a @ h_inv, h_inv, s, v


@jax.custom_jvp
def polar_factor(a: Array) -> Array:
    """Orthonormal polar factor Q = a (a^T a)^{-1/2} of an ``[n, p]`` matrix of full column rank (the closest matrix
    with orthonormal columns, U V^T of the thin SVD).

    Computed from the p x p Gram matrix, as RADMM's authors do (about 4.7x faster than the thin SVD of a at n = 500,
    p = 100 on CPU): accurate where a is well conditioned, as a retraction's argument X + V is (V tangent at X
    gives a^T a = I + V^T V, singular values >= 1). Its derivative is the closed form dQ = Q Omega + (I - Q Q^T) E
    H^{-1}, with Omega skew solving H Omega + Omega H = Q^T E - E^T Q (denominators s_i + s_j > 0), finite also at
    a = X where every singular value is 1 and the SVD's or eigh's own derivative is not."""
    return _polar_gram(a)[0]


@polar_factor.defjvp
def _polar_factor_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (a,), (e,) = primals, tangents
    q, h_inv, s, v = _polar_gram(a)
    qe = q.T @ e
    m = v.T @ (qe - qe.T) @ v
    omega = v @ (m / (s[:, None] + s[None, :])) @ v.T
    return q, q @ omega + (e - q @ qe) @ h_inv


def _safe_div(num: Array, den: Array) -> Array:
    """num / den, and 0 where den == 0 (with gradients that stay finite)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _unit(v: Array) -> Array:
    return v / jnp.linalg.norm(v)


def normal_draws(key: Array, shape: tuple[int, ...], dtype=None) -> Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat and reshaped: the very same numbers (threefry's counters
    are the row-major index), but under ``vmap`` a flat draw compiles several times faster on CPU than one of a
    multi-axis shape (jax 0.10: 0.3 s against 3 s for 8 seeds x 20,000 draws)."""
    size = 1
    for s in shape:
        size *= int(s)
    return jax.random.normal(key, (size,), dtype=_float_dtype(dtype)).reshape(shape)


def _float_dtype(dtype):
    return jnp.result_type(float) if dtype is None else dtype


def retraction_method(manifold, method: str | None = None) -> str:
    """``method`` checked against ``manifold.retractions``; None gives the manifold's first (default) retraction."""
    method = manifold.retractions[0] if method is None else method
    check_choice("retraction", method, manifold.retractions)
    return method


def tangent_basis(manifold, x: Array) -> Array:
    """``[dim, *shape]`` an orthonormal basis of T_x M (from the projected ambient basis, by SVD)."""
    size = 1
    for s in x.shape:
        size *= int(s)
    ambient = jnp.eye(size, dtype=x.dtype).reshape(size, *x.shape)
    proj = jax.vmap(lambda e: manifold.proj(x, e))(ambient).reshape(size, size)
    _, _, vt = jnp.linalg.svd(proj)
    return vt[: manifold.dim].reshape(manifold.dim, *x.shape)


# ----------------------------------------------------------------------------------------------------------------
# Shared behaviour of embedded submanifolds with the Euclidean (Frobenius) metric
# ----------------------------------------------------------------------------------------------------------------


class _Embedded:
    """Metric and derived operations shared by the embedded manifolds below."""

    def proj(self, x: Array, u: Array) -> Array:  # pragma: no cover - overridden
        raise NotImplementedError

    def inner(self, x: Array, u: Array, v: Array) -> Array:
        """Embedded (Euclidean / Frobenius) metric <u, v>_x = sum(u * v)."""
        del x
        return jnp.sum(u * v)

    def norm(self, x: Array, u: Array) -> Array:
        return jnp.sqrt(jnp.maximum(self.inner(x, u, u), 0.0))

    def egrad2rgrad(self, x: Array, egrad: Array) -> Array:
        """For a Riemannian submanifold, grad f(x) = P_x(nabla f(x))."""
        return self.proj(x, egrad)

    def rgrad(self, f: Callable[[Array], Array], x: Array) -> Array:
        """Riemannian gradient of a scalar f defined on the ambient space, via ``jax.grad``."""
        return self.egrad2rgrad(x, jax.grad(f)(x))

    def transp(self, x: Array, y: Array, v: Array) -> Array:
        """Vector transport by projection T_{x->y}(v) = P_y(v) (Absil et al. 2008, Sec. 8.1.3)."""
        del x
        return self.proj(y, v)

    def random_tangent(self, key: Array, x: Array) -> Array:
        """A tangent vector at x with unit norm, uniformly distributed in direction."""
        g = normal_draws(key, x.shape, x.dtype)
        v = self.proj(x, g)
        return v / self.norm(x, v)


def _check_sizes(name: str, n: int, p: int) -> None:
    """n x p matrices with orthonormal columns need 1 <= p <= n."""
    check_positive_int("n", n)
    check_positive_int("p", p)
    if p > n:
        raise RatelabError(f"{name}: p must satisfy 1 <= p <= n, got n={n}, p={p}")


def _static(cls):
    """Frozen dataclass registered as a static pytree node (no leaves, hashable aux data)."""
    cls = dataclass(frozen=True)(cls)
    jax.tree_util.register_static(cls)
    return cls


# ----------------------------------------------------------------------------------------------------------------
# Sphere
# ----------------------------------------------------------------------------------------------------------------


@_static
class Sphere(_Embedded):
    """Unit sphere S^{n-1} = {x in R^n : ||x|| = 1}; points are vectors of shape (n,)."""

    n: int

    retractions = ("normalize", "exp")

    def __post_init__(self):
        check_positive_int("n", self.n)
        if self.n < 2:
            raise RatelabError(f"Sphere: n must be >= 2 (S^(n-1) in R^n), got {self.n}")

    @property
    def dim(self) -> int:
        return self.n - 1

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,)

    def proj(self, x: Array, u: Array) -> Array:
        """P_x u = u - <x, u> x."""
        return u - jnp.dot(x, u) * x

    def retr(self, x: Array, v: Array, method: str = "normalize") -> Array:
        """``"normalize"``: (x + v)/||x + v||; ``"exp"``: the exponential map."""
        check_choice("method", method, self.retractions)
        if method == "exp":
            return self.exp(x, v)
        return _unit(x + v)

    def exp(self, x: Array, v: Array) -> Array:
        """Great circle: cos(||v||) x + sin(||v||) v / ||v||."""
        t2 = jnp.sum(v * v)
        pos = t2 > 0
        t = jnp.sqrt(jnp.where(pos, t2, 1.0))  # differentiable at v = 0 (Taylor branch there)
        cos_t = jnp.where(pos, jnp.cos(t), 1.0 - 0.5 * t2)
        sinc_t = jnp.where(pos, jnp.sin(t) / t, 1.0 - t2 / 6.0)
        return cos_t * x + sinc_t * v

    def log(self, x: Array, y: Array) -> Array:
        """Inverse of ``exp`` away from the antipode: theta * u / ||u|| with u = P_x(y), theta = angle(x, y)."""
        u = self.proj(x, y)
        nu = jnp.linalg.norm(u)
        theta = jnp.arctan2(nu, jnp.dot(x, y))
        return _safe_div(theta, nu) * u

    def inv_retr(self, x: Array, y: Array, method: str = "normalize") -> Array:
        """``"normalize"``: y / <x, y> - x (needs <x, y> > 0); ``"exp"``: ``log``."""
        check_choice("method", method, self.retractions)
        if method == "exp":
            return self.log(x, y)
        return y / jnp.dot(x, y) - x

    def parallel_transp(self, x: Array, y: Array, v: Array) -> Array:
        """Parallel transport along the minimising great circle from x to y (y != -x), in the form
        v - <y, v> / (1 + <x, y>) (x + y), which stays accurate when y is within rounding of x (the log-based form
        divides by ||log_x y||^2 there)."""
        return v - (jnp.dot(y, v) / (1.0 + jnp.dot(x, y))) * (x + y)

    def dist(self, x: Array, y: Array) -> Array:
        """Geodesic distance 2 arcsin(||x - y|| / 2) (accurate for nearby points, exactly symmetric)."""
        return 2.0 * jnp.arcsin(jnp.clip(0.5 * jnp.linalg.norm(x - y), 0.0, 1.0))

    def random_point(self, key: Array, dtype=None) -> Array:
        return _unit(normal_draws(key, (self.n,), dtype))

    def feasibility(self, x: Array) -> Array:
        """| ||x|| - 1 |."""
        return jnp.abs(jnp.linalg.norm(x) - 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Stiefel
# ----------------------------------------------------------------------------------------------------------------


def _triu_solve_inverse_qr(m: Array) -> Array:
    """Upper-triangular R with M R + R^T M^T = 2 I (the inverse QR retraction's linear system, p(p+1)/2 unknowns)."""
    p = m.shape[0]
    rows, cols = jnp.triu_indices(p)

    def lhs(r_vec):
        r = jnp.zeros((p, p), m.dtype).at[rows, cols].set(r_vec)
        s = m @ r
        return (s + s.T)[rows, cols]

    n_unknowns = rows.shape[0]
    jac = jax.jacfwd(lhs)(jnp.zeros(n_unknowns, m.dtype))  # the map is linear: its Jacobian is its matrix
    rhs = (2.0 * jnp.eye(p, dtype=m.dtype))[rows, cols]
    r_vec = jnp.linalg.solve(jac, rhs)
    return jnp.zeros((p, p), m.dtype).at[rows, cols].set(r_vec)


def _lyapunov_symmetric(m: Array) -> Array:
    """S with M S + S M^T = 2 I (the inverse polar retraction's Lyapunov equation), via its Kronecker form."""
    p = m.shape[0]
    eye = jnp.eye(p, dtype=m.dtype)
    k = jnp.kron(m, eye) + jnp.kron(eye, m)
    s = jnp.linalg.solve(k, (2.0 * eye).reshape(-1)).reshape(p, p)
    return sym(s)


@_static
class Stiefel(_Embedded):
    """Stiefel manifold St(n, p) = {X in R^{n x p} : X^T X = I_p} with the embedded (Euclidean) metric."""

    n: int
    p: int

    retractions = ("qr", "polar", "exp")
    inverse_retractions = ("qr", "polar", "proj")

    def __post_init__(self):
        _check_sizes("Stiefel", self.n, self.p)

    @property
    def dim(self) -> int:
        return self.n * self.p - self.p * (self.p + 1) // 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.p)

    def proj(self, x: Array, u: Array) -> Array:
        """P_X U = U - X sym(X^T U)."""
        return u - x @ sym(x.T @ u)

    def retr(self, x: Array, v: Array, method: str = "qr") -> Array:
        """``"qr"``: qf(X + V); ``"polar"``: polar factor of X + V; ``"exp"``: the exponential map."""
        check_choice("method", method, self.retractions)
        if method == "exp":
            return self.exp(x, v)
        if method == "polar":
            return polar_factor(x + v)
        return qf(x + v)

    def exp(self, x: Array, v: Array) -> Array:
        """Geodesic of the embedded metric (Edelman, Arias, Smith 1998, eq. 2.45):
        Y = [X, V] expm([[A, -S], [I, A]]) [I; 0] expm(-A), A = X^T V, S = V^T V."""
        p = self.p
        a = x.T @ v
        s = v.T @ v
        eye = jnp.eye(p, dtype=x.dtype)
        block = jnp.block([[a, -s], [eye, a]])
        e = jsl.expm(block)[:, :p]
        return jnp.concatenate([x, v], axis=1) @ e @ jsl.expm(-a)

    def log(self, x: Array, y: Array) -> Array:
        raise RatelabError("Stiefel.log has no closed form for the embedded metric; use inv_retr(x, y, method="
                           "'polar' | 'qr' | 'proj') instead")

    def inv_retr(self, x: Array, y: Array, method: str = "polar") -> Array:
        """Inverse retraction V with R_X(V) = Y.

        ``"polar"``: Y S = X + V with S symmetric solving the Lyapunov equation (X^T Y) S + S (Y^T X) = 2 I;
        ``"qr"``: Y R = X + V with R upper triangular solving (X^T Y) R + R^T (Y^T X) = 2 I;
        ``"proj"``: the projection-based approximation P_X(Y - X) (exact only to first order).
        """
        check_choice("method", method, self.inverse_retractions)
        if method == "proj":
            return self.proj(x, y - x)
        m = x.T @ y
        if method == "polar":
            return y @ _lyapunov_symmetric(m) - x
        return y @ _triu_solve_inverse_qr(m) - x

    def parallel_transp(self, x: Array, y: Array, v: Array) -> Array:
        raise RatelabError("Stiefel.parallel_transp has no closed form; use transp(x, y, v) (projection) instead")

    def dist(self, x: Array, y: Array) -> Array:
        """Frobenius (chordal) distance ||X - Y||_F: the Stiefel geodesic distance has no closed form; the chordal
        one is a metric on St(n, p) that agrees with it to first order for nearby points."""
        return jnp.linalg.norm(x - y)

    def random_point(self, key: Array, dtype=None) -> Array:
        return qf(normal_draws(key, (self.n, self.p), dtype))

    def feasibility(self, x: Array) -> Array:
        """||X^T X - I_p||_F."""
        return jnp.linalg.norm(x.T @ x - jnp.eye(self.p, dtype=x.dtype))


# ----------------------------------------------------------------------------------------------------------------
# Grassmann
# ----------------------------------------------------------------------------------------------------------------


@_static
class Grassmann(_Embedded):
    """Grassmann manifold Gr(n, p) of p-dimensional subspaces of R^n.

    A point is represented by an orthonormal basis X (n x p); tangent vectors are horizontal (X^T V = 0), and
    the metric is the one inherited from the embedding, so that geodesics and distances are the principal-angle
    ones (Edelman, Arias, Smith 1998, Sec. 2.5; Absil, Mahony, Sepulchre 2004).
    """

    n: int
    p: int

    retractions = ("qr", "polar", "exp")

    def __post_init__(self):
        _check_sizes("Grassmann", self.n, self.p)

    @property
    def dim(self) -> int:
        return self.p * (self.n - self.p)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.p)

    def proj(self, x: Array, u: Array) -> Array:
        """Horizontal projection P_X U = U - X X^T U."""
        return u - x @ (x.T @ u)

    def retr(self, x: Array, v: Array, method: str = "qr") -> Array:
        """``"qr"`` / ``"polar"``: an orthonormal basis of span(X + V); ``"exp"``: the exponential map."""
        check_choice("method", method, self.retractions)
        if method == "exp":
            return self.exp(x, v)
        if method == "polar":
            return polar_factor(x + v)
        return qf(x + v)

    def exp(self, x: Array, v: Array) -> Array:
        """Edelman et al. (1998), Thm 2.3: with V = U S W^T, Y = X W cos(S) W^T + U sin(S) W^T
        = X cos(B^(1/2)) + V sinc(B^(1/2)), B = V^T V, evaluated as [X, V] expm([[0, -B], [I, 0]]) [I; 0]
        (the solution of Y'' = -Y B), which avoids the SVD and stays differentiable at V = 0."""
        p = self.p
        zero = jnp.zeros((p, p), x.dtype)
        block = jnp.block([[zero, -(v.T @ v)], [jnp.eye(p, dtype=x.dtype), zero]])
        return jnp.concatenate([x, v], axis=1) @ jsl.expm(block)[:, :p]

    def log(self, x: Array, y: Array) -> Array:
        """Horizontal V at X with span(exp_X V) = span(Y): with Y (X^T Y)^{-1} - X = U S W^T, V = U atan(S) W^T.

        Independent of the basis chosen for Y; needs X^T Y invertible (Y off the cut locus of X)."""
        b = jnp.linalg.solve(y.T @ x, y.T).T - x  # Y (X^T Y)^{-1} - X, horizontal at X
        u, s, wt = jnp.linalg.svd(b, full_matrices=False)
        return (u * jnp.arctan(s)[None, :]) @ wt

    def inv_retr(self, x: Array, y: Array, method: str = "qr") -> Array:
        """``"qr"`` / ``"polar"``: Y (X^T Y)^{-1} - X (both retractions give span(X + V)); ``"exp"``: ``log``."""
        check_choice("method", method, self.retractions)
        if method == "exp":
            return self.log(x, y)
        return jnp.linalg.solve(y.T @ x, y.T).T - x

    def parallel_transp(self, x: Array, y: Array, v: Array) -> Array:
        """Parallel transport along the geodesic from X to span(Y) (Edelman et al. 1998, eq. 2.68 at t = 1):
        with log_X(Y) = U S W^T, tau(V) = (-X W sin(S) U^T + U cos(S) U^T + I - U U^T) V.

        The formula gives the horizontal lift at the geodesic's endpoint basis Y_1 = exp_X(log_X Y); it is returned
        as the lift at the given basis Y = Y_1 Q, i.e. multiplied by Q = Y_1^T Y, so that Y^T tau(V) = 0."""
        u, s, wt = jnp.linalg.svd(self.log(x, y), full_matrices=False)
        xw = x @ wt.T
        utv = u.T @ v
        tau = -(xw * jnp.sin(s)[None, :]) @ utv + (u * jnp.cos(s)[None, :]) @ utv + v - u @ utv
        y1 = (xw * jnp.cos(s)[None, :]) @ wt + (u * jnp.sin(s)[None, :]) @ wt
        return tau @ (y1.T @ y)

    def dist(self, x: Array, y: Array) -> Array:
        """Geodesic distance ||theta||_2 over the principal angles theta = atan(singular values of the log)."""
        return jnp.linalg.norm(self.log(x, y))

    def random_point(self, key: Array, dtype=None) -> Array:
        return qf(normal_draws(key, (self.n, self.p), dtype))

    def feasibility(self, x: Array) -> Array:
        """||X^T X - I_p||_F (the representative is an orthonormal basis)."""
        return jnp.linalg.norm(x.T @ x - jnp.eye(self.p, dtype=x.dtype))


# ----------------------------------------------------------------------------------------------------------------
# A deliberately broken "retraction", for negative controls
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmbientStep:
    """``base`` with its retraction replaced by the plain ambient step x + v, which is NOT a retraction.

    For a tangent V of St(n, p), (X + V)^T (X + V) = I + V^T V: every step leaves the manifold by ||V||^2 (and
    the departures accumulate), so feasibility claims must fail on it. Everything else (projection, metric,
    ``feasibility``, ``random_point``, ...) is the base manifold's. Meant for negative controls only.
    """

    base: _Embedded

    retractions = ("ambient",)

    def retr(self, x: Array, v: Array, method: str = "ambient") -> Array:
        check_choice("method", method, self.retractions)
        return x + v

    def __getattr__(self, name: str):
        if name == "base":  # not yet set (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)


jax.tree_util.register_static(AmbientStep)
