"""Dependencies point one way (ARCHITECTURE.md): no module imports a private module or name of
another package; the library (``ntk_zoo`` minus its experiment layer) imports neither the zoo
(``architectures``) nor the experiment layer; and the library imports optional packages only
through ``ntk_zoo._extras.require``. No exceptions.

Imports are read with ``ast`` from the source of every module of ``ntk_zoo``, ``architectures``
and ``benchmarks``, nested (function-level) imports included, so nothing is imported here.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TREES = ("ntk_zoo", "architectures", "benchmarks")

# The private modules every package may import: ``ntk_zoo._compat`` touches JAX internals
# (``jax.extend.core``, ``jax._src``) so that a JAX upgrade is mended in one place, and
# ``ntk_zoo._extras`` imports optional packages with an error naming the extra to install.
# Their names are plumbing, not ntk_zoo's API.
SHARED_PRIVATE = frozenset({"ntk_zoo._compat", "ntk_zoo._extras"})

# The experiment layer (jobs, the command line, the config helpers): it sits above the library
# and the zoo, and is the only part of ntk_zoo that may import either.
EXPERIMENT_LAYER = ("ntk_zoo.jobs", "ntk_zoo.cli", "ntk_zoo.__main__", "ntk_zoo.config")

# Packages that are extras (pyproject.toml); the library imports them only through
# ntk_zoo._extras.require, never with an import statement.
OPTIONAL = ("absl", "diffrax", "equinox", "flax", "haiku", "matplotlib", "ml_collections")
OPTIONAL += ("optax", "sklearn")


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if any(part.startswith(".") for part in parts):
                continue  # e.g. benchmarks/.nt-venv, a virtual environment, not our code
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def room(module: str) -> str:
    """The package whose private modules ``module`` may import: a subpackage of ``ntk_zoo``
    (``ntk_zoo.engine``, ``ntk_zoo.structured`` with its ``rules``, ...), ``ntk_zoo`` itself for
    its top-level modules, or the whole of ``architectures`` / ``benchmarks`` (one package each:
    the zoo's frameworks share ``architectures._common`` by design)."""
    parts = module.split(".")
    if parts[0] != "ntk_zoo" or len(parts) == 1:
        return parts[0]
    if (ROOT / "ntk_zoo" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return "ntk_zoo"


def _imports(module: str, path: pathlib.Path) -> list[str]:
    """Every dotted name ``module`` imports (``from m import n`` gives ``m.n``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names


def _private_owner(name: str) -> tuple[str, str] | None:
    """For an imported ``a.b._c.d``: (``a.b._c``, the package ``a.b`` that owns it)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[: i + 1]), ".".join(parts[:i])
    return None


def violations() -> set[tuple[str, str]]:
    found = set()
    for module, path in _modules().items():
        for name in _imports(module, path):
            top = name.split(".")[0]
            if top not in TREES:
                continue
            private = _private_owner(name)
            if private is not None:
                target, owner = private
                if target not in SHARED_PRIVATE and room(owner or target) != room(module):
                    found.add((module, target))
            library = module.startswith("ntk_zoo") and not _in(module, EXPERIMENT_LAYER)
            if library and top == "architectures":
                found.add((module, "architectures"))
            zoo = module.split(".")[0] == "architectures"
            if (library or zoo) and _in(name, EXPERIMENT_LAYER):
                found.add((module, name))
    return found


def optional_imports() -> set[tuple[str, str]]:
    """(library module, optional package) for every import statement of an extra's package."""
    found = set()
    for module, path in _modules().items():
        if module.startswith("ntk_zoo") and not _in(module, EXPERIMENT_LAYER):
            for name in _imports(module, path):
                if name.split(".")[0] in OPTIONAL:
                    found.add((module, name.split(".")[0]))
    return found


def test_rooms_of_known_modules():
    assert room("ntk_zoo.structured.rules._shape") == room("ntk_zoo.structured._registry")
    assert room("ntk_zoo.nas._proxies") != room("ntk_zoo._pure_fn")
    assert room("ntk_zoo.engine._ntk") != room("ntk_zoo.core._problem")
    assert _private_owner("ntk_zoo.core._vmap.split_kwargs") == (
        "ntk_zoo.core._vmap",
        "ntk_zoo.core",
    )
    assert _private_owner("ntk_zoo.core.split_kwargs") is None


def test_the_checks_see_each_kind_of_violation(tmp_path, monkeypatch):
    (tmp_path / "ntk_zoo" / "spectrum").mkdir(parents=True)
    (tmp_path / "architectures").mkdir()
    (tmp_path / "ntk_zoo" / "spectrum" / "_bad.py").write_text(
        "def f():\n    import architectures.jax\n    from ntk_zoo.jobs import COMMANDS\n"
        "    from ntk_zoo.engine._ntk import KernelFn\n    import flax.linen\n"
    )
    (tmp_path / "architectures" / "m.py").write_text("from ntk_zoo.config import parse_arg\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert violations() == {
        ("ntk_zoo.spectrum._bad", "architectures"),
        ("ntk_zoo.spectrum._bad", "ntk_zoo.jobs.COMMANDS"),
        ("ntk_zoo.spectrum._bad", "ntk_zoo.engine._ntk"),
        ("architectures.m", "ntk_zoo.config.parse_arg"),
    }
    assert optional_imports() == {("ntk_zoo.spectrum._bad", "flax")}


def test_no_private_imports_across_packages_and_no_zoo_or_jobs_in_the_library():
    found = sorted(violations())
    assert not found, (
        "These modules import a private module or name of another package, or the library "
        "(or the zoo) imports the zoo or the experiment layer (ntk_zoo/jobs/, cli.py, "
        f"config.py): {found}. Import the public name instead (see ARCHITECTURE.md)."
    )


def test_the_library_imports_extras_only_through_require():
    found = sorted(optional_imports())
    assert not found, (
        f"{found} import an optional package directly; use "
        "ntk_zoo._extras.require(module, purpose), which names the extra to install."
    )


JAX_INTERNALS = ("jax._src", "jax.extend", "jax.core", "jax.interpreters")


def jax_internal_imports() -> set[tuple[str, str]]:
    """(module, imported name) for every import of JAX internals outside ``ntk_zoo._compat``."""
    found = set()
    for module, path in _modules().items():
        if module == "ntk_zoo._compat":
            continue
        for name in _imports(module, path):
            if name.startswith(JAX_INTERNALS):
                found.add((module, name))
    return found


def test_the_check_sees_jax_internals(tmp_path):
    source = "from jax.extend.core import Literal\nimport jax._src.core\n"
    (tmp_path / "m.py").write_text(source)
    names = _imports("m", tmp_path / "m.py")
    assert [n for n in names if n.startswith(JAX_INTERNALS)] == [
        "jax.extend.core.Literal",
        "jax._src.core",
    ]


def test_jax_internals_only_through_compat():
    found = sorted(jax_internal_imports())
    assert not found, (
        f"{found} import JAX internals directly; add what they need to ntk_zoo/_compat.py "
        "(the one module a JAX upgrade has to mend) and import it from there."
    )
