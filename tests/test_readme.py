"""The README's set-up commands are what CI runs, and the optional FFCV packages stay out of the base install."""
import re

from conftest import ROOT


def setup_commands():
    """The two commands of the README's set-up block, without their comments."""
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_has_two_setup_commands_and_ci_runs_the_test_command_as_written():
    quickstart, tests = setup_commands()
    assert quickstart.endswith("bash recipes/quickstart.sh") and tests.endswith("-m pytest -q")
    assert quickstart.split(" && ")[0] == tests.split(" && ")[0]  # one install for both
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert tests in ci and ci[-1] == tests  # the last thing CI does decides its result


def test_ffcv_is_an_optional_extra():
    base = (ROOT / "requirements.txt").read_text().lower()
    extra = (ROOT / "requirements-ffcv.txt").read_text().lower()
    assert "ffcv" not in base and "numba" not in base and re.search(r"^ffcv==", extra, re.M)
    assert "requirements-ffcv.txt" in (ROOT / ".ci/run").read_text()
