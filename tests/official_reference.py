"""Independent references for tests: the release's definitions written out in torch over its state-dict names.

Shared by the JAX export tests (`tests/weights/test_official.py`) and the torch deploy tests.
"""

import numpy as np


def release_dit_forward(sd: dict, z, t, x, mask, state, state_mask, depth: int, heads: int, qk_norm: str):
    """The release's causal DiT (reference §2.4) written out in torch over its own state-dict names."""
    import torch
    import torch.nn.functional as F

    w = {k[len("act_model.net."):]: torch.from_numpy(v).double() for k, v in sd.items()
         if k.startswith("act_model.net.")}

    def lin(name, v):
        return F.linear(v, w[name + ".weight"], w[name + ".bias"])

    def modulate(v, shift, scale):
        return v * (1 + scale[:, None]) + shift[:, None]

    def norm(v):
        return F.layer_norm(v, v.shape[-1:], eps=1e-6)

    def qk(v, g):  # timm 0.9.10 subtracts the mean (unbiased variance); a true RMS norm does not
        if qk_norm == "timm_0_9_10":
            return v * torch.rsqrt(torch.var(v, dim=-1, keepdim=True) + 1e-6) * g
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6) * g

    z, t, x, mask, state, state_mask = (torch.as_tensor(a).double() for a in (z, t, x, mask, state, state_mask))
    a = lin("x_embedder.projector.2", F.gelu(lin("x_embedder.projector.0", torch.cat([x * mask, mask], -1))))
    s = torch.cat([state * state_mask, state_mask], -1)
    s = lin("state_embedder.projector.4", F.gelu(lin("state_embedder.projector.2",
                                                     F.gelu(lin("state_embedder.projector.0", s)))))
    z_emb = lin("z_embedder.linear", z)
    half = w["t_embedder.mlp.0.weight"].shape[1] // 2
    freqs = torch.exp(-np.log(10000.0) * torch.arange(half).double() / half)
    t_emb = lin("t_embedder.mlp.2", F.silu(lin("t_embedder.mlp.0", torch.cat([torch.cos(t[:, None] * freqs),
                                                                           torch.sin(t[:, None] * freqs)], -1))))
    h = torch.cat([z_emb[:, None], s[:, None], a], 1) + w["positional_embedding"]
    c = z_emb + t_emb
    b, n, d = h.shape
    causal = torch.triu(torch.full((n, n), float("-inf")).double(), 1)
    for i in range(depth):
        p = f"blocks.{i}."
        sa, ca, ga, sm, cm, gm = lin(p + "adaLN_modulation.1", F.silu(c)).chunk(6, dim=1)
        qkv = lin(p + "attn.qkv", modulate(norm(h), sa, ca)).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k = qk(qkv[0], w[p + "attn.q_norm.weight"]), qk(qkv[1], w[p + "attn.k_norm.weight"])
        att = F.scaled_dot_product_attention(q, k, qkv[2], attn_mask=causal).transpose(1, 2).reshape(b, n, d)
        h = h + ga[:, None] * lin(p + "attn.proj", att)
        y = lin(p + "mlp.fc2", F.gelu(lin(p + "mlp.fc1", modulate(norm(h), sm, cm)), approximate="tanh"))
        h = h + gm[:, None] * y
    shift, scale = lin("final_layer.adaLN_modulation.1", F.silu(c)).chunk(2, dim=1)
    return lin("final_layer.linear", modulate(norm(h), shift, scale))[:, 2:].numpy()
