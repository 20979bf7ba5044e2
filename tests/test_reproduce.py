"""Every seed failure that 05_debug reproduces is caught: a change that stops catching one fails here."""

import pytest

from nbtools.recipes import reproduce


@pytest.mark.parametrize(
    "case",
    [
        "frozen_fp16",
        "fp16_forward_overflow",
        "focal_nan",
        "class_collapse",
        "stopped_too_early",
        "deep_supervision_list",
    ],
)
def test_a_seed_failure_planted_in_a_run_is_caught(case, tmp_path):
    result = getattr(reproduce, case)(tmp_path)
    assert result.caught, str(result)
    assert result.evidence, "a catch comes with the evidence nbtools printed"
    assert str(result).startswith("CAUGHT")


@pytest.mark.parametrize("case", ["logcosh_overflow", "gamma_on_zscore"])
def test_a_seed_failure_without_a_run_is_caught(case):
    result = getattr(reproduce, case)()
    assert result.caught, str(result)


def test_a_miss_says_missed():
    assert str(reproduce.Reproduction("seed x", caught=False, evidence=["nothing"])).startswith("MISSED")
