"""MultimodalRecommender: the base class of recbole_mm's models.

Holds the dataset's item features (``dataset.item_features``, aligned to internal item ids) as
non-persistent buffers: they follow ``model.to(device)`` but are not written into checkpoints
(features can be hundreds of MB and are reloaded from the dataset anyway). Also gives models the
training graph (edges, normalised adjacency) and cached per-modality KNN graphs.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from recbole.model.abstract_recommender import GeneralRecommender

from recbole_mm.data import graphs
from recbole_mm.model.layers import SparseOperator


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
        masks = getattr(dataset, "item_feature_mask", {}) or {}
        for name, feat in features.items():
            self.register_buffer(self._buffer_name(name), feat.float(), persistent=False)
            mask = masks.get(name, torch.ones(feat.shape[0], dtype=torch.bool))
            self.register_buffer(f"mask_{name}", mask.bool(), persistent=False)
        self._config = config
        self.train_users, self.train_items = graphs.interaction_edges(dataset)
        self._eval_cache = None

    # -- evaluation cache ---------------------------------------------------------------------
    def train(self, mode: bool = True):
        self._eval_cache = None  # parameters may change: forget cached embeddings
        return super().train(mode)

    def eval_cached(self, compute):
        """``compute()`` once per evaluation: full-ranking batches reuse the propagated embeddings."""
        if self.training:
            return compute()
        if self._eval_cache is None:
            self._eval_cache = compute()
        return self._eval_cache

    def load_hparams(self, config, *keys) -> None:
        """``self.<key> = config[key]`` for each key (the model's yaml names are its attribute names)."""
        for key in keys:
            setattr(self, key, config[key])

    # -- ID embeddings and scoring ----------------------------------------------------------------
    def init_id_embeddings(self, dim: int) -> None:
        """``user_embedding`` / ``item_embedding`` tables, Xavier-uniform initialised."""
        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_embedding = nn.Embedding(self.n_items, dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def inference_embeddings(self):
        """``(user, item)`` representations whose dot product is the score (full graphs, no noise)."""
        raise NotImplementedError

    def predict(self, interaction):
        users, items = self.eval_cached(self.inference_embeddings)
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(1)

    def full_sort_predict(self, interaction):
        users, items = self.eval_cached(self.inference_embeddings)
        return (users[interaction[self.USER_ID]] @ items.T).view(-1)

    # -- features -----------------------------------------------------------------------------
    @staticmethod
    def _buffer_name(name: str) -> str:
        return f"feat_{name}"

    def modality_feature(self, name: str) -> torch.Tensor:
        """``(n_items, d)`` feature matrix of modality ``name`` (row 0 = padding)."""
        return getattr(self, self._buffer_name(name))

    def modality_mask(self, name: str) -> torch.Tensor:
        """``(n_items,)`` bool: True where the item had a real row for ``name`` (False: imputed or padding)."""
        return getattr(self, f"mask_{name}")

    def modality_dims(self) -> dict:
        return {name: self.modality_feature(name).shape[1] for name in self.modalities}

    def concat_features(self, normalize: bool = False, weights: dict | None = None) -> torch.Tensor:
        """All modalities side by side, ``(n_items, sum d)``; each L2-normalised first if asked.

        Normalising per modality keeps one large-scale modality (e.g. raw CNN activations) from
        drowning the others in early fusion. With ``weights`` (``{modality: w}``, see
        :meth:`modality_weights`) the normalised blocks are scaled by ``sqrt(w_m)``, so that the
        dot product of two rows is ``sum_m w_m cos_m`` -- the weighted mix of per-modality cosines
        that FREEDOM/USERec give their item graphs -- and the rows stay unit-length.
        """
        feats = [self.modality_feature(n) for n in self.modalities]
        if normalize:
            feats = [F.normalize(f, dim=1) for f in feats]
        if weights is not None:
            feats = [f * weights[n] ** 0.5 for f, n in zip(feats, self.modalities)]
        return torch.cat(feats, dim=1)

    def feature_tables(self, trainable: bool) -> nn.ModuleDict:
        """One ``nn.Embedding`` per modality initialised with its features.

        ``trainable=True`` fine-tunes the raw features with the model, as the official
        FREEDOM/LATTICE/BM3/MGCN code does; ``False`` keeps them fixed.
        """
        return nn.ModuleDict({
            name: nn.Embedding.from_pretrained(self.modality_feature(name).clone(), freeze=not trainable)
            for name in self.modalities
        })

    def project_rows(self, projector, tables: nn.ModuleDict, items: torch.Tensor) -> dict:
        """``{modality: projector(features)[items]}`` computed the cheaper way.

        Only the batch's items enter such loss terms, so projecting just their rows gives the same
        values and gradients as projecting the whole catalogue and indexing; which costs less
        depends on whether the batch or the catalogue is larger.
        """
        if len(items) < self.n_items:
            return projector({m: tables[m](items) for m in tables})
        full = projector({m: tables[m].weight for m in tables})
        return {m: f[items] for m, f in full.items()}

    # -- graphs -------------------------------------------------------------------------------
    def norm_adj(self) -> torch.Tensor:
        """Symmetric-normalised user-item adjacency of the training interactions."""
        return graphs.bipartite_norm_adj(self.train_users, self.train_items, self.n_users, self.n_items)

    def graph_cache_dir(self):
        if not self._config["graph_cache"]:
            return None
        if self._config["graph_cache_dir"]:
            return self._config["graph_cache_dir"]
        from recbole_mm.data.embedded import cache_root

        return os.path.join(cache_root(self._config), "graphs")

    def knn_graph(self, features: torch.Tensor, k: int, normalization: str = "sym", weighted: bool = False):
        """Cached item-item KNN graph of ``features`` over real items (the padding row 0 is left out)."""
        features = features.detach().float().cpu()

        def build():
            return graphs.item_knn_graph(features, k, normalization=normalization, weighted=weighted,
                                         backend=self._config["knn_backend"] or "torch")

        key = graphs.graph_cache_key([features], k=k, normalization=normalization, weighted=weighted, v=1)
        return graphs.cached_graph(self.graph_cache_dir(), "knn", key, build).to(self.device)

    def mixed_knn_graph(self, k: int, configured_weights):
        """``sum_m w_m S_m`` of the modalities' binary KNN graphs (FREEDOM Eq. 3-4; USERec), as an operator."""
        weights = self.modality_weights(configured_weights)
        mixed = graphs.weighted_sum([self.knn_graph(self.modality_feature(m), k) for m in self.modalities],
                                    [weights[m] for m in self.modalities])
        return SparseOperator(mixed).to(self.device)

    def pruned_adj(self, keep_ratio: float):
        """A fresh degree-sensitively pruned, re-normalised user-item graph (FREEDOM; USERec)."""
        users, items = graphs.degree_sensitive_prune(self.train_users, self.train_items, self.n_users,
                                                     self.n_items, keep_ratio)
        pruned = graphs.bipartite_norm_adj(users, items, self.n_users, self.n_items)
        return SparseOperator(pruned, symmetric=True).to(self.device)

    def modality_weights(self, configured) -> dict:
        """Per-modality weights from a ``{name: w}`` config (missing names share the rest equally)."""
        configured = dict(configured or {})
        unknown = [n for n in configured if n not in self.modalities]
        if unknown:
            raise ValueError(f"modality weights name {unknown}, but the run's modalities are {self.modalities}")
        rest = [n for n in self.modalities if n not in configured]
        left = max(1.0 - sum(configured.values()), 0.0)
        weights = {n: float(configured[n]) if n in configured else left / len(rest) for n in self.modalities}
        total = sum(weights.values())
        return {n: w / total for n, w in weights.items()}
