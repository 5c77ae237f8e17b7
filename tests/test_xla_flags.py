"""ratelab.xla_flags: the CLI's compiler flag is added once, never over the user's own choice."""

import os

from ratelab import xla_flags


def test_flag_is_active_in_this_session():
    # conftest applies it before any test runs jax (as ratelab's CLI does)
    for flag in xla_flags.FLAGS:
        assert flag.split("=")[0] in os.environ.get("XLA_FLAGS", "")


def test_user_choice_and_opt_out_win(monkeypatch):
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3 --foo")
    assert xla_flags.apply()  # the user's level stays; only the other flag is added
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=3 --foo --xla_cpu_use_fusion_emitters=false"
    monkeypatch.setenv("XLA_FLAGS", "--foo")
    monkeypatch.setenv(xla_flags.ENV_OFF, "0")
    assert not xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == "--foo"
    monkeypatch.delenv(xla_flags.ENV_OFF)
    assert xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == " ".join(["--foo", *xla_flags.FLAGS])
    assert not xla_flags.apply()  # once only
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: True)
    assert not xla_flags.apply()  # too late: XLA has read its flags
    assert "XLA_FLAGS" not in os.environ
