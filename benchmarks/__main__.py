"""``python -m benchmarks <suite> [options]``: runs one suite (or ``all``) and writes its tables
to ``benchmarks/results/``. ``python -m benchmarks`` alone lists the suites."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys

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
    name = f"{suite}-quick.md" if "--quick" in argv else f"{suite}.md"
    path = os.path.join(_harness.RESULTS, name)
    with open(path, "w") as fh, contextlib.redirect_stdout(_Tee(sys.stdout, fh)):
        print(f"<!-- python -m benchmarks {' '.join([suite, *argv])} -->\n")
        importlib.import_module(module).main(argv)
    print(f"(written to {os.path.relpath(path, _harness.ROOT)})")


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


main()
