"""The optimizer against the release's recipe written out by hand: groups, AdamW, decay mask, clip, hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import optim_config
from vitra_jax import optim
from vitra_jax.models import policy as policy_lib


def _tree(rng):
    """A param tree with the policy's top-level layout (small shapes)."""
    r = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return {
        "vlm": {"img": {"embedding": {"kernel": r(2, 3), "bias": r(3)}, "head": {"kernel": r(3, 4), "bias": r(4)}},
                "llm": {"embedder": {"input_embedding": r(5, 4)}, "final_norm": {"scale": r(4)}}},
        "action_model": {"x_embedder_fc1": {"kernel": r(4, 2), "bias": r(2)}},
        "fov_encoder": {"fc1": {"kernel": r(2, 4), "bias": r(4)}},
        "cognition_token": r(4),
    }


def test_labels_follow_the_release_groups():
    params = jax.eval_shape(policy_lib.VitraPolicy(policy_lib.policy_config("tiny")).init, jax.random.PRNGKey(0))
    flat = {"/".join(str(k.key) for k in path): g
            for path, g in jax.tree_util.tree_flatten_with_path(optim.param_labels(params))[0]}
    for path, group in flat.items():
        if path.startswith("vlm/img/head"):
            want = "backbone"  # the multimodal projector trains (release: only SigLIP is frozen)
        elif path.startswith("vlm/img"):
            want = "frozen"
        elif path.startswith("vlm/"):
            want = "backbone"
        else:
            want = "action"
        assert group == want, path
    assert {"vlm/img/head/kernel", "vlm/llm/embedder/input_embedding", "cognition_token"} <= set(flat)
    unfrozen = optim.param_labels(params, freeze_vision=False)
    assert "frozen" not in jax.tree.leaves(unfrozen)


def _reference_adamw(params, grads_seq, cfg, labels):
    """torch.optim.AdamW semantics per group, global-norm clipping first, plain numpy."""
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for step, grads in enumerate(grads_seq):
        norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
        scale = min(1.0, cfg.clip_norm / norm)
        for k in p:
            if labels[k] == "frozen":
                continue
            lr = cfg.action_lr if labels[k] == "action" else (0.0 if step < cfg.backbone_freeze_steps
                                                               else cfg.backbone_lr)
            g = grads[k] * scale
            m[k] = cfg.b1 * m[k] + (1 - cfg.b1) * g
            v[k] = cfg.b2 * v[k] + (1 - cfg.b2) * g * g
            mh, vh = m[k] / (1 - cfg.b1 ** (step + 1)), v[k] / (1 - cfg.b2 ** (step + 1))
            decay = cfg.weight_decay if (p[k].ndim >= 2 or k == "cognition_token") else 0.0
            p[k] = p[k] - lr * (mh / (np.sqrt(vh) + cfg.eps) + decay * p[k])
    return p


def test_updates_match_a_handwritten_adamw():
    rng = np.random.default_rng(0)
    params = _tree(rng)
    cfg = optim_config()
    cfg.update(backbone_lr=1e-2, action_lr=3e-2, backbone_freeze_steps=2, clip_norm=0.5, weight_decay=0.1)
    tx = optim.make_optimizer(cfg, params)
    labels = optim.param_labels(params)
    grads_seq = []
    for _ in range(4):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
        grads_seq.append(jax.tree.map(lambda x, lab: x * (lab != "frozen"), g, labels))  # stop_frozen zeroes these
    state, p = tx.init(params), params
    for g in grads_seq:
        updates, state = tx.update(g, state, p)
        p = jax.tree.map(lambda a, b: a + b, p, updates)

    def flat(t):
        return {"/".join(str(k.key) for k in path): np.asarray(x)
                for path, x in jax.tree_util.tree_flatten_with_path(t)[0]}
    want = _reference_adamw(flat(params), [flat(g) for g in grads_seq], cfg, flat(labels))
    got = flat(p)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=k)
    assert np.array_equal(got["vlm/img/embedding/kernel"], flat(params)["vlm/img/embedding/kernel"])
    assert not np.array_equal(got["vlm/img/head/kernel"], flat(params)["vlm/img/head/kernel"])


def test_frozen_leaves_get_no_update_or_state_even_with_gradients():
    params = _tree(np.random.default_rng(1))
    tx = optim.make_optimizer(optim_config(), params)
    state = tx.init(params)
    moments = [x for x in jax.tree.leaves(state) if np.shape(x) == (2, 3)]
    assert not moments  # SigLIP's (2, 3) kernel has no Adam moments
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    assert np.all(np.asarray(updates["vlm"]["img"]["embedding"]["kernel"]) == 0)


def test_stop_frozen_blocks_the_gradient():
    params = _tree(np.random.default_rng(2))
    labels = optim.param_labels(params)
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(optim.stop_frozen(p, labels)))  # noqa: E731
    g = jax.grad(loss)(params)
    assert np.all(np.asarray(g["vlm"]["img"]["embedding"]["kernel"]) == 0)
    np.testing.assert_allclose(g["vlm"]["img"]["head"]["kernel"], 2 * params["vlm"]["img"]["head"]["kernel"])


@pytest.mark.parametrize("name,step,want", [
    ("constant", 7, 1.0),
    ("warmup_constant", 2, 0.5),
    ("cosine", 5, 0.5 * (1 + np.cos(np.pi * 5 / 10))),
    ("warmup_cosine", 7, 0.5 * (1 + np.cos(np.pi * (7 - 4) / (10 - 4)))),
])
def test_schedules(name, step, want):
    cfg = optim_config()
    cfg.update(schedule=name, warmup_steps=4, decay_steps=10)
    np.testing.assert_allclose(float(optim.schedule(cfg, 1.0)(step)), want, rtol=1e-6)
    held = optim.schedule(cfg, 1.0, hold_steps=3)
    assert float(held(2)) == 0.0
    np.testing.assert_allclose(float(held(3 + step)), want, rtol=1e-6)


def test_unknown_schedule_is_named():
    cfg = optim_config()
    cfg.schedule = "linear"
    with pytest.raises(ValueError, match="unknown optim.schedule 'linear'"):
        optim.schedule(cfg, 1.0)
