"""The torch DiT against the release's forward written out, and the deploy schedule against the JAX one."""

import numpy as np
import pytest
import torch

from tests.official_reference import release_dit_forward
from vitra_jax.deploy import sampling
from vitra_jax.deploy.dit import DiT

DEPTH, WIDTH, HEADS = 2, 64, 4


def _random_dit(qk_norm: str) -> DiT:
    torch.manual_seed(0)
    net = DiT(depth=DEPTH, width=WIDTH, heads=HEADS, mlp_ratio=4, freq_dim=32, state_hidden=128, token_size=48,
              chunk_len=16, action_pad=192, state_pad=212, qk_norm=qk_norm).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3)
            if name.endswith("attn.qkv.weight"):
                p.mul_(0.2)
            if name.endswith("attn.qkv.bias"):  # q and k with a mean over the head dim ≈ their spread, where
                p.copy_(0.1 * torch.randn_like(p))  # the two norms differ most without saturating the softmax
                p[:2 * WIDTH] += 0.6
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.add_(1.0)
    return net


@pytest.mark.parametrize("qk_norm", ["timm_0_9_10", "rms"])
def test_dit_equals_the_release_forward(qk_norm):
    net = _random_dit(qk_norm)
    sd = {"act_model.net." + k: v.numpy() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(2)
    b = 3
    z = rng.normal(size=(b, 48)).astype(np.float32)
    t = np.array([0, 37, 99], np.float32)
    x = rng.normal(size=(b, 16, 192)).astype(np.float32)
    mask = np.zeros((b, 16, 192), np.float32)
    mask[..., :102] = rng.random((b, 16, 102)) > 0.2
    state = rng.normal(size=(b, 212)).astype(np.float32)
    state_mask = np.zeros((b, 212), np.float32)
    state_mask[:, :102] = rng.random((b, 102)) > 0.2
    want = release_dit_forward(sd, z, t, x, mask, state, state_mask, DEPTH, HEADS, qk_norm)
    with torch.no_grad():
        got = net(*(torch.from_numpy(a) for a in (z, t, x, mask, state, state_mask))).numpy()
        other = "rms" if qk_norm == "timm_0_9_10" else "timm_0_9_10"
        swapped = release_dit_forward(sd, z, t, x, mask, state, state_mask, DEPTH, HEADS, other)
        # the unconditional branch: `uncondition` replaces z before the embedding
        drop = torch.tensor([True, False, True])
        z_u = np.where(drop.numpy()[:, None], sd["act_model.net.z_embedder.uncondition"], z).astype(np.float32)
        got_u = net(*(torch.from_numpy(a) for a in (z, t, x, mask, state, state_mask)), drop=drop).numpy()
    want_u = release_dit_forward(sd, z_u, t, x, mask, state, state_mask, DEPTH, HEADS, qk_norm)
    scale = np.abs(want).max()
    print(f"{qk_norm}: max abs err {np.abs(got - want).max():.2e} of max |eps| {scale:.1f}; "
          f"other norm differs by {np.abs(swapped - want).max():.2f}")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got_u, want_u, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(swapped - want).max() > 100 * 1e-4 * scale  # the q/k norm choice is visible here


def test_schedule_equals_the_jax_diffusion():
    from vitra_jax.models import diffusion

    jax_schedule = diffusion.cosine_schedule(100)
    np.testing.assert_array_equal(sampling.cosine_betas(100), jax_schedule.betas)
    for n in (10, 25, 7, 100):
        np.testing.assert_array_equal(sampling.ddim_timesteps(100, n), diffusion.ddim_timesteps(100, n))
    with pytest.raises(ValueError, match="exactly 11 DDIM steps"):
        sampling.ddim_timesteps(100, 11)

    rng = np.random.default_rng(0)
    x, eps, z = (rng.normal(size=(2, 16, 102)).astype(np.float32) for _ in range(3))
    # each DDIM step, driven by a fixed ε, as diffusion.ddim_step
    coeffs = sampling.ddim_coefficients(100, 10)
    assert [c[0] for c in coeffs] == list(range(90, -1, -10))
    for i, c in enumerate(coeffs):
        t_prev = coeffs[i + 1][0] if i + 1 < len(coeffs) else -1
        got = sampling.ddim_loop(lambda _x, _t: torch.from_numpy(eps), torch.from_numpy(x), [c]).numpy()
        want = np.asarray(diffusion.ddim_step(jax_schedule, x, eps, c[0], t_prev))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # each DDPM step with its noise, as diffusion.ddpm_step (no noise at t = 0)
    coeffs = sampling.ddpm_coefficients(100)
    assert [c[0] for c in coeffs] == list(range(99, -1, -1))
    for c in coeffs[::11] + coeffs[-1:]:
        got = sampling.ddpm_loop(lambda _x, _t: torch.from_numpy(eps), torch.from_numpy(x), [c],
                                 lambda _i: torch.from_numpy(z)).numpy()
        want = np.asarray(diffusion.ddpm_step(jax_schedule, x, eps, c[0], z))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
