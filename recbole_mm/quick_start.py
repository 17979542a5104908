"""Entry points: run_recbole_mm(), objective_function(), load_data_and_model().

Our own quick start (RecBole's ``recbole.quick_start`` imports ``ray``; we never import it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from logging import getLogger

import torch.distributed as dist
from recbole.utils import init_logger, init_seed, set_color

from recbole_mm.compat import load_checkpoint
from recbole_mm.config import Config
from recbole_mm.data import create_dataset, data_preparation
from recbole_mm.data.coldstart import cold_warm_results
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.pretrain import provide_features
from recbole_mm.utils import get_model, get_trainer

DEFAULT_MODEL = "VBPR"
DEFAULT_DATASET = "ml-100k"


def _jsonable(result) -> dict:
    return {k: float(v) for k, v in (result or {}).items()}


def load_dataset(config):
    """The dataset of ``config``, plus the derived features its model declares (AlignRec's stage 1),
    produced here by :func:`recbole_mm.pretrain.provide_features`."""
    dataset = create_dataset(config)
    model_class = get_model(config["model"])
    if issubclass(model_class, MultimodalRecommender):  # RecBole's models declare none
        provide_features(config, dataset, model_class.required_features(config))
    return dataset


def prepare_data(config):
    """Dataset and split dataloaders for ``config``."""
    dataset = load_dataset(config)
    getLogger().info(dataset)
    return dataset, data_preparation(config, dataset)


def build_model(config, train_data):
    """Model (seeded: its graphs and initial weights) and trainer for ``config``."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    getLogger().info(model)
    return model, get_trainer(config["MODEL_TYPE"], config["model"])(config, model)


def prepare(config):
    """Dataset, split dataloaders, model and trainer for ``config``."""
    dataset, splits = prepare_data(config)
    model, trainer = build_model(config, splits[0])
    return dataset, splits, model, trainer


def run_recbole_mm(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None, print_result=True
):
    """Train ``model`` on ``dataset`` with early stopping on valid, then evaluate on test.

    Returns RecBole's result dict plus ``epoch_log`` (per-epoch seconds and valid scores) and
    ``config``. With ``print_result`` it prints ``VALID_RESULT {json}`` and ``TEST_RESULT {json}``.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    _, (train_data, valid_data, test_data), model_obj, trainer = prepare(config)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    cold_warm = None
    if config["single_spec"]:
        cold_warm = cold_warm_results(model_obj, test_data, config)
    elif getattr(test_data._dataset, "cold_items", None) is not None:
        logger.warning("cold_items: cold/warm metrics are computed in single-process runs only (not with DDP)")
    result = {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "epoch_log": getattr(trainer, "epoch_log", []),
        "config": config,
    }
    if cold_warm is not None:  # cold_items: the test ranking restricted to cold / warm items
        result["cold_test_result"], result["warm_test_result"] = cold_warm["cold"], cold_warm["warm"]
        if cold_warm["cold"] is None:
            logger.warning(f"{config['model']} cannot score items unseen in training (ID-only: no "
                           "scores_cold_items): no cold-item metrics, only the warm ones")
        for name in ("cold", "warm"):
            logger.info(set_color(f"{name} test  ", "yellow") + f": {cold_warm[name]}")
    if print_result and config["local_rank"] == 0:
        print("VALID_RESULT " + json.dumps(_jsonable(best_valid_result)), flush=True)
        print("TEST_RESULT " + json.dumps(_jsonable(test_result)), flush=True)
        if cold_warm is not None:
            if cold_warm["cold"] is not None:
                print("COLD_TEST_RESULT " + json.dumps(_jsonable(cold_warm["cold"])), flush=True)
            print("WARM_TEST_RESULT " + json.dumps(_jsonable(cold_warm["warm"])), flush=True)
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put({k: v for k, v in result.items() if k != "config"})
    return result


def _run_worker(rank, model, dataset, config_file_list, config_dict, queue):
    config_dict = dict(config_dict)
    config_dict["local_rank"] = rank
    run_recbole_mm(model, dataset, config_file_list, config_dict, queue=queue)


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
        nproc=1, world_size=-1, ip="localhost", port="5678", group_offset=0):
    """Single process, or ``nproc`` DDP workers (NCCL on CUDA, gloo on CPU)."""
    if nproc == 1 and world_size <= 0:
        return run_recbole_mm(model, dataset, config_file_list, config_dict, saved=saved)
    import torch.multiprocessing as mp

    # RecBole's workers each create log/, log_tensorboard/ and the checkpoint folder with an
    # exists-then-makedirs check, which races between processes; create them once here.
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    for folder in (os.path.join("log", config["model"]), "log_tensorboard", config["checkpoint_dir"]):
        os.makedirs(folder, exist_ok=True)
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update(
        {"world_size": world_size if world_size > 0 else nproc, "ip": ip, "port": port, "nproc": nproc,
         "offset": group_offset}
    )
    mp.spawn(_run_worker, args=(model, dataset, config_file_list, config_dict, queue), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """Objective for RecBole's ``HyperTuning``: trains once, selects on valid, reports test too."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, (train_data, valid_data, test_data), _, trainer = prepare(config)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def load_data_and_model(model_file):
    """Rebuild config, model (with the saved weights), dataset and dataloaders from a checkpoint."""
    checkpoint = load_checkpoint(model_file, map_location="cpu")
    config = checkpoint["config"]
    # an unpickled Config skipped RecBole's NumPy aliases (np.float, ...) that its metrics use
    config.compatibility_settings()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = load_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def parse_cli(argv):
    """``--model``, ``--dataset``, ``--config_files`` and ``--nproc``...; other ``--k=v`` go to Config."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_mm or RecBole model. Any other --key=value is a config override."
    )
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name, case-insensitive (default VBPR)")
    parser.add_argument("--dataset", "-d", default=DEFAULT_DATASET, help="dataset name (default: embedded ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--nproc", type=int, default=1, help="DDP worker processes")
    parser.add_argument("--world_size", type=int, default=-1)
    parser.add_argument("--ip", default="localhost")
    parser.add_argument("--port", default="5678")
    parser.add_argument("--group_offset", type=int, default=0)
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv=None) -> int:
    """``run_recbole_mm.py`` and the ``recbole-mm`` command: train and evaluate. Exit status 0, or 2
    after one line ``error: ...`` on stderr for bad input (:func:`recbole_mm.cli.run_main`)."""
    from recbole_mm.cli import run_main

    def train(argv):
        args = parse_cli(argv)
        files = args.config_files.strip().split(" ") if args.config_files else None
        return run(
            args.model, args.dataset, config_file_list=files, nproc=args.nproc, world_size=args.world_size,
            ip=args.ip, port=args.port, group_offset=args.group_offset,
        )

    return run_main(train, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
