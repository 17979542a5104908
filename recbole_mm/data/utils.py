"""Dataset creation and split dataloaders for recbole_mm runs.

Our own versions of RecBole's ``create_dataset`` / ``data_preparation`` (built from RecBole's
public pieces, not patched): general models get a :class:`MultimodalDataset`, and the test
dataloader honours ``test_mask``:

* ``train_valid`` (RecBole's protocol, default): at test time a user's training *and* validation
  items are excluded from the ranking;
* ``train`` (MMRec's protocol): only training items are excluded, so validation items compete
  with test items; scores are a little lower than under ``train_valid``.
"""

from __future__ import annotations

import importlib
from logging import getLogger

from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.utils import create_samplers, get_dataloader
from recbole.data.utils import create_dataset as recbole_create_dataset
from recbole.sampler import Sampler
from recbole.utils import ModelType, set_color

from recbole_mm.data.dataset import MultimodalDataset, describe_split

TEST_MASKS = ("train_valid", "train")


def create_dataset(config):
    """A :class:`MultimodalDataset` for general/context/traditional models, RecBole's otherwise."""
    special = importlib.import_module("recbole.data.dataset")
    if hasattr(special, config["model"] + "Dataset") or config["MODEL_TYPE"] in (
        ModelType.SEQUENTIAL,
        ModelType.KNOWLEDGE,
    ):
        if config["modalities"]:
            getLogger().warning(
                "model %s uses RecBole's %s dataset; item modalities are not loaded",
                config["model"], config["MODEL_TYPE"],
            )
        return recbole_create_dataset(config)
    return MultimodalDataset(config)


class TrainMaskedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """Full-ranking loader that masks only the user's *training* items (MMRec's test protocol)."""

    def __init__(self, config, dataset, sampler, history_sampler, shuffle=False):
        self._history_used_ids = history_sampler.used_ids
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def _set_user_property(self, uid, used_item, positive_item):
        if uid is None:
            return
        super()._set_user_property(uid, self._history_used_ids[uid], positive_item)


def data_preparation(config, dataset):
    """Split ``dataset`` and build train/valid/test dataloaders (see module docstring).

    Before any dataloader: an empty split, or a ``topk`` larger than the item count, is an error
    (see :mod:`recbole_mm.checks`)."""
    from recbole_mm.checks import check_against_dataset, check_splits

    test_mask = config["test_mask"] or "train_valid"
    if test_mask not in TEST_MASKS:
        raise ValueError(f"config key 'test_mask' must be one of {TEST_MASKS}, got {test_mask!r}")
    built = dataset.build()
    check_splits(dataset, built)
    check_against_dataset(config, dataset)
    train_dataset, valid_dataset, test_dataset = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    cold = getattr(dataset, "cold_items", None)
    if cold is not None:  # cold items do not exist before test time: never a negative, never ranked in valid
        from recbole_mm.data.coldstart import ExcludingSampler

        train_sampler, valid_sampler = (s if s is None else ExcludingSampler(s, cold)
                                        for s in (train_sampler, valid_sampler))
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        from recbole.sampler import KGSampler

        kg_sampler = KGSampler(
            dataset, config["train_neg_sample_args"]["distribution"], config["train_neg_sample_args"]["alpha"]
        )
        train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, kg_sampler, shuffle=True)
    else:
        train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    valid_cls = get_dataloader(config, "valid")
    if cold is not None and valid_cls is FullSortEvalDataLoader:
        from recbole_mm.data.coldstart import ColdMaskedFullSortEvalDataLoader

        valid_data = ColdMaskedFullSortEvalDataLoader(config, valid_dataset, valid_sampler, cold)
    else:
        valid_data = valid_cls(config, valid_dataset, valid_sampler, shuffle=False)
    test_cls = get_dataloader(config, "test")
    if test_mask == "train" and test_cls is FullSortEvalDataLoader:
        history = train_sampler or Sampler(["train"], [train_dataset]).set_phase("train")
        test_data = TrainMaskedFullSortEvalDataLoader(config, test_dataset, test_sampler, history)
    else:
        if test_mask == "train":
            getLogger().warning("test_mask: train only applies to full-ranking evaluation; using RecBole's masking")
        test_data = test_cls(config, test_dataset, test_sampler, shuffle=False)
    getLogger().info(set_color("[Split]", "pink") + f": {describe_split(built)}; test_mask = {test_mask}")
    return train_data, valid_data, test_data
