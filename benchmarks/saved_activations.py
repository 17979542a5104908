"""Bytes kept for the backward pass by one training loss of a model, by autograd node type.

    python benchmarks/saved_activations.py --dataset lfm2k --data_path data/ --models MMGCN MVGAE \
        [--threads 1] [--key=value ...]

The activations a graph model keeps between its forward and backward passes are most of its
training peak on a large catalogue, and they scale with the number of nodes: measuring them on a
small dataset says where the memory of a large one goes, in seconds instead of an hour. For each
model (yaml defaults plus the overrides, seed 2020) one training batch's ``calculate_loss`` runs
under ``torch.autograd.graph.saved_tensors_hooks``; every tensor autograd packs is counted once
per storage, parameters excluded. Tensors saved inside ``torch.utils.checkpoint`` regions are not
kept (they are recomputed in backward) and are not counted; the node-type breakdown walks the
graph and reads each node's saved tensors (for checkpointed nodes this recomputes them, so it is
printed for information only). Prints one line per model and the largest node types.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import dataset_parser, parse_with_overrides  # noqa: E402


def saved_bytes(model, batch):
    """``(total bytes packed for backward, {node type: bytes})`` of ``model.calculate_loss(batch)``."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    packed = {}

    def pack(t):
        if t.layout == torch.strided:
            key = t.untyped_storage().data_ptr()
            if key not in params:
                packed[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.calculate_loss(batch)
        if isinstance(loss, tuple):
            loss = sum(loss)
    by_node, seen, stack, visited = collections.Counter(), set(params), [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        names = [a for a in dir(node) if a.startswith("_saved_")] + (["saved_tensors"] if hasattr(node, "saved_tensors") else [])
        for name in names:
            try:
                value = getattr(node, name)
            except RuntimeError:  # freed or not a tensor
                continue
            for t in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    key = t.untyped_storage().data_ptr()
                    if key not in seen:
                        seen.add(key)
                        by_node[type(node).__name__] += t.untyped_storage().nbytes()
        stack.extend(f for f, _ in node.next_functions)
    return sum(packed.values()), by_node


def measure(model_name: str, dataset: str, data_path: str, overrides: dict, threads: int):
    import torch

    from recbole_mm.config import Config
    from recbole_mm.quick_start import prepare

    torch.set_num_threads(threads)
    sys.argv = [sys.argv[0]] + [f"--{k}={v}" for k, v in overrides.items()]  # typed by RecBole's parser
    config = Config(model=model_name, dataset=dataset,
                    config_dict={"data_path": data_path, "seed": 2020, "show_progress": False, "state": "WARNING"})
    _, (train, _, _), model, _ = prepare(config)
    model.train()
    if hasattr(model, "pre_epoch_processing"):
        model.pre_epoch_processing()
    return saved_bytes(model, next(iter(train)))


def main(argv=None):
    parser = dataset_parser(__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="node types listed per model")
    args, overrides = parse_with_overrides(parser, argv)
    rows = []
    for name in args.models:
        total, by_node = measure(name, args.dataset, args.data_path, overrides, args.threads)
        rows.append((name, total))
        print(f"{name}: {total / 2**20:,.1f} MB saved for backward")
        for node, size in by_node.most_common(args.top):
            print(f"    {node:36s} {size / 2**20:10,.1f} MB")
    return rows


if __name__ == "__main__":
    main()
