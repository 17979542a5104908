"""`pip install .` must ship properties/ and the converters inside the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_contains_properties_and_converters(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("recbole_mm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("recbole_mm/properties/overall.yaml", "recbole_mm/properties/model/VBPR.yaml",
                     "recbole_mm/properties/dataset/ml-100k.yaml", "dataset_converters/mmrec.py",
                     "dataset_converters/lastfm.py", "recbole_mm/compat.py"):
        assert required in names, f"{required} missing from {wheel.name}"
