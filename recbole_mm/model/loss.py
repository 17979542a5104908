"""Losses shared by recbole_mm models (BPR itself is RecBole's ``BPRLoss``)."""

from __future__ import annotations

import torch


def l2_reg(*embeddings: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of batch embeddings, averaged over the batch: ``sum_k ||E_k||^2 / (2 B)``.

    The usual ``lambda * ||Theta||^2`` term of BPR-style objectives (VBPR, LightGCN, FREEDOM ...)
    applied to the rows a batch touches; ``B`` is the first dimension of the last tensor.
    """
    batch = embeddings[-1].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / (2.0 * batch)
