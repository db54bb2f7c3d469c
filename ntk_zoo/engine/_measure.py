"""``auto``'s measured choice: time the plausible methods on the real shapes, keep the fastest.

The candidates are the methods whose estimate is within ``AutoOptions.within`` of the best one
(for a program that runs ``runs > 1`` times, those after the first only where timing them can
pay, see :func:`pays`), plus, when the program will run ``AutoOptions.runs`` times, the other
methods whose estimated cost of timing (a compile, as long as the slowest compile of the
candidates timed, and ``1 + repeats`` calls at their estimate) fits in ``AutoOptions.overhead``
of the job's estimated total (``runs`` × the best estimate), cheapest estimate first. Each is
compiled ahead of time, dropped if its compiled program does not fit the memory budget (XLA's
``memory_analysis()``), warmed up once and timed ``repeats`` times with the options' clock; the
least time per call wins and its compiled program is kept to run. The calls may compute real
work whose results the caller keeps (``batched``'s blocks).
"""

from __future__ import annotations

import math
import time
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
    return sorted(near, key=_rank(costs))


def _rank(costs: dict[str, float]) -> Callable[[Method], tuple]:
    return lambda m: (costs[m.value], TIE_ORDER.index(m) if m in TIE_ORDER else len(TIE_ORDER))


def affordable(
    costs: dict[str, float], options: AutoOptions, compile_s: float
) -> tuple[list[Method], dict[str, str]]:
    """The methods beyond :func:`candidates` whose timing the job can afford, cheapest estimate
    first, and why each of the others is not timed.

    Timing a method is estimated at ``compile_s + (1 + repeats) × its estimate``; methods are
    added while the sum stays within ``overhead × runs ×`` the least estimate (with ``runs=1``
    none is: every other method's timing costs at least twice the least estimate)."""
    near = candidates(costs, options.within)
    least = min(costs.values())
    job = options.runs * least
    spent, more, excluded = 0.0, [], {}
    for method in sorted((Method(m) for m in costs if Method(m) not in near), key=_rank(costs)):
        cost = compile_s + (1 + options.repeats) * costs[method.value]
        if spent + cost <= options.overhead * job:
            spent += cost
            more.append(method)
            continue
        excluded[method.value] = (
            f"estimated {costs[method.value] / least if least else math.inf:.3g}x the best "
            f"(> within={options.within:g}) "
            f"and timing it (~{cost:.3g} s) exceeds overhead={options.overhead:g} of the job's "
            f"estimated {job:.3g} s (runs={options.runs})"
        )
    return more, excluded


def covers(entry: dict, options: AutoOptions) -> bool:
    """Whether a stored decision timed (or skipped for memory) every method that measuring
    with ``options`` would time now; an entry without its estimates (an earlier version) does."""
    costs = entry.get("costs") or {}
    if not costs:
        return True
    try:
        compile_s = float(entry.get("compile_s", 0.0))
        near = candidates(costs, options.within)
        first_s = float(entry["times"].get(near[0].value, 0.0))
        paying, _ = pays(costs, options, first_s, compile_s)
        more, _ = affordable(costs, options, compile_s)
        wanted = {m.value for m in near[:1] + paying + more}
    except (ValueError, TypeError):  # estimates of methods this version does not have
        return False
    return wanted <= set(entry["times"]) | set(entry.get("skipped", {}))


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


def expected_gain(ratio: float, within: float) -> float:
    """The expected fraction of the best estimate's time that another method estimated
    ``ratio`` (``>= 1``) times slower saves per run, if the estimate's error is log-uniform
    within a factor ``within`` either way: ``E[max(0, 1 - X)]`` for ``ln X`` uniform on
    ``[ln ratio - ln within, ln ratio + ln within]`` (``0`` for ``within=1``)."""
    spread = math.log(within)
    if spread <= 0 or ratio >= within:
        return 0.0
    lowest = math.log(ratio) - spread  # < 0: X can fall below 1
    return (-lowest - (1 - math.exp(lowest))) / (2 * spread)


def pays(
    costs: dict[str, float], options: AutoOptions, best_s: float, compile_s: float
) -> tuple[list[Method], dict[str, str]]:
    """Which candidates after the first (:func:`candidates`) are worth timing for a program run
    ``options.runs`` times, and why the others are not.

    The first candidate is the program that runs, timed on calls whose results the caller can
    keep (``batched``'s blocks). Timing another one costs a compile (``compile_s``, the first's)
    and ``1 + repeats`` calls, each ``best_s`` (the first's measured seconds) × its estimated
    ratio ``r`` over the first; it is timed when that cost is at most the expected saving over
    the job, ``runs × best_s ×`` :func:`expected_gain` ``(r, within)``. With ``runs=1`` (a
    single call the user asked to measure) every candidate is timed, as before ``runs`` existed.
    """
    near = candidates(costs, options.within)
    if options.runs <= 1:
        return near[1:], {}
    least = costs[near[0].value]
    timed, excluded = [], {}
    for method in near[1:]:
        ratio = costs[method.value] / least if least > 0 else 1.0
        cost = compile_s + (1 + options.repeats) * best_s * max(ratio - 1, 0.0)
        gain = options.runs * best_s * expected_gain(ratio, options.within)
        if cost <= gain:
            timed.append(method)
        else:
            excluded[method.value] = (
                f"estimated {ratio:.3g}x the best; timing it (~{cost:.3g} s, a compile and "
                f"{1 + options.repeats} calls) exceeds its expected saving over runs="
                f"{options.runs} ({gain:.3g} s)"
            )
    return timed, excluded


def measure(
    estimate: Choice,
    compile_method: Callable[[Method], Any],
    call: Callable[[Any, Method], Any],
    options: AutoOptions,
) -> tuple[Choice, Any, float]:
    """Times the candidates of ``estimate`` and returns the measured :class:`Choice` (its
    ``times``: seconds per call of each candidate timed; ``skipped``: the candidates dropped for
    their memory, with why; ``excluded``: the methods not timed at all, with why), the winner's
    compiled program and the longest compile of the candidates timed (seconds, wall clock).

    ``compile_method(method)`` returns a compiled program; ``call(program, method)`` runs it
    once on real arguments (the caller may feed each call another block and keep its result).
    If no candidate fits the budget, the estimate's pick is kept (compiled).
    """
    budget = default_budget() if options.memory_budget is None else options.memory_budget
    times: dict[str, float] = {}
    skipped: dict[str, str] = {}
    best: list = [math.inf, None, None]  # seconds, method, compiled

    def time_one(method: Method) -> float:
        started = time.perf_counter()  # not the options' clock: that one times the calls
        compiled = compile_method(method)
        compile_s = time.perf_counter() - started
        held = program_bytes(compiled)
        if held is not None and held > budget:
            skipped[method.value] = f"needs {held / 2**30:.2f} GiB of {budget / 2**30:.2f}"
            return compile_s
        jax.block_until_ready(call(compiled, method))  # warm-up: first-call costs excluded
        seconds = math.inf
        for _ in range(options.repeats):
            start = options.clock()
            jax.block_until_ready(call(compiled, method))
            seconds = min(seconds, options.clock() - start)
        times[method.value] = seconds
        if best[1] is None or seconds < best[0]:
            best[:] = [seconds, method, compiled]
        return compile_s

    near = candidates(estimate.costs, options.within)
    compile_s = time_one(near[0])
    if near[0].value in times:
        paying, excluded = pays(estimate.costs, options, times[near[0].value], compile_s)
    else:  # the first does not fit: every other candidate is timed
        paying, excluded = near[1:], {}
    for method in paying:
        compile_s = max(compile_s, time_one(method))
    more, beyond = affordable(estimate.costs, options, compile_s)
    excluded.update(beyond)
    for method in more:
        time_one(method)
    if best[1] is None:  # nothing fits: run the estimate's pick (it may still fit at run time)
        choice = measured_choice(estimate, estimate.method, times, skipped, "estimate", excluded)
        return choice, None, compile_s
    return (
        measured_choice(estimate, best[1], times, skipped, "measured", excluded),
        best[2],
        compile_s,
    )


def measured_choice(
    estimate: Choice,
    method: Method,
    times: dict,
    skipped: dict,
    source: str,
    excluded: dict | None = None,
) -> Choice:
    """``estimate`` with ``method`` picked by ``source`` (``"measured"``, ``"wisdom"``)."""
    choice = Choice(method, estimate.costs, estimate.table)
    choice.measured = source in ("measured", "wisdom")
    choice.source, choice.times, choice.skipped = source, dict(times), dict(skipped)
    choice.excluded = dict(excluded or {})
    return choice
