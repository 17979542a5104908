"""recbole_mm.plot: the PNG files are written, non-empty, and never overwritten without --force."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from recbole_mm import plot  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 5000


def test_embedding_map(tiny_dataset, run_config, tmp_path, capsys):
    from recbole_mm.recommend import load
    from tests.test_recommend import train_checkpoint

    ckpt = train_checkpoint("LightGCN", tiny_dataset, run_config)
    out = tmp_path / "map.png"
    assert plot.main(["embeddings", "--checkpoint", ckpt, "--out", str(out)]) == 0
    assert _is_png(out)
    assert plot.main(["embeddings", "--checkpoint", ckpt, "--out", str(out)]) == 2  # refused before loading
    assert "already exists; pass --force" in capsys.readouterr().err
    loaded = load(ckpt)
    plot.plot_embeddings(loaded, str(out), method="tsne", features="text", force=True)
    assert _is_png(out)
    with pytest.raises(ValueError, match="'genre' is not 'popularity' or an item field"):
        plot.plot_embeddings(loaded, str(tmp_path / "c.png"), color="genre")
    # a categorical item field (as an .item file would give): legend by value
    import torch
    from recbole.data.interaction import Interaction

    ds = loaded.dataset
    genre = torch.tensor([0] + [1 + i % 3 for i in range(ds.item_num - 1)])
    ds.item_feat = Interaction({ds.iid_field: torch.arange(ds.item_num), "genre": genre})
    ds.field2id_token["genre"] = np.array(["[PAD]", "rock", "pop", "jazz"])
    kind, values = plot.item_colours(loaded, "genre")
    assert kind == "category" and list(values[:4]) == ["rock", "pop", "jazz", "rock"]
    plot.plot_embeddings(loaded, str(tmp_path / "c.png"), color="genre")
    assert _is_png(tmp_path / "c.png")


def test_projection_is_seeded():
    x = np.random.default_rng(0).normal(size=(40, 8))
    np.testing.assert_array_equal(plot.project_2d(x, "tsne", seed=3), plot.project_2d(x, "tsne", seed=3))


def test_curves_and_leaderboard(tmp_path, capsys):
    runs = tmp_path / "runs.jsonl"
    rows = [{"model": m, "seed": s, "curve": list(np.linspace(0.1, r, 6)), "recall@20": r + 0.01 * s}
            for m, r in (("BPR", 0.3), ("VBPR", 0.35)) for s in (0, 1)]
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for what in ("curves", "leaderboard"):
        out = tmp_path / f"{what}.png"
        assert plot.main([what, "--runs", str(runs), "--out", str(out)]) == 0
        assert _is_png(out)
    runs.write_text('{"model": "BPR"}\nnot json\n')
    assert plot.main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "x.png")]) == 2
    assert f"error: {runs}: line 2: not JSON" in capsys.readouterr().err
