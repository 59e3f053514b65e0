"""The distribution as a user gets it: the wheel, installed away from the checkout.

The wheel is built from a clean copy of the checkout with the installed
setuptools (no build isolation, no index: no network), installed with
`--no-deps` into a fresh virtual environment that borrows this environment's
packages as its dependencies, and the study's main job runs there from its
console script, offline.
"""

import ast
import configparser
import csv
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib import metadata

import pytest

import kbn_study.commands
from tests.helpers import ROOT
from tests.helpers import read_histograms
from tests.helpers import read_scalars
from tests.helpers import user_environment

# Console script -> module of kbn_study/commands/ whose `main` it runs.
SCRIPTS = {
    "kbn-compare": "compare",
    "kbn-grid": "seed_grid",
    "kbn-inference-modes": "inference_modes",
    "kbn-convnet": "convnet",
    "kbn-sequential-mnist": "sequential_mnist",
    "kbn-distributed": "distributed",
    "kbn-benchmark": "benchmark",
    "kbn-covariate-shift": "covariate_shift",
    "kbn-small-batches": "small_batches",
    "kbn-keras-models": "keras_models",
    "kbn-corruptions": "corruptions",
    "kbn-fine-tuning": "fine_tuning",
}

COMMANDS = os.path.join(ROOT, "kbn_study", "commands")

# What the build reads (pyproject.toml's readme, license-files and packages):
# copied apart, so that nothing stale in the checkout (an old build/) and
# nothing large (a virtual environment, logs/) is built or copied.
_BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "kbn", "kbn_study")


def _command_modules():
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(COMMANDS)
        if name.endswith(".py") and name != "__init__.py"
    )


def _description(module):
    """The first paragraph of a command module's docstring (its --help text),
    without white space: argparse wraps it anew."""
    with open(os.path.join(COMMANDS, f"{module}.py")) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    return _letters(doc.split("\n\n")[0])


def _letters(text):
    return re.sub(r"\s+", "", text)


def _away_from_the_checkout(**extra):
    """A user's environment in which the checkout is not importable."""
    env = user_environment(**extra)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(the wheel's path, pip's output): `pip wheel --no-deps` of the checkout."""
    setuptools_major = int(metadata.version("setuptools").split(".")[0])
    assert setuptools_major >= 77, (
        "the wheel is built with the installed setuptools, which must be 77 or "
        "newer (SPDX licence): pip install -e '.[dev]' installs it. Installed: "
        f"{metadata.version('setuptools')}"
    )
    work = tmp_path_factory.mktemp("build")
    source = work / "kbn"
    source.mkdir()
    for name in _BUILD_INPUTS:
        if os.path.isdir(os.path.join(ROOT, name)):
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(os.path.join(ROOT, name), source / name, ignore=ignore)
        else:
            shutil.copy(os.path.join(ROOT, name), source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "--wheel-dir", work / "dist"]
    result = subprocess.run(
        [*map(str, command), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_away_from_the_checkout(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    (wheel,) = (work / "dist").glob("kbn-*.whl")
    return wheel, output


@pytest.fixture(scope="module")
def installed(build, tmp_path_factory):
    """A fresh virtual environment with the wheel installed: its folder.

    Its dependencies are this environment's site-packages, added as plain
    paths (so their `.pth` files, among them any editable install of the
    checkout, are not run); the wheel's own files come first on the path.
    """
    wheel, _ = build
    prefix = tmp_path_factory.mktemp("venv") / "env"
    venv.create(prefix, with_pip=False, symlinks=os.name != "nt")
    paths = {"base": str(prefix), "platbase": str(prefix)}
    own = sysconfig.get_path("purelib", vars=paths)
    with open(os.path.join(own, "dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: the kbn of this environment is left alone.
    command = [_program(prefix, "python"), "-m", "pip", "install", "--no-deps"]
    command += ["--no-index", "--ignore-installed", str(wheel)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=_away_from_the_checkout(),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return prefix


# Everything of this environment but TensorFlow and the checkout's own
# install: what `pip install "kbn[jax]"` gives a JAX user.
_NOT_IN_A_JAX_INSTALL = ("tensorflow", "kbn-", "__editable__")


@pytest.fixture(scope="module")
def jax_only(build, tmp_path_factory):
    """A fresh virtual environment without TensorFlow, the wheel installed
    with its `jax` extra: its folder.

    Its packages are this environment's, linked one by one into a folder on
    its path, TensorFlow left out (so `import tensorflow` fails there as on
    a machine that never installed it). pip installs `kbn[jax]` from the
    wheel without an index: it fails unless every requirement of the extra
    is among those packages.
    """
    wheel, _ = build
    work = tmp_path_factory.mktemp("jax-only")
    packages = work / "packages"
    packages.mkdir()
    (site_packages,) = [p for p in site.getsitepackages() if "site-packages" in p]
    for name in os.listdir(site_packages):
        if not name.startswith(_NOT_IN_A_JAX_INSTALL) and not name.endswith(".pth"):
            os.symlink(os.path.join(site_packages, name), packages / name)
    prefix = work / "env"
    venv.create(prefix, with_pip=False, symlinks=os.name != "nt")
    paths = {"base": str(prefix), "platbase": str(prefix)}
    own = sysconfig.get_path("purelib", vars=paths)
    with open(os.path.join(own, "dependencies.pth"), "w") as f:
        f.write(f"{packages}\n")
    command = [_program(prefix, "python"), "-m", "pip", "install", "--no-index"]
    command += [f"kbn[jax] @ {wheel.as_uri()}"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env=_away_from_the_checkout(),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return prefix


# A user's `fit` with kbn's TensorBoard callbacks, on JAX.
_FIT_WITH_LOGS = """
import importlib.util, sys
import numpy as np, keras, kbn
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed"
x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
model = keras.Sequential([
    keras.Input((8,)), keras.layers.Dense(16), kbn.layers.BatchNorm(),
    keras.layers.ReLU(), keras.layers.Dense(2),
])
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
log_dir = sys.argv[1]
model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
    kbn.callbacks.ValidationAccuracyRecorder((x, y), 4, log_dir=log_dir),
    kbn.callbacks.TrainingScalars(log_dir, 4),
    kbn.callbacks.BatchNormStatistics(log_dir, 4, probe_images=x[:16]),
])
print(keras.backend.backend(), kbn.__file__)
"""


@pytest.mark.slow
def test_a_jax_install_without_tensorflow_writes_tensorboard_logs(jax_only, tmp_path):
    out = _run(
        jax_only, "python", "-c", _FIT_WITH_LOGS, tmp_path / "logs", cwd=tmp_path
    )
    backend, kbn_file = out.split()[-2:]
    assert backend == "jax"
    assert os.path.realpath(kbn_file).startswith(os.path.realpath(jax_only))
    scalars = read_scalars(tmp_path / "logs")
    assert [step for step, _ in scalars["validation/accuracy"]] == [4, 8, 12]
    assert [step for step, _ in scalars["train/loss"]] == [4, 8, 12]
    assert sorted(read_histograms(tmp_path / "logs")) == [
        f"batch_norm/batch_norm/{name}"
        for name in ("beta", "gamma", "moving_mean", "moving_variance")
    ]


def _program(prefix, name):
    paths = {"base": str(prefix), "platbase": str(prefix)}
    return os.path.join(sysconfig.get_path("scripts", vars=paths), name)


def _run(prefix, program, *args, cwd):
    """Runs `program` of the environment `prefix` as a user would, offline."""
    result = subprocess.run(
        [_program(prefix, program), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=_away_from_the_checkout(KERAS_BACKEND="jax"),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


@pytest.mark.slow  # builds the wheel, once for the module (its tests: 30-40 s)
def test_the_wheel_builds_without_deprecation_warnings(build):
    _, output = build
    # setuptools says "deprecated" in its BuildBackendWarning and
    # SetuptoolsDeprecationWarning lines; pip in its "DEPRECATION:" lines.
    warnings = [
        line
        for line in output.splitlines()
        if re.search(r"deprecat", line, re.I) or re.search(r"\w+Warning\b", line)
    ]
    assert not warnings, output[-4000:]


@pytest.mark.slow
def test_the_wheel_holds_both_packages_their_data_and_the_licences(build):
    wheel, _ = build
    version = wheel.name.split("-")[1]
    info = f"kbn-{version}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = archive.read(f"{info}/METADATA").decode()
        licence = archive.read(f"{info}/licenses/LICENSE").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    for name in (
        "kbn/__init__.py",
        "kbn/layers/batch_norm.py",
        "kbn_study/commands/compare.py",
        "kbn_study/resources/mnist_5k.npz",
        "kbn_study/resources/study_results.csv",
        "kbn_study/resources/MNIST_SUBSET.md",
        f"{info}/licenses/LICENSE",
        f"{info}/licenses/kbn_study/resources/MNIST_SUBSET.md",
    ):
        assert name in names, name
    assert not [n for n in names if n.startswith(("tests/", "recipes/", "docs/"))]
    assert "License-Expression: Apache-2.0 AND CC-BY-SA-3.0" in meta
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    # The library needs Keras and NumPy; everything else is an extra.
    required = re.findall(r"^Requires-Dist: ([\w-]+)[^;\n]*$", meta, re.M)
    assert sorted(required) == ["keras", "numpy"]
    # Every command has its console script (each is run below).
    assert sorted(SCRIPTS.values()) == _command_modules()
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    assert sorted(scripts["console_scripts"]) == sorted(SCRIPTS)


@pytest.mark.slow
def test_the_installed_wheel_runs_the_main_job_offline(installed, build, tmp_path):
    wheel, _ = build
    # The README's check of the version, and where kbn comes from.
    code = (
        "import importlib.metadata, json, kbn, kbn_study; print(json.dumps(["
        "kbn.__version__, importlib.metadata.version('kbn'), kbn.__file__, "
        "kbn_study.__file__]))"
    )
    out = _run(installed, "python", "-c", code, cwd=tmp_path)
    version, declared, *files = json.loads(out.splitlines()[-1])
    assert version == declared == wheel.name.split("-")[1]
    for path in files:
        assert os.path.realpath(path).startswith(os.path.realpath(installed)), path

    # One worker process (the default is one per core): the run still goes
    # through a worker that imports kbn_study from the wheel, with one
    # start-up of Keras, JAX and TensorFlow fewer.
    out = _run(
        installed,
        "kbn-compare",
        *("--batches", 20, "--batches-per-sample", 10, "--workers", 1),
        *("--log-dir", "logs"),
        cwd=tmp_path,
    )
    # The digits shipped in the wheel (offline: no Keras cache, no download).
    assert "Data source: MNIST subset: 5,000 digits shipped with kbn_study" in out
    run = tmp_path / "logs" / "relu_lr0.01_good_20x60_sample10_seed0_mnist-subset"
    with open(run / "results.csv") as f:
        final = {
            row["network"]: float(row["final_validation_accuracy"])
            for row in csv.DictReader(f)
        }
    assert sorted(final) == ["with_bn", "without_bn"]
    for accuracy in final.values():
        assert f"{accuracy:.4f}" in out
    # Measured 0.2521 with batch norm, 0.1345 without: BN learns faster.
    assert final["with_bn"] > final["without_bn"] + 0.05, final
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["batches"] == 20


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_runs_its_command(installed, tmp_path, script):
    help_text = _run(installed, script, "--help", cwd=tmp_path)
    assert help_text.startswith(f"usage: {script} ")
    assert _description(SCRIPTS[script]) in _letters(help_text)


@pytest.mark.slow
@pytest.mark.parametrize("module", _command_modules())
def test_every_command_runs_as_a_module_of_the_installed_wheel(
    installed, tmp_path, module
):
    """`python -m kbn_study.commands.<name>`, as the benchmark starts its workers."""
    name = f"kbn_study.commands.{module}"
    out = _run(installed, "python", "-m", name, "--help", cwd=tmp_path)
    assert _description(module) in _letters(out)
    assert out.startswith(f"usage: python -m {name} ")  # a line a user can type


def test_a_console_script_without_the_study_says_what_to_install(monkeypatch, capsys):
    """The library alone installs the console scripts too; they explain."""
    needs = ("numpy", "kbn_no_such_package")
    monkeypatch.setattr(kbn_study.commands, "STUDY_NEEDS", needs)
    monkeypatch.setattr(sys, "argv", ["/some/env/bin/kbn-compare"])
    with pytest.raises(SystemExit) as exit:
        kbn_study.commands.kbn_compare()
    assert exit.value.code == 1
    assert capsys.readouterr().err == (
        "kbn-compare: error: the study needs kbn_no_such_package, not installed "
        'here. Install them with: pip install -e ".[study]" in a checkout of '
        'kbn, or pip install "dist/kbn-<version>-py3-none-any.whl[study]" with '
        "a wheel built from it (README, Setup)\n"
    )


@pytest.mark.slow
def test_the_wheel_alone_gives_usage_and_says_what_to_install(build, tmp_path):
    """The wheel in an environment with nothing else (no Keras, no study
    packages): `kbn-compare --help` prints its usage; a run says in one
    line how to install the study, and never `pip install "kbn[...]"`
    (another project's name on PyPI)."""
    wheel, _ = build
    prefix = tmp_path / "env"
    venv.create(prefix, with_pip=False, symlinks=os.name != "nt")
    python = _program(prefix, "python")
    command = [sys.executable, "-m", "pip", "--python", python, "install"]
    command += ["--no-deps", "--no-index", str(wheel)]
    result = subprocess.run(
        command, capture_output=True, text=True, env=_away_from_the_checkout()
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    help_text = _run(prefix, "kbn-compare", "--help", cwd=tmp_path)
    assert help_text.startswith("usage: kbn-compare ")
    run = subprocess.run(
        [_program(prefix, "kbn-compare"), "--batches", "10"],
        capture_output=True, text=True, cwd=tmp_path, env=_away_from_the_checkout(),
    )  # fmt: skip
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("kbn-compare: error: the study needs ")
    assert 'pip install -e ".[study]"' in line and 'pip install "kbn[' not in line
    assert not (tmp_path / "logs").exists()
