"""Atomic file writes: a temp file in the same folder, flushed and fsynced, then `os.replace`d over
the final name. A crash, a SIGKILL or a Colab disconnect leaves the old file or the new one, never
half of one. The temp file must be in the same folder: on a Google Drive mount a rename from /tmp is
a copy, and a copy can be cut in half."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from nbtools.jsonsafe import to_jsonable


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some FUSE mounts (Drive) cannot open a folder; the file itself was fsynced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a same-folder temp file, fsync it, and move it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    existed = path.exists()
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _disk_full(e):
            raise _disk_full_error(path, existed) from e
        raise
    _fsync_dir(path.parent)
    return path


def _torch_save(obj: Any, f: IO[bytes]) -> None:
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        # torch's zip writer reports an exception raised in its write callback (the stop button's
        # KeyboardInterrupt) as a RuntimeError ("unexpected pos"): give the interrupt back as itself.
        if isinstance(e.__context__, KeyboardInterrupt):
            raise e.__context__ from None
        raise


# torch.save reports a failed write (a full disk, a Drive over quota) as
# "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598": the OSError
# under it is gone, so its message is matched too.
_TORCH_WRITE_FAILED = ("unexpected pos", "No space left on device")


def _disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITE_FAILED)


def _disk_full_error(path: Path, existed: bool) -> OSError:
    path = path.absolute()
    kept = f" ({path.name} keeps its old content)" if existed else ""
    return OSError(
        errno.ENOSPC,
        f"no space left writing {path}; the previous checkpoint is intact{kept} and the partial temp file "
        f"was removed. Free some space (on Colab: the runtime's disk or the Google Drive quota), then "
        f'resume (resume="latest")',
    )


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically. A KeyboardInterrupt during the write surfaces as KeyboardInterrupt."""
    return replace_atomic(path, lambda f: _torch_save(obj, f))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Strict JSON (numpy/torch values converted, NaN as null), atomically."""
    text = json.dumps(to_jsonable(obj), indent=1, allow_nan=False)
    return replace_atomic(path, lambda f: f.write(text.encode()))


def remove_stale_temp_files(folder: str | Path) -> None:
    """Temp files left by a process killed mid-write are garbage by construction."""
    for tmp in Path(folder).glob(".*.tmp[0-9]*"):
        tmp.unlink(missing_ok=True)
