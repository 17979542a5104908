"""A model defined outside recbole_mm, as a user would write one (tests of the extension point)."""

import os

from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import lightgcn_propagate, split_users_items
from recbole_mm.model.loss import bpr_l2


class ToyMM(MultimodalRecommender):
    """LightGCN whose item side adds a linear map of the concatenated modalities."""

    input_type = InputType.PAIRWISE
    config_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ToyMM.yaml")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_layers = config["toy_layers"]
        self.reg_weight = config["reg_weight"]
        self.init_id_embeddings(config["embedding_size"])
        self.content = nn.Linear(self.concat_features().shape[1], config["embedding_size"])
        self.adj = self.ui_graph()

    def inference_embeddings(self):
        users, items = split_users_items(lightgcn_propagate(self.adj, self.id_embeddings(), self.n_layers),
                                         self.n_users)
        return users, items + self.content(self.concat_features())

    def calculate_loss(self, interaction):
        users, items = self.inference_embeddings()
        u = users[interaction[self.USER_ID]]
        return bpr_l2(u, items[interaction[self.ITEM_ID]], items[interaction[self.NEG_ITEM_ID]], self.reg_weight)
