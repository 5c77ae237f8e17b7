"""V-PBGD data selection on sharded meshes: the model, the rules, sharded == unsharded, per-device bytes, the plan,
recovery of the corrupted sequences, and the same step across two processes.

Tests that need 8 devices run ``tests/scale_child.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must precede JAX's start) and read its JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from bilevel.data_selection import auc, make_data_selection
from bilevel.transformer import get_config, init_params, sequence_losses
from ratelab.cli import main
from ratelab.errors import RatelabError
from ratelab.scale import abstract_problem, jaxpr_flops, make_solver, model_flops, scale_config
from ratelab.sharding import RULES, parse_mesh, spec_for

CHILD = Path(__file__).with_name("scale_child.py")
ROOT = CHILD.parent.parent
MESHES = ("data=8", "fsdp=8", "fsdp=2,tensor=4")


def _child(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, str(CHILD), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("scale") / "check.json"
    proc = _child("check", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["ref_npz"] = str(out) + ".ref.npz"
    return result


# ---------------------------------------------------------------------------------------------------- in process


def test_param_count_and_shapes():
    for name in ("tiny", "small", "1b", "7b"):
        cfg = get_config(name)
        shapes = jax.eval_shape(lambda k, cfg=cfg: init_params(k, cfg), jax.random.key(0))
        assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes)) == cfg.n_params()
    assert 6.7e9 < get_config("7b").n_params() < 6.8e9  # LLaMA-7B: 6.74e9
    assert 1.2e9 < get_config("1b").n_params() < 1.3e9  # TinyLlama-1.1B sizes without grouped-query attention


def test_causal_mask_past_logits_ignore_future_tokens():
    cfg = get_config("tiny")
    params = init_params(jax.random.key(0), cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, cfg.seq_len + 1), 0, cfg.vocab)
    changed = tokens.at[:, 10:].set((tokens[:, 10:] + 1) % cfg.vocab)
    from bilevel.transformer import forward


    @jax.jit
    def both(tokens):
        return forward(params, tokens[:, :-1], cfg), sequence_losses(params, tokens, cfg)

    (logits, losses) = both(jnp.concatenate([tokens, changed]))
    a, b = logits[:2], logits[2:]
    np.testing.assert_allclose(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert not np.allclose(a[:, 10:], b[:, 10:])
    # at initialisation the model is near uniform: every loss is close to log V
    np.testing.assert_allclose(losses, np.log(cfg.vocab), rtol=0.05)


def test_auc_matches_pair_count():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # ties included
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert float(jax.jit(auc)(jnp.asarray(scores), jnp.asarray(labels))) == pytest.approx(pairs, abs=1e-6)


def test_synthetic_data_has_the_stated_corruption():
    cfg = get_config("tiny")
    prob = make_data_selection(3, cfg, n_train=200, corrupt_frac=0.25)
    assert int(prob.corrupt.sum()) == 50
    # the trusted chain is the clean chain: the most frequent successor of each token agrees with clean data
    train, trusted, bad = np.asarray(prob.train), np.asarray(prob.trusted), np.asarray(prob.corrupt)

    def successor(seqs: np.ndarray) -> np.ndarray:
        counts = np.zeros((cfg.vocab, cfg.vocab))
        np.add.at(counts, (seqs[:, :-1].ravel(), seqs[:, 1:].ravel()), 1)
        return counts.argmax(1)

    assert np.mean(successor(trusted) == successor(train[~bad])) > 0.9
    assert np.all(successor(train[bad]) != successor(train[~bad]))


def test_rules_by_path_on_every_mesh():
    def mesh(**axes):
        return AbstractMesh(tuple(axes.values()), tuple(axes), axis_types=(AxisType.Auto,) * len(axes))

    wq = (2, 32, 4, 8)
    assert spec_for("y/layers/attn/wq", wq, mesh(data=8)) == PartitionSpec(None, None, None, None)
    assert spec_for("y/layers/attn/wq", wq, mesh(fsdp=8)) == PartitionSpec(None, "fsdp", None, None)
    assert spec_for("y_opt/0/mu/layers/attn/wq", wq, mesh(fsdp=2, tensor=4)) == \
        PartitionSpec(None, "fsdp", "tensor", None)
    assert spec_for("z/unembed/w", (32, 64), mesh(fsdp=2, tensor=4)) == PartitionSpec("fsdp", "tensor")
    assert spec_for("train", (256, 17), mesh(data=2, fsdp=4)) == PartitionSpec(("data", "fsdp"), None)
    assert spec_for("x_opt/0/count", (), mesh(fsdp=8)) == PartitionSpec()
    fallbacks: list[str] = []
    assert spec_for("x", (12,), mesh(fsdp=8), RULES, fallbacks) == PartitionSpec(None)  # 8 does not divide 12
    assert fallbacks


def test_jaxpr_flops_equal_the_model_count():
    """The V-PBGD step's matmul FLOPs counted on its jaxpr equal (inner_steps + 1) gradients of g, one of f and
    one forward of g(x, z) at 6 N (resp. 2 N) FLOPs per token (nothing compiled)."""
    sc = scale_config("tiny", "data=1")
    problem = abstract_problem(sc)
    solver = make_solver(sc)
    state = jax.eval_shape(solver.init, problem, jax.random.key(0))
    batch = jax.eval_shape(lambda p, k: p.sample_batch(k), problem, jax.random.key(0))
    flops, unknown = jaxpr_flops(jax.make_jaxpr(solver.step)(state, problem, batch))
    assert unknown == 0
    assert flops == pytest.approx(model_flops(sc), rel=1e-9)


def test_bad_input():
    with pytest.raises(RatelabError, match="--mesh"):
        parse_mesh("pipeline=2")
    with pytest.raises(RatelabError, match="--mesh"):
        parse_mesh("fsdp=0")
    with pytest.raises(RatelabError, match="batch"):
        scale_config("tiny", "fsdp=3")  # 32 sequences over 3 shards
    with pytest.raises(RatelabError, match="model"):
        scale_config("13b", "data=1")
    assert main(["scale", "--model", "tiny", "--mesh", "tensor=two"]) == 2


def test_scale_command_plans_without_allocating(tmp_path, capsys):
    """``ratelab scale --plan`` on one device: the whole state is on that device and the plan says so."""
    out = tmp_path / "plan.json"
    assert main(["scale", "--model", "tiny", "--mesh", "data=1", "--plan", "--json", str(out)]) == 0
    assert "compiled temporaries" in capsys.readouterr().out
    p = json.loads(out.read_text())
    assert p["state_bytes_per_device"] == p["state_bytes_global"]
    assert p["params_bytes_per_device"] == 4 * get_config("tiny").n_params()
    assert p["flops_per_step"] == pytest.approx(p["model_flops_per_step"], rel=1e-9)


# ------------------------------------------------------------------------------------------------- 8 host devices


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_step_equals_unsharded(check, mesh):
    """One V-PBGD step (SGD on x and y) on the mesh equals the single-device step to 1e-5 in float32."""
    assert check["devices"] == 8
    assert check["equal"][mesh] <= 1e-5, check["equal"]


def test_fsdp_bytes_per_device(check):
    """Under fsdp=8, every device holds 1/8 of y, z, x and of Adam's moments of y (within 5 %), and exactly the
    bytes the plan computed from shard shapes."""
    b = check["memory"]["bytes"]
    for part in ("x", "y", "z", "y_opt"):
        per_device = b[part]["per_device"]
        assert len(per_device) == 8
        for got in per_device:
            assert abs(got - b[part]["global"] / 8) <= 0.05 * b[part]["global"] / 8, (part, got, b[part]["global"])
            assert got == b[part]["planned"]


def test_plan_arguments_match_measured(check):
    """The compiled plan's argument bytes equal the bytes the devices hold for the step's inputs."""
    m = check["memory"]
    assert m["argument_bytes"] == m["argument_bytes_measured"]
    assert m["flops"] == pytest.approx(m["model_flops"], rel=1e-9)


def test_reweighting_recovers_corrupted_sequences(check):
    """60 V-PBGD steps on tiny (25 % corrupted sequences): AUC of the learned weights, clean vs corrupted, about
    0.95 (measured 0.955); asserted > 0.8."""
    r = check["recovery"]
    assert r["auc_curve"][0] == pytest.approx(0.5)  # x = 0: all weights tied
    assert r["weight_auc"] > 0.8, r["weight_auc"]
    assert r["upper_loss"][-1] < r["upper_loss"][0]


# -------------------------------------------------------------------------------------------------- slow checks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two JAX processes compile the step (about a minute on 2 cores)
def test_two_processes_match_single_process(check, tmp_path):
    """``jax.distributed.initialize`` on localhost, 2 processes x 4 host devices, mesh fsdp=4,tensor=2 (gloo CPU
    collectives): the state after one step equals the single-process, single-device step."""
    port = str(_free_port())
    out = tmp_path / "mp.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(CHILD), "worker", str(i), port, str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    logs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in logs]
    ref, got = np.load(check["ref_npz"]), np.load(out)
    assert len(ref.files) == len(got.files)
    for k in ref.files:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5)


@pytest.mark.slow  # compiles and runs the ``small`` model on 8 devices
def test_plan_matches_measured_on_small(tmp_path):
    out = tmp_path / "small.json"
    proc = _child("small", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = json.loads(out.read_text())
    assert m["argument_bytes"] == m["argument_bytes_measured"]
    for part, b in m["bytes"].items():
        assert max(b["per_device"]) == b["planned"], part
    assert m["flops"] == pytest.approx(m["model_flops"], rel=1e-9)
