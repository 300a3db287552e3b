"""`train.make_train_step` against the same update written out step by step: gradient accumulation over
micro-batches, the frozen group, the parameter EMA, and the accumulated step on a device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import debug
from vitra_jax import optim, sharding, train
from vitra_jax.benchmarks.train_step import collectives
from vitra_jax.handspace import layout
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
    state = train.TrainState(step=jnp.asarray(3, jnp.int32), params=params, opt_state=jax.jit(tx.init)(params),
                             rng=jax.random.PRNGKey(7), ema_params=params if ema_decay else None)
    step = jax.jit(train.make_train_step(policy, tx, config, labels))
    return config, policy, tx, labels, state, step


def _uneven_batch(policy, batch_size: int) -> dict:
    """Masks that differ a lot between rows, so per-micro-batch normalisation would visibly differ."""
    batch = policy_lib.fake_batch(policy.cfg, batch_size, seed=1)
    mask = batch["action_mask"]
    left = layout.LOSS_COMPONENTS["left_wrist"][0].start
    mask[0, :, left:left + 51] = 0  # row 0: no left hand
    mask[2, 3:] = 0  # row 2: chunk ends after 3 steps
    mask[1, :, :] = 0  # row 1: nothing valid
    mask[1, :5, left + 51:] = 1  # ... but the right hand for 5 steps
    return batch


def _component_counts(mask: np.ndarray, repeats: int) -> np.ndarray:
    """Per component: (valid entries over its dims, valid (b, k) at its first dim), R noise draws each."""
    return np.array([[mask[..., sl].sum(), mask[..., sl.start].sum()]
                     for sl, _ in layout.LOSS_COMPONENTS.values()], np.float64) * repeats


def test_split_micro_batches_takes_every_accum_th_row():
    x = np.arange(12 * 2).reshape(12, 2)
    got = np.asarray(train.split_micro_batches(jnp.asarray(x), 3))
    for i in range(3):
        np.testing.assert_array_equal(got[i], np.stack([x[r] for r in range(i, 12, 3)]))


def test_accumulated_step_takes_the_whole_batch_loss_and_its_gradient():
    """Official objective of the whole batch: loss_c = Σ err² / (its valid entries), total = Σ_c loss_c·C_c / Σ C.

    Written from each micro-batch's own-normalised parts p_c^i: the whole-batch loss_c = Σ_i p_c^i · D_c^i / D_c
    (D = valid entries), so the step must take Σ_i Σ_c a_c^i p_c^i with a_c^i = D_c^i / D_c · C_c / Σ C.
    """
    _, policy, tx, labels, state, step = _setup(grad_accum=2)
    batch = _uneven_batch(policy, 4)
    new, metrics = step(state, batch)

    r = policy.cfg.repeats
    whole = _component_counts(batch["action_mask"], r)
    rng = jax.random.fold_in(state.rng, state.step)  # the step's key; micro-batch i folds in i
    names = list(layout.LOSS_COMPONENTS)

    def weighted(p, b, k, a):
        _, parts = policy.loss(optim.stop_frozen(p, labels), b, k)
        return sum(a[j] * parts[n] for j, n in enumerate(names)), parts

    grad_fn = jax.jit(jax.value_and_grad(weighted, has_aux=True))
    loss, parts, grads, own_gap = 0.0, dict.fromkeys(names, 0.0), [], []
    for i in range(2):
        micro = {k: v[i::2] for k, v in batch.items()}  # rows i, i + 2
        own = _component_counts(micro["action_mask"], r)
        share = own[:, 0] / whole[:, 0]
        a = share * whole[:, 1] / whole[:, 1].sum()
        (l, p), g = grad_fn(state.params, micro, jax.random.fold_in(rng, i), jnp.asarray(a, jnp.float32))
        loss += float(l)
        for j, n in enumerate(names):
            parts[n] += float(p[n]) * share[j]
        grads.append(g)
        own_gap.append(abs(float(policy.loss(state.params, micro, jax.random.fold_in(rng, i))[0]) - float(l)))
    total = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))(*grads)
    updates, _ = jax.jit(tx.update)(total, state.opt_state, state.params)
    want = jax.jit(optax.apply_updates)(state.params, updates)

    np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
    for n in names:
        np.testing.assert_allclose(float(metrics[n]), parts[n], rtol=1e-5)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(jax.jit(optax.global_norm)(total)), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert max(own_gap) > 0.05 * loss  # the masks make the difference to own-count normalisation visible
    assert int(new.step) == 4
    siglip = new.params["vlm"]["img"]["Transformer"]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(siglip),
                                                    jax.tree.leaves(state.params["vlm"]["img"]["Transformer"])))


def test_accumulated_step_on_8_devices_equals_one_device_and_moves_no_batch_rows():
    config, policy, tx, labels, state, step = _setup(grad_accum=2)
    batch = _uneven_batch(policy, 16)
    want_state, want = step(state, batch)

    run = train.create(config)
    mesh = run.mesh
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    sharded = jax.jit(train.make_train_step(policy, tx, config, labels),
                      in_shardings=(run.shardings, sharding.batch_sharding(mesh)),
                      out_shardings=(run.shardings, NamedSharding(mesh, P())))
    with jax.set_mesh(mesh):
        placed, placed_batch = jax.device_put(state, run.shardings), sharding.shard_batch(batch, mesh)
        compiled = sharded.lower(placed, placed_batch).compile()
        got_state, got = compiled(placed, placed_batch)
    for k in ("loss", "grad_norm", *layout.LOSS_COMPONENTS):
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(got_state.params), jax.tree.leaves(want_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    kinds = {kind for kind, _ in collectives(compiled.as_text())}
    # Weights gathered, gradients reduced; no collective-permute or all-to-all reshuffling batch rows.
    assert kinds <= {"all-gather", "all-reduce", "reduce-scatter"} and "all-gather" in kinds


def test_ema_follows_the_params():
    _, policy, _, _, state, step = _setup(grad_accum=1, ema_decay=0.9)
    new, _ = step(state, policy_lib.fake_batch(policy.cfg, 2, seed=2))
    for e, p0, p1 in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(state.params),
                         jax.tree.leaves(new.params)):
        np.testing.assert_allclose(np.asarray(e), 0.9 * np.asarray(p0) + 0.1 * np.asarray(p1), rtol=1e-6,
                                   atol=1e-7)
