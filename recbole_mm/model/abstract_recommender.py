"""MultimodalRecommender: the contract every recbole_mm model follows.

A model is one subclass in ``recbole_mm/model/general_recommender/`` (found by the registry) plus
``properties/model/<Model>.yaml``. What the base class gives it:

* the dataset's item features (``dataset.item_features``, aligned to internal item ids) as
  non-persistent buffers: they follow ``model.to(device)`` but stay out of checkpoints (features
  can be hundreds of MB and are reloaded from the dataset anyway);
* graph operators (:class:`~recbole_mm.model.layers.SparseOperator` modules, which follow
  ``.to()`` too): the user-item adjacency, the interaction matrix, cached item-item KNN graphs,
  their modality mix, degree-sensitive pruning, co-interaction graphs, user-user co-occurrence
  graphs (built from the training split, cached; no ``user_graph_dict.npy`` to prepare);
* scoring from :meth:`inference_embeddings` with an evaluation cache;
* declared hooks with no-op defaults, which the pipeline and the trainer call on every model:
  :meth:`required_features` (derived features the pipeline must produce first, e.g. AlignRec's
  stage 1) and :meth:`pre_epoch_processing` (per-epoch graph resampling).

A model never reads or writes files and never imports the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from torch import nn
from torch.utils.checkpoint import checkpoint

from recbole_mm.cache import graph_cache_dir
from recbole_mm.data import graphs
from recbole_mm.model.layers import SparseOperator, split_users_items
from recbole_mm.model.loss import bpr_l2, info_nce, joint_bpr


FEATURE_NORMS = ("l2", "standard")


def normalise_features(feat: torch.Tensor, mode: str | None) -> torch.Tensor:
    """The ``feature_norm`` preprocessing of one modality's ``(n_items, d)`` matrix (row 0 = padding).

    ``None``: as stored. ``l2``: each item's row scaled to unit length. ``standard``: each dimension
    centred and scaled to unit variance over the real items. Raw activations such as VGGish's
    0-255 codes (row norms ~1,500 against ~1 for sentence embeddings) otherwise saturate a
    ``tanh`` encoder and let one modality outweigh the ID embedding in additive fusion.
    """
    if mode is None:
        return feat
    if mode not in FEATURE_NORMS:
        raise ValueError(f"feature_norm must be one of {FEATURE_NORMS} or ~, got {mode!r}")
    if mode == "l2":
        return F.normalize(feat, dim=1)
    real = feat[1:]
    out = feat.clone()
    out[1:] = (real - real.mean(0)) / real.std(0, unbiased=False).clamp_min(1e-12)
    return out


@dataclass(frozen=True)
class FeatureRequest:
    """A derived item feature a model needs before it is built, produced by the pipeline.

    ``name``: the modality it is attached as; ``producer``: which stage-1 producer makes it
    (``recbole_mm.pretrain.PRODUCERS``); ``file``: an explicit file (``None``: the pipeline picks a
    path keyed by what made it); ``exclude``: modalities the producer must not read; ``run``:
    produce it when missing (``False``: use an existing file, else go without).
    """

    name: str
    producer: str
    file: str | None = None
    run: bool = True
    overwrite: bool = False
    exclude: tuple = field(default_factory=tuple)


def _redraw_user_graph_after_load(module, incompatible_keys):
    module.redraw_user_graph(fresh=False)  # the loaded seed's draw


class MultimodalRecommender(GeneralRecommender):
    """Base class of recbole_mm's models (a RecBole ``GeneralRecommender``)."""

    #: ``False`` for the collaborative baselines MMRec ships beside the multimodal models (LayerGCN,
    #: SelfCF): they use no item feature, so they also run on ID-only data.
    uses_modalities = True
    #: ``True`` where an item's representation comes from its content, so that items without a training
    #: interaction still get meaningful scores (``cold_items`` reports their metrics); ID-only: ``False``.
    scores_cold_items = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        features = getattr(dataset, "item_features", {}) or {}
        if not self.uses_modalities:
            features = {}  # kept out of the model: no buffers, no graphs built from them
        elif not features:
            raise ValueError(
                f"{type(self).__name__} needs item modalities, but dataset '{config['dataset']}' has none: "
                "add `modalities: {name: file.npy}` to its yaml (see README, 'Data preparation')"
            )
        # where the model's tensors are now (RecBole's ``device`` attribute is fixed at build time)
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)
        self.modalities = list(features)
        norm = config["feature_norm"] if "feature_norm" in config else None
        for name, feat in features.items():
            self.register_buffer(self._buffer_name(name), normalise_features(feat.float(), norm), persistent=False)
        self.knn_backend = config["knn_backend"] or "torch"
        self.graph_cache_dir = graph_cache_dir(config)
        # training interactions stay on CPU: graphs are built (and pruning sampled) there, so the
        # same seed gives the same graphs on every device
        self.train_users, self.train_items = graphs.interaction_edges(dataset)
        self._eval_cache = None
        self._user_counts = {}  # k -> top-k co-occurrence counts (CPU COO), for per-epoch resampling
        self.checkpoint_branches = bool(config["checkpoint_branches"]) if "checkpoint_branches" in config else False

    @property
    def device(self) -> torch.device:
        """The device of the model's tensors (follows ``.to()``)."""
        probe = self._buffers.get("_device_probe")
        return probe.device if probe is not None else torch.device("cpu")

    @device.setter
    def device(self, value):  # RecBole's constructor assigns config["device"]; the tensors decide
        pass

    # -- hooks the pipeline and the trainer call ------------------------------------------------
    @classmethod
    def required_features(cls, config) -> list:
        """:class:`FeatureRequest` s the pipeline must satisfy before building the model (none)."""
        return []

    def pre_epoch_processing(self) -> None:
        """Called by the trainer before every training epoch (e.g. to resample a pruned graph)."""

    def branch(self, module: nn.Module, *args):
        """``module(*args)`` for one full-graph branch of the forward pass (a modality's GCN, an
        expert). With ``checkpoint_branches: True`` its activations are not kept for the backward
        pass but recomputed there (``torch.utils.checkpoint``, RNG state replayed, so dropout masks
        and every number are the same): peak memory falls to about one branch's activations, for
        roughly one more forward pass per batch."""
        if self.checkpoint_branches and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

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

    # -- ID embeddings and scoring ----------------------------------------------------------------
    def init_id_embeddings(self, dim: int) -> None:
        """``user_embedding`` / ``item_embedding`` tables, Xavier-uniform initialised."""
        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_embedding = nn.Embedding(self.n_items, dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def id_embeddings(self) -> torch.Tensor:
        """``(n_users + n_items, d)``: the user rows then the item rows (LightGCN's ``E^0``)."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

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

    def fuse_modalities_early(self, weights: dict | None = None, name: str = "early") -> None:
        """Early fusion: replace the run's modalities by one, ``name``, holding
        :meth:`concat_features` ``(normalize=True, weights)`` -- each modality L2-normalised (and
        scaled by ``sqrt(w_m)``), then concatenated. Call it first in ``__init__``: everything
        built afterwards (feature tables, projections, KNN graphs) sees one modality, so a late-fusion
        model becomes its early-fusion variant (``fusion_stage: early``)."""
        fused = self.concat_features(normalize=True, weights=weights)
        for m in self.modalities:
            delattr(self, self._buffer_name(m))
        self.modalities = [name]
        self.register_buffer(self._buffer_name(name), fused, persistent=False)

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

    # -- graph operators (each a SparseOperator on the model's device) ---------------------------
    def _operator(self, coo: torch.Tensor, symmetric: bool = False) -> SparseOperator:
        return SparseOperator(coo, symmetric=symmetric).to(self.device)

    def ui_graph(self, normalization: str = "sym", self_loops: bool = False) -> SparseOperator:
        """Normalised user-item adjacency ``[[0, R], [R^T, 0]]`` (+ I) of the training interactions."""
        adj = graphs.bipartite_norm_adj(self.train_users, self.train_items, self.n_users, self.n_items,
                                        normalization=normalization, self_loops=self_loops)
        return self._operator(adj, symmetric=normalization == "sym")

    def interaction_matrix(self, normalization: str = "sym") -> SparseOperator:
        """``R`` (users x items): ``sym`` ``D_u^-1/2 R D_i^-1/2``, ``rw`` mean over a user's items, ``none`` binary."""
        return self._operator(graphs.user_item_matrix(self.train_users, self.train_items, self.n_users,
                                                      self.n_items, normalization=normalization))

    def _knn_coo(self, features: torch.Tensor, k: int, normalization: str, weighted: bool) -> torch.Tensor:
        features = features.detach().float().cpu()

        def build():
            return graphs.item_knn_graph(features, k, normalization=normalization, weighted=weighted,
                                         backend=self.knn_backend)

        key = graphs.graph_cache_key([features], k=k, normalization=normalization, weighted=weighted, v=1)
        return graphs.cached_graph(self.graph_cache_dir, "knn", key, build)

    def knn_graph(self, features: torch.Tensor, k: int, normalization: str = "sym",
                  weighted: bool = False) -> SparseOperator:
        """Cached item-item KNN graph of ``features`` over real items (the padding row 0 is left out)."""
        return self._operator(self._knn_coo(features, k, normalization, weighted))

    def modality_knn_graphs(self, k: int, normalization: str = "sym", weighted: bool = False) -> nn.ModuleDict:
        """One KNN graph per modality of its raw features (MGCN, LATTICE's initial graphs)."""
        return nn.ModuleDict({m: self.knn_graph(self.modality_feature(m), k, normalization, weighted)
                              for m in self.modalities})

    def mixed_knn_graph(self, k: int, configured_weights) -> SparseOperator:
        """``sum_m w_m S_m`` of the modalities' binary KNN graphs (FREEDOM Eq. 3-4; USERec)."""
        weights = self.modality_weights(configured_weights)
        mixed = graphs.weighted_sum([self._knn_coo(self.modality_feature(m), k, "sym", False) for m in self.modalities],
                                    [weights[m] for m in self.modalities])
        return self._operator(mixed)

    def pruned_ui_graph(self, keep_ratio: float) -> SparseOperator:
        """A fresh degree-sensitively pruned, re-normalised user-item graph (FREEDOM; USERec)."""
        users, items = graphs.degree_sensitive_prune(self.train_users, self.train_items, self.n_users,
                                                     self.n_items, keep_ratio)
        pruned = graphs.bipartite_norm_adj(users, items, self.n_users, self.n_items)
        return self._operator(pruned, symmetric=True)

    def co_interaction_graph(self, k: int) -> SparseOperator:
        """Top-``k`` co-interaction (``R^T R``) item-item graph of the training data (USERec)."""
        return self._operator(graphs.co_interaction_graph(self.train_users.numpy(), self.train_items.numpy(),
                                                          self.n_users, self.n_items, k))

    def _user_counts_coo(self, k: int) -> torch.Tensor:
        """Top-``k`` user co-occurrence counts of the training split (CPU COO), cached on disk."""
        if k not in self._user_counts:
            users, items = self.train_users, self.train_items

            def build():
                return graphs.user_cooccurrence_graph(users.numpy(), items.numpy(), self.n_users, self.n_items, k)

            key = graphs.graph_cache_key([users, items], k=k, n_users=self.n_users, n_items=self.n_items, v=1)
            self._user_counts[k] = graphs.cached_graph(self.graph_cache_dir, "usercooc", key, build)
        return self._user_counts[k]

    def user_graph(self, k: int, normalization: str = "softmax") -> SparseOperator:
        """Top-``k`` user co-occurrence graph (``R R^T`` of the training split, DualGNN; DRAGON):
        ``softmax`` over each user's neighbour counts, ``mean``, ``sym``, ``rw`` or ``none`` (counts)."""
        return self._operator(graphs.normalize_user_graph(self._user_counts_coo(k), normalization))

    def register_epoch_user_graph(self, k: int, aggregation: str = "softmax") -> None:
        """Declare a user graph redrawn each epoch (:meth:`redraw_user_graph`, from
        :meth:`pre_epoch_processing`) as ``self.user_adj``: the official DualGNN/DRAGON/COHESION
        per-epoch padding of :meth:`sampled_user_graph`. The seed of the current draw is a persistent
        buffer, so a checkpoint brings back the graph its epoch was validated with (redrawn after
        ``load_state_dict``)."""
        self._epoch_user_graph = (k, aggregation)
        self.register_buffer("user_graph_seed", torch.zeros((), dtype=torch.long))
        self.register_load_state_dict_post_hook(_redraw_user_graph_after_load)

    def redraw_user_graph(self, fresh: bool = True) -> None:
        """A new draw of the declared epoch user graph (``fresh``: a new seed from the global RNG, so
        seeded runs repeat; otherwise the stored seed's draw again)."""
        if fresh:
            self.user_graph_seed.fill_(int(torch.randint(0, 2**62, ())))
        generator = torch.Generator().manual_seed(int(self.user_graph_seed))
        self.user_adj = self.sampled_user_graph(*self._epoch_user_graph, generator=generator)

    def sampled_user_graph(self, k: int, aggregation: str = "softmax", generator=None) -> SparseOperator:
        """A fresh draw of the official DualGNN/DRAGON per-epoch user graph: users with fewer than ``k``
        co-occurring users have their list padded to ``k`` by repeats (:func:`graphs.padded_user_graph`)."""
        return self._operator(graphs.padded_user_graph(self._user_counts_coo(k), k, aggregation, generator=generator))


class JointTableRecommender(MultimodalRecommender):
    """A model whose :meth:`forward` returns one ``(n_users + n_items, d)`` table (users first),
    trained with BPR on it plus ``reg_weight`` x :meth:`regularizer` (MMGCN, GRCN)."""

    def regularizer(self, user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        return joint_bpr(self.forward(), user, pos, neg, self.n_users) + self.reg_weight * self.regularizer(user, pos, neg)

    def inference_embeddings(self):
        with torch.no_grad():
            table = self.forward()
        return table[: self.n_users], table[self.n_users:]


class SideViewRecommender(MultimodalRecommender):
    """A model whose :meth:`forward` returns ``(content + side, side, content)`` tables (users first):
    a collaborative ``content`` view (LightGCN on IDs) and a modality ``side`` view (MGCN, SMORE).
    Trained with BPR + ``reg_weight`` L2 on the final rows plus ``cl_weight`` x InfoNCE
    (``cl_temperature``) between the two views of the batch's positive items and of its users."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_layers = config["n_ui_layers"], config["n_layers"]  # user-item, item-item depth
        self.reg_weight, self.cl_weight = config["reg_weight"], config["cl_weight"]  # loss weights
        self.cl_temperature = config["cl_temperature"]

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, side, content = self.forward()
        users, items = split_users_items(final, self.n_users)
        loss = bpr_l2(users[user], items[pos], items[neg], self.reg_weight)
        side_u, side_i = split_users_items(side, self.n_users)
        cont_u, cont_i = split_users_items(content, self.n_users)
        cl = info_nce(side_i[pos], cont_i[pos], self.cl_temperature) + \
            info_nce(side_u[user], cont_u[user], self.cl_temperature)
        return loss + self.cl_weight * cl

    def inference_embeddings(self):
        return split_users_items(self.forward()[0], self.n_users)
