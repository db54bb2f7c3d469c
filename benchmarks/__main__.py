"""``python -m benchmarks <suite> [options]``: runs one suite (or ``all``) and writes its tables
to ``benchmarks/results/``. ``python -m benchmarks`` alone lists the suites.

A suite's results file keeps its history: a run is appended to ``<suite>.md`` as a new dated
section (its command, commit and load), so earlier runs and the notes written beside them stay;
only ``<suite>-quick.md`` (smoke runs) is rewritten."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
import time

from benchmarks import SUITES, _harness


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)


def run(suite: str, argv: list[str]) -> None:
    module, question = SUITES[suite]
    if module is None:
        print(f"{suite}: {question}; no module yet.")
        return
    if "-h" in argv or "--help" in argv:  # the suite's options; no results file written
        importlib.import_module(module).main(argv)
        return
    os.makedirs(_harness.RESULTS, exist_ok=True)
    quick = "--quick" in argv
    path = os.path.join(_harness.RESULTS, f"{suite}-quick.md" if quick else f"{suite}.md")
    command = f"python -m benchmarks {' '.join([suite, *argv])}"
    append = not quick and os.path.exists(path)
    with open(path, "a" if append else "w") as fh:
        fh.write(_heading(command) if append else f"<!-- {command} -->\n\n")
        fh.flush()
        with contextlib.redirect_stdout(_Tee(sys.stdout, fh)):
            importlib.import_module(module).main(argv)
    how = "appended to" if append else "written to"
    print(f"({how} {os.path.relpath(path, _harness.ROOT)})")


def _heading(command: str) -> str:
    """The heading of a run appended to a results file: when, the command, commit and load."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=_harness.ROOT, capture_output=True
        )
        commit = out.stdout.decode().strip() or "no commit"
    except OSError:
        commit = "no commit"
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"\n## {when}: `{command}` at {commit} (load {load})\n\n"


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        for name, (module, question) in SUITES.items():
            print(f"  {name:20} {question}" + ("" if module else " [slot]"))
        print(f"  {'all':20} every suite in turn (vs-neural-tangents only if .nt-venv exists)")
        print(
            f"  {'report':20} BENCHMARKS.md from benchmarks/results/*.md (--check: is it current)"
        )
        return
    suite, rest = args[0], args[1:]
    if suite == "report":
        from benchmarks import report

        report.main(rest)
        return
    if suite == "all":
        for name, (module, _) in SUITES.items():
            if module is None:
                continue
            if name == "vs-neural-tangents" and not os.path.exists(_harness.NT_PYTHON):
                print(f"== {name}: skipped (run `bash benchmarks/nt_env.sh` first)")
                continue
            print(f"== {name}")
            run(name, rest)
        return
    if suite not in SUITES:
        sys.exit(f"unknown suite {suite!r}; choose from {', '.join([*SUITES, 'all', 'report'])}")
    run(suite, rest)


if __name__ == "__main__":
    main()
