"""What every ``ntk-zoo`` command shares: parsing, ``--help``, workdir protection, one-line errors.

A job declares itself as a :class:`ConfigCommand` (a config-file job writing into a workdir:
``run``, ``nas``, ``train``) or an :class:`ArgsCommand` (plain options: ``demo``), with a
summary, a description and examples; ``ntk-zoo <command> --help`` is built from that
declaration (and, for config jobs, from the config file's own fields and arguments), so a new
job gets the same command-line behaviour by declaring it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

HELP_FLAGS = ("-h", "--help")
# Exceptions a job raises for a bad config or bad data: reported in one line, no traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, FileExistsError)
# The shipped configs: installed as the package data of ntk_zoo.jobs.configs (see setup.py); in
# a source checkout (on PYTHONPATH, or installed editable) they are the top-level configs/.
_JOBS = os.path.dirname(os.path.abspath(__file__))
_CONFIG_DIRS = (
    os.path.join(_JOBS, "configs"),
    os.path.join(os.path.dirname(os.path.dirname(_JOBS)), "configs"),
)


class UsageError(Exception):
    """A mistake on the command line or in a config: reported in one line, no traceback."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (a ``KeyError``'s key without its quotes).

    Example:
      >>> one_line(ValueError("bad width\\nmore detail")), one_line(KeyError("dept"))
      ('bad width', 'dept')
    """
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__


def prepare_workdir(workdir: str, overwrite: bool) -> None:
    """Creates ``workdir``; an existing non-empty one is refused unless ``overwrite``.

    Example:
      >>> import os, tempfile
      >>> d = tempfile.mkdtemp()
      >>> open(os.path.join(d, "mine.txt"), "w").close()
      >>> prepare_workdir(d, overwrite=False)
      Traceback (most recent call last):
      FileExistsError: workdir ... exists and is not empty; choose a new --workdir or pass ...
    """
    if os.path.isdir(workdir) and os.listdir(workdir) and not overwrite:
        raise FileExistsError(
            f"workdir {workdir!r} exists and is not empty; choose a new --workdir or pass "
            "--overwrite."
        )
    os.makedirs(workdir, exist_ok=True)


# --- config files ---------------------------------------------------------------------------


def _with_config(argv: Sequence[str], spec: str) -> list[str]:
    """``argv`` with its ``--config`` value replaced by ``spec``."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("--config="):
            out.append(f"--config={spec}")
        elif arg == "--config" and i + 1 < len(argv):
            out += ["--config", spec]
            skip = True
        else:
            out.append(arg)
    return out


def _config_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def shipped_configs() -> dict[str, str]:
    """The configs that ship with ntk_zoo, by name (``{"mlp": ".../mlp.py", ...}``).

    Example:
      >>> sorted(shipped_configs())
      ['mlp', 'nas', 'train', 'vit', 'wide_resnet']
    """
    for directory in _CONFIG_DIRS:
        if os.path.isdir(directory):
            return {
                name[: -len(".py")]: os.path.join(directory, name)
                for name in sorted(os.listdir(directory))
                if name.endswith(".py") and not name.startswith("_")
            }
    return {}


def find_config(path: str) -> str | None:
    """The config file ``path`` names: a file as given, else a shipped config by name (``mlp``)
    or by its path in the repository (``configs/mlp.py``); ``None`` if none exists.

    Example:
      >>> os.path.basename(find_config("mlp")), find_config("no_such_config")
      ('mlp.py', None)
    """
    if os.path.isfile(path):
        return path
    name = path[len("configs/") :] if path.startswith("configs/") else path
    name = name[: -len(".py")] if name.endswith(".py") else name
    return shipped_configs().get(name)


def _not_found(path: str) -> str:
    names = ", ".join(shipped_configs()) or "none installed"
    return f"config file {path!r} not found (nor a shipped config: {names})"


def load_config(spec: str) -> tuple[Any, Any, list[dict[str, Any]]]:
    """``(module, config, arguments)`` of ``"path.py[:args]"``: the config file's module, its
    ``get_config(args)``, and the defaults of each ``parse_arg`` call it made."""
    from ntk_zoo.config import recorded_arguments

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("ntk_zoo_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    with recorded_arguments() as arguments:
        config = module.get_config(arg or None)
    return module, config, arguments


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _columns(rows: Sequence[tuple[str, str]], indent: int = 2) -> list[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{' ' * indent}{k:<{width}}  {v}".rstrip() for k, v in rows]


# --- the two kinds of command ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConfigCommand:
    """A job driven by an ml_collections config file, writing its artefacts to ``--workdir``.

    Attributes:
      name: the subcommand (``ntk-zoo <name>``).
      summary: one line for ``ntk-zoo --help``.
      description: what the job does and writes (``--help``).
      config: the config whose fields ``--help`` lists when no ``--config`` is given: a shipped
        config's name or its path in the repository (e.g. ``configs/mlp.py``).
      examples: command lines shown by ``--help``.
      job: ``job(config, workdir, progress=...) -> report`` (a dict; ``wall_s`` is printed
        when present).
      report: the lines printed after a successful job.
      float64: whether a config asks for float64 (``jax_enable_x64`` is set before the job).
      errors: exceptions reported as one-line errors (exit status 2).
      writer: run before the workdir is touched; whether this process writes it (a job over
        several processes joins them here: only process 0 prepares and writes the workdir, the
        others' job returns ``None``).
    """

    name: str
    summary: str
    description: str
    config: str
    examples: tuple[str, ...]
    job: Callable[..., dict[str, Any]]
    report: Callable[[dict[str, Any]], str]
    float64: Callable[[Any], bool] = lambda config: False
    errors: tuple[type[BaseException], ...] = CONFIG_ERRORS
    writer: Callable[[Any], bool] = lambda config: True

    @property
    def usage(self) -> str:
        return (
            f"usage: ntk-zoo {self.name} --config NAME|FILE.py"
            "[:key=value,...] --workdir DIR [--overwrite] [--noprogress] "
            "[--config.section.key=value ...]"
        )

    def help(self, argv: Sequence[str] = ()) -> str:
        """The ``--help`` text: usage, options, the config's fields and arguments, examples."""
        lines = [self.usage, "", self.description, "", "options:"]
        lines += _columns(
            [
                ("--config NAME[:ARGS]", "a shipped config or a config file; arguments after :"),
                ("--workdir DIR", "where the outputs go (new or empty)"),
                ("--overwrite", "allow a non-empty --workdir"),
                ("--noprogress", "no progress bar"),
                ("--config.FIELD=VALUE", "override one of the config fields below"),
                ("-h, --help", "show this help and exit"),
            ]
        )
        lines += ["", f"shipped configs (--config NAME): {', '.join(shipped_configs())}"]
        spec = _config_path(argv) or self.config
        path = find_config(spec.partition(":")[0])
        if path is None:
            lines += ["", f"({_not_found(spec.partition(':')[0])}: no fields to show)"]
        else:
            _, _, args = spec.partition(":")
            try:
                _, config, arguments = load_config(path + (f":{args}" if args else ""))
            except Exception as e:  # a broken config still gets the rest of the help
                lines += ["", f"(could not load {spec!r}: {one_line(e)})"]
            else:
                shown = spec.partition(":")[0]
                for defaults in arguments:
                    lines += ["", f"arguments of {shown} (after the colon, e.g. :key=value):"]
                    lines += _columns([(k, repr(v)) for k, v in defaults.items()])
                fields = list(_flatten(config.to_dict()))
                which = f"{shown}:{args} (their values with these arguments)" if args else shown
                lines += ["", f"config fields of {which} (override with --config.FIELD=VALUE):"]
                lines += _columns([(k, repr(v)) for k, v in fields])
        lines += ["", "examples:", *(f"  {e}" for e in self.examples)]
        return "\n".join(lines)

    def _parse(self, argv: Sequence[str]) -> Any:
        from absl import flags
        from ml_collections import config_flags

        spec = _config_path(argv)
        if spec is None:
            raise UsageError(f"--config is required (see ntk-zoo {self.name} --help)\n{self.usage}")
        name, colon, args = spec.partition(":")
        path = find_config(name)
        if path is None:
            raise UsageError(_not_found(name))
        argv = [f"ntk-zoo {self.name}", *_with_config(argv, path + colon + args)]
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
        flags.DEFINE_string("workdir", None, "where outputs are written", flag_values=fv)
        flags.DEFINE_bool("overwrite", False, "allow a non-empty workdir", flag_values=fv)
        flags.DEFINE_bool("progress", True, "show a progress bar", flag_values=fv)
        try:
            with warnings.catch_warnings():  # ml_collections loads config files with load_module()
                warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
                fv(argv)
        except (AttributeError, KeyError) as e:
            overrides = [a for a in argv if a.startswith("--config.")]
            raise UsageError(f"unknown config key {e} in overrides {overrides}") from None
        except flags.Error as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise UsageError(lines[-1] if "Traceback" in str(e) else lines[0]) from None
        if not fv.workdir:
            raise UsageError(f"--workdir is required\n{self.usage}")
        return fv

    def main(self, argv: Sequence[str]) -> int:
        """Runs the job: ``--help``, or parse, protect the workdir, run, print the report."""
        if any(a in HELP_FLAGS for a in argv):
            print(self.help(argv))
            return 0
        fv = self._parse(argv)
        if self.float64(fv.config):
            import jax

            jax.config.update("jax_enable_x64", True)
        try:
            if self.writer(fv.config):
                prepare_workdir(fv.workdir, fv.overwrite)
            report = self.job(fv.config, fv.workdir, progress=fv.progress)
        except self.errors as e:
            raise UsageError(one_line(e)) from None
        if report is None:  # another process of a multi-process job writes the workdir
            import jax

            i = jax.process_index()
            print(f"ntk-zoo {self.name}: process {i} computed its share; process 0 writes")
            return 0
        wall = f" ({report['wall_s']:.0f} s)" if "wall_s" in report else ""
        print(f"ntk-zoo {self.name}: {fv.workdir}{wall}")
        print(self.report(report))
        print(f"  wrote {', '.join(sorted(os.listdir(fv.workdir)))}")
        return 0


@dataclasses.dataclass(frozen=True)
class ArgsCommand:
    """A command with plain options (no config file, no workdir), e.g. ``ntk-zoo demo``.

    Attributes:
      name, summary, description, examples: as for :class:`ConfigCommand`.
      arguments: adds the options to an ``argparse`` parser (help strings show defaults).
      run: ``run(args) -> exit status``.
    """

    name: str
    summary: str
    description: str
    examples: tuple[str, ...]
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=f"ntk-zoo {self.name}",
            description=self.description,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in self.examples),
            formatter_class=_HelpFormatter,
        )
        self.arguments(parser)
        return parser

    def help(self, argv: Sequence[str] = ()) -> str:
        return self.parser().format_help().rstrip()

    def main(self, argv: Sequence[str]) -> int:
        if any(a in HELP_FLAGS for a in argv):
            print(self.help(argv))
            return 0
        try:
            args = self.parser().parse_args(list(argv))
        except SystemExit as e:  # argparse printed its one-line error and the usage
            return int(e.code or 0)
        return self.run(args)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the description and examples as written."""


def main(commands: Mapping[str, ConfigCommand | ArgsCommand], argv: Sequence[str]) -> int:
    """Dispatches ``argv`` (without the program name) to one of ``commands``.

    ``ntk-zoo``, ``ntk-zoo -h`` and ``ntk-zoo --help`` list the commands; mistakes are one line
    on stderr and exit status 2.
    """
    listing = "\n".join(
        [
            "usage: ntk-zoo <command> [options]   (ntk-zoo <command> --help for its options)",
            "",
            "commands:",
            *_columns([(name, c.summary) for name, c in commands.items()]),
        ]
    )
    if not argv or argv[0] in HELP_FLAGS:
        print(listing, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    if name not in commands:
        print(
            f"ntk-zoo: error: unknown command {name!r}; choose one of {sorted(commands)}",
            file=sys.stderr,
        )
        return 2
    try:
        return commands[name].main(rest)
    except UsageError as e:
        print(f"ntk-zoo: error: {e}", file=sys.stderr)
        return 2
