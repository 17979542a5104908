"""LATTICE (Zhang et al., ACM MM 2021): "Mining Latent Structures for Multimedia Recommendation".

* Per modality m, an initial KNN graph of the raw features ``S~_m`` (cosine weights, top-k,
  sym-normalised; Eq. 1-3) and a learned one ``Â_m`` from the projected features (Eq. 4-5),
  rebuilt once per epoch; the learned graph keeps its gradient for the batch that builds it.
* Graphs mixed over modalities with softmax weights ``alpha`` (Eq. 6) and with the initial
  graph by ``lambda_coeff``: ``A = (1-λ) norm(sum_m α_m Â_m) + λ sum_m α_m S~_m`` (Eq. 7).
* Item ID embeddings propagate over A (``n_layers``); the L2-normalised result is added to the
  items of a LightGCN over ``D^{-1}(A_ui + I)`` (the official code's collaborative backbone).

Scalable: neighbours are found block-wise (no n x n matrix) and the graph is an edge list, so
memory is O(n k) instead of MMRec's dense n x n similarity rebuilt every epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, SparseOperator, edge_propagate, lightgcn_propagate, propagate
from recbole_mm.model.layers import split_users_items
from recbole_mm.model.loss import bpr_l2


class LATTICE(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size, self.reg_weight = config["embedding_size"], config["reg_weight"]
        self.knn_k, self.lambda_coeff = config["knn_k"], config["lambda_coeff"]  # the item graph (Eq. 1-7)
        self.n_layers, self.n_ui_layers = config["n_layers"], config["n_ui_layers"]  # item-item, user-item depth

        self.init_id_embeddings(self.embedding_size)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), config["feat_embed_dim"])
        self.modal_logits = nn.Parameter(torch.zeros(len(self.modalities)))  # alpha = softmax

        # initial graphs S~_m: fixed, one per modality (cached on disk), kept as one edge list of
        # modality blocks (sizes in _initial_sizes) whose values alpha_m scales when A is built
        initial = [g.edges() for g in self.modality_knn_graphs(self.knn_k, weighted=True).values()]
        self._initial_sizes = [len(e[0]) for e in initial]
        for j, part in enumerate(("init_rows", "init_cols", "init_vals")):
            self.register_buffer(part, torch.cat([e[j] for e in initial]), persistent=False)
        self.adj = self.ui_graph(normalization="rw", self_loops=True)
        self._item_graph = None  # A as a fixed operator, rebuilt each epoch
        self._rebuild = True

    def pre_epoch_processing(self):
        self._rebuild = True

    def build_item_graph(self):
        """Edge list of ``A`` (Eq. 7), differentiable w.r.t. projections and modality weights."""
        alpha = torch.softmax(self.modal_logits, dim=0)
        projected = self.projector({m: self.features[m].weight for m in self.modalities})
        rows, cols, vals = [], [], []
        for j, m in enumerate(self.modalities):
            # differentiable Eq. 4 on the kept edges; real items only (row 0 is padding)
            r, c, sims = graphs.learned_knn_edges(projected[m][1:], self.knn_k)
            rows.append(r + 1), cols.append(c + 1), vals.append(alpha[j] * sims)
        rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
        learned = graphs.normalize_edges(rows, cols, vals, self.n_items, mode="sym")
        init_vals = torch.cat([alpha[j] * v for j, v in enumerate(self.init_vals.split(self._initial_sizes))])
        return (
            torch.cat([rows, self.init_rows]),
            torch.cat([cols, self.init_cols]),
            torch.cat([(1 - self.lambda_coeff) * learned, self.lambda_coeff * init_vals]),
        )

    def _graph(self):
        """The epoch's first batch gets A as differentiable edges (gradient to the projections and
        alpha, as in the official code); later batches reuse it as a fixed CSR operator."""
        if self._rebuild or self._item_graph is None:
            self._rebuild = False
            rows, cols, vals = self.build_item_graph()
            coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.detach(), (self.n_items, self.n_items))
            self._item_graph = SparseOperator(coo)
            return rows, cols, vals
        return self._item_graph

    def forward(self):
        graph = self._graph()
        if isinstance(graph, SparseOperator):
            h = propagate(graph, self.item_embedding.weight, self.n_layers)
        else:
            h = edge_propagate(*graph, self.item_embedding.weight, self.n_layers)
        users, items = split_users_items(lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers),
                                         self.n_users)
        return users, items + F.normalize(h, dim=1)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward()
        return bpr_l2(users[user], items[pos], items[neg], self.reg_weight)

    def inference_embeddings(self):
        with torch.no_grad():
            self._rebuild = True  # score with the graph of the current projections (as trained)
            return self.forward()
