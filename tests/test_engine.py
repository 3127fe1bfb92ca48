"""The training loop: loss goes down, early stopping, resume after an interruption, reload."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from aidetect_utils import data, engine, transforms
from aidetect_utils.transforms import preprocessing


@pytest.fixture()
def loaders(cifake_folder, tmp_path):
    cache = data.build_cache(cifake_folder, cache_dir=tmp_path / "cache", progress=False)
    m = cache.manifest
    tr, va = m[m.split == "train"], m[m.split == "test"]
    prep = preprocessing(32, mean=(0.5,) * 3, std=(0.5,) * 3)
    ds_tr = transforms.ArrayDataset(cache.images[tr["index"].to_numpy()], tr["label"].to_numpy(),
                                    transforms.train_transform(prep, hflip=True))
    ds_va = transforms.ArrayDataset(cache.images[va["index"].to_numpy()], va["label"].to_numpy(),
                                    transforms.eval_transform(prep))
    return engine.make_loader(ds_tr, 16, shuffle=True), engine.make_loader(ds_va, 32)


def tiny_cnn(seed=0, n_out=2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, n_out))


def test_loss_goes_down_on_real_images(loaders, tmp_path):
    tr, va = loaders
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    h = engine.fit(model, tr, va, opt, tmp_path / "run", engine.TrainConfig(epochs=6, seed=0))
    losses = [e["train_loss"] for e in h.epochs]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]
    assert (tmp_path / "run" / "history.json").exists()
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 6
    assert len(h.batches) == 6 * len(tr)


def test_resume_reproduces_uninterrupted_run(loaders, tmp_path):
    tr, va = loaders
    cfg = engine.TrainConfig(epochs=3, seed=1, restore_best=False)
    ref = tiny_cnn(1)
    h_ref = engine.fit(ref, tr, va, torch.optim.Adam(ref.parameters(), lr=1e-3), tmp_path / "a", cfg)

    def interrupt(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt
    m = tiny_cnn(1)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(m, tr, va, torch.optim.Adam(m.parameters(), lr=1e-3), tmp_path / "b", cfg, on_epoch_end=interrupt)
    m2 = tiny_cnn(1)  # a fresh process would start from new weights
    h = engine.fit(m2, tr, va, torch.optim.Adam(m2.parameters(), lr=1e-3), tmp_path / "b", cfg)
    assert h.resumed_from == 2 and [e["epoch"] for e in h.epochs] == [1, 2, 3]
    assert np.allclose([e["val_loss"] for e in h.epochs], [e["val_loss"] for e in h_ref.epochs], atol=1e-6)
    for a, b in zip(ref.state_dict().values(), m2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_finished_run_is_reloaded_not_retrained(loaders, tmp_path):
    tr, va = loaders
    cfg = engine.TrainConfig(epochs=2, seed=0)
    m = tiny_cnn()
    engine.fit(m, tr, va, torch.optim.Adam(m.parameters(), lr=1e-3), tmp_path / "r", cfg)
    m2 = tiny_cnn()  # a new process builds the same initial model, then finds the finished run
    h = engine.fit(m2, tr, va, torch.optim.Adam(m2.parameters(), lr=1e-3), tmp_path / "r", cfg)
    assert h.reloaded and len(h.epochs) == 2 and h.status == "reloaded (same settings)"
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    # another configuration must not pick up that checkpoint
    m3 = tiny_cnn()
    h3 = engine.fit(m3, tr, va, torch.optim.Adam(m3.parameters(), lr=5e-4), tmp_path / "r", cfg)
    assert not h3.reloaded and h3.resumed_from is None


def test_early_stopping_and_best_checkpoint(loaders, tmp_path):
    tr, va = loaders
    m = tiny_cnn(n_out=1)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # nothing changes: no improvement after epoch 1
    h = engine.fit(m, tr, va, opt, tmp_path / "e", engine.TrainConfig(epochs=10, patience=2, monitor="val_acc"))
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3] and h.stopped_early and h.best_epoch == 1
    assert (tmp_path / "e" / "checkpoints" / "best" / "model.safetensors").exists()


def test_plateau_scheduler_lowers_lr(loaders, tmp_path):
    tr, va = loaders
    m = tiny_cnn()
    dummy = nn.Parameter(torch.zeros(1))      # the model itself never changes: val_acc plateaus
    opt = torch.optim.SGD([dummy], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
    h = engine.fit(m, tr, va, opt, tmp_path / "p", engine.TrainConfig(epochs=3, monitor="val_acc"), scheduler=sched)
    # the lr recorded is the one each epoch trained with; the plateau halves it after epochs 2, 3
    assert [e["lr"] for e in h.epochs] == [0.1, 0.1, 0.05]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_probabilities():
    assert torch.allclose(engine.prob_fake_from_logits(torch.tensor([0.0, 100.0])), torch.tensor([0.5, 1.0]))
    two = engine.prob_fake_from_logits(torch.tensor([[0.0, 0.0], [0.0, np.log(3.0)]]))
    assert torch.allclose(two, torch.tensor([0.5, 0.75]))


def test_same_size_other_data_is_not_reloaded(loaders, tmp_path):
    """A finished run is reused only for the same data, not merely the same number of images."""
    tr, va = loaders
    cfg = engine.TrainConfig(epochs=1, seed=0)
    m = tiny_cnn()
    engine.fit(m, tr, va, torch.optim.Adam(m.parameters(), lr=1e-3), tmp_path / "r", cfg)
    ds = tr.dataset
    flipped = transforms.ArrayDataset(ds.images[:, ::-1].copy(), ds.labels, ds.transform)
    m2 = tiny_cnn()
    h = engine.fit(m2, engine.make_loader(flipped, 16, shuffle=True), va, torch.optim.Adam(m2.parameters(), lr=1e-3),
                   tmp_path / "r", cfg)
    assert not h.reloaded
    assert engine.data_signature(flipped) != engine.data_signature(ds)


def test_other_preprocessing_is_not_reloaded(loaders, tmp_path):
    """Same images, other input size: a finished run must not be reused (the model's parameter
    shapes do not change with the input size, so only the transform tells them apart)."""
    tr, va = loaders
    ds = tr.dataset
    bigger = transforms.ArrayDataset(ds.images, ds.labels,
                                     transforms.eval_transform(preprocessing(48, mean=(0.5,) * 3, std=(0.5,) * 3)))
    assert engine.data_signature(bigger) != engine.data_signature(ds)
    cfg = engine.TrainConfig(epochs=1, seed=0)
    m = tiny_cnn()
    engine.fit(m, tr, va, torch.optim.Adam(m.parameters(), lr=1e-3), tmp_path / "r", cfg)
    m2 = tiny_cnn()
    h = engine.fit(m2, engine.make_loader(bigger, 16, shuffle=True), va, torch.optim.Adam(m2.parameters(), lr=1e-3),
                   tmp_path / "r", cfg)
    assert not h.reloaded


def test_loader_workers_default_to_none_on_cpu_and_some_beside_a_gpu(monkeypatch):
    ds = torch.utils.data.TensorDataset(torch.zeros(4, 1), torch.zeros(4))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.default_workers() == 0 and engine.make_loader(ds, 2).num_workers == 0
    assert engine.default_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert engine.default_workers() == 8
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert engine.default_workers() == 1
    assert engine.make_loader(ds, 2, num_workers=0).num_workers == 0   # an explicit choice wins


def test_channels_last_trains_the_same_model(loaders, tmp_path):
    """NHWC is only a memory layout: the same seed gives the same losses and predictions
    (to float rounding), the weights end up channels-last, and inference follows them."""
    tr, va = loaders
    runs = {}
    for cl in (False, True):
        model = tiny_cnn(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        h = engine.fit(model, tr, va, opt, tmp_path / f"cl{cl}", engine.TrainConfig(epochs=2, seed=0, channels_last=cl))
        runs[cl] = (model, [b["loss"] for b in h.batches])
    assert np.allclose(runs[False][1], runs[True][1], atol=1e-4)
    conv = runs[True][0][3].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert engine.is_channels_last(runs[True][0]) and not engine.is_channels_last(runs[False][0])
    p_nchw, _ = engine.predict_proba(runs[False][0], va)
    p_nhwc, _ = engine.predict_proba(runs[True][0], va)
    assert np.allclose(p_nchw, p_nhwc, atol=1e-4)
