import os

import pytest

from ratelab import xla_flags
from ratelab.runner import run
from ratelab.schedules import harmonic
from rl_theory.sa import make_scalar_sa, robbins_monro

xla_flags.apply()  # as the CLI does (ratelab.xla_flags), before any test starts jax's backend; notebooks inherit it


@pytest.fixture
def scalar_problem():
    return make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)


@pytest.fixture
def rm_solver():
    return robbins_monro(harmonic(1.0, 10.0))


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache_in_a_temporary_folder(tmp_path_factory):
    """The CLI turns on the persistent compilation cache; tests keep it out of the user's ~/.cache."""
    old = os.environ.get("RATELAB_CACHE_DIR")
    os.environ["RATELAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    yield
    if old is None:
        os.environ.pop("RATELAB_CACHE_DIR", None)
    else:
        os.environ["RATELAB_CACHE_DIR"] = old


class Interrupted(Exception):
    """What :func:`interrupted_run`'s ``on_chunk`` raises."""


@pytest.fixture
def interrupted_run():
    """``interrupted_run(solver, problem, key, after=B, **run_kw)``: ``rl.run`` stopped once B blocks are done, at
    the chunk boundary where a kill would leave that chunk's checkpoint behind."""
    def go(solver, problem, key, *, after: int = 1, **kw):
        def on_chunk(done: int) -> None:
            if done >= after:
                raise Interrupted

        with pytest.raises(Interrupted):
            run(solver, problem, key, on_chunk=on_chunk, **kw)

    return go
