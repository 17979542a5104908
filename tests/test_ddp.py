"""Distributed training on CPU: RecBole hard-codes NCCL; recbole_mm uses gloo without CUDA."""

import socket

import torch

from recbole_mm.quick_start import run


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_two_process_cpu_ddp(tiny_dataset, run_config, tmp_path):
    if torch.cuda.is_available():  # pragma: no cover - this test is about the CPU path
        return
    data_path, name = tiny_dataset
    result = run("VBPR", name, config_dict=dict(run_config, data_path=data_path, epochs=1),
                 nproc=2, ip="127.0.0.1", port=_free_port())
    assert result is not None and 0.0 <= result["test_result"]["recall@20"] <= 1.0
    # Both ranks agreed on rank 0's checkpoint name and read it only once it was complete.
    saved = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert len(saved) == 1 and saved[0].endswith(".pth"), saved
