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


def test_core_layer_names_resolve():
    for name in ntk_zoo.core.__all__:
        assert getattr(ntk_zoo.core, name) is not None, name
    assert ntk_zoo.PureFn is ntk_zoo.core.PureFn


def test_structured_rules_declare_their_views():
    from ntk_zoo import structured

    assert {"reshape", "transpose", "neg", "convert_element_type"} <= structured.VIEWS
    assert "optimization_barrier" in structured.RULES
    assert "optimization_barrier" not in structured.VIEWS  # a rule, but not a view
    assert "dot_general" not in structured.VIEWS
    assert callable(structured.register)
