"""The package as a user installs it: from a wheel built from this checkout, into fresh virtual
environments without system site packages.

The core environment holds exactly the distributions that the wheel's core requirements
(``Requires-Dist`` without an extra) pull in, found through this environment's own metadata,
and ``pip check`` confirms that they satisfy the wheel. They are linked from this environment's
site-packages rather than downloaded, so the test needs no network beyond building the wheel
(which fetches setuptools unless this environment has setuptools >= 77).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ("ntk_zoo", "architectures", "configs", "pyproject.toml", "setup.py", "README.md")
# The top-level modules of the extras' packages (ntk_zoo._extras.EXTRAS, and equinox).
OPTIONAL = ("flax", "haiku", "optax", "diffrax", "equinox", "ml_collections", "absl")
OPTIONAL += ("sklearn", "matplotlib")

pytestmark = pytest.mark.xdist_group("install")  # one worker builds the wheel once


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(args, capture_output=True, text=True, env=env, **kwargs)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": _ignored} if copy is shutil.copytree else {}))
    setuptools = importlib.metadata.version("setuptools").split(".")
    isolation = [] if int(setuptools[0]) < 77 else ["--no-build-isolation"]
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", dist, src])
    (path,) = dist.glob("ntk_zoo-*.whl")
    return path


def _ignored(directory, names):
    return [n for n in names if n == "__pycache__" or n.endswith(".egg-info")]


def _requirements(names: list[str]) -> set[str]:
    """The distributions ``names`` need, recursively (markers evaluated, no extras)."""
    seen, todo = set(), list(names)
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in seen:
            seen.add(name)
            todo += importlib.metadata.distribution(name).requires or []
    return seen


def _venv(where: pathlib.Path, distributions: set[str], wheel: pathlib.Path) -> pathlib.Path:
    """A fresh venv holding ``distributions`` (linked from here) and ``wheel``; its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", where])
    python = where / "bin" / "python"
    purelib = sysconfig.get_path("purelib", vars={"base": str(where)})
    here = pathlib.Path(sysconfig.get_path("purelib"))
    for name in sorted(distributions):
        files = importlib.metadata.distribution(name).files or []
        for top in sorted({f.parts[0] for f in files if f.parts[0] not in ("..", "__pycache__")}):
            target = pathlib.Path(purelib) / top
            if not target.exists() and (here / top).exists():
                target.symlink_to(here / top)
    pip = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "-q", "--no-deps", "--no-index", wheel])
    _run([*pip, "check"])
    return python


def _core_requirements(wheel: pathlib.Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        lines = z.read(meta).decode().splitlines()
    requires = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]
    return [r for r in requires if "extra ==" not in r]


def test_the_wheel_ships_the_configs_and_no_top_level_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("ntk_zoo/jobs/configs/")}
    assert shipped == {p.name for p in (ROOT / "configs").glob("*.py")}
    assert "ntk_zoo/core/calibration.json" in names
    assert {n.split("/")[0] for n in names if "/" in n} == {
        "ntk_zoo",
        "architectures",
        *[n.split("/")[0] for n in names if ".dist-info/" in n],
    }


def test_core_install_computes_a_kernel_without_any_extra(wheel, tmp_path):
    core = _requirements(_core_requirements(wheel))
    assert {"jax", "jaxlib", "numpy", "opt-einsum", "tqdm"} <= core
    assert not core & {"flax", "dm-haiku", "optax", "diffrax", "ml-collections", "scikit-learn"}
    python = _venv(tmp_path / "core", core, wheel)
    code = f"""
import importlib.util, json, jax, jax.numpy as jnp, numpy as np, ntk_zoo
missing = [m for m in {OPTIONAL!r} if importlib.util.find_spec(m) is None]
f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
p = {{"w": jnp.ones((3, 4)) / 3, "v": jnp.ones((4, 2)) / 2}}
x = jnp.arange(12.0).reshape(4, 3) / 12
sd = ntk_zoo.ntk_fn(f, method="structured_derivatives")(x, None, p)
jc = ntk_zoo.ntk_fn(f, method="jacobian_contraction")(x, None, p)
try:
    ntk_zoo.from_linen(None, {{}})
except ImportError as e:
    message = str(e)
print(json.dumps({{"missing": missing, "shape": sd.shape, "diff": float(np.abs(sd - jc).max()),
                  "message": message, "file": ntk_zoo.__file__}}))
"""
    out = json.loads(_run([python, "-I", "-c", code], cwd=tmp_path).stdout)
    assert out["missing"] == list(OPTIONAL)
    assert out["shape"] == [4, 4] and out["diff"] < 1e-5  # float32, two exact methods
    assert "pip install 'ntk-zoo[flax]'" in out["message"]
    assert out["file"].startswith(str(tmp_path / "core"))


def test_with_every_extra_the_shipped_config_runs_outside_the_checkout(wheel, tmp_path):
    everything = {canonicalize_name(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    python = _venv(tmp_path / "all", everything - {"ntk-zoo"}, wheel)
    (tmp_path / "elsewhere").mkdir()
    run = [python.parent / "ntk-zoo", "run", "--config", "mlp:runlocal", "--workdir", "w"]
    result = _run([*run, "--noprogress"], cwd=tmp_path / "elsewhere")
    assert "Warning" not in result.stderr, result.stderr
    assert {"kernel.npz", "report.json"} <= set(os.listdir(tmp_path / "elsewhere" / "w"))


def test_run_help_lists_the_shipped_configs(capsys):
    from ntk_zoo import cli

    assert cli.main(["run", "--help"]) == 0
    names = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
    assert f"shipped configs (--config NAME): {', '.join(names)}" in capsys.readouterr().out


def test_a_jax_without_the_structured_internals_degrades_to_an_exact_method(tmp_path):
    code = """
import warnings, jax, jax.numpy as jnp, numpy as np
import jax.extend.core
del jax.extend.core.Literal  # as on a JAX that moved it
import ntk_zoo
from ntk_zoo import _compat
f = lambda p, x: jnp.tanh(x @ p["w"])
p, x = {"w": jnp.ones((3, 2)) / 3}, jnp.arange(12.0).reshape(4, 3) / 12
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sd = [ntk_zoo.ntk_fn(f, method="structured_derivatives")(x, None, p) for _ in range(2)]
jc = ntk_zoo.ntk_fn(f, method="jacobian_contraction")(x, None, p)
auto = ntk_zoo.ntk_fn(f, method="auto")(x, None, p)
caught = [w for w in caught if "needs JAX internals" in str(w.message)]
print(_compat.MISSING, len(caught), str(caught[0].message)[:60])
assert np.array_equal(sd[0], jc) and np.array_equal(sd[1], jc) and np.allclose(auto, jc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("('Literal',) 1 structured_derivatives needs JAX internals this JAX"), out
