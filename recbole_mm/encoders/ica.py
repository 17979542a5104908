"""Inter-content alignment (ICA) pre-training: AlignRec's stage 1 (Liu et al., CIKM 2024, Sec. 3.2).

A cross-modal transformer fuses an item's modalities into one vector ``h_enc``. The paper trains a
BEiT-3 style encoder with masked image + masked language modelling on raw pixels and tokens; with
pre-extracted feature vectors we use the feature-regression analogue:

* every modality's feature vector (L2-normalised once) is cut into ``tokens_per_modality`` chunks, each
  chunk embedded on its own (so a masked chunk leaks nowhere) plus modality and position embeddings;
* for each item one modality is picked and a fraction ``mask_ratio`` of its chunks is replaced by a
  learned mask token; the transformer sees the rest of that modality and all other modalities and
  must regress the masked chunks (``L_ICA``: MSE on masked chunks — the L_MIM + L_MLM analogue);
* ``h_enc`` = mean over the output tokens, projected to ``output_dim``, plus a linear path from the
  concatenated inputs; it is the bottleneck of
  the fused encoding, so it is trained too: from the masked pass, ``h_enc`` must reconstruct every
  modality's whole vector (``L_rec``, MSE; a masked-autoencoder bottleneck). Without it ``h_enc``
  would be an untrained projection of the token states.

Inputs are L2-normalised per modality and centred (the item mean subtracted): raw sentence/audio
embeddings share a large common direction that dominates their cosines. The fused output is
centred too. Missing modality rows (``item_feature_mask`` False) are never used as targets.

Pretrained initialisation (``backbone``): the fusion stack can be the first ``n_layers`` transformer
layers of a local transformers model — a vision-language model's text or vision tower (CLIP,
SigLIP), a language model (BERT, MiniLM) or a vision transformer — instead of randomly initialised
layers; the width is then the backbone's. The layers run without an attention mask (every token
sees every other, also for CLIP's causal text tower) and are fine-tuned by ``L_ICA``; the token
inputs stay the feature chunks above (the paper's encoder reads raw pixels and word pieces).
"""

from __future__ import annotations

import math
import os
from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class PretrainedLayers(nn.Module):
    """Transformer layers taken from a pretrained model, applied in turn to ``(B, L, hidden)``."""

    def __init__(self, layers: nn.ModuleList):
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            out = layer(x, None)  # attention_mask=None: bidirectional over all tokens
            x = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns tuples
        return x


def _layer_width(layer: nn.Module) -> int:
    """Hidden size of a transformer layer: the size of its (last) LayerNorm / RMSNorm."""
    norms = [m.normalized_shape[0] if isinstance(m, nn.LayerNorm) else m.weight.shape[0]
             for m in layer.modules()
             if isinstance(m, nn.LayerNorm) or ("Norm" in type(m).__name__ and getattr(m, "weight", None) is not None
                                                and m.weight.dim() == 1)]
    if not norms:
        raise ValueError(f"ica_backbone: cannot tell the width of {type(layer).__name__}: it has no norm layer")
    return int(norms[-1])


def load_backbone_layers(name_or_path: str, n_layers: int, tower: str = None):
    """The first ``n_layers`` transformer layers of a local transformers model, and their width.

    ``name_or_path``: a model directory, a model an installed package carries (``all-MiniLM-L6-v2``),
    or a hub name (its cache only, with ``HF_HUB_OFFLINE=1``). The layers are the model's
    ``ModuleList`` named ``layer``/``layers``; for a model with several (a vision-language model's
    text and vision towers) ``tower`` picks the one under ``<tower>_model`` (default ``text``).
    """
    from transformers import AutoModel

    from recbole_mm.encoders.text import resolve_text_model

    resolved = resolve_text_model(name_or_path)
    try:
        model = AutoModel.from_pretrained(resolved, local_files_only=os.path.isdir(resolved))
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError by cause
        raise ValueError(f"ica_backbone: cannot load a transformers model from '{name_or_path}' "
                         f"(resolved to '{resolved}'): {exc}") from exc
    stacks = {name: mod for name, mod in model.named_modules()
              if isinstance(mod, nn.ModuleList) and len(mod) and name.rsplit(".", 1)[-1] in ("layer", "layers")}
    if len(stacks) > 1 or tower:
        prefix = f"{tower or 'text'}_model."
        picked = {name: mod for name, mod in stacks.items() if name.startswith(prefix)}
        if len(picked) != 1:
            raise ValueError(f"ica_backbone_tower: '{tower or 'text'}' names no single layer stack of "
                             f"{type(model).__name__} ('{name_or_path}'); its stacks: {sorted(stacks)}")
        stacks = picked
    if not stacks:
        raise ValueError(f"ica_backbone: {type(model).__name__} ('{name_or_path}') has no transformer layer "
                         "stack (a ModuleList named 'layer' or 'layers')")
    layers = next(iter(stacks.values()))
    if n_layers > len(layers):
        raise ValueError(f"ica_layers: {n_layers} layers asked for, but the backbone '{name_or_path}' has "
                         f"{len(layers)}")
    layers = nn.ModuleList(list(layers)[:n_layers])
    width = _layer_width(layers[0])
    try:  # fail here, naming the model, rather than in the first training step
        with torch.no_grad():
            PretrainedLayers(layers).eval()(torch.zeros(1, 2, width))
    except Exception as exc:
        raise ValueError(f"ica_backbone: the {type(layers[0]).__name__} layers of '{name_or_path}' cannot run on "
                         f"a token sequence alone ({type(exc).__name__}: {exc}); decoder layers that need rotary "
                         "position embeddings (Llama, Qwen) cannot; use an encoder such as BERT/MiniLM, ViT or a "
                         "CLIP/SigLIP tower") from exc
    return layers, width


class ICAEncoder(nn.Module):
    def __init__(self, dims: dict, hidden: int = 64, tokens_per_modality: int = 8, n_layers: int = 2,
                 n_heads: int = 4, output_dim: int = 64, dropout: float = 0.1,
                 backbone_layers: nn.ModuleList = None):
        super().__init__()
        if backbone_layers is not None:
            hidden = _layer_width(backbone_layers[0])  # the pretrained layers set the width
        self.names = list(dims)
        self.T = tokens_per_modality
        self.chunk = {m: math.ceil(d / tokens_per_modality) for m, d in dims.items()}
        self.embed = nn.ModuleDict({m: nn.Linear(self.chunk[m], hidden) for m in self.names})
        self.decode = nn.ModuleDict({m: nn.Linear(hidden, self.chunk[m]) for m in self.names})
        self.modality_emb = nn.Parameter(torch.randn(len(self.names), 1, hidden) * 0.02)
        self.position_emb = nn.Parameter(torch.randn(1, tokens_per_modality, hidden) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(hidden))
        if backbone_layers is not None:
            self.transformer = PretrainedLayers(backbone_layers)
        else:
            layer = nn.TransformerEncoderLayer(hidden, n_heads, dim_feedforward=2 * hidden, dropout=dropout,
                                               batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, output_dim)
        self.reconstruct = nn.ModuleDict({m: nn.Linear(output_dim, d) for m, d in dims.items()})
        # linear path from the (unmasked) concatenated inputs into the bottleneck: with L_rec it
        # converges to the principal subspace, the transformer adds the cross-modal part on top
        self.skip = nn.Linear(sum(dims.values()), output_dim, bias=False)

    def chunks(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` -> ``(B, T, chunk)`` (zero-padded), the regression targets.

        Inputs are L2-normalised once, before training (:func:`pretrain_ica`), not here: a per-call
        norm would let a masked chunk's magnitude leak into every other token of its modality.
        """
        x = x.float()
        pad = self.chunk[name] * self.T - x.shape[1]
        return F.pad(x, (0, pad)).view(x.shape[0], self.T, self.chunk[name])

    def tokens(self, inputs: dict, token_mask: torch.Tensor = None):
        """Token sequence ``(B, M*T, hidden)`` and the per-modality targets."""
        seqs, targets = [], {}
        for j, m in enumerate(self.names):
            targets[m] = self.chunks(m, inputs[m])
            seqs.append(self.embed[m](targets[m]) + self.modality_emb[j] + self.position_emb)
        seq = torch.cat(seqs, dim=1)
        if token_mask is not None:
            seq = torch.where(token_mask.unsqueeze(-1), self.mask_token.expand_as(seq), seq)
        return seq, targets

    def forward(self, inputs: dict, token_mask: torch.Tensor = None):
        seq, targets = self.tokens(inputs, token_mask)
        hidden = self.norm(self.transformer(seq))
        return hidden, targets

    def fuse(self, hidden: torch.Tensor, inputs: dict) -> torch.Tensor:
        """``h_enc``: pooled token states plus the linear path of the inputs."""
        return self.out(hidden.mean(1)) + self.skip(torch.cat([inputs[m].float() for m in self.names], dim=1))

    def encode(self, inputs: dict) -> torch.Tensor:
        hidden, _ = self.forward(inputs)
        return self.fuse(hidden, inputs)

    def masked_loss(self, inputs: dict, present: dict, mask_ratio: float, generator=None) -> torch.Tensor:
        """``L_ICA`` for a batch: regress the masked chunks of one random modality per item."""
        B, M, T = next(iter(inputs.values())).shape[0], len(self.names), self.T
        device = self.mask_token.device
        # only modalities the item really has can be masked and predicted
        has = torch.stack([present[m] for m in self.names], dim=1).float() + 1e-6
        target_mod = torch.multinomial(has, 1, generator=generator).view(-1)
        n_mask = max(1, int(round(mask_ratio * T)))
        scores = torch.rand(B, T, generator=generator, device=device)
        masked_pos = scores.argsort(dim=1)[:, :n_mask]
        token_mask = torch.zeros(B, M, T, dtype=torch.bool, device=device)
        token_mask[torch.arange(B).unsqueeze(1), target_mod.unsqueeze(1), masked_pos] = True
        token_mask = token_mask.view(B, M * T)
        hidden, targets = self.forward(inputs, token_mask)
        loss, count = 0.0, 0
        for j, m in enumerate(self.names):
            sel = token_mask.view(B, M, T)[:, j] & present[m].unsqueeze(1)
            if sel.any():
                pred = self.decode[m](hidden[:, j * T:(j + 1) * T][sel])
                loss = loss + F.mse_loss(pred, targets[m][sel], reduction="sum") / self.chunk[m]
                count += int(sel.sum())
        loss = loss / max(count, 1)
        # L_rec: the fused bottleneck of the masked pass reconstructs every (present) modality
        fused = self.fuse(hidden, inputs)
        rec = 0.0
        for m in self.names:
            rows = present[m]
            if rows.any():
                rec = rec + F.mse_loss(self.reconstruct[m](fused[rows]), inputs[m][rows].float(), reduction="sum") \
                    / int(rows.sum())
        return loss + rec


def init_principal_subspace(encoder: ICAEncoder, features: dict) -> None:
    """Start the bottleneck at the optimum of its linear part: ``skip`` = the top principal directions
    of the concatenated (centred) inputs, ``reconstruct`` = their transpose, the token path at zero.
    Training then only has to improve on PCA (a linear autoencoder's solution) instead of finding it
    with a few hundred steps on small catalogues."""
    x = torch.cat([features[m].float() for m in encoder.names], dim=1)
    k = encoder.skip.weight.shape[0]
    cov = x.T @ x  # (D, D), no n x n matrix
    _, vecs = torch.linalg.eigh(cov.double())
    top = vecs[:, -k:].flip(1).float() if k <= vecs.shape[1] else vecs.flip(1).float()
    with torch.no_grad():
        encoder.skip.weight.zero_()
        encoder.skip.weight[: top.shape[1]] = top.T
        start = 0
        for m in encoder.names:
            d = features[m].shape[1]
            layer = encoder.reconstruct[m]
            layer.weight.zero_()
            layer.weight[:, : top.shape[1]] = top[start:start + d]
            layer.bias.zero_()
            start += d
        encoder.out.weight.zero_()
        encoder.out.bias.zero_()


def pretrain_ica(features: dict, present: dict, epochs: int = 50, batch_size: int = 256, lr: float = 1e-3,
                 mask_ratio: float = 0.5, seed: int = 2020, show_progress: bool = True, device: str = "cpu",
                 backbone: str = None, backbone_tower: str = None, **encoder_kwargs):
    """Train an :class:`ICAEncoder` on ``features`` (``{name: (n, d)}``, rows = items) and return
    ``(encoder, fused (n, output_dim) float32 numpy array, per-epoch losses)``.

    ``backbone``: initialise the fusion layers from this pretrained model (:func:`load_backbone_layers`,
    ``encoder_kwargs['n_layers']`` of them; ``hidden`` and ``n_heads`` are then the backbone's)."""
    if backbone:
        encoder_kwargs["backbone_layers"], _ = load_backbone_layers(backbone, encoder_kwargs.get("n_layers", 2),
                                                                    backbone_tower)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    names = list(features)
    features = {m: F.normalize(features[m].float(), dim=1) for m in names}
    # centre each modality over the items that have it (see the module docstring)
    features = {m: features[m] - features[m][present[m]].mean(0) if present[m].any() else features[m]
                for m in names}
    n = next(iter(features.values())).shape[0]
    encoder = ICAEncoder({m: features[m].shape[1] for m in names}, **encoder_kwargs).to(device)
    init_principal_subspace(encoder, features)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    bar = tqdm(range(epochs), desc="ICA pre-training", disable=not show_progress)
    every = max(1, epochs // 10)  # without the bar, a log line every tenth of the run
    for epoch in bar:
        encoder.train()
        order = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = {m: features[m][idx].to(device) for m in names}
            mask = {m: present[m][idx].to(device) for m in names}
            loss = encoder.masked_loss(batch, mask, mask_ratio, generator=None)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / max(batches, 1))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if not show_progress and (epoch + 1) % every == 0:
            getLogger().info("ICA pre-training: epoch %d/%d, loss %.4f", epoch + 1, epochs, losses[-1])
    encoder.eval()
    with torch.no_grad():
        fused = torch.cat([
            encoder.encode({m: features[m][start:start + 1024].to(device) for m in names}).cpu()
            for start in range(0, n, 1024)
        ])
    fused = fused - fused.mean(0)
    return encoder, fused.numpy().astype(np.float32), losses
