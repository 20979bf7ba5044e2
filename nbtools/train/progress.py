"""What `fit` shows while it trains: a tqdm bar per epoch, its postfix at each log interval, and
one summary line per epoch. (The notebook dashboard in nbtools.viz shows the same events.)"""

from __future__ import annotations

from tqdm.auto import tqdm

from nbtools.diagnose.findings import Finding


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


class TextProgress:
    def __init__(self, epochs: int, enabled: bool = True):
        self.epochs, self.enabled = epochs, enabled
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, total_batches: int, done_batches: int) -> None:
        if self.enabled:
            self.bar = tqdm(
                total=total_batches, initial=done_batches, desc=f"epoch {epoch}/{self.epochs}", leave=False
            )

    def batches_done(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def interval(self, record: dict) -> None:
        if self.bar is not None:
            lr = next(iter(record["lr"].values()), None)
            self.bar.set_postfix(
                loss=_fmt(record["loss"]),
                gnorm=_fmt(record["grad_norm"]),
                lr=_fmt(lr),
                skipped=record["skipped"],
            )

    def end_epoch(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            keys = ("train_loss", "val_loss", "val_acc", "val_f1", "val_auc", "ema_val_auc")
            shown = "  ".join(f"{k} {_fmt(record[k])}" for k in keys if k in record)
            tqdm.write(f"epoch {record['epoch']}/{self.epochs}  {shown}  ({record['seconds']:.1f}s)")

    def finding(self, finding: Finding) -> None:
        if self.enabled:
            tqdm.write(str(finding))

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
