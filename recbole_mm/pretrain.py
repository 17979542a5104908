"""Stage-1 producers: derived item features a model declares (``required_features``) and the
pipeline makes before the model is built -- today AlignRec's inter-content alignment (ICA)
pre-training, which writes a fused item feature file.

    python -m recbole_mm.pretrain --dataset NAME --data_path DIR [--output FILE.npy] [--force]
        [--key=value ...]      # any config key, e.g. --use_modalities="['text','audio_vggish']" --ica_epochs=100

Where the file goes (:func:`provide_features`): an explicit ``encoder_file`` means exactly that
file (relative to the dataset folder). Otherwise ``<name>-<key>.npy`` with ``key`` a hash of what
made it -- the input features, the modalities, the ICA settings and the seed -- so several settings
coexist and a search over them never overwrites another run's file; it lives in the dataset folder
when that is the user's (writable and not inside an installed package), else in
``<mm_cache_dir>/stage1/<dataset>/``. Each file has ``.ids`` and ``.json`` sidecars; the log says
where it is.
"""

from __future__ import annotations

import argparse
import json
import os
import site
import sys
import sysconfig
from datetime import datetime, timezone
from logging import getLogger

from recbole_mm.cache import cache_root
from recbole_mm.data.features import parse_modalities
from recbole_mm.data.graphs import graph_cache_key
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


def run_stage1(config, dataset, output_path: str, names) -> dict:
    """Pre-train on the modalities ``names`` of ``dataset`` and write the fused feature file."""
    from recbole_mm.encoders.ica import pretrain_ica

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


def stage1_key(config, dataset, names) -> str:
    """Hash of what a stage-1 file is made from: features and masks of ``names``, item order,
    ICA settings and seed."""
    tensors = [t for m in names for t in (dataset.item_features[m], dataset.item_feature_mask[m])]
    return graph_cache_key(tensors, modalities=list(names), settings=stage1_settings(config), seed=config["seed"],
                           items=list(dataset.field2id_token[dataset.iid_field][1:]), v=1)


def installed_package_dirs() -> list:
    """Folders of installed packages (site-packages and RecBole's own), which we never write into."""
    import recbole

    dirs = set(site.getsitepackages() + [site.getusersitepackages()])
    dirs.update(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    dirs.add(os.path.dirname(recbole.__file__))
    return sorted(os.path.realpath(d) for d in dirs if d)


def is_user_folder(path: str) -> bool:
    """Writable and not inside an installed package (e.g. RecBole's bundled ml-100k)."""
    real = os.path.realpath(path)
    inside = any(os.path.commonpath([real, d]) == d for d in installed_package_dirs())
    return os.path.isdir(real) and os.access(real, os.W_OK) and not inside


def stage1_dir(config, dataset) -> str:
    """The dataset folder when it is the user's, else ``<mm_cache_dir>/stage1/<dataset>``."""
    if is_user_folder(dataset.dataset_path):
        return dataset.dataset_path
    return os.path.join(cache_root(config), "stage1", dataset.dataset_name)


def stage1_path(config, dataset, name: str, file, names) -> str:
    """``file`` (absolute, or relative to the dataset folder) if given, else the keyed default."""
    if file:
        return os.path.abspath(file if os.path.isabs(file) else os.path.join(dataset.dataset_path, file))
    key = stage1_key(config, dataset, names)
    return os.path.abspath(os.path.join(stage1_dir(config, dataset), f"{name}-{key}.npy"))


PRODUCERS = {"ica": run_stage1}


def provide_features(config, dataset, requests) -> None:
    """Produce (when asked and needed) and attach each :class:`FeatureRequest` of a model."""
    logger = getLogger()
    for request in requests:
        if request.name in dataset.item_features:  # the dataset already lists it as a modality
            continue
        names = [m for m in dataset.item_features if m not in request.exclude]
        path = stage1_path(config, dataset, request.name, request.file, names)
        if request.run and (request.overwrite or not os.path.isfile(path)):
            logger.info("stage 1 (%s) for '%s' -> %s", request.producer, request.name, path)
            PRODUCERS[request.producer](config, dataset, path, names)
        elif request.run and request.file:  # an explicit file is reused only if it is what stage 1 makes now
            check_stage1_file(path, config, names)
        if os.path.isfile(path):
            logger.info("stage-1 feature '%s' from %s", request.name, path)
            dataset.load_modality(parse_modalities({request.name: path}, dataset.dataset_path)[0])
        else:
            logger.warning("stage-1 feature '%s': no file %s and pretrain is off", request.name, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--output", default=None,
                        help="file to write (relative: to the dataset folder); default: encoder_file if set, "
                             "else the keyed file AlignRec's runs look for")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    from recbole.utils import init_logger, init_seed

    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset

    config = Config("AlignRec", args.dataset, config_dict={"data_path": args.data_path})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    name = config["encoder_modality"]
    names = [m for m in dataset.item_features if m != name]
    output = stage1_path(config, dataset, name, args.output or config["encoder_file"], names)
    if os.path.exists(output) and not args.force:
        print(f"error: {output} already exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    meta = run_stage1(config, dataset, output, names)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    from recbole_mm.cli import run_main

    raise SystemExit(run_main(main))
