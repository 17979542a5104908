"""MultimodalRecommender: the base class of recbole_mm's models.

Holds the dataset's item features (``dataset.item_features``, aligned to internal item ids) as
non-persistent buffers: they follow ``model.to(device)`` but are not written into checkpoints
(features can be hundreds of MB and are reloaded from the dataset anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender


class MultimodalRecommender(GeneralRecommender):
    #: set to False in a model that can also run without any modality
    requires_modalities = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        features = getattr(dataset, "item_features", {}) or {}
        if self.requires_modalities and not features:
            raise ValueError(
                f"{type(self).__name__} needs item modalities, but dataset '{config['dataset']}' has none: "
                "add `modalities: {name: file.npy}` to its yaml (see README, 'Datasets')"
            )
        self.modalities = list(features)
        for name, feat in features.items():
            self.register_buffer(self._buffer_name(name), feat.float(), persistent=False)

    @staticmethod
    def _buffer_name(name: str) -> str:
        return f"feat_{name}"

    def modality_feature(self, name: str) -> torch.Tensor:
        """``(n_items, d)`` feature matrix of modality ``name`` (row 0 = padding)."""
        return getattr(self, self._buffer_name(name))

    def modality_dims(self) -> dict:
        return {name: self.modality_feature(name).shape[1] for name in self.modalities}

    def concat_features(self, items=None, normalize: bool = False) -> torch.Tensor:
        """All modalities side by side, ``(n_items or len(items), sum d)``.

        With ``normalize`` each modality is L2-normalised first, which keeps one large-scale
        modality (e.g. raw CNN activations) from drowning the others in early fusion. Rows are
        gathered before normalising, so a batch only pays for its own items.
        """
        feats = [self.modality_feature(n) for n in self.modalities]
        if items is not None:
            feats = [f[items] for f in feats]
        if normalize:
            feats = [F.normalize(f, dim=-1) for f in feats]
        return torch.cat(feats, dim=-1)
