import os

import pytest

from ratelab.schedules import harmonic
from rl_theory.sa import make_scalar_sa, robbins_monro


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
