"""What pip installs with nbtools, read from the wheel pip would install (its METADATA), not from
pyproject.toml: nibabel is a core requirement, since `resnet3d --data` reads .nii.gz, with a lower
bound that Colab's own nibabel meets, so installing nbtools there moves nothing."""

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT.parent / "shared" / "colab" / "constraints.txt"


def _wheel_metadata(tmp_path: Path):
    # a copy of the sources: setuptools writes build/ and *.egg-info next to pyproject.toml
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "nbtools", src / "nbtools", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("nbtools-*.whl")
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def test_the_wheel_requires_nibabel_at_a_bound_colab_meets(tmp_path):
    meta = _wheel_metadata(tmp_path)
    required = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    nibabel = [r for r in required if r.name == "nibabel"]
    assert len(nibabel) == 1 and nibabel[0].marker is None, nibabel  # not behind an extra
    spec = nibabel[0].specifier
    assert "5.4.2" in spec and "5.1.0" not in spec  # Colab's; 5.1 does not import under NumPy 2
    assert "nifti" in meta.get_all("Provides-Extra")  # `pip install "nbtools[nifti]"` keeps working
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = [Requirement(line) for line in lines if line]
    assert [r.specifier for r in listed if r.name == "nibabel"] == [spec]
    if COLAB.exists():
        colab = dict(line.split("==") for line in COLAB.read_text().split() if "==" in line)
        assert colab["nibabel"] in spec
