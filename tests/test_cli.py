"""`ntk-zoo demo` end to end on a tiny setting."""

import re

from ntk_zoo import cli


def test_demo_prints_agreeing_methods(capsys):
    assert cli.main(["demo", "--n", "6", "--widths", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^  (\S+(?: -> \S+)?)\s+([\d.]+)\s+([\d.]+)\s+([\d.e+-]+)$", out, re.M)
    assert [r[0].split(" ")[0] for r in rows] == [
        "jacobian_contraction",
        "ntk_vector_products",
        "structured_derivatives",
        "auto",
    ] * 2
    assert all(float(r[3]) < 1e-5 for r in rows)  # float32 methods agree
    assert "condition number" in out
