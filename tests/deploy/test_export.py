"""`python -m vitra_jax.export`: bundle layout and hashes, the HF part in plain transformers, the parity gate,
atomic (over)writes, corrupted bundles, and the loaded bundle predicting what the JAX policy predicts."""

import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest

from vitra_jax import export, runs
from vitra_jax.deploy import bundle as bundle_lib
from tests.factories import random_policy_params, random_statistics
from vitra_jax.weights import names, official

STEP = 7
FILES = {"manifest.json", "config.json", "action_head.safetensors", "dataset_statistics.json", "tokenizer.model",
         "paligemma/config.json", "paligemma/model.safetensors"}


def tiny_run(root: pathlib.Path, qk_norm: str = "timm_0_9_10", seed: int = 0) -> pathlib.Path:
    """A run folder as the trainer leaves it (debug recipe, tiny model, a moving average kept), with random
    weights everywhere (the zero-initialised AdaLN and output layers included; the average is half the
    params) and random statistics; written directly, no training."""
    import jax

    from configs import debug
    from vitra_jax.models import variants
    from vitra_jax.models.policy import VitraPolicy
    from vitra_jax.tokenizer import train_sentencepiece

    texts = ["Left hand: Pick up the red cup. Right hand: None.", "Left hand: None. Right hand: Pour the water.",
             "Left hand: Hold the lid. Right hand: Turn the handle to the left."] * 4
    tok = train_sentencepiece(texts, root / "tokenizer", 300)
    config = debug.get_config()
    with config.unlocked():
        config.data.tokenizer = str(tok)
        config.model.qk_norm = qk_norm
        config.optim.ema_decay = 0.99
    shapes = jax.eval_shape(VitraPolicy(variants.from_config(config.model)).init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    params = random_policy_params(shapes, rng)
    stats = random_statistics(rng)
    out = root / "run"
    ema = {k: v * np.float32(0.5) for k, v in names.flatten(params).items()}
    runs.write_run_folder(out, params, config=json.loads(config.to_json_best_effort()), statistics=stats,
                             step=STEP, ema_params=names.unflatten(ema))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def run(run_dir):
    return runs.read_run(run_dir)


@pytest.fixture(scope="module")
def exported(run_dir, run):
    out = run_dir.parent / "bundles" / "b1"
    manifest = export.export(run_dir, out, run=run)
    return out, manifest


def test_bundle_files_hashes_and_manifest(exported, run_dir):
    out, manifest = exported
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == FILES
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    for rel in FILES - {"manifest.json"}:
        assert manifest["files"][rel] == hashlib.sha256((out / rel).read_bytes()).hexdigest(), rel
    assert manifest["files"].keys() == FILES - {"manifest.json"}
    assert manifest["source"] == {"workdir": str(run_dir), "step": STEP, "weights": "params", "statistics": "run"}
    assert manifest["qk_norm"] == "timm_0_9_10"
    p = manifest["parity"]
    assert p["max_abs_normalized"] <= p["tolerance"] == 1e-4
    assert p["output_scale"] > 1.0  # the gate compared real outputs, not zeros
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sampling"] == {"num_samples": 1, "cfg_scale": 5.0, "num_ddim_steps": 10, "use_ddim": True}
    assert (cfg["dit_depth"], cfg["dit_width"], cfg["dit_heads"], cfg["qk_norm"]) == (2, 64, 4, "timm_0_9_10")
    assert (cfg["action_pad"], cfg["state_pad"], cfg["image_size"], cfg["max_text_len"]) == (192, 212, 32, 48)
    assert (out / "tokenizer.model").read_bytes() == (run_dir.parent / "tokenizer" / "tokenizer.model").read_bytes()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_hf_part_loads_in_plain_transformers_and_holds_our_weights(exported, run):
    import torch
    from safetensors.numpy import load_file
    from transformers import PaliGemmaForConditionalGeneration

    out, _ = exported
    model = PaliGemmaForConditionalGeneration.from_pretrained(out / "paligemma", dtype=torch.float32)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    vlm = run.params["vlm"]
    emb = np.asarray(vlm["llm"]["embedder"]["input_embedding"])  # (512, 48)
    np.testing.assert_array_equal(sd["model.language_model.embed_tokens.weight"][:512], emb)
    # HF q_proj (heads·head_dim, width); ours (layer, heads, width, head_dim): head 1 of layer 1 is rows 24:48
    q = np.asarray(vlm["llm"]["layers"]["attn"]["q_einsum"]["w"])
    np.testing.assert_array_equal(sd["model.language_model.layers.1.self_attn.q_proj.weight"][24:48], q[1, 1].T)
    head = load_file(str(out / "action_head.safetensors"))
    dit = run.params["action_model"]
    # torch Linear weight (out, in) = our kernel (in, out) transposed; the output layer padded to 192 rows
    np.testing.assert_array_equal(head["act_model.net.blocks.1.attn.qkv.weight"],
                                  np.asarray(dit["blocks"]["qkv"]["kernel"][1]).T)
    w = head["act_model.net.final_layer.linear.weight"]
    assert w.shape == (192, 64) and not w[102:].any()
    np.testing.assert_array_equal(w[:102], np.asarray(dit["final_linear"]["kernel"]).T)
    np.testing.assert_array_equal(head["cognition_token"], np.asarray(run.params["cognition_token"]))
    assert not any(k.startswith("backbone.") for k in head)


def test_loaded_bundle_predicts_what_the_jax_policy_predicts(exported, run):
    out, _ = exported
    policy = bundle_lib.load_bundle(out)
    inputs = export.gate_inputs(run.cfg, run.statistics, seed=3)  # another observation than the gate's
    inputs["instruction"] = "Left hand: None. Right hand: Turn the handle to the left."
    want = export.jax_predict(run, inputs)
    obs = {k: v for k, v in inputs.items() if k != "noise"}
    got = policy.predict_action(**obs, num_samples=export.GATE_SAMPLES, noise=inputs["noise"][None])
    assert np.abs(want["normalized"]).max() > 1.0
    np.testing.assert_allclose(got["normalized"], want["normalized"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["actions"], want["actions"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["trajectory"], want["trajectory"], rtol=0, atol=1e-4)


def test_gate_refuses_a_perturbed_head_and_leaves_nothing(run, tmp_path, monkeypatch):
    real = official.head_to_official

    def perturbed(params, cfg):
        head = real(params, cfg)
        head["act_model.net.final_layer.linear.bias"] = head["act_model.net.final_layer.linear.bias"].copy()
        head["act_model.net.final_layer.linear.bias"][:102] += 1e-3
        return head

    monkeypatch.setattr(official, "head_to_official", perturbed)
    with pytest.raises(export.ParityError, match="disagrees with the JAX policy"):
        export.export(run.workdir, tmp_path / "b", run=run)
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_is_refused_then_replaced_with_overwrite(exported, run, tmp_path, capsys):
    out = tmp_path / "b"
    shutil.copytree(exported[0], out)
    (out / "marker").write_text("old bundle")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(SystemExit, match=f"^vitra_jax.export: {out} exists; pass --overwrite to replace it$"):
        export.main(["--workdir", str(run.workdir), "--out", str(out)])
    with pytest.raises(SystemExit, match=rf"^vitra_jax.export: .* has no checkpoint of step 1 \(it has \[{STEP}\]\)$"):
        export.main(["--workdir", str(run.workdir), "--out", str(tmp_path / "c"), "--step", "1"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    export.main(["--workdir", str(run.workdir), "--out", str(out), "--overwrite", "--step", str(STEP)])
    assert "parity: max" in capsys.readouterr().out
    assert not (out / "marker").exists()
    bundle_lib.verify_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # the old bundle was removed, no temp left
    assert out.stat().st_mode & 0o077 != 0  # readable by others as a plain mkdir's folder (umask permitting)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a policy bundle"):
        export.export(run.workdir, tmp_path / "notes", run=run, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_official_preprocessing_bundle_passes_the_gate_on_the_resized_image(run, tmp_path):
    manifest = export.export(run.workdir, tmp_path / "b", run=run, preprocess="official")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["preprocess"] == "official"
    assert manifest["parity"]["max_abs_normalized"] <= 1e-4


def test_moving_average_of_the_params_exports_with_ema(run_dir, run, tmp_path):
    from safetensors.numpy import load_file

    ema = runs.read_run(run_dir, ema=True)
    want = names.flatten(run.params)
    got = names.flatten(ema.params)
    assert got.keys() == want.keys() and all(np.array_equal(np.asarray(got[k]), want[k] * 0.5) for k in want)
    manifest = export.export(run_dir, tmp_path / "b", ema=True)
    assert manifest["source"]["weights"] == "ema_params" and manifest["parity"]["max_abs_normalized"] <= 1e-4
    head = load_file(str(tmp_path / "b" / "action_head.safetensors"))
    np.testing.assert_array_equal(head["cognition_token"], 0.5 * np.asarray(run.params["cognition_token"]))


def test_corrupted_or_missing_files_are_named(exported, tmp_path, capsys):
    out = tmp_path / "b"
    shutil.copytree(exported[0], out)
    bundle_lib.main([str(out)])
    assert f"{out}: OK (6 files match the manifest)" in capsys.readouterr().out
    data = bytearray((out / "action_head.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "action_head.safetensors").write_bytes(bytes(data))
    with pytest.raises(bundle_lib.BundleError, match=r"action_head\.safetensors is corrupted"):
        bundle_lib.load_bundle(out)
    with pytest.raises(SystemExit, match=r"error: .*action_head\.safetensors is corrupted"):
        bundle_lib.main([str(out)])
    shutil.copyfile(exported[0] / "action_head.safetensors", out / "action_head.safetensors")
    (out / "paligemma" / "model.safetensors").unlink()
    with pytest.raises(bundle_lib.BundleError, match=r"paligemma/model\.safetensors is missing"):
        bundle_lib.load_bundle(out)
    (out / "manifest.json").unlink()
    with pytest.raises(bundle_lib.BundleError, match="manifest.json is missing"):
        bundle_lib.load_bundle(out)


def test_read_run_names_what_is_missing(run_dir, tmp_path):
    with pytest.raises(ValueError, match=rf"no checkpoint of step 3 \(it has \[{STEP}\]\)"):
        runs.read_run(run_dir, 3)
    with pytest.raises(FileNotFoundError, match="vitra_jax run folder"):
        runs.read_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer model not found"):
        runs.read_run(run_dir, tokenizer=tmp_path / "none.model")


def test_a_bundle_loads_and_predicts_in_a_process_without_jax(exported):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from vitra_jax.deploy.bundle import load_bundle\n"
        f"p = load_bundle({str(exported[0])!r})\n"
        "out = p.predict_action(np.zeros((20, 30, 3), np.uint8), 'Left hand: None. Right hand: Wave.', np.zeros(102),"
        " np.ones(102), np.ones((16, 102)), np.array([1.0, 0.8]), seed=0)\n"
        "assert out['trajectory'].shape == (1, 17, 102) and np.isfinite(out['actions']).all()\n"
        "print(sorted(m for m in ('jax', 'flax', 'tensorflow', 'orbax', 'grain', 'optax', 'absl', 'ml_collections',"
        " 'cv2', 'smplx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
