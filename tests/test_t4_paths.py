"""The code paths that make the real checkpoints fit a free Colab T4 (15 GB, no native bf16),
checked on this CPU: the precision rule, how a VLM's base is loaded and reloaded (4 bits), and
SID_Set read as a stream.

What only a GPU runs is kept to pure functions given a compute capability
(``gpu.autocast_precision``, ``vlm.backends.base_load_kwargs``), so a T4's choices are asserted
here. The 4-bit load itself runs on this CPU when bitsandbytes (0.50+) is installed
(``pip install bitsandbytes``; it is not in the project's environment, whose VLM notebooks it
would fill with a stderr line about a missing ``kernels`` package, so CI skips that test). Notebook 07's peak of one large model is checked with two real
detectors on a hub-style base.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from aidetect_utils import engine, gpu, sidset, vlm
from aidetect_utils.vlm import backends
from aidetect_utils.vlm.detector import BASE_LOAD, VLMDetector, read_base_load
from gpu_kit import rehearsal            # SID_Set-like data, built offline

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks this machine's CPU-only choice")
HAS_CPU_BNB = backends.bitsandbytes_runs_on("cpu")


# ------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"),    # T4: bf16 only emulated
                                                  ((7, 0), "fp16"),    # V100
                                                  ((8, 0), "bf16"),    # A100
                                                  ((8, 9), "bf16"),    # L4
                                                  ((9, 0), "bf16")])   # H100/H200
def test_precision_is_bf16_only_where_native(capability, expected):
    assert gpu.autocast_precision(capability=capability) == expected
    assert gpu.compute_dtype(capability=capability) == {"fp16": torch.float16, "bf16": torch.bfloat16}[expected]


def test_precision_on_a_cpu_is_full_float32():
    assert gpu.autocast_precision("cpu") == "no"
    assert gpu.autocast_precision("cpu", capability=(9, 0)) == "no"    # the device decides first
    assert gpu.compute_dtype("cpu") == torch.float32


@no_gpu
def test_make_accelerator_auto_on_this_cpu_is_no():
    assert gpu.autocast_precision() == "no"
    assert engine.make_accelerator("auto").mixed_precision == "no"


# ------------------------------------------------------------------------------ base load kwargs
FOUR_BIT_T4 = {"load_in_4bit": True, "quant_type": "nf4", "compute_dtype": "float16", "double_quant": False,
               "skip_modules": None}


def test_a_4bit_folder_on_a_t4_reloads_in_4bit_computing_in_fp16():
    kwargs, note = backends.base_load_kwargs(FOUR_BIT_T4, capability=(7, 5), bitsandbytes=True)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.float16
    assert not q.bnb_4bit_use_double_quant and q.llm_int8_skip_modules is None
    assert kwargs["dtype"] == torch.float16 and kwargs["device_map"] == {"": 0} and note is None
    # trained on an A100 (bf16 compute), reloaded on a T4: fp16, and it says so
    kwargs, note = backends.base_load_kwargs(FOUR_BIT_T4 | {"compute_dtype": "bfloat16"}, capability=(7, 5),
                                             bitsandbytes=True)
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.float16 and "bfloat16" in note
    # trained on a T4, reloaded on an H100: the same fp16 compute it was trained with
    kwargs, _ = backends.base_load_kwargs(FOUR_BIT_T4, capability=(9, 0), bitsandbytes=True)
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.float16
    # recorded double quantisation and unquantised modules (Unsloth's dynamic 4-bit) come back
    kwargs, _ = backends.base_load_kwargs(FOUR_BIT_T4 | {"double_quant": True, "skip_modules": ["lm_head"]},
                                          capability=(7, 5), bitsandbytes=True)
    assert kwargs["quantization_config"].bnb_4bit_use_double_quant
    assert kwargs["quantization_config"].llm_int8_skip_modules == ["lm_head"]


def test_a_4bit_request_for_training_takes_the_gpus_precision():
    request = {"load_in_4bit": True, "quant_type": "nf4"}
    for capability, dtype in (((7, 5), torch.float16), ((8, 0), torch.bfloat16)):
        kwargs, note = backends.base_load_kwargs(request, capability=capability, bitsandbytes=True)
        assert kwargs["quantization_config"].bnb_4bit_compute_dtype == dtype == kwargs["dtype"] and note is None


def test_without_bitsandbytes_a_4bit_base_loads_unquantized_with_a_note():
    kwargs, note = backends.base_load_kwargs(FOUR_BIT_T4, capability=(7, 5), bitsandbytes=False)
    assert kwargs == {"dtype": torch.float16, "device_map": {"": 0}}
    assert "bitsandbytes" in note and "float16" in note and "\n" not in note
    kwargs, note = backends.base_load_kwargs(FOUR_BIT_T4, capability=None, bitsandbytes=False)
    assert kwargs == {} and "full precision on the CPU" in note


def test_16bit_bases_and_the_cpu():
    # an old folder (no record) or a 16-bit record: the GPU's native 16 bits; bf16 never on a T4
    assert backends.base_load_kwargs({"load_in_4bit": False}, capability=(7, 5), bitsandbytes=True) == (
        {"dtype": torch.float16, "device_map": {"": 0}}, None)
    assert backends.base_load_kwargs({"load_in_4bit": False}, capability=(9, 0), bitsandbytes=False)[0]["dtype"] \
        == torch.bfloat16
    kwargs, note = backends.base_load_kwargs({"load_in_4bit": False, "dtype": "bfloat16"}, capability=(7, 5),
                                             bitsandbytes=False)
    assert kwargs["dtype"] == torch.float16 and "bfloat16" in note
    # on the CPU nothing changes: no arguments, the CPU's float32, as the published runs loaded
    assert backends.base_load_kwargs({"load_in_4bit": False, "dtype": "float32"}, capability=None,
                                     bitsandbytes=False) == ({}, None)
    # bitsandbytes that runs on the CPU gets a 4-bit base there, computing in float32
    kwargs, note = backends.base_load_kwargs(FOUR_BIT_T4, capability=None, bitsandbytes=True)
    assert kwargs["device_map"] == {"": "cpu"} and kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.float32


# ------------------------------------------------------------------------------ saved folders
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny Qwen2.5-VL saved like a hub checkpoint (config, safetensors, processor), so the
    hub-model code path (named base, reloaded from its name) runs offline. Vision width 64:
    bitsandbytes' 4-bit blocks are 64 wide, so every quantised layer is at least one block."""
    model, processor = vlm.build_tiny_qwen_vl(seed=0, vision_hidden_size=64)
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return str(folder)


def _nonzero_adapters(model, seed: int = 0):
    """LoRA starts as the identity (B = 0); random B matrices make the adapters matter, so a
    reload that lost them would show in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def saved_16bit(tiny_checkpoint, tmp_path_factory):
    """A detector on the unquantised tiny checkpoint, saved; and its logits on ``X``."""
    model, processor, info = vlm.build_lora_model(tiny_checkpoint, "transformers", load_in_4bit=False,
                                                  lora_r=4, lora_alpha=8)
    _nonzero_adapters(model)
    det = vlm.inference_detector(model, processor, info)
    folder = tmp_path_factory.mktemp("vlm_folder")
    det.save_folder(folder)
    with torch.no_grad():
        return folder, det(X)


def test_the_load_record_round_trips_through_a_saved_folder(saved_16bit, tiny_checkpoint):
    folder, before = saved_16bit
    assert json.loads((folder / BASE_LOAD).read_text()) == {"load_in_4bit": False, "dtype": "float32"}
    det = VLMDetector.from_folder(folder, tiny_checkpoint)
    assert backends.base_load_record(det.model) == read_base_load(folder)
    with torch.no_grad():
        assert torch.equal(det(X), before)


def test_a_folder_saved_before_the_record_reloads_as_a_16bit_base(saved_16bit, tiny_checkpoint, tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(saved_16bit[0], old)
    (old / BASE_LOAD).unlink()
    assert read_base_load(old) == {"load_in_4bit": False}
    with torch.no_grad():                 # on this CPU: loaded as before, the same logits
        assert torch.equal(VLMDetector.from_folder(old, tiny_checkpoint)(X), saved_16bit[1])


def test_a_tiny_models_folder_keeps_its_base_not_a_record(tmp_path):
    model, processor, info = vlm.build_lora_model(vlm.TINY, lora_r=4, seed=0)
    vlm.inference_detector(model, processor, info).save_folder(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"adapter", "processor", "base"}


@pytest.mark.skipif(HAS_CPU_BNB, reason="bitsandbytes runs on this CPU: the 4-bit test below covers it")
def test_4bit_without_bitsandbytes_loads_unquantized_with_one_warning(saved_16bit, tiny_checkpoint, tmp_path):
    import shutil
    # training asked for 4 bits: refused here in one line, and the record says what was loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _, _ = vlm.build_lora_model(tiny_checkpoint, "transformers", load_in_4bit=True, lora_r=4)
    notes = [str(w.message) for w in caught if "bitsandbytes" in str(w.message)]
    assert len(notes) == 1 and "\n" not in notes[0] and "full precision on the CPU" in notes[0]
    assert backends.base_load_record(model) == {"load_in_4bit": False, "dtype": "float32"}
    # a folder a T4 wrote (4-bit base) reloads here unquantised, saying so in one line
    t4 = tmp_path / "from_t4"
    shutil.copytree(saved_16bit[0], t4)
    (t4 / BASE_LOAD).write_text(json.dumps(FOUR_BIT_T4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = VLMDetector.from_folder(t4, tiny_checkpoint)
    notes = [str(w.message) for w in caught if "bitsandbytes" in str(w.message)]
    assert len(notes) == 1 and "4-bit (nf4)" in notes[0]
    assert not getattr(det.model.get_base_model(), "is_loaded_in_4bit", False)
    with torch.no_grad():
        assert torch.equal(det(X), saved_16bit[1])


@pytest.mark.skipif(not HAS_CPU_BNB, reason="needs a bitsandbytes that runs 4-bit layers on a CPU (0.50.2 does)")
def test_4bit_train_save_and_reload_on_the_cpu(tiny_checkpoint, tmp_path):
    """The GPU recipe's 4-bit path end to end on this CPU: load in nf4, LoRA on the
    quantised model (peft's k-bit preparation), two Trainer steps, save, reload in 4 bits
    from the record, and the same logits."""
    from aidetect_utils.transforms import ArrayDataset, eval_transform
    model, processor, info = vlm.build_lora_model(tiny_checkpoint, "transformers", load_in_4bit=True,
                                                  lora_r=4, lora_alpha=8)
    assert model.get_base_model().is_loaded_in_4bit
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    data = ArrayDataset(images, np.array([0, 1, 0, 1]), eval_transform(vlm.vlm_preprocessing(32)))
    trainer = vlm.train_lora(model, processor, data, tmp_path / "trainer", epochs=1, batch_size=2, lr=1e-2)
    assert trainer.state.global_step == 2
    det = vlm.inference_detector(model, processor, info)
    det.save_folder(tmp_path / "model")
    record = json.loads((tmp_path / "model" / BASE_LOAD).read_text())
    assert record == {"load_in_4bit": True, "quant_type": "nf4", "compute_dtype": "float32",
                      "double_quant": False, "skip_modules": None}
    again = VLMDetector.from_folder(tmp_path / "model", tiny_checkpoint)
    assert again.model.get_base_model().is_loaded_in_4bit
    with torch.no_grad():
        assert torch.equal(again(X), det(X))


# ------------------------------------------------------------------------------ SID_Set streamed
@pytest.fixture(scope="module")
def sid_like(tmp_path_factory):
    """SID_Set-schema parquet data: per split 6 rows of label 0, then 6 of 1, then 6 of 2 (18
    rows), widths cycling 96, 48, 96 px (so 4 of each 6 are at least 96 wide)."""
    return rehearsal.build_sid_set(tmp_path_factory.mktemp("sid") / "SID_Set", n_per_label=6,
                                   sizes=((96, 64), (48, 48), (96, 96)))


def test_streaming_takes_the_first_n_per_class_and_stops(sid_like):
    rows, read = sidset.stream_sid_set("train", 2, min_width=96, path=str(sid_like))
    assert [r["label"] for r in rows] == [0, 0, 1, 1] and all(r["width"] >= 96 for r in rows)
    assert [r["index"] for r in rows] == [0, 2, 6, 8]      # the narrow rows 1 and 7 were skipped
    assert read == 9 < 18                                  # stopped at row 8: labels 2 never read
    assert isinstance(rows[0]["image"]["bytes"], bytes)    # still encoded: nothing decoded without keep


def test_sid_set_split_decodes_at_the_model_size_balanced(sid_like, capsys):
    split = sidset.sid_set_split("train", 24, min_width=96, max_per_class=2, path=str(sid_like))
    assert split.images.shape == (4, 24, 24, 3) and split.images.dtype == np.uint8
    assert np.bincount(split.labels).tolist() == [2, 2] and 2 not in split.labels
    assert list(split.ids) == ["train_0_00000", "train_0_00002", "train_1_00000", "train_1_00002"]
    assert "read 9 rows, kept 2 real + 2 fully synthetic, at least 96 px wide, decoded at 24 px" \
        in capsys.readouterr().out


def test_streaming_all_matches_the_in_memory_path(sid_like):
    """``max_per_class=None`` reads the whole split as a stream; the images, labels and ids
    are exactly those of the in-memory path (load the split, filter, balance, decode)."""
    from datasets import load_dataset
    streamed = sidset.sid_set_split("validation", 16, min_width=96, path=str(sid_like))
    loaded = load_dataset(str(sid_like), split="validation")
    in_memory = sidset.sid_set_split("validation", 16, min_width=96, dataset=loaded)
    assert np.bincount(streamed.labels).tolist() == [4, 4]
    assert np.array_equal(streamed.images, in_memory.images) and list(streamed.ids) == list(in_memory.ids)
    assert np.array_equal(streamed.labels, in_memory.labels)


def test_balancing_undersamples_the_larger_class_with_the_seed():
    labels = [0, 0, 0, 1, 1, 2, -1]
    picks = {tuple(sidset.balanced_indices(labels, seed=s)) for s in range(20)}
    assert all(len(p) == 4 and {3, 4} <= set(p) and not {5, 6} & set(p) for p in picks) and len(picks) > 1
    assert len(sidset.balanced_indices(labels, max_per_class=1)) == 2
    with pytest.raises(ValueError, match="empty for one class"):
        sidset.balanced_indices([0, 0, 2])


# ------------------------------------------------------------------------------ one large model at a time
def test_large_models_are_held_one_at_a_time_with_the_same_scores(saved_16bit, tmp_path):
    """Two VLM detectors on a hub base (a tiny one here: the rule goes by the base, not the
    size) and a CNN: loading the second VLM releases the first, using the first again reloads
    it and releases the second, scores do not change, and the CNN is never released. So 07's
    peak is one 7B model on a T4, whatever order its sections use them in."""
    import shutil
    from aidetect_utils import artifacts, models, predict, registry
    det_folder, _ = saved_16bit
    spec = json.loads((det_folder / "adapter" / "adapter_config.json").read_text())
    folders = []
    for name in ("qwen_a", "qwen_b"):
        f = tmp_path / name
        shutil.copytree(det_folder, f)
        (f / artifacts.MODEL_JSON).write_text(json.dumps({
            "schema_version": artifacts.SCHEMA_VERSION, "method": name,
            "architecture": {"builder": "qwen_vl_lora", "kwargs": {"base_model": spec["base_model_name_or_path"],
                                                                    "backend": "transformers"}},
            "preprocessing": vlm.vlm_preprocessing(32), "class_names": ["REAL", "FAKE"], "threshold": 0.5}))
        folders.append(f)
    from aidetect_utils import transforms
    cnn_arch = {"builder": "efficientnet_detector", "kwargs": {"backbone": "tf_efficientnet_lite0", "hidden": 16}}
    artifacts.save_model_folder(tmp_path / "cnn", models.EfficientNetDetector(hidden=16).eval(), method="cnn",
                                architecture=cnn_arch,
                                preprocessing=transforms.preprocessing(32, mean=(0.5,) * 3, std=(0.5,) * 3, source_size=32))
    assert registry.is_large(json.loads((folders[0] / artifacts.MODEL_JSON).read_text())["architecture"])
    assert not registry.is_large(cnn_arch)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    a = predict.Predictor(folders[0], device="cpu")
    first = a.prob_fake(images)
    small = predict.Predictor(tmp_path / "cnn", device="cpu")
    b = predict.Predictor(folders[1], device="cpu")
    assert a._model is None and b._model is not None and small._model is not None   # one VLM in memory
    again = a.prob_fake(images)                                                       # a comes back...
    assert a._model is not None and b._model is None and small._model is not None     # ...and b goes
    assert np.array_equal(first, again) and np.array_equal(b.prob_fake(images), first)  # same weights, same scores
    assert a._model is None and predict.Predictor._resident is b
    b.release()
    assert predict.Predictor._resident is None
