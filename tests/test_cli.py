"""The `ntk-zoo` command line: `demo` end to end on a tiny setting, `--help` of every command."""

import importlib.util
import os
import re

import pytest

from ntk_zoo import cli
from ntk_zoo.config import recorded_arguments
from ntk_zoo.jobs import COMMANDS, ConfigCommand

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _default_config(path):
    """(flattened fields, config-argument defaults) of a config file, loaded independently."""
    spec = importlib.util.spec_from_file_location("config_under_test", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with recorded_arguments() as arguments:
        config = module.get_config()

    def flatten(tree, prefix=""):
        for k, v in tree.items():
            yield from flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    return dict(flatten(config.to_dict())), arguments


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


def test_every_command_is_listed():
    assert {"run", "nas", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_prints_usage_fields_and_examples(name, flag, capsys):
    assert cli.main([name, flag]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"usage: ntk-zoo {name}")
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    assert len(examples) >= 2 and all(e.startswith(f"  ntk-zoo {name}") for e in examples)
    command = COMMANDS[name]
    if isinstance(command, ConfigCommand):
        # Every field of the default config, with its default value.
        fields, arguments = _default_config(command.config)
        assert len(fields) > 5 and len(arguments) == 1
        for field, value in fields.items():
            assert re.search(rf"^  {re.escape(field)} +{re.escape(repr(value))}$", out, re.M)
        for argument, value in arguments[0].items():
            assert re.search(rf"^  {re.escape(argument)} +{re.escape(repr(value))}$", out, re.M)
        assert "--workdir DIR" in out and "--overwrite" in out
    else:  # options with their defaults
        assert re.search(r"--n N .*\(default: 128\)", out)


def test_help_shows_the_given_configs_fields(capsys):
    assert cli.main(["run", "--config", "configs/vit.py:depth=3", "--help"]) == 0
    out = capsys.readouterr().out
    assert "config fields of configs/vit.py:depth=3 (their values" in out
    assert re.search(r"^  model\.depth +3$", out, re.M)
    assert re.search(r"^  model\.variant +'test/2'$", out, re.M)


def test_top_level_help_and_mistakes(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^  {name} +\S", out, re.M)
    assert cli.main([]) == 2  # the listing, on stderr
    assert "commands:" in capsys.readouterr().err
    assert cli.main(["rnu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ntk-zoo: error: unknown command 'rnu'") and "'run'" in err
    assert cli.main(["run"]) == 2
    assert "--help" in capsys.readouterr().err.splitlines()[0]
