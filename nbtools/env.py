"""Where we run: device, precision, Colab or not, seeding, Google Drive."""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DRIVE_FOLDER = "nbtools-runs"  # runs_root's folder in MyDrive
MOUNTS = "/proc/mounts"  # where the kernel lists mounts; Colab mounts Drive as type fuse.drive


@dataclass(frozen=True)
class Env:
    device: torch.device
    precision: str  # what precision="auto" resolves to here: "bf16" | "fp16" | "fp32"
    is_colab: bool
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    torch_version: str

    def summary(self) -> str:
        gpu = (
            f"{self.gpu_name} (sm {self.compute_capability[0]}.{self.compute_capability[1]})"
            if self.gpu_name
            else "none"
        )
        where = "Colab" if self.is_colab else "local"
        return (
            f"nbtools: {where}, device {self.device}, GPU {gpu}, precision {self.precision}, "
            f"torch {self.torch_version}"
        )


def is_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def device_facts(device: torch.device | str) -> dict:
    """What decides the precision on `device`, as plain JSON (kept in checkpoints):
    {"type": "cpu"} or {"type": "cuda", "name": "Tesla T4", "capability": [7, 5], "bf16": False}."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"type": device.type}
    return {
        "type": "cuda",
        "name": torch.cuda.get_device_name(device),
        "capability": list(torch.cuda.get_device_capability(device)),
        "bf16": bool(torch.cuda.is_bf16_supported()),
    }


def precision_for(requested: str, facts: dict) -> str:
    """resolve_precision as a pure function of `device_facts` (so GPU cases test without a GPU)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {requested!r}")
    if requested != "auto":
        return requested
    if facts["type"] != "cuda":
        return "fp32"
    return "bf16" if _native_bf16(facts) else "fp16"


def _native_bf16(facts: dict) -> bool:
    # bf16 is emulated (slow) below sm 8.0 even where torch reports it as supported; CPU autocast
    # runs bf16 too, but the auto rule keeps CPUs in fp32
    return facts["type"] == "cuda" and facts["capability"][0] >= 8 and facts["bf16"]


def fallback_for(facts: dict) -> str:
    """Where fp16 goes when it fails on the device of `device_facts` (its GradScaler keeps skipping,
    or its range overflows): bf16 where the device really has it (the rule "auto" uses), else fp32;
    on CPU always fp32."""
    return "bf16" if _native_bf16(facts) else "fp32"


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """Turn "auto" into what this device really supports.

    auto: bf16 on GPUs with compute capability >= 8.0 (A100, L4, ...), fp16 + GradScaler on older
    GPUs (T4, V100), fp32 on CPU. An explicit choice is returned as is, so CPU tests can exercise
    bf16 and fp16 autocast.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {requested!r}")
    return requested if requested != "auto" else precision_for(requested, device_facts(device))


def slow_conv3d_warning(torch_version: str, cudnn_version: int | None) -> str | None:
    """A warning for a torch/cuDNN pair known to make Conv3d slow under AMP, else None.

    torch 2.9.0 with cuDNN 9.10.x (cudnn_version 91000-91099) runs Conv3d without cuDNN, on the
    slow vol2col path (pytorch/pytorch#166122; torch 2.9.1 uses cuDNN again from cuDNN 9.15). A Colab
    runtime that shipped this pair can still be chosen, so setup() names it and the fix."""
    if not torch_version.startswith("2.9.0") or cudnn_version is None or not 91000 <= cudnn_version < 91100:
        return None
    cudnn = f"{cudnn_version // 10000}.{cudnn_version // 100 % 100}.{cudnn_version % 100}"
    return (
        f"torch {torch_version} with cuDNN {cudnn} runs Conv3d without cuDNN under bf16/fp16 autocast "
        f"(pytorch/pytorch#166122): 3D training is several times slower and needs far more GPU memory. "
        f"Fix: choose another Colab runtime version (Runtime > Change runtime type > Runtime version), or "
        f'upgrade both: pip install -U "torch>=2.9.1" "nvidia-cudnn-cu12>=9.15" and restart the runtime. '
        f"precision='fp32' avoids the slow path meanwhile."
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def setup(seed: int = 0, device: str | None = None, verbose: bool = True) -> Env:
    """Seed everything, pick the device and precision, and print one summary line.

    >>> env = setup(seed=0)   # doctest: +SKIP
    nbtools: Colab, device cuda, GPU Tesla T4 (sm 7.5), precision fp16, torch 2.5.1
    """
    seed_everything(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu_name, cc = None, None
    if dev.type == "cuda":
        gpu_name = torch.cuda.get_device_name(dev)
        cc = torch.cuda.get_device_capability(dev)
        warning = slow_conv3d_warning(torch.__version__, torch.backends.cudnn.version())
        if warning:
            log.warning(warning)
    env = Env(
        device=dev,
        precision=resolve_precision("auto", dev),
        is_colab=is_colab(),
        gpu_name=gpu_name,
        compute_capability=cc,
        torch_version=torch.__version__,
    )
    if verbose:
        print(env.summary())
    return env


def mount_drive(mount_point: str = "/content/drive") -> Path | None:
    """Mount Google Drive in Colab so run folders survive a disconnect; None outside Colab.

    Safe to call again: Colab leaves a mounted Drive as it is. Raises RuntimeError naming the mount
    point when Colab cannot mount it (authorisation refused or timed out)."""
    if not is_colab():
        log.info("not in Colab: Google Drive not mounted; run folders stay on local disk")
        return None
    from google.colab import drive  # only importable in Colab

    try:
        drive.mount(mount_point)
    except Exception as e:  # Colab raises its own MessageError, ValueError or TimeoutError here
        raise RuntimeError(
            f"Google Drive did not mount at {mount_point} ({type(e).__name__}: {e}); run the cell again "
            f"and allow access, or set USE_DRIVE = False to keep run folders in ./runs, which a "
            f"disconnect deletes"
        ) from e
    return Path(mount_point) / "MyDrive"


def runs_root(use_drive: bool | str = "auto", folder: str = DRIVE_FOLDER) -> Path:
    """Where notebooks keep run folders, so checkpoints survive a Colab disconnect.

    use_drive: "auto" = Google Drive (MyDrive/`folder`, mounted by mount_drive) in Colab, ./runs
    elsewhere; True = Drive too, but ./runs with a log line outside Colab; False = ./runs always.

    >>> RUNS = nbt.runs_root("auto")   # doctest: +SKIP
    """
    if not (isinstance(use_drive, bool) or use_drive == "auto"):
        raise ValueError(f"use_drive must be 'auto', True or False, got {use_drive!r}")
    if use_drive == "auto":
        use_drive = is_colab()
    if use_drive:
        drive = mount_drive()
        if drive is not None:
            return drive / folder
    return Path("runs")


def _drive_mounts() -> list[Path]:
    """Colab's Google Drive mounts (DriveFS: mount type fuse.drive), from the kernel's mount table."""
    try:
        lines = Path(MOUNTS).read_text().splitlines()
    except OSError:
        return []
    # /proc/mounts writes a space in a path as \040
    return [
        Path(f[1].replace("\\040", " "))
        for f in map(str.split, lines)
        if len(f) >= 3 and f[2] == "fuse.drive"
    ]


def drive_mount(path: str | Path) -> Path | None:
    """The Google Drive mount that holds `path` in Colab, else None."""
    if not is_colab():
        return None
    target = Path(path).absolute().resolve()
    return next((m for m in _drive_mounts() if target == m or m in target.parents), None)


def sync_drive(path: str | Path) -> bool:
    """Hand every write still pending under a Drive-mounted `path` to Drive; False (and nothing done)
    when `path` is not on Drive.

    Every checkpoint was already fsynced when it was written (nbtools.atomic); `os.sync()` covers what
    was only flushed (TensorBoard event files, figures). Drive then uploads in the background. Colab
    has no call that waits for the upload short of `google.colab.drive.flush_and_unmount()`, which
    also unmounts Drive, so it is never called here: the notebook goes on reading the run folder."""
    mount = drive_mount(path)
    if mount is None:
        return False
    os.sync()
    log.info("%s is on Google Drive (%s): pending writes handed to Drive", path, mount)
    return True


def run_folder_hint() -> str:
    """Where the notebooks keep run folders, for messages about a run or checkpoint that is not found."""
    hint = (
        f'with USE_DRIVE = "auto" the notebooks keep run folders on Google Drive in Colab '
        f"(MyDrive/{DRIVE_FOLDER}/RUN_NAME) and in ./runs elsewhere: check that RUN_NAME and USE_DRIVE "
        f"match the notebook that trained it"
    )
    if is_colab() and not _drive_mounts():
        hint += "; Google Drive is not mounted in this runtime: run the cell that calls nbt.runs_root first"
    return hint
