"""MultimodalDataset: RecBole's Dataset plus item features aligned to RecBole's internal item ids.

Used for every general model, RecBole's built-ins included, so that all models see the identical
filtered interactions and split. After loading:

* ``dataset.item_features[name]``: float32 tensor ``(n_items, d)``, row = internal item id, row 0
  (padding) zeros;
* ``dataset.item_feature_mask[name]``: bool tensor ``(n_items,)``, True where the item had a real
  row in the file (False for padding and for imputed items).

Config keys (see README): ``modalities``, ``modality_dir``, ``use_modalities``,
``missing_modality``, ``feature_builder``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils import set_color

from recbole_mm.data.features import (
    FeatureError,
    align_to_items,
    fill_missing,
    neighbour_impute,
    parse_modalities,
    read_feature_matrix,
    row_tokens_for,
)


class MultimodalDataset(Dataset):
    def __init__(self, config):
        self.item_features = {}
        self.item_feature_mask = {}
        super().__init__(config)

    # -- loading ---------------------------------------------------------------------------
    def _data_processing(self):
        # Remember every raw item token before filtering/remapping: a feature id file may name
        # items that filtering later drops (fine), but not items the dataset never had (an error).
        raw = [self.inter_feat[self.iid_field].astype(str).unique()]
        if getattr(self, "item_feat", None) is not None and self.iid_field in self.item_feat:
            raw.append(self.item_feat[self.iid_field].astype(str).unique())
        self._raw_item_tokens = pd.unique(np.concatenate(raw))
        self._check_not_empty(len(self.inter_feat))
        super()._data_processing()
        self._load_modalities()
        del self._raw_item_tokens

    def _check_not_empty(self, n_loaded: int) -> None:
        """Header-only interaction files: nothing to train or rank on."""
        if n_loaded:
            return
        files = self.config["benchmark_filename"]
        files = [f"{self.dataset_name}.{f}.inter" for f in files] if files else [f"{self.dataset_name}.inter"]
        raise ValueError(f"dataset '{self.dataset_name}' ({self.dataset_path}): {', '.join(files)}: no "
                         "interactions (only a header), so no users or items")

    # RecBole's filters: the one that removes the last interaction is named (RecBole would only
    # say "Some feat is empty" once all have run)
    def _after_filter(self, n_before: int, *keys) -> None:
        if n_before and len(self.inter_feat) == 0:
            raise ValueError(f"dataset '{self.dataset_name}' ({self.dataset_path}): the filter "
                             + ", ".join(f"{k}={self.config[k]!r}" for k in keys)
                             + f" removed all {n_before} interactions; relax it")

    def _filter_by_field_value(self):
        n = len(self.inter_feat)
        super()._filter_by_field_value()
        self._after_filter(n, "val_interval")

    def _filter_inter_by_user_or_item(self):
        n = len(self.inter_feat)
        super()._filter_inter_by_user_or_item()
        self._after_filter(n, "filter_inter_by_user_or_item")

    def _filter_by_inter_num(self):
        n = len(self.inter_feat)
        super()._filter_by_inter_num()
        self._after_filter(n, "user_inter_num_interval", "item_inter_num_interval")

    def modality_dir(self) -> str:
        configured = self.config["modality_dir"]
        builder = self.config["feature_builder"]
        if builder:
            from recbole_mm.data.embedded import build_features

            return build_features(builder, self.config, self.dataset_path)
        return configured or self.dataset_path

    def _load_modalities(self):
        specs = parse_modalities(self.config["modalities"], self.modality_dir())
        wanted = self.config["use_modalities"]
        if wanted is not None:
            if isinstance(wanted, str):
                wanted = [wanted]
            names = [s.name for s in specs]
            unknown = [w for w in wanted if w not in names]
            if unknown:
                raise FeatureError(
                    f"use_modalities names {unknown}, but dataset '{self.dataset_name}' has modalities {names}"
                )
            specs = [s for s in specs if s.name in wanted]
        for spec in specs:
            self.load_modality(spec, self._raw_item_tokens)

    def load_modality(self, spec, known_tokens=None):
        """Read, validate and align one modality file; add it to ``item_features``.

        Also the way to attach a modality after loading (AlignRec's stage-1 features):
        ``known_tokens`` defaults to the dataset's item tokens.
        """
        if known_tokens is None:
            known_tokens = self.field2id_token[self.iid_field][1:]
        policy = self.config["missing_modality"] or "mean"
        id2token = self.field2id_token[self.iid_field]
        matrix = read_feature_matrix(spec.path, spec.name)
        tokens = row_tokens_for(spec, matrix.shape[0], known_tokens)
        aligned, present = align_to_items(matrix, tokens, id2token, spec)
        aligned = fill_missing(aligned, present, policy, spec, id2token)
        self.item_features[spec.name] = torch.from_numpy(aligned)
        self.item_feature_mask[spec.name] = torch.from_numpy(present)
        coverage = present[1:].mean() if len(present) > 1 else 0.0
        self.logger.info(
            set_color("modality", "blue")
            + f" [{spec.name}]: {matrix.shape[1]}-d from {spec.path}, "
            + f"coverage {coverage:.1%} of {len(present) - 1} items"
        )

    def build(self):
        """RecBole's split; with ``cold_items``, that share of items moved out of train and valid
        (:mod:`recbole_mm.data.coldstart`); then the ``neighbour`` missing-modality policy, which must
        only see training interactions. Split datasets share ``item_features``, so all of them get it."""
        from recbole_mm.data.coldstart import cold_ratio, cold_split, pick_cold_items

        ratio = cold_ratio(self.config)
        self.cold_items = pick_cold_items(self.item_num, ratio, self.config["seed"]) if ratio else None
        built = super().build()  # the parts are copies of self: they share cold_items
        if self.cold_items is not None:
            n_test = len(built[2])
            built = cold_split(built, self.cold_items, self.iid_field)
            self.logger.info(set_color("cold items", "blue") + f": {len(self.cold_items)} of {self.item_num - 1} "
                             f"items (cold_items={ratio}, seed {self.config['seed']}); their "
                             f"{len(built[2]) - n_test} train/valid interactions moved to test")
        if (self.config["missing_modality"] or "mean") == "neighbour" and self.item_features:
            train = built[0].inter_feat
            users = train[self.uid_field].numpy()
            items = train[self.iid_field].numpy()
            for name, feat in self.item_features.items():
                mask = self.item_feature_mask[name].numpy()
                if mask[1:].all():
                    continue
                imputed, n_nb, n_mean = neighbour_impute(feat.numpy(), mask, users, items)
                feat.copy_(torch.from_numpy(imputed))
                self.logger.info(
                    set_color("modality", "blue") + f" [{name}]: {n_nb} missing items imputed from co-interacted "
                    f"training items, {n_mean} without any (cold) from the mean"
                )
        return built

    # -- batches ---------------------------------------------------------------------------
    def __getitem__(self, index, join=True):
        """The interactions at ``index`` (RecBole's contract). Array indices are gathered as one tensor
        per field: RecBole's ``Interaction[...]`` turns an index array into a Python list first, which
        on a light model is a tenth of the training epoch (every batch goes through here)."""
        df = _take(self.inter_feat, index)
        return self.join(df) if join else df

    def join(self, df):
        if self.user_feat is not None and self.uid_field in df:
            df.update(_take(self.user_feat, df[self.uid_field]))
        if self.item_feat is not None and self.iid_field in df:
            df.update(_take(self.item_feat, df[self.iid_field]))
        return df

    def __str__(self):
        info = super().__str__()
        if self.item_features:
            mods = ", ".join(
                f"{name}({feat.shape[1]}-d, {float(self.item_feature_mask[name][1:].float().mean()):.1%} covered)"
                for name, feat in self.item_features.items()
            )
            info += "\n" + set_color("Modalities", "blue") + f": {mods}"
        return info


def _take(inter: Interaction, index) -> Interaction:
    """``inter[index]``, gathering each field with one index tensor when ``index`` is an array."""
    integer = (isinstance(index, np.ndarray) and index.dtype.kind in "iu") or (
        isinstance(index, torch.Tensor) and not index.is_floating_point() and index.dtype != torch.bool)
    if not integer or index.ndim != 1 or not isinstance(inter, Interaction):  # masks, slices, frames: RecBole's
        return inter[index]
    index = torch.as_tensor(index, dtype=torch.long)
    return Interaction({k: v[index.to(v.device)] for k, v in inter.interaction.items()})


def describe_split(datasets) -> str:
    """``'train 44327 / valid 4799 / test 7219 interactions'`` for the three built datasets."""
    names = ("train", "valid", "test")
    return " / ".join(f"{n} {len(d)}" for n, d in zip(names, datasets)) + " interactions"
