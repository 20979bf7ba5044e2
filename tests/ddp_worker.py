"""Run by tests/test_distributed.py under torchrun: one small fit, then each rank saves what it ended with."""

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from tests.helpers import NoisyBlobs, StopAfter, small_cnn


class NaNAt(Dataset):
    def __init__(self, base, bad: set[int]):
        self.base, self.bad = base, bad

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (torch.full_like(x, float("nan")) if i in self.bad else x), y


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--model", default="cnn")
    p.add_argument("--resume", default=None)
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--nan-at", type=int, nargs="*", default=[])
    args = p.parse_args(argv)
    train = NoisyBlobs(n=64, augment=args.model == "cnn")
    if args.nan_at:
        train = NaNAt(train, set(args.nan_at))
    cfg = nbt.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=1e-2,
        log_every=1,
        ema_decay=0.9,
        checkpoint_every_minutes=None,
        seed=5,
    )
    model = small_cnn() if args.model == "cnn" else mlp()
    transform = StopAfter(args.stop_after) if args.stop_after is not None else None
    rank = int(os.environ.get("RANK", "0"))
    out = Path(args.out)
    try:
        run = nbt.fit(
            model,
            train,
            NoisyBlobs(n=20, seed=1, augment=False),
            nn.CrossEntropyLoss(),
            cfg,
            args.run_dir,
            resume=args.resume,
            batch_transform=transform,
            verbose=rank == 0,
        )
    except StopAfter.Disconnect:
        return
    torch.save(run.model.state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "history": [{k: v for k, v in h.items() if k != "seconds"} for h in run.history],
                "skipped_steps": [s for r in run.steps for s in r["skipped_steps"]],
            }
        )
    )


if __name__ == "__main__":
    torch.set_num_threads(1)  # one thread per rank: two ranks on a 2-core machine
    main()
