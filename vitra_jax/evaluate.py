"""Evaluate a trained run on its held-out episodes: `python -m vitra_jax.evaluate --workdir out/demo`.

At every frame of every episode of the validation split, the policy samples action chunks (DDIM +
classifier-free guidance) which are integrated into wrist paths from the observed state. Printed: the wrist
error and the mean absolute finger-angle error (all 45 MANO angles; for an XHand run, `model.loss_type` 'robot',
the 12 its joints drive) at the last valid chunk step against the ground truth, averaged over every hand with a
valid action, next to a hand that stays still; for a mixture, also per component (`by_component`). An OXE
robot's "wrist" is its end effector in its base frame; instead of finger angles it has a gripper error in the
dataset's own units (`policy_gripper_error`; the baseline only where the state holds the gripper), kept out of
the overall finger figure. Written to the workdir: these figures (`evaluation.json`); for frames t in `--pictures` of hand data,
`prediction_ep{e}_t{t}.png` (ground-truth wrist paths green, sampled ones magenta; robot paths are in the
base frame and not drawn); and `loss.png` (the training loss from `metrics.jsonl`). The run's model, data,
tokenizer and statistics come from its saved config and newest checkpoint.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vitra_jax import checkpoint as ckpt_lib  # noqa: E402
from vitra_jax import inference  # noqa: E402
from vitra_jax import viz  # noqa: E402
from vitra_jax.data.oxe import GRIPPER_DIM as GRIPPER  # noqa: E402
from vitra_jax.handspace import layout, robots, trajectory  # noqa: E402
from vitra_jax.models import policy as policy_lib  # noqa: E402
from vitra_jax.models import variants  # noqa: E402


# per component: wrist errors of the policy and the baseline; finger errors (hand data); gripper errors (OXE)
FIGURES = ("policy", "still", "policy_finger", "still_finger", "policy_gripper", "still_gripper")


def _define_flags() -> None:
    """Flags of the command line only (the trainer defines its own `--workdir`; both modules import together)."""
    flags.DEFINE_string("workdir", None, "Run folder written by vitra_jax.train.")
    flags.DEFINE_list("pictures", ["0", "4", "8"], "Anchor frames drawn for each held-out episode.")
    flags.DEFINE_integer("num_samples", 4, "Action chunks sampled per observation.")
    flags.DEFINE_integer("frames_per_component", 0, "Evaluate this many frames of each component, evenly spaced "
                         "over its held-out split (0: every frame).")
    flags.mark_flags_as_required(["workdir"])


def _chunk_ends(mask: np.ndarray) -> list[tuple[str, int]]:
    """(hand, row of the integrated path) at the last valid step of each hand valid somewhere in `mask` (N, 2)."""
    ends = []
    for i, hand in enumerate(layout.HANDS):
        valid = np.flatnonzero(mask[:, i])
        if len(valid):
            ends.append((hand, valid[-1] + 1))  # path row 0 is the observed state
    return ends


def final_wrist_error(path: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> list[float]:
    """Distance (m) between predicted and true wrist at the last valid step of each valid hand.

    path, truth: (N+1, 102) integrated states (row 0 = the observed state); mask: (N, 2) per-hand validity."""
    errors = []
    for hand, k in _chunk_ends(mask):
        sl = layout.hand_part(hand, layout.TRANS)
        errors.append(float(np.linalg.norm(path[k, sl] - truth[k, sl])))
    return errors


def final_gripper_error(path: np.ndarray, truth: np.ndarray, action_mask: np.ndarray) -> list[float]:
    """|predicted − true| gripper value (an OXE robot's slot, dim 57, in the dataset's own units) at the last
    step where it is valid; none when the robot has no gripper."""
    valid = np.flatnonzero(action_mask[:, GRIPPER])
    if not len(valid):
        return []
    k = valid[-1] + 1  # path row 0 is the observed state
    return [float(abs(path[k, GRIPPER] - truth[k, GRIPPER]))]


def final_finger_error(path: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                       dims: np.ndarray | None = None) -> list[float]:
    """Mean absolute finger-angle difference (rad, wrapped to [−π, π)) at the last valid step of each valid hand.

    path, truth, mask as in `final_wrist_error`; `dims`: which of a hand's 45 finger angles count (default all;
    an XHand run counts the 12 its joints drive, `robots.FINGER_INDEX`)."""
    dims = np.arange(layout.FINGERS.stop - layout.FINGERS.start) if dims is None else np.asarray(dims)
    errors = []
    for hand, k in _chunk_ends(mask):
        cols = layout.hand_part(hand, layout.FINGERS).start + dims
        diff = (path[k, cols] - truth[k, cols] + np.pi) % (2 * np.pi) - np.pi
        errors.append(float(np.abs(diff).mean()))
    return errors


def load_run(workdir: pathlib.Path):
    """(config, policy, params, pipeline) of a run folder."""
    from vitra_jax.data import loader
    from vitra_jax.data.config import saved_data_config

    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: is {workdir} a vitra_jax.train run folder?")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    policy = policy_lib.VitraPolicy(variants.from_config(config.model))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            jax.eval_shape(policy.init, jax.random.PRNGKey(0)))
    params = ckpt_lib.restore_params(workdir, abstract)
    pipeline = loader.make_pipeline(saved_data_config(config.data), image_size=policy.cfg.vlm.image_size,
                                    max_text_len=policy.cfg.max_text_len)
    return config, policy, params, pipeline


def evaluate(workdir: str | os.PathLike, pictures: tuple[int, ...] = (0, 4, 8), num_samples: int = 4,
             seed: int = 0, frames_per_component: int = 0) -> dict:
    """Figures of the run in `workdir` on its validation split (with `frames_per_component`, that many frames of
    each component, evenly spaced); writes them to `evaluation.json` there, next to the pictures."""
    if frames_per_component < 0:
        raise ValueError(f"frames_per_component must be >= 0 (0: every frame), got {frames_per_component}")
    workdir = pathlib.Path(workdir)
    config, policy, params, pipeline = load_run(workdir)
    xhand = config.model.get("loss_type", "human") == "robot"
    finger_dims = robots.FINGER_INDEX if xhand else None
    kinds = {src.name: src.kind for src in pipeline.sources(config.data.val_split)}
    errors: dict[str, dict[str, list[float]]] = {}  # component -> policy / still × wrist / finger
    drawn = 0
    for s in pipeline.samples(config.data.val_split, per_component=frames_per_component or None):
        if not s["action_mask"].any():
            continue
        pred = inference.predict_action(policy, params, s["image"], s["instruction"], s["state"], s["state_mask"],
                                        s["action_mask"], s["fov"], pipeline.tokenizer,
                                        pipeline.normalizer_of(s["component"]), num_samples=num_samples,
                                        rng=jax.random.PRNGKey(seed + s["t"]))
        truth = trajectory.integrate_actions(s["state"], s["actions"])
        hand_mask = s["action_mask"][:, [0, layout.HAND_DIM]]
        mean_path = pred["trajectory"].mean(0)
        still = np.repeat(s["state"][None].astype(np.float64), len(truth), 0)
        e = errors.setdefault(s["component"], {k: [] for k in FIGURES})
        e["policy"] += final_wrist_error(mean_path, truth, hand_mask)
        e["still"] += final_wrist_error(still, truth, hand_mask)
        if kinds[s["component"]] == "oxe":
            e["policy_gripper"] += final_gripper_error(mean_path, truth, s["action_mask"])
            if s["state_mask"][GRIPPER]:  # without an observed gripper there is no "stays still"
                e["still_gripper"] += final_gripper_error(still, truth, s["action_mask"])
        else:
            e["policy_finger"] += final_finger_error(mean_path, truth, hand_mask, finger_dims)
            e["still_finger"] += final_finger_error(still, truth, hand_mask, finger_dims)
        # robot paths are in the robot's base frame, not the camera's: nothing to draw on the image
        if s["t"] not in pictures or kinds[s["component"]] == "oxe":
            continue
        img, k = viz.upscale(s["image"], s["intrinsics"], 4)
        path_mask = np.vstack([hand_mask[:1], hand_mask])
        viz.draw_wrist_paths(img, k, truth, path_mask, viz.GROUND_TRUTH)
        for path in pred["trajectory"]:
            viz.draw_wrist_paths(img, k, path, path_mask, viz.PREDICTION)
        viz.save_rgb(workdir / f"prediction_ep{s['episode']}_t{s['t']:02d}.png", img)
        drawn += 1
    if not any(e["policy"] for e in errors.values()):
        raise ValueError("no validation frame has a valid action to evaluate")
    losses = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    viz.save_rgb(workdir / "loss.png", viz.loss_curve(np.asarray(losses)))
    everything = {k: [x for e in errors.values() for x in e[k]] for k in FIGURES}
    results = {**_figures(everything),
               "finger_angles": "the 12 XHand joints" if xhand else "45 MANO finger angles",
               "pictures": drawn, "loss_start": float(np.mean(losses[:20])), "loss_end": float(np.mean(losses[-20:]))}
    if len(errors) > 1:
        results["by_component"] = {name: _figures(e) for name, e in errors.items()}
    (workdir / "evaluation.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _figures(e: dict[str, list[float]]) -> dict:
    """Mean errors of one set of hands (None where nothing was measured): wrist (m), finger angles of hand data
    (degrees), and OXE grippers (`gripper_error`, in each dataset's own units)."""
    def mean(x, scale=1.0):
        return float(scale * np.mean(x)) if x else None

    out = {"policy_error_m": mean(e["policy"]), "still_error_m": mean(e["still"]),
           "policy_finger_error_deg": mean(e["policy_finger"], 180 / np.pi),
           "still_finger_error_deg": mean(e["still_finger"], 180 / np.pi), "evaluated_hands": len(e["policy"])}
    if e["policy_gripper"]:
        out |= {"policy_gripper_error": mean(e["policy_gripper"]), "still_gripper_error": mean(e["still_gripper"])}
    return out


def report(results: dict) -> str:
    lines = [
        "| what | value |", "|---|---|",
        f"| training loss, first 20 steps -> last 20 steps | {results['loss_start']:.4f} -> "
        f"{results['loss_end']:.4f} |",
        f"| held-out wrist error at chunk end, policy (mean of samples) | {100 * results['policy_error_m']:.2f} cm |",
        f"| held-out wrist error at chunk end, hand-stays-still baseline | {100 * results['still_error_m']:.2f} cm |",
        f"| held-out finger-angle error at chunk end ({results['finger_angles']}), policy / baseline | "
        f"{_deg(results['policy_finger_error_deg'])} / {_deg(results['still_finger_error_deg'])} |",
        f"| hands evaluated / pictures | {results['evaluated_hands']} / {results['pictures']} |",
    ]
    for name, r in results.get("by_component", {}).items():
        if "policy_gripper_error" in r:
            hand = f"gripper {_num(r['policy_gripper_error'])} / {_num(r['still_gripper_error'])} (its units)"
        else:
            hand = f"fingers {_deg(r['policy_finger_error_deg'])} / {_deg(r['still_finger_error_deg'])}"
        lines.append(f"| {name} ({r['evaluated_hands']} hands), policy / baseline | wrist "
                     f"{_cm(r['policy_error_m'])} / {_cm(r['still_error_m'])}, {hand} |")
    return "\n".join(lines)


def _deg(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}°"


def _cm(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} cm"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow_datasets as tfds
    from absl import logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
    tfds.disable_progress_bar()
    f = flags.FLAGS
    results = evaluate(f.workdir, tuple(int(t) for t in f.pictures), f.num_samples,
                       frames_per_component=f.frames_per_component)
    print(report(results))
    print(f"figures in {f.workdir}/evaluation.json, pictures in {f.workdir}/ (prediction_*.png, loss.png)")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
