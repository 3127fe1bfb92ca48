"""The images the VLM notebooks train and test on: CIFAKE subsets, or SID_Set."""
from __future__ import annotations

from ..sidset import sid_set_split
from ..splits import load_prepared
from .detector import vlm_preprocessing


def detection_data(dataset: str = "cifake", *, input_size: int, n_train: int | None, n_test: int | None,
                   prepared_dir=None, min_width: int | None = 1024, seed: int = 0, sid_set_path: str | None = None):
    """(train, test, preprocessing) for the VLM notebooks: ``splits.ImageSplit`` pairs.

    ``cifake``: random subsets of notebook 00's prepared train and test splits (32 px images,
    upsized to ``input_size`` by the transform). ``sid_set``: the hub's ``train`` and
    ``validation`` splits streamed (``sidset.sid_set_split``): label 2 dropped, at least
    ``min_width`` px wide, the first ``n // 2`` of each class, each decoded at ``input_size`` as
    it arrives, reading stopped once both classes are full (needs internet, or
    ``sid_set_path``: a local folder in its layout).
    """
    if dataset == "cifake":
        data = load_prepared(prepared_dir)
        train = data.split("train").sample(n_train, seed=seed)
        test = data.split("test").sample(n_test, seed=seed)
    elif dataset == "sid_set":
        half = lambda n: None if n is None else max(1, n // 2)
        load = lambda split, n: sid_set_split(split, input_size, min_width=min_width, max_per_class=half(n),
                                              seed=seed, path=sid_set_path)
        train = load("train", n_train)
        test = load("validation", n_test)
    else:
        raise ValueError(f"dataset must be 'cifake' or 'sid_set', got {dataset!r}")
    return train, test, vlm_preprocessing(input_size, source_size=train.images.shape[1])


def recipe_data(recipe: "Recipe"):
    """Notebook 05's data step: :func:`detection_data` with the ``training.Recipe``'s ``dataset``,
    ``input_size``, ``n_train``, ``n_test``, ``prepared_dir``, ``min_width``, ``seed`` and
    ``sid_set_path``."""
    r = recipe
    return detection_data(r.dataset, input_size=r.input_size, n_train=r.n_train, n_test=r.n_test,
                          prepared_dir=r.prepared_dir, min_width=r.min_width, seed=r.seed,
                          sid_set_path=r.sid_set_path)
