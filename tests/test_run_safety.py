"""Run safety (issue 19): what must never give a silent wrong result, a hang or a raw traceback.

- one run per results folder at a time: two real processes, the second refused at once with one
  line naming the holder; a SIGKILLed holder leaves no lock behind; reading results is never blocked;
- the training fingerprint covers module hyper-parameters (a dropout rate) and the notebook's
  own training code, stable from one process to the next; non-positive epochs are refused;
- parameters are checked against the types declared in ``profiles.yaml`` before any work, and an
  invalid ``profiles.yaml`` is one line naming the file and the line;
- a float TIFF in [0, 1], broken and looping symlinks in a scored folder, a named pipe as
  ``--output``, NaN weights, a damaged training checkpoint and a pickled LoRA adapter each give
  their one line (or are handled).

Data are real CIFAKE images from the archive (``conftest``); everything is written under
``tmp_path`` (``AIDETECT_HOME``), never inside the repository.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from aidetect_utils import artifacts, engine, evaluation, images, models, params, paths, pipeline, predict, transforms

from .conftest import save_small_detector, train_series

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """``AIDETECT_HOME`` in ``tmp_path``: data/ and results/ are written there."""
    monkeypatch.setenv("AIDETECT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def real_images(cifake_members) -> tuple[np.ndarray, np.ndarray]:
    """48 real CIFAKE images (32x32 RGB) and their labels (REAL 0, FAKE 1)."""
    items = sorted(cifake_members.items())[::5][:48]
    x = np.stack([images.decode_image(data).array for _, data in items])
    y = np.array([1 if "/FAKE/" in name else 0 for name, _ in items])
    assert set(y) == {0, 1}
    return x, y


def _loaders(real_images, batch_size=16):
    x, y = real_images
    ds = transforms.ArrayDataset(x, y, transforms.eval_transform(transforms.preprocessing(32)))
    return engine.make_loader(ds, batch_size, shuffle=True), engine.make_loader(ds, 48)


def _env(home: Path) -> dict:
    return {**os.environ, "AIDETECT_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------ A. one run per results folder
HOLDER = """
import time
from aidetect_utils import params, paths
params.load("smoke", "04_efficientnet_two_phase")
d = paths.method_dir("efficientnet_two_phase")
assert paths.method_dir("efficientnet_two_phase") == d and paths.holds(d / "phase1")   # re-entrant
print("holding", flush=True)
time.sleep(300)
"""

SECOND = """
import sys, time
from aidetect_utils import paths
t0 = time.perf_counter()
try:
    paths.method_dir("efficientnet_two_phase")
except paths.FolderInUse as exc:
    print(f"{time.perf_counter() - t0:.3f}", file=sys.stderr)
    print(exc, file=sys.stderr)
    sys.exit(3)
print("held")
"""


def test_a_second_run_on_one_results_folder_is_refused_at_once_and_a_killed_holder_leaves_no_lock(
        home, real_images):
    """Issue 19, case 1: two runs on one clone wrote the same results/<method>/ and one published
    the other's checkpoint. ``paths.method_dir`` (which every method notebook calls first) holds
    the folder for the process's life with an OS lock; a second process is refused at once, with
    one line naming the holder (pid, the notebook and profile it runs); ``engine.fit`` into that
    folder is refused too; notebook 07's reading is not blocked; and a holder killed with SIGKILL
    leaves no lock behind (the kernel drops it with the process)."""
    res = home / "results"
    artifacts.write_results(res / "vit_finetune", method="vit_finetune", backbone="b", profile="smoke",
                            ids=["a", "b"], labels=[0, 1], prob_fake=[0.2, 0.9], trainable_params=1,
                            total_params=1, train_seconds=1.0, inference_seconds=1.0)
    first = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, env=_env(home), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert first.stdout.readline().strip() == "holding", first.stderr.read()
        second = subprocess.run([sys.executable, "-c", SECOND], cwd=ROOT, env=_env(home), text=True,
                                capture_output=True, timeout=120)
        assert second.returncode == 3 and second.stdout == ""
        seconds, message = second.stderr.splitlines()
        assert float(seconds) < 1.0                                   # refused at once, no waiting
        assert message.startswith(f"{res / 'efficientnet_two_phase'} is in use by another run (pid {first.pid} on ")
        assert "running 04_efficientnet_two_phase (profile 'smoke'), since " in message
        assert message.endswith("wait for it to end or stop it; two runs on one results folder would read each "
                                "other's checkpoints and publish each other's numbers")
        # this (third) process: training into the held folder is refused before any epoch ...
        tr, va = _loaders(real_images)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
        with pytest.raises(paths.FolderInUse, match=f"pid {first.pid} "):
            engine.fit(net, tr, va, torch.optim.SGD(net.parameters(), lr=0.01),
                       res / "efficientnet_two_phase" / "phase1", engine.TrainConfig(epochs=1))
        assert not (res / "efficientnet_two_phase" / "phase1" / "checkpoints").exists()
        # ... while reading results, as notebook 07 does, is not blocked
        found, _ = evaluation.discover(paths.results_dir())
        assert list(found) == ["vit_finetune"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stdout.close()
        first.stderr.close()
    assert (res / "efficientnet_two_phase" / paths.LOCK_FILE).exists()    # the file stays; the lock did not
    third = subprocess.run([sys.executable, "-c", SECOND], cwd=ROOT, env=_env(home), text=True,
                           capture_output=True, timeout=120)
    assert third.returncode == 0 and third.stdout == "held\n", third.stderr


def test_fit_holds_its_folder_only_while_it_trains(tmp_path, real_images):
    """Outside results/, ``engine.fit`` holds its own ``out_dir`` for the run and lets go after,
    so one process can train the same folder again (reload) and a later process can too."""
    tr, va = _loaders(real_images)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    h = engine.fit(net, tr, va, torch.optim.SGD(net.parameters(), lr=0.01), tmp_path / "run",
                   engine.TrainConfig(epochs=1, seed=0))
    assert h.status == "trained" and not paths.holds(tmp_path / "run")
    assert (tmp_path / "run" / paths.LOCK_FILE).exists()


# ------------------------------------------------------------------ B. the fingerprint covers model code
def _detector(dropout: float) -> nn.Module:
    torch.manual_seed(0)
    return models.EfficientNetDetector("tf_efficientnet_lite0", hidden=16, dropout=dropout)


def test_an_edited_dropout_rate_is_a_changed_model_not_a_reload(tmp_path, real_images):
    """Issue 19, case 5: 04's ``dropout=0.5`` edited to ``0.0`` in the notebook was "reloaded (same
    settings)", since the fingerprint saw only parameter shapes. The model's repr shows the rate,
    and so does the fingerprint now: equal models reload, a changed rate trains afresh."""
    assert "Dropout(p=0.5, inplace=False)" in repr(_detector(0.5))
    assert engine.model_signature(_detector(0.5)) == engine.model_signature(_detector(0.5))
    assert engine.model_signature(_detector(0.5)) != engine.model_signature(_detector(0.0))

    def run(dropout):
        m = _detector(dropout)
        models.set_trainable(m.backbone, False)
        tr, va = _loaders(real_images)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
        return engine.fit(m, tr, va, opt, tmp_path, engine.TrainConfig(epochs=1, seed=0)).status
    assert run(0.5) == "trained"
    assert run(0.5) == "reloaded (same settings)"
    assert run(0.0) == "trained (changed: model)"


NOTEBOOK_CODE = """
import torch
from aidetect_utils import engine, models

class FrozenBN(torch.nn.Module):          # a module class written in the notebook, as 04's FrozenBNDetector
    def __init__(self, inner):
        super().__init__(); self.inner = inner
    def forward(self, x):
        return self.inner(x) * SCALE if MODE in {"a", "b", "c"} else self.inner(x)

def recipe(m):                            # the training function that calls engine.fit
    return engine.model_signature(m), engine.code_signature()

torch.manual_seed(0)
print(*recipe(FrozenBN(models.mlp_head(8, (4,), dropout=0.25))))
"""


@pytest.mark.parametrize("edit,changes", [
    (None, None),
    (("* SCALE", "* SCALE * 2"), "model"),              # the notebook's module class
    (("dropout=0.25", "dropout=0.1"), "model"),           # a constructor argument
    (("return engine.model_signature(m), engine.code_signature()",
      "m.eval(); return engine.model_signature(m), engine.code_signature()"), "code"),
])
def test_notebook_code_is_in_the_fingerprint_and_stable_between_processes(edit, changes, tmp_path):
    """The training code written in a notebook or script (``__main__``): the methods of its
    module classes (``model_signature``) and the functions on the call stack that led to
    ``engine.fit`` (``code_signature``). Hashed from bytecode with sets in a fixed order, so two
    processes with different hash seeds agree, and only an edit changes it."""
    def signatures(code: str, seed: str) -> list[str]:
        script = tmp_path / "recipe.py"
        script.write_text(code)
        out = subprocess.run([sys.executable, str(script)], cwd=ROOT, text=True, capture_output=True,
                             timeout=120, env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr
        return out.stdout.split()
    base = signatures(NOTEBOOK_CODE, "1")
    assert len(base) == 2 and base == signatures(NOTEBOOK_CODE, "2")
    if edit is None:
        return
    assert NOTEBOOK_CODE.count(edit[0]) == 1
    edited = signatures(NOTEBOOK_CODE.replace(*edit), "3")
    assert [a != b for a, b in zip(base, edited)] == [changes == "model", changes == "code"]


def test_non_positive_epochs_are_refused_before_training(capsys, monkeypatch):
    """Issue 19, case 6: ``-p phase1_epochs -1`` ran 0 epochs and said "trained". The pipeline
    refuses it before any notebook starts (``params.load`` checks the declared type), and
    ``TrainConfig`` refuses it for code that builds one by hand."""
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(ValueError) as e:
            engine.TrainConfig(epochs=bad)
        assert str(e.value) == f"TrainConfig: epochs must be a whole number >= 1, got {bad!r}"
    with pytest.raises(ValueError, match="patience must be None .* got 0"):
        engine.TrainConfig(patience=0)
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook was started"))
    assert pipeline.main(["--only", "04", "-p", "phase1_epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == ("[pipeline] error: 04_efficientnet_two_phase: phase1_epochs = -1 (override) is not allowed: "
                   "it must be an int >= 1\n")


# ------------------------------------------------------------------ C. parameters checked where read
@pytest.mark.parametrize("notebook,overrides,message", [
    ("04_efficientnet_two_phase", {"batch_size": "abc"}, "batch_size = 'abc' (override) is not allowed: it must be an int >= 1"),
    ("04_efficientnet_two_phase", {"phase2_lr": "3e-4"},
     "phase2_lr = '3e-4' (override) is not allowed: it must be a float > 0 (YAML reads 3e-4 as text: write it "
     "with a dot, e.g. 3.0e-04)"),
    ("04_efficientnet_two_phase", {"input_size": 64.5}, "input_size = 64.5 (override) is not allowed: it must be an int >= 1"),
    ("04_efficientnet_two_phase", {"hflip": "yes"}, "hflip = 'yes' (override) is not allowed: it must be true or false"),
    ("00_data_preparation", {"val_fraction": 1.0}, "val_fraction = 1.0 (override) is not allowed: it must be a float > 0 and < 1"),
    ("00_data_preparation", {"n_train": 0}, "n_train = 0 (override) is not allowed: it must be an int >= 1, or null"),
    ("02_vit_frozen_head", {"backbone_kind": "resnet"},
     "backbone_kind = 'resnet' (override) is not allowed: it must be 'vit', or 'timm'"),
    ("05_qwen_vl_method1_sft", {"lora_dropout": 1.5}, "lora_dropout = 1.5 (override) is not allowed: it must be a float >= 0 and < 1"),
    ("07_evaluation", {"num_threads": 0}, "num_threads = 0 (override) is not allowed: it must be an int >= 1"),
])
def test_a_bad_parameter_value_is_one_line_naming_it(notebook, overrides, message):
    """Issue 19, item 4: a ``-p`` value of the wrong type failed later, in an unrelated cell.
    ``params.load`` (the notebook's first cell, and the pipeline before anything starts) refuses
    it with one line naming the notebook, the parameter, the value, where it came from and what
    ``profiles.yaml`` allows."""
    with pytest.raises(params.ParameterError) as e:
        params.load("smoke", notebook, overrides)
    assert str(e.value) == f"{notebook}: {message}" and "\n" not in str(e.value)


def test_a_bad_value_in_a_profile_names_the_profile(tmp_path):
    prof = params.load_profiles()
    prof["cpu"]["04_efficientnet_two_phase"]["phase1_epochs"] = -2
    f = tmp_path / "profiles.yaml"
    f.write_text(yaml.safe_dump(prof))
    with pytest.raises(params.ParameterError, match=r"^04_efficientnet_two_phase: phase1_epochs = -2 \(profile 'cpu'\) "):
        params.load("cpu", "04_efficientnet_two_phase", path=f)
    assert params.load("smoke", "04_efficientnet_two_phase", path=f).phase1_epochs == 2


def test_every_parameter_has_a_declared_type_and_every_profile_passes_it():
    """The ``types`` section covers every parameter of every notebook (and names no other), and
    every profile's values pass it; ``types`` is not a profile."""
    prof = params.load_profiles()
    assert "types" not in params.profile_names(prof)
    with pytest.raises(ValueError, match="unknown profile 'types'"):
        params.load("types", "04_efficientnet_two_phase")
    for nb in sorted(k for k in prof["defaults"] if k != "all"):
        declared, names = params.types_for(prof, nb), params.defaults_for(prof, nb)
        assert set(declared) == set(names), nb
        for profile in params.profile_names(prof):
            params.load(profile, nb)


def _profiles_with(tmp_path, edit) -> tuple[Path, list[str]]:
    lines = (ROOT / "notebooks" / "profiles.yaml").read_text(encoding="utf-8").splitlines()
    edit(lines)
    f = tmp_path / "profiles.yaml"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f, lines


def test_an_invalid_profiles_file_is_one_line_naming_the_file_and_the_line(tmp_path):
    """Issue 19: a syntax error in ``profiles.yaml``, or a profile that is a list, was a raw
    traceback from yaml or from ``dict()``. Both are one line naming the file and the line."""
    at = lambda lines, text: next(i for i, ln in enumerate(lines) if ln.startswith(text))   # noqa: E731
    f, lines = _profiles_with(tmp_path, lambda ls: ls.insert(at(ls, "cpu:") + 1, "  00_data_preparation: {n_train: [1, 2}"))
    with pytest.raises(params.ProfilesError) as e:
        params.load("smoke", "00_data_preparation", path=f)
    line = at(lines, "cpu:") + 2
    assert str(e.value).startswith(f"{f}, line {line}: not valid YAML (") and "\n" not in str(e.value)

    f, lines = _profiles_with(tmp_path, lambda ls: ls.extend(["tiny:", "  - 04_efficientnet_two_phase", "  - 05"]))
    with pytest.raises(params.ProfilesError) as e:
        params.load("smoke", "04_efficientnet_two_phase", path=f)
    assert str(e.value) == (f"{f}, line {len(lines) - 1}: 'tiny' must be a mapping of notebook -> parameters, "
                            "not a list")

    f, lines = _profiles_with(tmp_path, lambda ls: ls.extend(["tiny:", "  04_efficientnet_two_phase: [1, 2]"]))
    with pytest.raises(params.ProfilesError, match=rf", line {len(lines)}: 'tiny': '04_efficientnet_two_phase' "
                                                   "must be a mapping of parameter -> value, not a list$"):
        params.load_profiles(f)


# ------------------------------------------------------------------ D. remaining fault cases
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_small_detector(tmp_path_factory.mktemp("safety-model") / "model")


def _real_jpeg(cifake_members, label="REAL") -> bytes:
    return next(v for k, v in sorted(cifake_members.items()) if f"/{label}/" in k)


def _run_predict(capsys, *args) -> tuple[int, str, str]:
    code = predict.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_a_float_tiff_in_0_to_1_is_scaled_not_black(cifake_members, tmp_path):
    """Issue 19, case 7: a float TIFF with values in [0, 1] (what scientific tools write) was
    decoded as 0-255 and so scored as a black image. A real CIFAKE image saved as float32 TIFF
    by Pillow decodes to its own gray levels."""
    gray = np.asarray(Image.open(io.BytesIO(_real_jpeg(cifake_members))).convert("L"), dtype=np.float32)
    tif = tmp_path / "float.tif"
    Image.fromarray(gray / 255.0).save(tif)
    assert Image.open(tif).mode == "F"
    d = images.decode_image(tif)
    assert d.array.shape == (32, 32, 3) and d.array.max() > 100
    assert np.abs(d.array[..., 0].astype(int) - gray.astype(int)).max() <= 1
    assert "scaled F to 8-bit (values 0-1)" in d.notes
    # a float image in 0-255 keeps its scale
    Image.fromarray(gray).save(tmp_path / "float255.tif")
    d255 = images.decode_image(tmp_path / "float255.tif")
    assert np.abs(d255.array[..., 0].astype(int) - gray.astype(int)).max() <= 1


def test_broken_and_looping_symlinks_in_a_scored_folder_each_give_their_line(cifake_members, model_folder,
                                                                             tmp_path, capsys):
    """Issue 19, case 8: README promises one line per broken symlink or symlink loop; inside a
    folder given to predict they vanished from the listing without one."""
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "good.jpg").write_bytes(_real_jpeg(cifake_members))
    (d / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (d / "loop_a.png").symlink_to(d / "loop_b.png")
    (d / "loop_b.png").symlink_to(d / "loop_a.png")
    (d / "self").symlink_to(d, target_is_directory=True)        # a folder loop: not followed
    code, out, err = _run_predict(capsys, "--model", model_folder, d)
    assert code == 1 and len(out.splitlines()) == 1 and out.rstrip().endswith(str(d / "good.jpg"))
    assert err.splitlines() == [
        f"skipped: {d / 'gone.jpg'}: cannot read file (No such file or directory)",
        f"skipped: {d / 'loop_a.png'}: cannot read file (Too many levels of symbolic links)",
        f"skipped: {d / 'loop_b.png'}: cannot read file (Too many levels of symbolic links)",
    ]


def test_a_named_pipe_as_output_is_refused_at_once(cifake_members, model_folder, tmp_path):
    """Issue 19: ``--output`` naming a FIFO hung predict (opening a pipe waits for a reader). It
    is refused before any work, exit 2, one line. Run in a subprocess so a regression fails on
    the timeout instead of hanging the suite."""
    (tmp_path / "good.jpg").write_bytes(_real_jpeg(cifake_members))
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "aidetect_utils.predict", "--model", str(model_folder),
                        str(tmp_path / "good.jpg"), "--output", str(fifo)], cwd=ROOT, text=True,
                       capture_output=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and r.stdout == "" and time.perf_counter() - t0 < 120
    assert r.stderr == f"error: --output {fifo}: is a named pipe (FIFO), not a file; name a .csv or .json file\n"


def test_a_model_folder_with_nan_weights_is_one_line(model_folder, cifake_members, tmp_path, capsys):
    """Issue 19: NaN in a folder's safetensors was a ``FloatingPointError`` traceback with nothing
    written. The weights are checked when the folder is loaded: ``ModelFolderError``, one line."""
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    weights = load_file(folder / "model.safetensors")
    weights["head.0.weight"][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors")
    (tmp_path / "good.jpg").write_bytes(_real_jpeg(cifake_members))
    code, out, err = _run_predict(capsys, "--model", folder, tmp_path / "good.jpg")
    assert code == 2 and out == ""
    assert err == (f"error: {folder}: model.safetensors holds NaN or infinite values in 1 tensor (first: "
                   "'head.0.weight'); the model is damaged: retrain it or restore the folder\n")


DAMAGE = {
    "checkpoints/last/state.json": lambda f: f.write_text('{"epoch": 2, "fingerpr'),
    "checkpoints/last/model.safetensors": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "checkpoints/last/optimizer.pt": lambda f: f.write_bytes(f.read_bytes()[:100]),
    "checkpoints/best/model.safetensors": lambda f: f.write_bytes(b"\x00" * 16),
}


@pytest.mark.parametrize("damaged", sorted(DAMAGE))
def test_a_damaged_training_checkpoint_names_the_file_and_what_to_delete(damaged, tmp_path, real_images):
    """Issue 19: a damaged checkpoint was a ``SafetensorError`` / ``JSONDecodeError`` on every rerun,
    naming no file. Now one line names the file and the folder to delete; nothing was loaded
    into the model; after deleting it as told the run trains afresh."""
    def run():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
        tr, va = _loaders(real_images)
        h = engine.fit(net, tr, va, torch.optim.SGD(net.parameters(), lr=0.01), tmp_path / "run",
                       engine.TrainConfig(epochs=2, seed=0), desc="phase 1")
        return h, net
    assert run()[0].status == "trained"
    DAMAGE[damaged](tmp_path / "run" / damaged)
    with pytest.raises(engine.CheckpointError) as e:
        run()
    ckpts = tmp_path / "run" / "checkpoints"
    assert str(e.value).startswith(f"{tmp_path / 'run' / damaged}: damaged training checkpoint (")
    assert str(e.value).endswith(f"delete the folder {ckpts} to train phase 1 afresh (its finished epochs are lost)")
    assert "\n" not in str(e.value)
    shutil.rmtree(ckpts)
    assert run()[0].status == "trained"


def test_a_vision_language_folder_is_read_from_safetensors_only(real_images, tmp_path, capsys):
    """Issue 19: "pickles in a model folder are never loaded" did not hold for the vision-language
    folders: peft unpickled an ``adapter_model.bin`` (``weights_only=True``, so only a benign one,
    but a pickle). A folder whose adapter has a .bin and no .safetensors is refused with one line
    before peft sees it; the same folder with its safetensors loads."""
    from aidetect_utils import vlm
    model, processor, _ = vlm.build_lora_model(vlm.TINY, lora_r=4, seed=0)
    detector = vlm.VLMDetector(model.eval(), processor, vlm.TINY, "transformers")
    folder = tmp_path / "model"
    artifacts.save_model_folder(folder, detector, method="qwen_vl_test", architecture=detector.spec(),
                                preprocessing=vlm.vlm_preprocessing(32))
    x, _ = real_images
    Image.fromarray(x[0]).save(tmp_path / "img.png")
    assert predict.main(["--model", str(folder), str(tmp_path / "img.png")]) == 0
    capsys.readouterr()
    adapter = folder / "adapter"
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")   # a benign pickle
    (adapter / "adapter_model.safetensors").unlink()
    code, out, err = _run_predict(capsys, "--model", folder, tmp_path / "img.png")
    assert code == 2 and out == ""
    assert err == (f"error: {folder}: adapter/ has no adapter_model.safetensors (only adapter_model.bin: pickles in "
                   "a model folder are never loaded; save the adapter with safe_serialization=True)\n")


TRAINING_CELL = """
import torch
from torch import nn
from aidetect_utils import engine

class Scaled(nn.Module):                     # a module class written in the notebook
    def __init__(self):
        super().__init__(); self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(),
                                                     nn.Dropout(0.5), nn.Linear(16, 2))
    def forward(self, x):
        return self.net(x)

def train(out):                              # the notebook's training function
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(32, 3, 8, 8, generator=g), torch.arange(32) % 2)
    m = Scaled()
    return engine.fit(m, engine.make_loader(ds, 16, shuffle=True), engine.make_loader(ds, 32),
                      torch.optim.SGD(m.parameters(), lr=P.lr), out, engine.TrainConfig(epochs=1, seed=0))

train(OUT)
"""


def test_a_notebook_rerun_reloads_and_an_edited_recipe_retrains(tmp_path, capsys):
    """The fingerprint read in real Jupyter kernels (papermill): the same notebook run again
    reloads (its code hashes the same in a new kernel), and an edit of the notebook's training
    function, its module class or a dropout rate in it trains afresh, naming what changed."""
    cell = TRAINING_CELL.replace("OUT", repr(str(tmp_path / "run")))
    edits = [None, None, ("lr=P.lr)", "lr=P.lr, momentum=0.0)"), ("return self.net(x)", "return self.net(x) * 1"),
             ("nn.Dropout(0.5)", "nn.Dropout(0.0)")]
    said = []
    for edit in edits:
        if edit is not None:
            assert cell.count(edit[0]) == 1
            cell = cell.replace(*edit)
        pipeline.run("smoke", notebooks_dir=train_series(tmp_path, cell, types={"00_train": {"lr": "float>0"}}), out_dir=tmp_path / "out")
        said += [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pipeline]   ")]
    assert said == ["[pipeline]   00 train: trained", "[pipeline]   00 train: reloaded (same settings)",
                    "[pipeline]   00 train: trained (changed: code)",         # an edit that changes no setting
                    "[pipeline]   00 train: trained (changed: model)",
                    "[pipeline]   00 train: trained (changed: model)"]
