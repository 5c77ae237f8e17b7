"""The papers' own settings (``--full``): every claim must hold there too. Run with ``pytest -m slow``."""

import json

import pytest

from ratelab.cli import main
from ratelab.registry import experiments

# Claims that do not hold on the papers' settings: reported as FAIL by `ratelab verify --full`, with the analysis in
# the experiment's docstring. A strict xfail turns into a failure the day the claim starts to pass.
KNOWN_FAILS = {
    "radmm-spca-vs-subgrad": ("RADMM's smoothing bias: off-support entries sit at gamma*lambda at its fixed point, so "
                              "F is 0.12 above the subgradient method's at equal iterations", True),
    "rfedsvrg-linear": ("the full instance's round map has a clustered spectrum (0.435, 0.409, 0.393): the top mode "
                        "dominates only after ~60 rounds, below float64's floor (round 35); measured 0.412", True),
    "remax-estimator": ("on centred rewards the greedy response's reward is an independent draw at random policies: "
                        "ReMax's variance is about twice vanilla REINFORCE's (1.85 [1.71, 1.99])", True),
    "remax-train": ("at the paper's kl_ctl 0.05, 38 of 128 runs stall near deterministic suboptimal responses (the "
                    "exact gradient with the same optimiser: 9): gap 0.055 > 0.01", True),
    "oop-bandit": ("RMB-PO+'s excess is not measurably below RMB-PO's with 0.5 N new prompts: "
                   "-0.006 [-0.046, 0.041], about 9000 seeds would decide", True),
    "disk-quadratic": ("DiSK's floor gain over DPSGD vanishes in flat directions: ratio 0.993 at eta h = 0.01 (derived "
                       "kappa/(2 - kappa) (1 + rho beta)/(1 - rho beta) -> 1), so 'floor ratio <= 0.9' fails there",
                       True),
    "disk-logistic": ("on the ill-conditioned logistic instance DiSK's excess risk is 0.90-0.96 of DPSGD's and "
                      "0.95-0.98 of the EMA's, not at most 0.9: most directions have eta h << 1, where the filter "
                      "cannot help", True),
    "doppler-quadratic": ("the low-pass filter cuts the gradient error 17x at eta h = 0.01 but the floor ratio there "
                          "is 0.995 (a unit-DC-gain filter leaves the low frequencies the iterate averages over)",
                          True),
    "pbgd-digits": ("beats-erm-linear's controls are WEAK on the full run: at K = 40000 unweighted training overfits "
                    "the corrupted labels (0.52-0.61), so V-PBGD with steps alpha/1000 (0.76-0.79) and V-PBGD with a "
                    "corrupted validation set (gain 0.038 on average) still beat it", True),
}


def _param(exp_id: str):
    if exp_id in KNOWN_FAILS:
        reason, strict = KNOWN_FAILS[exp_id]
        return pytest.param(exp_id, marks=pytest.mark.xfail(reason=reason, strict=strict))
    return exp_id


@pytest.mark.slow
@pytest.mark.parametrize("exp_id", [_param(e.id) for e in experiments()])
def test_full_configuration_passes(exp_id, tmp_path):
    code = main(["run", exp_id, "--full", "--out", str(tmp_path), "--no-progress"])
    result = json.loads((tmp_path / exp_id / "result.json").read_text())
    assert code == 0, [v["reason"] for v in result["verdicts"]]
    assert result["divergence"]["diverged_seeds"] == 0
