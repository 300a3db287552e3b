"""The README main job: a tiny end-to-end VITRA run on the procedural `demo` hand_vla dataset.

    python -m vitra_jax.demo --out out/demo [--steps 1200]

1. builds the `demo` hand_vla dataset (TFRecord) under OUT/data (no inputs needed);
2. turns its episodes into 16-step chunk samples re-anchored at each frame (the `val` split is held out);
3. trains a sentencepiece tokenizer on the instructions and fits normalization statistics;
4. trains the tiny VITRA policy (AdamW, vision encoder frozen) on the training samples;
5. predicts chunks for held-out frames (DDIM + classifier-free guidance), integrates them into wrist paths,
   prints their error against the ground truth next to a "hand stays still" baseline, and writes pictures
   (OUT/prediction_*.png: ground truth green, prediction magenta; OUT/loss.png).
Runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from vitra_jax import viz  # noqa: E402
from vitra_jax.data import chunks, statistics  # noqa: E402
from vitra_jax.handspace import layout, trajectory  # noqa: E402
from vitra_jax.models import policy as policy_lib  # noqa: E402
from vitra_jax.tokenizer import Tokenizer, train_sentencepiece  # noqa: E402

_OUT = flags.DEFINE_string("out", "out/demo", "Output folder (dataset, tokenizer, pictures).")
_STEPS = flags.DEFINE_integer("steps", 1200, "Training steps.")
_BATCH = flags.DEFINE_integer("batch", 16, "Training batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def build_demo_dataset(data_dir: pathlib.Path) -> dict[str, list[dict]]:
    """Builds (or reuses) the demo hand_vla dataset; split name -> its episodes as numpy, in a fixed order."""
    import tensorflow_datasets as tfds

    from tfds_builders.hand_vla.hand_vla_dataset_builder import Builder

    builder = Builder(config="demo", data_dir=str(data_dir))
    builder.download_and_prepare()
    def episodes(split: str) -> list[dict]:
        eps = list(tfds.as_numpy(builder.as_dataset(split=split)))
        return sorted(eps, key=lambda e: int(e["episode_metadata"]["episode_id"]))

    return {split: episodes(split) for split in builder.info.splits}


def demo_policy_config() -> policy_lib.PolicyConfig:
    """The tiny policy at 64 px so the target's colour survives the resize."""
    cfg = policy_lib.policy_config("tiny")
    vision = dataclasses.replace(cfg.vlm.vision, image_size=64)
    return dataclasses.replace(cfg, vlm=dataclasses.replace(cfg.vlm, vision=vision))


def to_batch(policy: policy_lib.VitraPolicy, samples: list[dict], tokenizer, normalizer) -> dict[str, np.ndarray]:
    """Model inputs for samples, prepared exactly as `predict_action` prepares one observation; actions
    normalized and masked."""
    parts = [policy.prepare_observation(s["image"], s["instruction"], s["state"], s["state_mask"],
                                        s["action_mask"], s["fov"], tokenizer, normalizer) for s in samples]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    actions = np.stack([normalizer.normalize_action(s["actions"]) * s["action_mask"] for s in samples])
    batch["actions"] = actions.astype(np.float32)
    return batch


def train(policy, params, batch: dict, steps: int, batch_size: int, seed: int) -> tuple[dict, np.ndarray]:
    """AdamW on random minibatches of `batch`; the frozen parts get no update."""
    labels = jax.tree.map(lambda t: "train" if t else "frozen", policy_lib.trainable_mask(params, policy.cfg))
    tx = optax.multi_transform({"train": optax.adamw(optax.cosine_decay_schedule(1e-3, steps, 0.05), weight_decay=1e-4),
                                "frozen": optax.set_to_zero()}, labels)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, mb, rng):
        (loss, _), grads = jax.value_and_grad(policy.loss, has_aux=True)(params, mb, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    n = len(batch["actions"])
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    losses = []
    t0 = time.perf_counter()
    for i in range(steps):
        if i == 1:  # the first step includes compilation
            print(f"  compiled and ran step 1 in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        params, opt_state, loss = step(params, opt_state, {k: v[idx] for k, v in batch.items()},
                                       jax.random.fold_in(key, i))
        losses.append(float(loss))
        if (i + 1) % 100 == 0:
            rate = i / (time.perf_counter() - t0)
            print(f"  step {i + 1:4d}/{steps}  loss {np.mean(losses[-100:]):.4f}  {rate:.1f} step/s")
    return params, np.asarray(losses)


def final_wrist_error(path: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> list[float]:
    """Distance (m) between predicted and true wrist at the last valid step of each valid hand."""
    errors = []
    for i, hand in enumerate(layout.HANDS):
        valid = np.flatnonzero(mask[:, i])
        if len(valid):
            k = valid[-1] + 1  # integrated paths have the start state in row 0
            sl = layout.hand_part(hand, layout.TRANS)
            errors.append(float(np.linalg.norm(path[k, sl] - truth[k, sl])))
    return errors


def run(out: pathlib.Path, steps: int, batch_size: int, seed: int) -> dict:
    """The whole demo; returns the figures it prints."""
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print("[1/5] building the demo hand_vla dataset")
    dataset = build_demo_dataset(out / "data")
    episodes = {split: [list(chunks.episode_samples(ep)) for ep in eps] for split, eps in dataset.items()}
    held_out = episodes["val"]
    train_samples = [s for samples in episodes["train"] for s in samples if s["action_mask"].any()]
    print(f"      {len(episodes['train'])} training episodes ({len(train_samples)} samples), "
          f"{len(held_out)} held out")

    print("[2/5] tokenizer and normalization statistics")
    cfg = demo_policy_config()
    texts = sorted({s["instruction"] for eps in episodes.values() for samples in eps for s in samples})
    tokenizer = Tokenizer(train_sentencepiece(texts, out / "tokenizer", vocab_size=cfg.vlm.llm.vocab_size))
    normalizer = statistics.fit_normalizer(train_samples)
    normalizer.save(out / "statistics.json")

    print("[3/5] initialising the tiny policy")
    policy = policy_lib.VitraPolicy(cfg)
    params = policy_lib.init_cognition_from_embedding(policy.init(jax.random.key(seed)))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"      {n_params / 1e6:.2f}M parameters")

    print(f"[4/5] training {steps} steps")
    batch = to_batch(policy, train_samples, tokenizer, normalizer)
    params, losses = train(policy, params, batch, steps, batch_size, seed)
    viz.save_rgb(out / "loss.png", viz.loss_curve(losses))

    print("[5/5] predicting held-out chunks")
    model_err, still_err = [], []
    for j, samples in enumerate(held_out):
        for t in (0, 4, 8):
            s = samples[t]
            pred = policy.predict_action(params, s["image"], s["instruction"], s["state"], s["state_mask"],
                                         s["action_mask"], s["fov"], tokenizer, normalizer, num_samples=4,
                                         rng=jax.random.key(t))
            truth = trajectory.integrate_actions(s["state"], s["actions"])
            hand_mask = s["action_mask"][:, [0, layout.HAND_DIM]]
            mean_path = pred["trajectory"].mean(0)
            model_err += final_wrist_error(mean_path, truth, hand_mask)
            still = np.repeat(s["state"][None].astype(np.float64), len(truth), 0)
            still_err += final_wrist_error(still, truth, hand_mask)
            img, k = viz.upscale(s["image"], s["intrinsics"], 4)
            viz.draw_wrist_paths(img, k, truth, np.vstack([hand_mask[:1], hand_mask]), viz.GROUND_TRUTH)
            for path in pred["trajectory"]:
                viz.draw_wrist_paths(img, k, path, np.vstack([hand_mask[:1], hand_mask]), viz.PREDICTION)
            viz.save_rgb(out / f"prediction_ep{j}_t{t:02d}.png", img)

    results = {"loss_start": float(losses[:20].mean()), "loss_end": float(losses[-20:].mean()),
               "policy_error_m": float(np.mean(model_err)), "still_error_m": float(np.mean(still_err)),
               "wall_s": time.perf_counter() - t_start}
    print()
    print("| what | value |\n|---|---|")
    print(f"| training loss, first 20 steps -> last 20 steps | {results['loss_start']:.4f} -> {results['loss_end']:.4f} |")
    print(f"| held-out wrist error at chunk end, policy (mean of 4 samples) | {100 * results['policy_error_m']:.2f} cm |")
    print(f"| held-out wrist error at chunk end, hand-stays-still baseline | {100 * results['still_error_m']:.2f} cm |")
    print(f"| wall time | {results['wall_s']:.0f} s |")
    print(f"pictures in {out}/ (prediction_*.png, loss.png)")
    return results


def main(_):
    import tensorflow_datasets as tfds
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tfds.disable_progress_bar()
    run(pathlib.Path(_OUT.value), _STEPS.value, _BATCH.value, _SEED.value)


if __name__ == "__main__":
    app.run(main)
