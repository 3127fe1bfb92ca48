"""The rehearsal (``gpu_kit/rehearsal.py``, the GPU measurement kit): profiles every notebook
accepts, local checkpoints every loader reads (built by the same code as the real-size ones, with
tiny configs of the same families), the published configurations, Qwen's real token ids, the
sharded random writer, and the SID_Set-like data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aidetect_utils import artifacts, gpu, models, params, sidset, vlm
from aidetect_utils.paths import local_or_hub
from gpu_kit import rehearsal

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Every checkpoint of the full profile, tiny, under <tmp>/rehearsal (the profile's layout)."""
    root = tmp_path_factory.mktemp("project")
    rehearsal.build_checkpoints(root / "rehearsal", tiny=True, device="cpu")
    return root


# ------------------------------------------------------------------------------ profiles
@pytest.mark.parametrize("profile", ["full", "rehearsal", "gpu"])
def test_every_notebook_accepts_the_profile_parameters(profile):
    """The notebooks take only ``profile`` and ``overrides`` from papermill and read the rest
    with params.load, which refuses a value that is not one of the notebook's parameters."""
    import papermill as pm
    for nb in NOTEBOOKS:
        assert {p["name"] for p in pm.inspect_notebook(str(nb)).values()} == {"profile", "overrides"}
        assert params.load(profile, nb.stem).profile == profile


def test_rehearsal_keeps_the_full_recipes_and_points_at_local_folders():
    may_differ = {"profile", "checkpoint", "pretrained", "compare_n", "n_train", "n_val", "n_test", "model_name",
                  "sid_set_path", "backend", "load_in_4bit", "optim", "logging_steps", "robustness_n",
                  "calibration_n", "n_boot"}
    for nb in NOTEBOOKS:
        full = params.load("full", nb.stem).as_dict()
        reh = params.load("rehearsal", nb.stem).as_dict()
        changed = {k for k in full.keys() | reh.keys() if full.get(k) != reh.get(k)}
        assert changed <= may_differ, f"{nb.name}: rehearsal changes the recipe's {sorted(changed - may_differ)}"
        for key in ("checkpoint", "model_name", "sid_set_path"):
            if key in reh:
                assert reh[key].startswith("data/rehearsal/"), (nb.name, key, reh[key])
    q = params.load("rehearsal", "05_qwen_vl_method1_sft").as_dict()
    assert (q["input_size"], q["batch_size"], q["grad_accum"], q["lr"]) == (512, 2, 4, 2e-4)
    assert params.load("rehearsal", "04_efficientnet_two_phase").pretrained == \
        "local:data/rehearsal/" + rehearsal.CHECKPOINTS["efficientnet"]
    # every local path the profile names is one the rehearsal command writes
    written = {"data/rehearsal/" + v for v in rehearsal.CHECKPOINTS.values()} | \
              {"data/rehearsal/" + rehearsal.SID_SET_DIR}
    named = {v.removeprefix("local:") for nb in NOTEBOOKS
             for v in params.load("rehearsal", nb.stem).as_dict().values()
             if isinstance(v, str) and "data/rehearsal" in v}
    assert named <= written and len(named) == 6


def test_extends_order_and_cycles():
    prof = {"base": {"all": {"a": 1, "b": 1}, "01_x": {"b": 2, "c": 2}},
            "child": {"extends": "base", "all": {"a": 9}, "01_x": {"c": 3}},
            "loop1": {"extends": "loop2"}, "loop2": {"extends": "loop1"}}
    assert params.profile_values(prof, "child", "01_x.ipynb") == {"a": 9, "b": 2, "c": 3}
    assert params.profile_values(prof, "child", "02_y.ipynb") == {"a": 9, "b": 1}
    with pytest.raises(ValueError, match="cycle"):
        params.profile_values(prof, "loop1", "01_x.ipynb")


# ------------------------------------------------------------------------------ published sizes
def test_real_size_configs_have_the_published_numbers(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration, ViTConfig, ViTModel
    rehearsal.qwen_config().save_pretrained(tmp_path)                     # config.json only, no weights
    cfg = json.loads((tmp_path / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    assert [text[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                              "intermediate_size", "vocab_size")] == [3584, 28, 28, 4, 18944, 152064]
    assert [vision[k] for k in ("depth", "hidden_size", "num_heads", "intermediate_size", "patch_size",
                                "spatial_merge_size", "window_size", "out_hidden_size")] == \
        [32, 1280, 16, 3420, 14, 2, 112, 3584]
    assert vision["fullatt_block_indexes"] == [7, 15, 23, 31]
    assert (cfg["image_token_id"], cfg["vision_start_token_id"], cfg["video_token_id"]) == (151655, 151652, 151656)
    with torch.device("meta"):   # parameter counts without memory
        qwen = Qwen2_5_VLForConditionalGeneration(rehearsal.qwen_config())
        vit = ViTModel(ViTConfig(**rehearsal.VIT_B16))
        dino = ViTModel(ViTConfig(**rehearsal.DINO_S16), add_pooling_layer=False)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(qwen) == 8_292_166_656            # "8.29B" on the model card; 16.6 GB in bf16
    assert n(vit) == 86_389_248 and n(dino) == 21_665_664
    assert (vit.config.hidden_size, vit.config.intermediate_size, vit.config.patch_size) == (768, 3072, 16)
    assert (dino.config.hidden_size, dino.config.num_attention_heads, dino.config.intermediate_size) == (384, 6, 1536)


def test_qwen_tokenizer_has_the_real_special_token_ids():
    tok = rehearsal.qwen_tokenizer()
    ids = dict(zip([t for t, _ in rehearsal.QWEN_ADDED_TOKENS],
                   tok.convert_tokens_to_ids([t for t, _ in rehearsal.QWEN_ADDED_TOKENS])))
    assert ids["<|endoftext|>"] == 151643 and ids["<|im_start|>"] == 151644 and ids["<|im_end|>"] == 151645
    assert [ids[t] for t in ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                             "<|video_pad|>", "<tool_call>", "<|file_sep|>")] == \
        [151652, 151653, 151654, 151655, 151656, 151657, 151664]
    assert len(tok) == 151665 and (tok.eos_token_id, tok.pad_token_id) == (151645, 151643)
    special = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    assert "<|image_pad|>" in special and "<tool_call>" not in special      # as in Qwen's tokenizer_config
    text = tok.apply_chat_template(vlm.messages(), add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>" + vlm.QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    user = tok("user", add_special_tokens=False)["input_ids"]
    assert len(user) == 4 and max(user) < 256          # no BPE merges: one byte-level token per byte
    assert tok("<|im_start|>user", add_special_tokens=False)["input_ids"] == [151644] + user


# ------------------------------------------------------------------------------ the sharded writer
def test_sharded_random_writer_round_trips(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration
    cfg = rehearsal.qwen_config(tiny=True)
    index = rehearsal.write_random_weights(Qwen2_5_VLForConditionalGeneration, cfg, tmp_path / "a",
                                           max_shard_size="8MB", device="cpu", seed=3)
    shards = sorted((tmp_path / "a").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and (tmp_path / "a" / "model.safetensors.index.json").exists()
    on_disk = {}
    for f in shards:
        on_disk.update({k: (f.name, v) for k, v in load_file(str(f)).items()})
    assert {k: f for k, (f, _) in on_disk.items()} == index["weight_map"]
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for _, v in on_disk.values())
    # the same names and shapes save_pretrained writes for this model
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(tmp_path / "ref", safe_serialization=True)
    ref = load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in ref.items()} == {k: tuple(v.shape) for k, (_, v) in on_disk.items()}
    t = {k: v for k, (_, v) in on_disk.items()}
    assert all(v.dtype == torch.bfloat16 for v in t.values())
    assert torch.all(t["model.norm.weight"] == 1) and torch.all(t["visual.merger.ln_q.weight"] == 1)
    assert torch.all(t["model.layers.0.self_attn.q_proj.bias"] == 0)
    assert t["lm_head.weight"].float().std().item() == pytest.approx(0.02, rel=0.02)
    # transformers loads it with nothing missing, and the same seed writes the same numbers
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "a", output_loading_info=True)
    assert not any(model[1][k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    rehearsal.write_random_weights(Qwen2_5_VLForConditionalGeneration, cfg, tmp_path / "b",
                                   max_shard_size="8MB", device="cpu", seed=3)
    again = load_file(str(tmp_path / "b" / shards[-1].name))
    assert all(torch.equal(v, t[k]) for k, v in again.items())


# ------------------------------------------------------------------------------ every loader
def test_every_checkpoint_folder_is_marked_random(tiny):
    for name in rehearsal.CHECKPOINTS.values():
        folder = tiny / "rehearsal" / name
        assert json.loads((folder / "config.json").read_text())[rehearsal.RANDOM_KEY] is True
        assert "RANDOM WEIGHTS" in (folder / "README.md").read_text()


def test_local_paths_resolve_against_the_project_root(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("AIDETECT_ROOT", str(tiny))
    monkeypatch.chdir(tmp_path)                          # like papermill's notebooks/ working directory
    rel = "rehearsal/" + rehearsal.CHECKPOINTS["dino"]
    assert local_or_hub(rel) == str((tiny / rel).resolve())
    assert local_or_hub("facebook/dino-vits16") == "facebook/dino-vits16"   # a hub name stays one
    mean, std = models.checkpoint_normalization(rel)
    assert mean == rehearsal.IMAGENET_MEAN and std == rehearsal.IMAGENET_STD


def test_vit_loaders_read_the_local_folders(tiny):
    ck = {k: str(tiny / "rehearsal" / v) for k, v in rehearsal.CHECKPOINTS.items()}
    clf = models.ViTClassifier(checkpoint=ck["vit-in21k"], interpolate_pos_encoding=True)      # notebook 01
    saved = load_file(ck["vit-in21k"] + "/model.safetensors")
    key = "embeddings.patch_embeddings.projection.weight"       # named alike in every transformers 5.x
    assert torch.equal(clf.vit.state_dict()["vit." + key], saved[key])
    assert clf(torch.rand(2, 3, 64, 64)).shape == (2, 2)
    assert models.checkpoint_normalization(ck["vit-in21k"]) == ([0.5] * 3, [0.5] * 3)
    for k, pool in (("vit-224", "cls"), ("dino", "mean")):                                       # notebooks 02, 03
        spec = models.backbone_spec("vit", ck[k])
        m = models.build_feature_classifier(spec, {"kind": "linear"}, pool)
        assert m.features(torch.rand(2, 3, 224, 224)).shape == (2, 32)


def test_efficientnet_loads_from_the_local_folder(tiny):
    det = models.EfficientNetDetector(backbone="efficientnet_b0")                                # notebook 04
    folder = tiny / "rehearsal" / rehearsal.CHECKPOINTS["efficientnet"]
    msg = models.load_pretrained_backbone(det, "local:" + str(folder))
    assert "RANDOM" in msg and "efficientnet_b0" in msg
    saved = load_file(str(folder / "model.safetensors"))
    assert "classifier.weight" in saved                     # the 1000-class head is in the file, not loaded
    assert all(torch.equal(v, saved[k]) for k, v in det.backbone.state_dict().items() if "num_batches" not in k)
    with pytest.raises(FileNotFoundError):
        models.load_pretrained_backbone(det, "local:" + str(tiny / "nowhere"))


def test_qwen_vl_loads_scores_and_takes_lora_from_the_local_folder(tiny):
    path = str(tiny / "rehearsal" / rehearsal.CHECKPOINTS["qwen"])                              # notebooks 05, 06
    model, processor, info = vlm.build_lora_model(path, "transformers", load_in_4bit=False, lora_r=4, lora_alpha=8)
    assert info["backend"] == "transformers" and info["lora_modules"] == 4 * 2    # q, k, v, o x 2 layers
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (3136, 12845056)
    assert list(ip.image_mean) == rehearsal.CLIP_MEAN
    assert vlm.answer_token_ids(processor)[0] != vlm.answer_token_ids(processor)[1]
    det = vlm.inference_detector(model, processor, info)
    with torch.no_grad():
        logits = det(torch.rand(2, 3, 56, 56))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    batch = vlm.VLMCollator(processor)([(torch.rand(3, 56, 56), 1)])
    assert int((batch["input_ids"] == 151655).sum()) == 4     # 56 px: 4 x 4 patches of 14, merged 2 x 2


# ------------------------------------------------------------------------------ SID_Set-like data
def test_sid_set_like_data_goes_through_load_sid_set(tmp_path):
    from datasets import load_dataset
    dest = rehearsal.build_sid_set(tmp_path / "SID_Set", n_per_label=6, sizes=((96, 64), (48, 48), (96, 96)))
    raw = load_dataset(str(dest), split="train")
    assert raw.column_names == ["img_id", "image", "mask", "width", "height", "label"]
    assert np.bincount(raw["label"]).tolist() == [6, 6, 6]
    tampered = raw.filter(lambda r: r["label"] == 2)
    assert all(m is not None and m.size == (w, h) for m, w, h in zip(tampered["mask"], tampered["width"],
                                                                      tampered["height"]))
    assert raw[0]["image"].size == (96, 64)
    for split in ("train", "validation"):
        kept = sidset.load_sid_set(split, path=str(dest), min_width=96, seed=1)
        labels = np.asarray(kept["label"])
        assert set(labels) == {0, 1} and np.bincount(labels).tolist() == [4, 4]   # 4 of 6 are >= 96 wide
        assert min(kept["width"]) >= 96
    train, test, prep = vlm.detection_data("sid_set", input_size=32, n_train=4, n_test=6, min_width=None,
                                           sid_set_path=str(dest))
    assert train.images.shape == (4, 32, 32, 3) and np.bincount(test.labels).tolist() == [3, 3]


# ------------------------------------------------------------------------------ GPU bookkeeping on a CPU
def test_peak_memory_fields_only_when_cuda_ran(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu.CAP_ENV, "15")
    gpu.cap_memory_at_cuda_init()              # queued for CUDA's initialisation; initialises nothing
    assert gpu.memory_cap_gib() == 15.0 and not torch.cuda.is_initialized()
    rec = artifacts.write_results(tmp_path, method="m", backbone="b", profile="p", ids=["a", "b"], labels=[0, 1],
                                  prob_fake=[0.2, 0.9], trainable_params=1, total_params=1, train_seconds=1,
                                  inference_seconds=1)
    assert gpu.peak_memory() == {} and not any(k.startswith("gpu_") for k in rec)
