"""Sharding on 8 fake CPU devices: mesh construction, FSDP rules against hand-written specs, optimizer state
mirroring the params, a sharded fwd+bwd equal to the single-device one, batch placement, no LM head."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from vitra_jax import optim, sharding
from vitra_jax.benchmarks.train_step import collectives
from vitra_jax.models.paligemma import PaliGemma
from vitra_jax.models.policy import VitraPolicy, fake_batch, policy_config

POLICY = VitraPolicy(policy_config("tiny"))
ABSTRACT = jax.eval_shape(POLICY.init, jax.random.key(0))
FD = ("data", "fsdp")


def _by_path(tree) -> dict[str, P]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, P))[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path): v
            for path, v in flat}


def test_make_mesh_shapes_and_errors():
    mesh = sharding.make_mesh(data=-1, fsdp=4)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))
    assert dict(sharding.make_mesh().shape) == {"data": 8, "fsdp": 1}
    assert dict(sharding.make_mesh(2, -1).shape) == {"data": 2, "fsdp": 4}
    assert dict(sharding.make_mesh(1, 2, devices=jax.devices()[:2]).shape) == {"data": 1, "fsdp": 2}
    with pytest.raises(ValueError, match=r"data=3 x fsdp=3 = 9 devices, but 8"):
        sharding.make_mesh(3, 3)
    with pytest.raises(ValueError, match="do not split"):
        sharding.make_mesh(-1, 3)
    with pytest.raises(ValueError, match="only one of"):
        sharding.make_mesh(-1, -1)
    with pytest.raises(ValueError, match="fsdp size must be positive"):
        sharding.make_mesh(8, 0)


def test_param_specs_follow_the_rules_for_the_tiny_policy():
    mesh = sharding.make_mesh(2, 4)
    got = _by_path(sharding.param_specs(ABSTRACT, mesh, min_shard_size=2048))
    # Written out from the rules: norms/biases/fov_encoder replicated, vocabulary rows for the embedding, else
    # the largest dimension divisible by 4 (never the scanned layer axis) once a leaf has >= 2048 elements.
    expected = {
        "vlm/llm/embedder/input_embedding": P("fsdp", None),                          # (512, 48)
        "vlm/llm/layers/mlp/gating_einsum": P(None, None, None, "fsdp"),              # (2, 2, 48, 96)
        "vlm/llm/layers/mlp/linear": P(None, "fsdp", None),                           # (2, 96, 48)
        "vlm/llm/layers/attn/kv_einsum/w": P(None, None, None, "fsdp", None),         # (2, 2, 1, 48, 24)
        "vlm/llm/layers/pre_ffw_norm/scale": P(),
        "vlm/llm/final_norm/scale": P(),
        "vlm/img/embedding/kernel": P(None, None, None, "fsdp"),                      # (8, 8, 3, 32)
        "vlm/img/pos_embedding": P(),                                                 # 512 elements
        "vlm/img/Transformer/encoderblock/MlpBlock_0/Dense_0/bias": P(),
        "vlm/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": P(None, None, "fsdp"),  # (2, 32, 64)
        "action_model/blocks/adaLN/kernel": P(None, None, "fsdp"),                    # (2, 64, 384)
        "action_model/final_linear/kernel": P("fsdp", None),                          # (64, 102): 102 % 4
        "action_model/t_embedder_fc1/kernel": P(None, "fsdp"),                        # (32, 64)
        "action_model/pos_embedding": P(),                                            # 1152 elements
        "fov_encoder/fc2/kernel": P(),                                                # rule, not size
        "cognition_token": P(),
    }
    assert {k: got[k] for k in expected} == expected

    both = _by_path(sharding.param_specs(ABSTRACT, mesh, min_shard_size=2048, shard_axes=FD))
    assert both["vlm/llm/embedder/input_embedding"] == P(FD, None)
    assert both["action_model/final_linear/kernel"] == P(FD, None)                    # 102 % 8 != 0
    assert both["action_model/state_embedder_fc1/kernel"] == P(None, FD)              # (204, 128)
    assert both["vlm/llm/layers/pre_ffw_norm/scale"] == P()

    small = _by_path(sharding.param_specs(ABSTRACT, mesh))                            # default 2**14
    assert small["action_model/blocks/qkv/kernel"] == P(None, None, "fsdp")           # 24576 elements
    assert small["vlm/llm/layers/mlp/linear"] == P()                                  # 9216 elements
    assert set(_by_path(sharding.param_specs(ABSTRACT, sharding.make_mesh(8, 1))).values()) == {P()}


def test_size_rule_skips_the_layer_axis_and_odd_shapes():
    sds = jax.ShapeDtypeStruct
    tree = {"layers": {"w": sds((16, 8, 4), jnp.float32)}, "w": sds((16, 8, 4), jnp.float32),
            "odd": sds((3, 5, 7, 11), jnp.float32)}
    got = _by_path(sharding.param_specs(tree, sharding.make_mesh(2, 4), min_shard_size=16))
    assert got == {"layers/w": P(None, "fsdp", None), "w": P("fsdp", None, None), "odd": P()}
    rules = ((r"(^|/)w$", P(sharding.FSDP, None)),)
    with pytest.raises(ValueError, match=r"w dim 0 \(6\) does not divide over 4"):
        sharding.param_specs({"w": sds((6, 8), jnp.float32)}, sharding.make_mesh(2, 4), rules=rules)
    with pytest.raises(ValueError, match="not in the mesh axes"):
        sharding.param_specs(tree, sharding.make_mesh(2, 4), shard_axes=("model",))


def _plain_adamw():
    labels = jax.tree.map(lambda g: "frozen" if g == "frozen" else "train", optim.param_labels(ABSTRACT))
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.multi_transform({"train": optax.adamw(1e-4), "frozen": optax.set_to_zero()}, labels))
    return tx, sum(label == "train" for label in jax.tree.leaves(labels))


def _recipe_optimizer():
    from configs.base import optim_config

    labels = optim.param_labels(ABSTRACT, freeze_vision=True)
    return optim.make_optimizer(optim_config(), ABSTRACT), sum(g != optim.FROZEN for g in jax.tree.leaves(labels))


@pytest.mark.parametrize("make_tx", [_plain_adamw, _recipe_optimizer], ids=["optax", "recipe"])
def test_optimizer_state_gets_the_param_specs(make_tx):
    mesh = sharding.make_mesh(2, 4)
    tx, n_trained = make_tx()
    state = jax.eval_shape(lambda p: {"step": jnp.zeros((), jnp.int32), "params": p, "opt": tx.init(p)}, ABSTRACT)
    shardings = sharding.state_shardings(state, mesh, min_shard_size=2048)
    params = _by_path(sharding.param_specs(ABSTRACT, mesh, min_shard_size=2048))
    flat = _by_path(jax.tree.map(lambda s: s.spec, shardings, is_leaf=lambda x: isinstance(x, NamedSharding)))
    assert all(isinstance(s, NamedSharding) and s.mesh == mesh for s in jax.tree.leaves(shardings))
    moments = {}
    for path, spec in flat.items():
        for kind in ("/mu/", "/nu/"):
            if kind in path:
                param_path = path.split(kind, 1)[1]
                moments[(kind, param_path)] = spec
                assert spec == params[param_path], path
    assert len(moments) == 2 * n_trained
    assert any(spec != P() for spec in moments.values())
    scalars = [spec for path, spec in flat.items() if path == "step" or path.endswith("/count")]
    assert scalars and set(scalars) == {P()}
    assert {k: flat[f"params/{k}"] for k in params} == params


def test_sharded_fwd_bwd_equals_single_device():
    mesh = sharding.make_mesh(2, 4)
    params = jax.jit(POLICY.init)(jax.random.key(0))
    batch = fake_batch(POLICY.cfg, 8, seed=3)

    def loss_and_grads(p, b):
        return jax.value_and_grad(lambda q: POLICY.loss(q, b, jax.random.key(1))[0])(p)

    ref_loss, ref_grads = jax.jit(loss_and_grads)(params, batch)
    shardings = sharding.state_shardings(params, mesh, min_shard_size=256)
    fn = jax.jit(loss_and_grads, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(NamedSharding(mesh, P()), shardings))
    with jax.set_mesh(mesh):
        placed, sharded_batch = jax.device_put(params, shardings), sharding.shard_batch(batch, mesh)
        compiled = fn.lower(placed, sharded_batch).compile()
        loss, grads = compiled(placed, sharded_batch)
    hlo = compiled.as_text()
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)
    assert placed["vlm"]["llm"]["layers"]["mlp"]["linear"].sharding.spec == P(None, "fsdp", None)
    assert grads["action_model"]["blocks"]["qkv"]["kernel"].sharding.spec == P(None, None, "fsdp")
    kinds = {kind for kind, _ in collectives(hlo)}
    # Weights are gathered and gradients reduced; nothing reshuffles activations.
    assert kinds <= {"all-gather", "all-reduce", "reduce-scatter"} and "all-gather" in kinds


def test_shard_batch_places_rows_on_every_device():
    mesh = sharding.make_mesh(2, 4)
    batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "m": np.arange(16) % 2 == 0}
    out = sharding.shard_batch(batch, mesh)
    assert sharding.batch_sharding(mesh).spec == P(FD)
    for key, value in batch.items():
        assert out[key].sharding == sharding.batch_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(out[key]), value)
        rows = sorted((s.index[0].start, s.data.shape[0]) for s in out[key].addressable_shards)
        assert rows == [(2 * i, 2) for i in range(8)]
    with pytest.raises(ValueError, match=r"batch\['x'\] has shape \(6, 3\).*multiple of the 8 local devices"):
        sharding.shard_batch({"x": np.zeros((6, 3))}, mesh)


def _dot_output_shapes(jaxpr) -> list[tuple[int, ...]]:
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (list, tuple)) else [v]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _dot_output_shapes(inner)
    return shapes


def test_training_never_computes_the_lm_head():
    vocab = POLICY.cfg.vlm.llm.vocab_size
    params = ABSTRACT
    batch = fake_batch(POLICY.cfg, 2)
    grad = jax.make_jaxpr(jax.grad(lambda p: POLICY.loss(p, batch, jax.random.key(1))[0]))(params)
    shapes = _dot_output_shapes(grad.jaxpr)
    assert shapes and not [s for s in shapes if vocab in s]
    # The same walk does see the vocabulary matmul when logits are asked for.
    vlm = PaliGemma(POLICY.cfg.vlm)
    logits = jax.make_jaxpr(lambda p: vlm.apply({"params": p}, batch["images"], batch["tokens"],
                                                batch["input_mask"]).logits)(params["vlm"])
    assert [s for s in _dot_output_shapes(logits.jaxpr) if vocab in s]
