"""The fit loop and the state it keeps between steps: guards, telemetry, schedule, EMA, early
stopping, unfreezing, the data order, the RNG, and the round trip through a checkpoint."""

from nbtools.train.fit import fit

__all__ = ["fit"]
