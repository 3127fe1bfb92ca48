"""Training on several processes (``AIDETECT_NUM_PROCESSES`` / ``pipeline --processes``): two CPU
processes talking through gloo train what one process trains, gather their metrics, write each
file once, and a killed two-process run resumes.

Why two processes can differ from one at all: each batch is split in two halves, each process
computes the mean loss of its half, and DDP averages the two gradients. That is the same number
as the whole batch's mean gradient (equal halves), summed in another order, so results agree to
float32 rounding (measured here: weights within 2e-7 after 9 Adam steps, the LoRA adapters too;
tolerance 1e-5), not bit for bit. The setup keeps everything else equal: the global batch
(20 = 2 x 10) divides the 60 training images (no padded last batch), no dropout or random
augmentation (each process draws its own random numbers), the same shuffled order
(engine._seed_processes). Gathered validation metrics are compared with a one-process
evaluation of the same weights (to 1e-6; measured: equal).
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aidetect_utils import engine, pipeline, runlog, transforms, vlm
from aidetect_utils.images import decode_image

from .conftest import train_series

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_ATOL = 1e-5      # two processes vs one: float32 rounding of the gradient average (measured ~1e-6)
METRIC_ATOL = 1e-5       # losses and metrics of the two runs, per batch and per epoch
GATHER_ATOL = 1e-6       # gathered validation metrics vs a one-process evaluation of the same weights
EPOCHS = 3


@pytest.fixture(scope="module")
def arrays(cifake_members):
    """60 real CIFAKE training images (30 REAL, 30 FAKE) and 60 test images, with labels."""
    out = {}
    for split in ("train", "test"):
        items = sorted((n, d) for n, d in cifake_members.items() if f"/{split}/" in n)
        out[split] = (np.stack([decode_image(d).array for _, d in items]),
                      np.array([1 if "/FAKE/" in n else 0 for n, _ in items]))
    assert len(out["train"][0]) == 60 and out["train"][1].sum() == 30
    return out


def loaders(arrays):
    """Shuffled training batches of 20 (10 per process), validation batches of 16 (its last batch,
    12 images, is padded by Accelerate and the padding dropped again by gather_for_metrics)."""
    prep = transforms.preprocessing(32, mean=(0.5,) * 3, std=(0.5,) * 3)
    tr = transforms.ArrayDataset(*arrays["train"], transforms.eval_transform(prep))
    va = transforms.ArrayDataset(*arrays["test"], transforms.eval_transform(prep))
    return engine.make_loader(tr, 20, shuffle=True), engine.make_loader(va, 16)


def tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 2))


CONFIG = engine.TrainConfig(epochs=EPOCHS, seed=0, restore_best=False)


def train(arrays, out_dir, **kw):
    model = tiny_cnn()
    tr, va = loaders(arrays)
    h = engine.fit(model, tr, va, torch.optim.Adam(model.parameters(), lr=3e-3), out_dir, CONFIG, **kw)
    return model, h


def max_diff(a: nn.Module, b: nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def runs(arrays, tmp_path_factory):
    """One uninterrupted run on one process and one on two (fork), with their run logs and timings."""
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for n in (1, 2):
        log = base / f"log{n}.jsonl"
        env = {engine.PROCESSES_VAR: str(n), runlog.ENV_VAR: str(log)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            t0 = time.perf_counter()
            model, h = train(arrays, base / f"p{n}")
            out[n] = dict(model=model, history=h, dir=base / f"p{n}", log=runlog.read(log),
                          seconds=time.perf_counter() - t0)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    print(f"fit: 1 process {out[1]['seconds']:.1f} s, 2 processes {out[2]['seconds']:.1f} s")
    return out


# ------------------------------------------------------------------------------ engine.fit
def test_two_processes_train_what_one_process_trains(runs, arrays):
    one, two = runs[1], runs[2]
    assert one["history"].processes == 1 and two["history"].processes == 2
    assert max_diff(one["model"], two["model"]) < WEIGHTS_ATOL
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert np.allclose([e[key] for e in one["history"].epochs], [e[key] for e in two["history"].epochs],
                           atol=METRIC_ATOL, rtol=0), key
    # each batch's loss is the whole batch's (both halves), in the one-process order (same shuffle)
    assert [(b["epoch"], b["step"]) for b in two["history"].batches] == \
        [(b["epoch"], b["step"]) for b in one["history"].batches] == [(e, s) for e in (1, 2, 3) for s in range(3)]
    assert np.allclose([b["loss"] for b in one["history"].batches], [b["loss"] for b in two["history"].batches],
                       atol=METRIC_ATOL, rtol=0)
    # validation metrics gathered from both processes = one process evaluating the same weights
    _, va = loaders(arrays)
    alone = engine.evaluate_loss(two["model"], va)
    last = two["history"].epochs[-1]
    assert abs(alone["loss"] - last["val_loss"]) < GATHER_ATOL and alone["acc"] == last["val_acc"]


def test_two_processes_write_each_file_once(runs):
    two = runs[2]
    d = two["dir"]
    assert len(json.loads((d / "history.json").read_text())) == EPOCHS
    batches = pd.read_csv(d / "history_batches.csv")
    assert len(batches) == EPOCHS * 3 and not batches.duplicated(["epoch", "step"]).any()
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["best", "last"]      # no .tmp / .old left
    state = json.loads((d / "checkpoints" / "last" / "state.json").read_text())
    assert state["epoch"] == EPOCHS and state["finished"] and state["history"]["processes"] == 2
    assert len(state["history"]["epochs"]) == EPOCHS
    assert two["log"] == [{"step": "train", "status": "trained", "where": str(d), "epochs": EPOCHS,
                           "seconds": two["log"][0]["seconds"], "processes": 2}]


def test_each_epoch_line_is_printed_once(arrays, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(engine.PROCESSES_VAR, "2")
    capfd.readouterr()
    _, h = train(arrays, tmp_path / "r")
    out = capfd.readouterr().out
    for epoch in range(1, EPOCHS + 1):
        assert out.count(f"train epoch {epoch}/{EPOCHS}:") == 1, out
    assert out.count("[train] trained") == 1
    # reloading launches nothing and says so once
    model, h2 = train(arrays, tmp_path / "r")
    out = capfd.readouterr().out
    assert h2.reloaded and h2.processes == 2 and out.count("[train] reloaded (same settings)") == 1
    assert "train epoch" not in out


KILLED_RUN = """
import os, signal
import numpy as np, torch
from torch import nn
from aidetect_utils import engine, transforms
CONFIG = engine.TrainConfig(epochs={epochs}, seed=0, restore_best=False)
{helpers}

def kill_after_epoch_1(epoch, row):          # the checkpoint of epoch 1 is written: kill the whole run
    if epoch == 1:
        print("killing", flush=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)

data = np.load({npz!r})
arrays = {{"train": (data["xtr"], data["ytr"]), "test": (data["xte"], data["yte"])}}
model = tiny_cnn()
tr, va = loaders(arrays)
engine.fit(model, tr, va, torch.optim.Adam(model.parameters(), lr=3e-3), {out!r}, CONFIG,
           on_epoch_end=kill_after_epoch_1)
"""


def test_a_killed_two_process_run_resumes(runs, arrays, tmp_path, monkeypatch):
    """SIGKILL to a two-process run (its launcher and both processes) after epoch 1 was saved;
    the rerun on two processes resumes at epoch 2 and ends where the uninterrupted run ended."""
    npz = tmp_path / "data.npz"
    np.savez(npz, xtr=arrays["train"][0], ytr=arrays["train"][1], xte=arrays["test"][0], yte=arrays["test"][1])
    script = tmp_path / "killed.py"
    out = tmp_path / "killed"
    helpers = inspect.getsource(loaders) + "\n\n" + inspect.getsource(tiny_cnn)
    script.write_text(KILLED_RUN.format(epochs=EPOCHS, helpers=helpers, npz=str(npz), out=str(out)))
    env = {**os.environ, engine.PROCESSES_VAR: "2", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          start_new_session=True, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "killing" in proc.stdout and proc.stdout.count("train epoch 1/3:") == 1
    assert "train epoch 2/3" not in proc.stdout
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    assert state["epoch"] == 1 and not state["finished"]
    assert not (out / "history.json").exists()          # written at the end, by the main process

    monkeypatch.setenv(engine.PROCESSES_VAR, "2")
    model, h = train(arrays, out)
    assert h.resumed_from == 1 and h.status == "resumed at epoch 2" and h.processes == 2
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3]
    assert max_diff(model, runs[2]["model"]) < 1e-6            # the uninterrupted two-process run
    assert max_diff(model, runs[1]["model"]) < WEIGHTS_ATOL     # and the one-process run
    assert np.allclose([e["val_loss"] for e in h.epochs], [e["val_loss"] for e in runs[2]["history"].epochs],
                       atol=1e-6, rtol=0)


LAUNCHED_SCRIPT = """
import os
import numpy as np, torch
from torch import nn
from safetensors.torch import save_model
from aidetect_utils import engine, transforms
CONFIG = engine.TrainConfig(epochs={epochs}, seed=0, restore_best=False)
{helpers}
data = np.load({npz!r})
arrays = {{"train": (data["xtr"], data["ytr"]), "test": (data["xte"], data["yte"])}}
model = tiny_cnn()
tr, va = loaders(arrays)
h = engine.fit(model, tr, va, torch.optim.Adam(model.parameters(), lr=3e-3), {out!r}, CONFIG)
save_model(model, {out!r} + "/../final_" + os.environ["RANK"] + ".safetensors")
print("rank", os.environ["RANK"], "of", h.processes, "processes:", h.status, flush=True)
"""


def test_a_script_under_a_distributed_launcher(runs, arrays, tmp_path):
    """``torchrun --nproc_per_node 2 script.py`` (what ``accelerate launch --multi_gpu`` runs on
    GPUs; Accelerate's own launcher has no CPU multi-process mode but MPI): every process runs
    fit, they train together, the main one writes, and all end with the same weights (those of
    one process)."""
    from safetensors.torch import load_file
    npz = tmp_path / "data.npz"
    np.savez(npz, xtr=arrays["train"][0], ytr=arrays["train"][1], xte=arrays["test"][0], yte=arrays["test"][1])
    script, out, log = tmp_path / "train.py", tmp_path / "run", tmp_path / "log.jsonl"
    helpers = inspect.getsource(loaders) + "\n\n" + inspect.getsource(tiny_cnn)
    script.write_text(LAUNCHED_SCRIPT.format(epochs=EPOCHS, helpers=helpers, npz=str(npz), out=str(out)))
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", runlog.ENV_VAR: str(log)}
    env.pop(engine.PROCESSES_VAR, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(engine._free_port()), str(script)],
                          env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(ln for ln in proc.stdout.splitlines() if ln.startswith("rank ")) == [
        "rank 0 of 2 processes: trained", "rank 1 of 2 processes: trained"]
    for epoch in range(1, EPOCHS + 1):
        assert proc.stdout.count(f"train epoch {epoch}/{EPOCHS}:") == 1
    assert [(r["status"], r["processes"]) for r in runlog.read(log)] == [("trained", 2)]
    assert len(json.loads((out / "history.json").read_text())) == EPOCHS
    w0, w1 = load_file(tmp_path / "final_0.safetensors"), load_file(tmp_path / "final_1.safetensors")
    one = {k: v for k, v in runs[1]["model"].state_dict().items()}
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert max((w0[k] - one[k]).abs().max().item() for k in w0) < WEIGHTS_ATOL


def test_spawned_processes_train_the_same(runs, arrays, tmp_path, monkeypatch):
    """Where CUDA is already in use (a notebook's setup cell on a GPU machine) the processes are
    spawned, not forked, with everything pickled by value: the same run, to float rounding."""
    monkeypatch.setenv(engine.PROCESSES_VAR, "2")
    monkeypatch.setattr(engine, "start_method", lambda: "spawn")
    model, h = train(arrays, tmp_path / "spawned")
    assert h.processes == 2 and max_diff(model, runs[2]["model"]) < 1e-6


def test_a_failing_process_is_one_line(arrays, tmp_path, monkeypatch):
    def fails(epoch, row):
        raise ValueError("the callback refused epoch %d" % epoch)
    monkeypatch.setenv(engine.PROCESSES_VAR, "2")
    with pytest.raises(engine.TrainingProcessError) as e:
        train(arrays, tmp_path / "f", on_epoch_end=fails)
    assert str(e.value) == "training process 0 of 2 failed: ValueError: the callback refused epoch 1"
    if hasattr(e.value, "__notes__"):   # its traceback, shown under the error where Python has notes
        assert "in training process 0:" in e.value.__notes__[0] and "in fails" in e.value.__notes__[0]
    # the epoch saved before the failure is resumed by the next run
    model, h = train(arrays, tmp_path / "f")
    assert h.resumed_from == 1


def test_process_count_and_batch_split_are_checked(arrays, tmp_path, monkeypatch):
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(engine.PROCESSES_VAR, bad)
        with pytest.raises(ValueError, match=f"^{engine.PROCESSES_VAR}='{bad}': the number of training processes"):
            engine.requested_processes()
        with pytest.raises(ValueError, match=f"^{engine.PROCESSES_VAR}="):
            pipeline._processes_env(None)
    monkeypatch.setenv(engine.PROCESSES_VAR, "")
    assert engine.requested_processes() == 1 and engine.processes_to_start() == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)      # CPU processes: as many as asked
    monkeypatch.setenv(engine.PROCESSES_VAR, "3")
    assert engine.processes_to_start() == 3
    with pytest.raises(ValueError, match="training loader's batch size 20 is not a multiple of 3"):
        train(arrays, tmp_path / "x")
    assert not (tmp_path / "x").exists()                 # refused before anything is written
    monkeypatch.setenv("WORLD_SIZE", "2")                # inside `accelerate launch`: train here, start nothing
    assert engine.processes_to_start() == 1
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)       # one process per GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=f"^{engine.PROCESSES_VAR}=3: this machine has 2 GPU"):
        engine.processes_to_start()
    assert pipeline.PROCESSES_VAR == engine.PROCESSES_VAR


# ------------------------------------------------------------------------------ vlm.train_lora
@pytest.fixture(scope="module")
def lora_data(arrays):
    x, y = arrays["train"]
    pick = np.r_[0:8, 30:38]                                 # 8 REAL, 8 FAKE
    return transforms.ArrayDataset(x[pick], y[pick], transforms.eval_transform(vlm.vlm_preprocessing(32)))


def lora(ds, out_dir):
    model, processor, _ = vlm.build_lora_model(vlm.TINY, lora_r=4, seed=0)
    t = vlm.train_lora(model, processor, ds, out_dir, epochs=2, lr=5e-3, batch_size=8, logging_steps=1,
                       save_steps=1000)
    return t, {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def lora_one(lora_data, tmp_path_factory):
    """The one-process LoRA run the two-process ones are compared with."""
    out = tmp_path_factory.mktemp("lora") / "one"
    saved = os.environ.pop(engine.PROCESSES_VAR, None)
    try:
        return lora(lora_data, out)
    finally:
        if saved is not None:
            os.environ[engine.PROCESSES_VAR] = saved


def test_lora_on_two_processes_trains_what_one_process_trains(lora_data, lora_one, tmp_path, monkeypatch):
    """Batches of 8 become 4 per process; the Trainer's sampler gives both runs the same order."""
    t1, w1 = lora_one
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(runlog.ENV_VAR, str(log))
    monkeypatch.setenv(engine.PROCESSES_VAR, "2")
    t2, w2 = lora(lora_data, tmp_path / "two")
    assert t2.processes == 2 and t2.state.global_step == t1.state.global_step == 4
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < WEIGHTS_ATOL
    l1, l2 = vlm.loss_history(t1), vlm.loss_history(t2)
    assert list(l1["step"]) == list(l2["step"]) == [1, 2, 3, 4]
    assert np.allclose(l1["loss"], l2["loss"], atol=METRIC_ATOL, rtol=0)
    # written once: one checkpoint (both processes' RNG states in it), one run-log line
    ckpts = sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-4"]
    assert {p.name for p in (tmp_path / "two" / "checkpoint-4").glob("rng_state*")} == \
        {"rng_state_0.pth", "rng_state_1.pth"}
    assert [(r["status"], r.get("processes")) for r in runlog.read(log)] == [("trained", 2)]
    # finished: reloaded here, nothing launched, the same adapters
    t3, w3 = lora(lora_data, tmp_path / "two")
    assert [r["status"] for r in runlog.read(log)] == ["trained", "reloaded (same settings)"]
    assert all(torch.equal(w2[k], w3[k]) for k in w2)


def test_lora_on_two_spawned_processes(lora_data, lora_one, tmp_path, monkeypatch):
    """The start where CUDA is in use (the Qwen model, its processor and data pickled by value)."""
    monkeypatch.setenv(engine.PROCESSES_VAR, "2")
    monkeypatch.setattr(engine, "start_method", lambda: "spawn")
    t2, w2 = lora(lora_data, tmp_path / "spawned")
    assert t2.processes == 2 and max((lora_one[1][k] - w2[k]).abs().max().item() for k in w2) < WEIGHTS_ATOL


def test_lora_batch_split():
    assert vlm.training.per_process_batch(8, 1, 2) == (4, 1)
    assert vlm.training.per_process_batch(2, 4, 2) == (2, 2)      # fewer accumulation steps first
    assert vlm.training.per_process_batch(2, 4, 8) == (1, 1)
    assert vlm.training.per_process_batch(8, 1, 1) == (8, 1)
    with pytest.raises(ValueError, match="does not split into 3 equal shares"):
        vlm.training.per_process_batch(8, 1, 3)


# ------------------------------------------------------------------------------ the pipeline
NOTEBOOK_TRAINING = """
import os, torch
from torch import nn
from aidetect_utils import engine

class Net(nn.Module):                        # a class written in the notebook travels to the processes
    def __init__(self):
        super().__init__(); self.fc = nn.Linear(12, 2)
    def forward(self, x):
        return self.fc(x.flatten(1))

torch.manual_seed(0)
ds = torch.utils.data.TensorDataset(torch.randn(32, 3, 2, 2), torch.arange(32) % 2)
model = Net()
h = engine.fit(model, engine.make_loader(ds, 8, shuffle=True), engine.make_loader(ds, 16),
               torch.optim.SGD(model.parameters(), lr=P.lr), "run", engine.TrainConfig(epochs=2))
print("processes", h.processes, "variable", os.environ.get("AIDETECT_NUM_PROCESSES"))
"""


def test_pipeline_processes_reach_the_notebooks_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(engine.PROCESSES_VAR, raising=False)
    nb_dir = train_series(tmp_path, NOTEBOOK_TRAINING)
    seen = {}
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: seen.update(k) or [])
    assert pipeline.main(["--only", "00", "--processes", "2"]) == 0 and seen["processes"] == 2
    monkeypatch.undo()
    monkeypatch.delenv(engine.PROCESSES_VAR, raising=False)
    recs = pipeline.run("smoke", notebooks_dir=nb_dir, out_dir=tmp_path / "out", processes=2)
    assert os.environ.get(engine.PROCESSES_VAR) is None          # set for the kernels only
    import nbformat
    cells = nbformat.read(recs[0]["output"], 4).cells
    printed = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
    assert "processes 2 variable 2" in printed
    # the main process's epoch lines reach the notebook (ipykernel forwards a forked process's output), once
    assert printed.count("train epoch 1/2:") == printed.count("train epoch 2/2:") == 1
    assert printed.count("[train] trained") == 1
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pipeline]   ")]
    assert said == ["[pipeline]   00 train: trained on 2 processes"]
    with pytest.raises(ValueError, match="^--processes 0: the number of training processes"):
        pipeline.run("smoke", notebooks_dir=nb_dir, out_dir=tmp_path / "out", processes=0)
