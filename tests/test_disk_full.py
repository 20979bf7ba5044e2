"""A full disk while writing a checkpoint: the error names the file and says the previous one is intact."""

import errno

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools import atomic
from tests.helpers import NoisyBlobs, small_cnn

TORCH_FORM = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"), RuntimeError(TORCH_FORM)],
    ids=["oserror", "torch"],
)
def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, failure):
    target = tmp_path / "epoch_002.pt"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half of it")
        raise failure

    with pytest.raises(OSError, match="no space left writing") as info:
        atomic.replace_atomic(target, write)
    assert info.value.errno == errno.ENOSPC
    assert str(target.absolute()) in str(info.value) and "epoch_002.pt keeps its old content" in str(
        info.value
    )
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["epoch_002.pt"]


def test_other_write_errors_pass_through_unchanged(tmp_path):
    def write(f):
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match=r"^something else$"):
        atomic.replace_atomic(tmp_path / "x.pt", write)


@pytest.mark.slow
def test_fit_on_a_disk_that_fills_up_names_the_checkpoint_and_keeps_the_previous(tmp_path, monkeypatch):
    cfg = nbt.TrainConfig(epochs=3, batch_size=8, checkpoint_every_minutes=None)
    args = (NoisyBlobs(), NoisyBlobs(seed=1, augment=False), nn.CrossEntropyLoss(), cfg, tmp_path)
    real_save, saves = torch.save, []

    class FillsUp:
        """A file on a disk with 1 kB left: the real torch.save writes into it until it is full."""

        def __init__(self, f):
            self.f, self.left = f, 1000

        def write(self, b):
            if len(b) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(b)
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    def save(obj, f):
        saves.append(1)
        if (tmp_path / "epoch_001.pt").exists() and "format" in obj:  # the second epoch checkpoint
            f = FillsUp(f)
        real_save(obj, f)

    monkeypatch.setattr(atomic.torch, "save", save)
    with pytest.raises(
        OSError, match=r"no space left writing .*epoch_002\.pt; the previous checkpoint is intact"
    ) as info:
        nbt.fit(small_cnn(), *args, verbose=False)
    assert str(tmp_path.absolute() / "epoch_002.pt") in str(info.value)
    assert "the previous checkpoint is intact" in str(info.value)
    monkeypatch.setattr(atomic.torch, "save", real_save)
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path).valid()] == [1]
    assert not list(tmp_path.glob(".*.tmp*"))
    run = nbt.fit(small_cnn(), *args, resume="latest", verbose=False)  # space freed: the run goes on
    assert run.history[-1]["epoch"] == 3
