import pytest

from ratelab.schedules import harmonic
from rl_theory.sa import make_scalar_sa, robbins_monro


@pytest.fixture
def scalar_problem():
    return make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)


@pytest.fixture
def rm_solver():
    return robbins_monro(harmonic(1.0, 10.0))
