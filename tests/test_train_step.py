"""`train.make_train_step` against the same update written out step by step: gradient accumulation over
micro-batches, the frozen group, and the parameter EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import debug
from vitra_jax import optim, train
from vitra_jax.models import policy as policy_lib


def _setup(grad_accum: int, ema_decay: float = 0.0):
    config = debug.get_config()
    with config.unlocked():
        config.grad_accum = grad_accum
        config.optim.ema_decay = ema_decay
    policy = policy_lib.VitraPolicy(policy_lib.policy_config("tiny", repeats=2))
    params = jax.jit(policy.init)(jax.random.PRNGKey(0))
    tx = optim.make_optimizer(config.optim, params)
    labels = optim.param_labels(params)
    state = train.TrainState(step=jnp.asarray(3, jnp.int32), params=params, opt_state=tx.init(params),
                             rng=jax.random.PRNGKey(7), ema_params=params if ema_decay else None)
    step = jax.jit(train.make_train_step(policy, tx, config, labels))
    return policy, tx, labels, state, step


def test_accumulated_step_is_the_mean_of_micro_batch_gradients():
    policy, tx, labels, state, step = _setup(grad_accum=2)
    batch = policy_lib.fake_batch(policy.cfg, 4, seed=1)
    new, metrics = step(state, batch)

    rng = jax.random.fold_in(state.rng, state.step)  # the step's key; micro-batch i folds in i
    grad_fn = jax.jit(jax.value_and_grad(lambda p, b, k: policy.loss(optim.stop_frozen(p, labels), b, k)[0]))
    grads, losses = [], []
    for i in range(2):
        micro = {k: v[2 * i:2 * i + 2] for k, v in batch.items()}
        loss, g = grad_fn(state.params, micro, jax.random.fold_in(rng, i))
        grads.append(g)
        losses.append(loss)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    updates, _ = tx.update(mean, state.opt_state, state.params)
    want = optax.apply_updates(state.params, updates)
    np.testing.assert_allclose(float(metrics["loss"]), float(np.mean(losses)), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.global_norm(mean)), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert int(new.step) == 4
    siglip = new.params["vlm"]["img"]["Transformer"]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(siglip),
                                                    jax.tree.leaves(state.params["vlm"]["img"]["Transformer"])))


def test_ema_follows_the_params():
    policy, _, _, state, step = _setup(grad_accum=1, ema_decay=0.9)
    new, _ = step(state, policy_lib.fake_batch(policy.cfg, 2, seed=2))
    for e, p0, p1 in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(state.params),
                         jax.tree.leaves(new.params)):
        np.testing.assert_allclose(np.asarray(e), 0.9 * np.asarray(p0) + 0.1 * np.asarray(p1), rtol=1e-6,
                                   atol=1e-7)
