"""DRAGON (Zhou, Zhou, Zhang & Shen, ECAI 2023): "Enhancing Dyadic Relations with Homogeneous Graphs
for Multimodal Recommendation".

Dual representations of users and items, from a heterogeneous and two homogeneous graphs:

* Heterogeneous user-item graph, per modality, as DualGNN (whose blocks this class reuses, see
  :mod:`~recbole_mm.model.general_recommender.dualgnn`): ``x_m = normalize([P_m; MLP_m(f_m)])``,
  ``h_m = sum_{l=0..L} Â^l x_m``.
* Attentive concatenation (the paper's fusion, ``construction: cat``): items ``i = [h_1[i]; ...; h_M[i]]``,
  users ``u = [a_u1 h_1[u]; ...; a_uM h_M[u]]`` with learned per-user modality weights ``a_u``; MMRec's
  ``weighted_sum`` / ``weighted_max`` (with its first-modality alias, ``mmrec_fusion_alias``) are options.
* Homogeneous item-item graph: each modality's top-``knn_k`` cosine KNN graph of the raw features,
  binary, symmetric-normalised, mixed with ``modality_weights`` and frozen (FREEDOM's);
  ``i <- i + S^{n_mm_layers} i``.
* Homogeneous user-user graph: the top-``user_knn_k`` co-occurrence graph of the training split, softmax
  weights over the counts, padded by repeats redrawn every epoch as the official code (built by us, no
  ``user_graph_dict.npy``); ``u <- u + sum_v w_uv v``.
* Loss: BPR with a base-2 log, ``-mean log2 sigmoid(s_pos - s_neg)``, plus ``reg_weight (sum_m
  mean(P_m[u]^2) + mean(a^2))``, as the official code.

Followed from MMRec (``src/models/dragon.py``): the GCN input is the raw features (the trainable feature
tables it creates serve only to build the KNN graphs); ``n_ui_layers = 2`` is its two convolutions; each
item is in its own KNN list (top-k of the full similarity). Differences: MMRec's ``mm_adj_{knn_k}.pt``
cache ignores ``mm_image_weight`` (ours is keyed by the features and options); evaluation uses
embeddings recomputed after the last step, not those of the last training batch; with one modality MMRec
uses ``h`` unweighted, we keep the (softmax-initialised, i.e. 1) learned weight.
"""

from __future__ import annotations

from recbole_mm.model.general_recommender.dualgnn import DualGNN
from recbole_mm.model.layers import propagate


class DRAGON(DualGNN):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_mm_layers = config["n_mm_layers"]
        self.mm_graph = self.mixed_knn_graph(config["knn_k"], config["modality_weights"])

    def forward(self):
        users, items = self.fuse(self.modality_representations())
        items = items + propagate(self.mm_graph, items, self.n_mm_layers)
        return users + self.user_adj @ users, items
