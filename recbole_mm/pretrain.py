"""AlignRec stage 1: inter-content alignment pre-training -> fused item features.

    python -m recbole_mm.pretrain --dataset NAME --data_path DIR [--output fused_feat.npy] [--force]
        [--key=value ...]      # any config key, e.g. --use_modalities="['text','audio_vggish']" --ica_epochs=100

Trains :class:`recbole_mm.encoders.ica.ICAEncoder` on the dataset's modalities and writes
``<dataset dir>/fused_feat.npy`` (+ ``.ids``, ``.json``). Stage 2 (``run_recbole_mm.py
--model=AlignRec``) picks the file up as its ``h_enc`` (config ``encoder_file``); with
``pretrain: True`` (the default) that command runs stage 1 itself when the file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from logging import getLogger

from recbole_mm.io import atomic_save_npy, atomic_write_text, write_ids

ICA_KEYS = {  # config key -> pretrain_ica argument
    "ica_epochs": "epochs", "ica_batch_size": "batch_size", "ica_learning_rate": "lr",
    "ica_mask_ratio": "mask_ratio", "ica_hidden": "hidden", "ica_tokens": "tokens_per_modality",
    "ica_layers": "n_layers", "ica_heads": "n_heads", "ica_output_dim": "output_dim",
    "ica_backbone": "backbone", "ica_backbone_tower": "backbone_tower",
}


def stage1_settings(config) -> dict:
    """The ``pretrain_ica`` arguments given by ``config`` (as recorded in the sidecar's ``settings``)."""
    return {arg: config[key] for key, arg in ICA_KEYS.items() if config[key] is not None}


def check_stage1_file(path: str, config, modalities) -> None:
    """Refuse to reuse a stage-1 file made from other modalities or other ICA settings.

    Reads the ``.json`` sidecar next to ``path`` (written by :func:`run_stage1`); a file without
    one, or not made by the ICA encoder, is the user's own and is taken as it is.
    """
    sidecar = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(sidecar):
        return
    with open(sidecar) as fh:
        meta = json.load(fh)
    if meta.get("encoder") != "ica":
        return
    settings, recorded = stage1_settings(config), meta.get("settings", {})
    changed = sorted(k for k in settings.keys() | recorded.keys() if settings.get(k) != recorded.get(k))
    checks = (("modalities", sorted(meta.get("modalities", [])), sorted(modalities)),
              ("settings", {k: recorded.get(k) for k in changed}, {k: settings.get(k) for k in changed}))
    for field, found, wanted in checks:
        if found != wanted:
            raise ValueError(f"{sidecar}: field '{field}' is {found}, but this run's stage 1 would use "
                             f"{wanted}; pass the same settings, pretrain_overwrite=True to re-run stage 1, "
                             f"pretrain=False to use the file as it is, or another encoder_file")


def run_stage1(config, dataset, output_path: str, exclude=()) -> dict:
    """Pre-train on ``dataset.item_features`` (minus ``exclude``) and write the fused feature file."""
    from recbole_mm.encoders.ica import pretrain_ica

    names = [m for m in dataset.item_features if m not in exclude]
    if not names:
        raise ValueError("ICA pre-training needs at least one modality in the dataset")
    features = {m: dataset.item_features[m][1:] for m in names}  # real items only
    present = {m: dataset.item_feature_mask[m][1:] for m in names}
    kwargs = stage1_settings(config)
    getLogger().info("ICA pre-training on modalities %s (%d items)", names, len(features[names[0]]))
    _, fused, losses = pretrain_ica(features, present, seed=config["seed"], device=config["device"] or "cpu",
                                    show_progress=bool(config["show_progress"]), **kwargs)
    stem = os.path.splitext(output_path)[0]
    write_ids(stem + ".ids", dataset.field2id_token[dataset.iid_field][1:])
    meta = {"encoder": "ica", "modalities": names, "dims": int(fused.shape[1]), "items": int(fused.shape[0]),
            "loss_first_epoch": losses[0], "loss_last_epoch": losses[-1], "settings": kwargs,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(stem + ".json", json.dumps(meta, indent=2) + "\n")
    atomic_save_npy(output_path, fused)
    getLogger().info("ICA loss %.4f -> %.4f; wrote %s", losses[0], losses[-1], output_path)
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--output", default=None, help="default: <dataset dir>/<encoder_file>")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    from recbole.utils import init_logger, init_seed

    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset

    config = Config("AlignRec", args.dataset, config_dict={"data_path": args.data_path})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    output = args.output or os.path.join(dataset.dataset_path, config["encoder_file"])
    if os.path.exists(output) and not args.force:
        print(f"error: {output} already exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    meta = run_stage1(config, dataset, output, exclude=(config["encoder_modality"],))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
