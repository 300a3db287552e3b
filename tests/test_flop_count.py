"""The analytic FLOP count (MFU's numerator) against the matrix products the train step actually contains."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from configs import debug
from vitra_jax import metrics, optim, train
from vitra_jax.models import policy as policy_lib


def matmul_flops(jaxpr: jcore.Jaxpr, times: int = 1) -> int:
    """2 · multiply-adds of every dot_general and convolution in a jaxpr, walking into sub-jaxprs (jit,
    remat, custom derivatives, cond branches) and multiplying scan bodies by their length."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        out = eqn.outvars[0].aval.shape if eqn.outvars else ()
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += times * 2 * int(np.prod(out)) * int(np.prod([lhs[i] for i in contract]))
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += times * 2 * int(np.prod(out)) * int(np.prod(rhs)) // out_features
        elif name == "while":
            inner = [matmul_flops(eqn.params[k].jaxpr) for k in ("body_jaxpr", "cond_jaxpr")]
            assert not any(inner), "a matrix product inside a while loop has no static trip count"
            continue
        inner_times = times * (eqn.params["length"] if name == "scan" else 1)
        subs = []
        for p in eqn.params.values():
            subs += [s for s in (p if isinstance(p, (tuple, list)) else [p])
                     if isinstance(s, (jcore.ClosedJaxpr, jcore.Jaxpr))]
        counts = [matmul_flops(s.jaxpr if isinstance(s, jcore.ClosedJaxpr) else s, inner_times) for s in subs]
        total += max(counts) if name == "cond" and counts else sum(counts)
    return total


@pytest.mark.parametrize("vlm_remat,dit_remat,freeze_vision", [
    ("none", False, True), ("nothing_saveable", True, True), ("none", False, False),
    ("nothing_saveable", False, False), ("dots_with_no_batch_dims_saveable", False, False),
    ("dots_saveable", False, True)])
def test_analytic_flops_equal_the_train_steps_matrix_products(vlm_remat, dit_remat, freeze_vision):
    base = policy_lib.policy_config("tiny", repeats=2)
    cfg = dataclasses.replace(base, vlm=dataclasses.replace(base.vlm, remat_policy=vlm_remat),
                              dit=dataclasses.replace(base.dit, remat=dit_remat), freeze_vision=freeze_vision)
    config = debug.get_config()
    with config.unlocked():
        config.optim.freeze_vision = freeze_vision
    policy = policy_lib.VitraPolicy(cfg)
    params = jax.eval_shape(policy.init, jax.random.PRNGKey(0))
    tx = optim.make_optimizer(config.optim, params)
    state = train.TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=jax.eval_shape(tx.init, params),
                             rng=jax.random.PRNGKey(0), ema_params=None)
    step = train.make_train_step(policy, tx, config, optim.param_labels(params, freeze_vision))
    batch_size = 4
    executed = matmul_flops(jax.make_jaxpr(step)(state, policy_lib.fake_batch(cfg, batch_size)).jaxpr)

    model = metrics.flops_per_example(cfg, params, cfg.max_text_len) * batch_size
    hardware = metrics.flops_per_example(cfg, params, cfg.max_text_len, recompute=True) * batch_size
    print(f"remat {vlm_remat}/{dit_remat} frozen SigLIP {freeze_vision}: jaxpr {executed:.6e}, "
          f"model {model:.6e}, with recompute {hardware:.6e}")
    assert hardware == executed
    if vlm_remat in ("none", "dots_saveable") and not dit_remat:  # nothing recomputed
        assert model == executed
    else:
        assert model < executed  # MFU counts no recomputation


def test_hardware_flops_refuse_an_unknown_remat_policy():
    base = policy_lib.policy_config("tiny")
    cfg = dataclasses.replace(base, vlm=dataclasses.replace(base.vlm, remat_policy="offload_dot_with_no_batch_dims"))
    params = jax.eval_shape(policy_lib.VitraPolicy(base).init, jax.random.PRNGKey(0))
    assert metrics.flops_per_example(cfg, params, cfg.max_text_len) > 0
    with pytest.raises(ValueError, match="no hardware-FLOP count for remat policy 'offload_dot_with_no_batch_dims'"):
        metrics.flops_per_example(cfg, params, cfg.max_text_len, recompute=True)
