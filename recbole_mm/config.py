"""Config that knows recbole_mm's models and ``properties/``.

Merge order, later wins:

1. RecBole's own defaults (its ``overall.yaml``, its model yaml for built-in models, its
   dataset yaml if it ships one);
2. ``properties/overall.yaml`` (recbole_mm's defaults: Recall/NDCG/Precision/MAP@{10,20,50},
   early stopping on valid Recall@20, ...);
3. ``properties/dataset/<dataset>.yaml``, then ``<data_path>/<dataset>/<dataset>.yaml`` (the yaml a
   converter writes beside the atomic files);
4. ``properties/model/<Model>.yaml``;
5. ``config_file_list`` (``--config_files``), then ``config_dict``, then ``--key=value`` flags.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_mm.compat import check_environment, ddp_backend
from recbole_mm.runtime import set_cpu_determinism
from recbole_mm.utils import canonical_model_name, get_model


def properties_dir() -> Path:
    """``properties/``: inside the installed package, or at the repository root in a checkout."""
    installed = Path(__file__).resolve().parent / "properties"
    if installed.is_dir():
        return installed
    try:  # editable installs map recbole_mm.properties onto the top-level folder
        import importlib.util

        spec = importlib.util.find_spec("recbole_mm.properties")
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "properties"


class Config(RecBoleConfig):
    """RecBole's ``Config`` with recbole_mm's registry, properties and a CPU-capable DDP init."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        check_environment()
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
        from recbole_mm.checks import check_config

        check_config(self)  # bad values fail here, before any data is read (recbole_mm/checks.py)
        if str(self["device"]).startswith("cpu"):
            set_cpu_determinism(bool(self["reproducibility"]))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("model needs to be given: as an argument, in a config file or dict, or --model=NAME")
        final_model = canonical_model_name(model)  # a name, module:Class, or a class (registered)
        final_model_class = get_model(final_model)
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("dataset needs to be given: as an argument, in a config file or dict, or --dataset=NAME")
        return final_model, final_model_class, dataset

    def _read_yaml(self, path) -> dict:
        with open(path, "r", encoding="utf-8") as fh:
            return yaml.load(fh.read(), Loader=self.yaml_loader) or {}

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = properties_dir()
        data_path = self.external_config_dict.get("data_path", self.internal_config_dict.get("data_path"))
        layers = [
            props / "overall.yaml",
            props / "dataset" / f"{dataset}.yaml",
            Path(data_path or "dataset") / dataset / f"{dataset}.yaml",
            props / "model" / f"{model}.yaml",
        ]
        own = getattr(model_class, "config_file", None)  # a registered outside model's defaults
        if own:
            layers.append(Path(own))
        for index, path in enumerate(layers):
            if not path.is_file():
                continue
            values = self._read_yaml(path)
            self.internal_config_dict.update(values)
            if index in (1, 2):  # dataset keys count as dataset arguments (cache invalidation)
                self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]
        self.internal_config_dict["loaded_config_files"] = [str(p) for p in layers if p.is_file()]

    def _init_device(self):
        if "local_rank" not in self.final_config_dict:
            super()._init_device()
            # RecBole 1.2.1 picks CUDA whenever it is there (only an empty gpu_id turns it off) and
            # ignores use_gpu; honour it, as the distributed branch below does
            if self.final_config_dict.get("use_gpu", True) is False:
                self.final_config_dict["device"] = torch.device("cpu")
            return
        # Distributed run: RecBole hard-codes NCCL (CUDA only); use gloo on CPU.
        gpu_id = self.final_config_dict["gpu_id"]
        if isinstance(gpu_id, tuple):
            gpu_id = ",".join(map(str, gpu_id))
        self.final_config_dict["gpu_id"] = str(gpu_id)
        use_cuda = torch.cuda.is_available() and self.final_config_dict.get("use_gpu", True)
        torch.distributed.init_process_group(
            backend=ddp_backend() if use_cuda else "gloo",
            rank=self.final_config_dict["local_rank"] + self.final_config_dict.get("offset", 0),
            world_size=self.final_config_dict["world_size"],
            init_method=f"tcp://{self.final_config_dict['ip']}:{self.final_config_dict['port']}",
        )
        if use_cuda:
            self.final_config_dict["device"] = torch.device("cuda", self.final_config_dict["local_rank"])
            torch.cuda.set_device(self.final_config_dict["local_rank"])
        else:
            self.final_config_dict["device"] = torch.device("cpu")
        self.final_config_dict["single_spec"] = False
        if self.final_config_dict["local_rank"] != 0:
            self.final_config_dict["state"] = "error"
            self.final_config_dict["show_progress"] = False
            self.final_config_dict["verbose"] = False
