"""The public API imports, and `import ntk_zoo` stays free of Flax and Haiku."""

import subprocess
import sys

import ntk_zoo


def test_all_names_resolve():
    for name in ntk_zoo.__all__:
        assert getattr(ntk_zoo, name) is not None, name


def test_method_values():
    assert [m.value for m in ntk_zoo.Method] == [
        "jacobian_contraction",
        "ntk_vector_products",
        "structured_derivatives",
        "auto",
    ]
    assert ntk_zoo.Method("auto") is ntk_zoo.Method.AUTO


def test_import_does_not_load_flax_or_haiku():
    code = (
        "import sys, ntk_zoo; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'haiku')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
