"""The experiment layer stays apart: only ntk_zoo.jobs (and the cli entry point) import the zoo."""

import ast
import pathlib
import subprocess
import sys

import ntk_zoo

PACKAGE = pathlib.Path(ntk_zoo.__file__).parent
# The experiment layer and the command-line entry points; everything else is library.
JOBS = ("jobs", "cli.py", "__main__.py")


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth (lazy ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_library_modules_never_import_the_zoo_or_the_jobs():
    library = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in JOBS]
    assert len(library) > 30  # guards against an empty walk
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(
            m
            for m in _imported_modules(p)
            if m.split(".")[0] == "architectures" or m.startswith("ntk_zoo.jobs")
        )
        for p in library
    }
    # The one exception: ntk_zoo.nas re-exports the nas job's names lazily (module __getattr__)
    # for existing users; the test below checks it stays lazy.
    assert {k: v for k, v in offenders.items() if v} == {"nas/__init__.py": ["ntk_zoo.jobs"]}


def test_the_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import architectures.jax\n    from ntk_zoo.jobs import x\n")
    assert {"architectures.jax", "ntk_zoo.jobs"} <= _imported_modules(module)


def test_import_ntk_zoo_loads_neither_jobs_nor_zoo():
    # ntk_zoo.nas keeps the job's names (run_search, ...) reachable, imported on first use only.
    code = (
        "import sys, ntk_zoo, ntk_zoo.nas, ntk_zoo.spectrum, ntk_zoo.predict; "
        "bad = sorted(m for m in sys.modules if m.startswith(('ntk_zoo.jobs', 'architectures'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_job_names_stay_reachable_from_ntk_zoo_nas():
    import ntk_zoo.jobs

    for name in ntk_zoo.nas._FROM_JOBS:
        assert getattr(ntk_zoo.nas, name) is getattr(ntk_zoo.jobs, name)
        assert name in ntk_zoo.nas.__all__ and name in dir(ntk_zoo.nas)
