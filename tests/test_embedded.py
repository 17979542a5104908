"""The embedded default: `python run_recbole_mm.py` with nothing prepared, offline."""

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def test_default_run_builds_features_and_trains(tmp_path):
    cache = tmp_path / "cache"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "RECBOLE_MM_CACHE": str(cache)}
    cmd = [sys.executable, str(REPO / "run_recbole_mm.py"), "--epochs=1", "--show_progress=False"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TEST_RESULT {" in out.stdout and "VALID_RESULT {" in out.stdout
    title = np.load(cache / "ml-100k" / "title_feat.npy")
    genre = np.load(cache / "ml-100k" / "genre_feat.npy")
    assert title.shape == (1682, 384) and genre.shape == (1682, 19)
    assert set(np.unique(genre)) == {0.0, 1.0} and (genre.sum(1) >= 1).all()
    ids = (cache / "ml-100k" / "title_feat.ids").read_text().split()
    assert ids[:3] == ["1", "2", "3"] and len(ids) == 1682
    # second run reuses the cache (no re-encoding): the files are untouched
    stamp = (cache / "ml-100k" / "title_feat.npy").stat().st_mtime_ns
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0 and (cache / "ml-100k" / "title_feat.npy").stat().st_mtime_ns == stamp
