"""CI runs what the README tells a user to run: the same test command, character for character."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first bash block, without their trailing comments."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [re.split(r"\s{2,}#", line)[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command_then_lint_then_colab_parity():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    assert "bash .ci/install-browser" in test_command, test_command
    ci = (REPO / ".ci" / "run").read_text()
    steps = [
        ci.find(f"({test_command})"),
        ci.find("ruff check . && ruff format --check ."),
        ci.find(".ci/colab-parity\n"),
    ]
    assert -1 not in steps and steps == sorted(steps), (
        f".ci/run must run the README's test command {test_command!r} verbatim, then the lint, then "
        f".ci/colab-parity; found them at {steps}"
    )
    assert "export NBTOOLS_REQUIRE_BROWSER=1" in ci, "CI must fail, not skip, the browser tests"
