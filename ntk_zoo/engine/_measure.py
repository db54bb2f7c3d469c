"""``auto``'s measured choice: time the plausible methods on the real shapes, keep the fastest.

The candidates are the methods whose estimate is within ``AutoOptions.within`` of the best one.
Each is compiled ahead of time, dropped if its compiled program does not fit the memory budget
(XLA's ``memory_analysis()``), warmed up once and timed ``repeats`` times with the options'
clock; the least time per call wins and its compiled program is kept to run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from ntk_zoo.engine._cost import TIE_ORDER, Choice
from ntk_zoo.engine._method import Method
from ntk_zoo.engine._wisdom import AutoOptions


def candidates(costs: dict[str, float], within: float) -> list[Method]:
    """The methods estimated within ``within`` times the least estimate, cheapest first (ties:
    ``TIE_ORDER``)."""
    least = min(costs.values())
    near = [Method(m) for m, c in costs.items() if c <= least * within or c == least]
    rank = lambda m: (costs[m.value], TIE_ORDER.index(m) if m in TIE_ORDER else len(TIE_ORDER))
    return sorted(near, key=rank)


def program_bytes(compiled: Any) -> float | None:
    """Bytes a compiled program holds at once by XLA's ``memory_analysis()`` (arguments, outputs
    and temporaries; ``None`` where the backend does not say)."""
    try:
        stats = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        return None
    if stats is None:
        return None
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    return float(sum(getattr(stats, name, 0) for name in fields))


def default_budget() -> float:
    """The default device's memory limit where JAX reports one, else no limit (``inf``)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        stats = {}
    return float(stats.get("bytes_limit", math.inf))


def measure(
    estimate: Choice,
    compile_method: Callable[[Method], Any],
    call: Callable[[Any], Any],
    options: AutoOptions,
) -> tuple[Choice, Any]:
    """Times the candidates of ``estimate`` and returns the measured :class:`Choice` (its
    ``times``: seconds per call of each candidate timed; ``skipped``: the others, with why) and
    the winner's compiled program.

    ``compile_method(method)`` returns a compiled program; ``call(program)`` runs it once on the
    real arguments. If no candidate fits the budget, the estimate's pick is kept (compiled).
    """
    budget = default_budget() if options.memory_budget is None else options.memory_budget
    times: dict[str, float] = {}
    skipped: dict[str, str] = {}
    best: tuple[float, Method, Any] | None = None
    for method in candidates(estimate.costs, options.within):
        compiled = compile_method(method)
        held = program_bytes(compiled)
        if held is not None and held > budget:
            skipped[method.value] = f"needs {held / 2**30:.2f} GiB of {budget / 2**30:.2f}"
            continue
        jax.block_until_ready(call(compiled))  # warm-up: first-call costs are not the method's
        seconds = math.inf
        for _ in range(options.repeats):
            start = options.clock()
            jax.block_until_ready(call(compiled))
            seconds = min(seconds, options.clock() - start)
        times[method.value] = seconds
        if best is None or seconds < best[0]:
            best = (seconds, method, compiled)
    if best is None:  # nothing fits: run the estimate's pick (it may still fit at run time)
        return measured_choice(estimate, estimate.method, times, skipped, "estimate"), None
    return measured_choice(estimate, best[1], times, skipped, "measured"), best[2]


def measured_choice(
    estimate: Choice, method: Method, times: dict, skipped: dict, source: str
) -> Choice:
    """``estimate`` with ``method`` picked by ``source`` (``"measured"``, ``"wisdom"``)."""
    choice = Choice(method, estimate.costs, estimate.table)
    choice.measured = source in ("measured", "wisdom")
    choice.source, choice.times, choice.skipped = source, dict(times), dict(skipped)
    return choice
