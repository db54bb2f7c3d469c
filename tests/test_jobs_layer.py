"""The experiment layer stays above the library at run time too: ``import ntk_zoo`` and its
tool packages load neither the jobs, nor the zoo, nor any optional package (an extra).

The static rule (no import statement of them in library modules) is ``tests/test_layering.py``.
"""

import subprocess
import sys

# The experiment layer, the zoo, and the packages that only extras install.
NEVER_LOADED = ("ntk_zoo.jobs", "ntk_zoo.config", "architectures", "flax", "haiku", "optax")
NEVER_LOADED += ("diffrax", "equinox", "ml_collections", "absl", "sklearn", "matplotlib")


def test_import_ntk_zoo_loads_neither_jobs_nor_zoo_nor_extras():
    code = (
        "import sys, ntk_zoo, ntk_zoo.nas, ntk_zoo.spectrum, ntk_zoo.predict, ntk_zoo.data; "
        f"bad = sorted(m for m in sys.modules if m.startswith({NEVER_LOADED!r})); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
