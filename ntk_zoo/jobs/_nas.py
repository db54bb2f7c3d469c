"""The ``ntk-zoo nas`` job: sample zoo architectures, score them at init, train them briefly.

For each candidate: NTK proxies on one batch of digits at initialisation (``ntk_proxies``),
#params and FLOPs, then a short optax training run and its test accuracy. Writes ``nas.json``,
``ranking.md`` and ``proxies.png``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import architectures
from ntk_zoo.jobs._classifier import (
    OPTIMIZERS,
    check_digit_split,
    split_digits,
    train_classifier,
)
from ntk_zoo.jobs._command import CONFIG_ERRORS, ConfigCommand
from ntk_zoo.jobs._plot import plot_proxies
from ntk_zoo.jobs._space import candidate_name, sample_space
from ntk_zoo.nas import (
    PROXIES,
    PROXY_KERNELS,
    kendall_tau,
    ntk_proxies,
    proxy_scores,
    spearman_rho,
)


def _check(config: Any) -> None:
    d = config.data
    check_digit_split(d.n_train, d.n_test)
    if not 1 < d.proxy_batch <= d.n_train:
        raise ValueError(f"data.proxy_batch={d.proxy_batch} must be in 2..n_train={d.n_train}.")
    if config.proxies.kernel not in PROXY_KERNELS:
        raise ValueError(
            f"Unknown proxies.kernel {config.proxies.kernel!r}; use one of {PROXY_KERNELS}."
        )
    if config.proxies.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "proxies.dtype='float64' needs jax_enable_x64 (the command line sets it); call "
            "jax.config.update('jax_enable_x64', True) first, or use proxies.dtype='float32'."
        )
    if config.train.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"Unknown train.optimizer {config.train.optimizer!r}; use one of {OPTIMIZERS}."
        )
    if config.train.steps < 1 or config.train.batch_size < 1:
        raise ValueError("train.steps and train.batch_size must be at least 1.")


def correlations(candidates: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per proxy: Kendall τ and Spearman ρ of its score with accuracy, and its top pick.

    ``candidates`` are ``nas.json`` entries (``name``, ``scores``, ``accuracy``).

    Example:
      >>> names = ["a", "b", "c"]
      >>> scores = [{"condition_number": -k, "trace": 1.0, "lambda_max": 1.0, "n_params": p,
      ...            "flops": p} for k, p in [(1, 3), (2, 2), (3, 1)]]
      >>> cands = [{"name": n, "scores": s, "accuracy": a}
      ...          for n, s, a in zip(names, scores, [0.9, 0.5, 0.7])]
      >>> c = correlations(cands)
      >>> round(c["condition_number"]["kendall_tau"], 3), c["condition_number"]["top_pick"]
      (0.333, 'a')
    """
    acc = [c["accuracy"] for c in candidates]
    out = {}
    for name, proxy in PROXIES.items():
        scores = [c["scores"][name] for c in candidates]
        top = candidates[int(np.argmax(scores))]
        out[name] = {
            "score": proxy.label,
            "sign": proxy.sign,
            "source": proxy.source,
            "kendall_tau": kendall_tau(scores, acc),
            "spearman_rho": spearman_rho(scores, acc),
            "top_pick": top["name"],
            "top_pick_accuracy": top["accuracy"],
        }
    return out


def _evaluate(
    model: dict[str, Any], index: int, config: Any, data: dict[str, np.ndarray]
) -> dict[str, Any]:
    image = model["family"] != "mlp"
    reshape = lambda a: a.reshape(-1, 8, 8, 1) if image else a
    x_train, x_test = reshape(data["x_train"]), reshape(data["x_test"])
    x_proxy = x_train[: config.data.proxy_batch]
    key = jax.random.fold_in(jax.random.key(config.seed), index)
    dtype = jnp.dtype(config.proxies.dtype)
    x_train, x_test, x_proxy = (np.asarray(a, dtype) for a in (x_train, x_test, x_proxy))

    start = time.perf_counter()
    # One network, scored and then trained in the same dtype (each build compiles its init).
    pure = architectures.build(
        model, key=key, input_shape=x_train.shape[1:], calibration=x_proxy, dtype=dtype
    )
    build_s = time.perf_counter() - start

    start = time.perf_counter()
    values = ntk_proxies(pure, x_proxy, kernel=config.proxies.kernel, method=config.proxies.method)
    proxies_s = time.perf_counter() - start

    start = time.perf_counter()
    t = config.train
    result = train_classifier(
        pure,
        x_train,
        data["y_train"],
        x_test,
        data["y_test"],
        steps=t.steps,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        optimizer=t.optimizer,
        seed=config.seed + index,
    )
    train_s = time.perf_counter() - start
    return {
        "name": candidate_name(model),
        "model": model,
        "n_params": int(values["n_params"]),
        "flops": float(values["flops"]),
        "proxies": {k: v for k, v in values.items() if k not in ("n_params", "flops")},
        "scores": proxy_scores(values),
        "accuracy": result.accuracy,
        "final_loss": result.final_loss,
        "times_s": {"build": build_s, "proxies": proxies_s, "train": train_s},
    }


def run_search(config: Any, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the search described by ``config`` and writes its three files to ``workdir``.

    ``config`` has ``seed``, ``framework``, ``data`` (``n_train``, ``n_test``, ``proxy_batch``),
    ``space`` (``num_candidates``, ``families`` and per-family choices, see
    :func:`sample_space`), ``proxies`` (``kernel``, ``method``, ``dtype``), ``train``
    (``optimizer``, ``learning_rate``, ``steps``, ``batch_size``) and ``output.plot``; see
    ``configs/nas.py``. Returns what ``nas.json`` holds. Non-finite numbers (``κ = inf`` and its
    score ``-inf``; ``τ = nan`` when all accuracies tie) are written as JSON's ``Infinity`` /
    ``NaN`` extension, which Python's ``json`` reads back.

    Example (about a minute on a laptop CPU)::

        import importlib.util
        spec = importlib.util.spec_from_file_location("nas_config", "configs/nas.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        report = run_search(module.get_config("runlocal"), "runs/nas-tiny")
        print(ranking_table(report))
    """
    from tqdm.auto import tqdm

    _check(config)
    start = time.perf_counter()
    models = sample_space(
        config.space, config.space.num_candidates, seed=config.seed, framework=config.framework
    )
    data = split_digits(config.seed, config.data.n_train, config.data.n_test)

    candidates = []
    bar = tqdm(models, desc="ntk-zoo nas", unit="candidate", disable=not progress)
    for index, model in enumerate(bar):
        bar.set_postfix_str(candidate_name(model))
        candidates.append(_evaluate(model, index, config, data))
    report = {
        "config": config.to_dict(),
        "candidates": candidates,
        "correlations": correlations(candidates) if len(candidates) > 1 else {},
        "wall_s": time.perf_counter() - start,
    }
    with open(os.path.join(workdir, "nas.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(workdir, "ranking.md"), "w") as f:
        f.write(ranking_table(report) + "\n")
    if config.output.plot:
        title = f"{len(candidates)} zoo architectures on digits ({config.train.steps} steps)"
        plot_proxies(candidates, os.path.join(workdir, "proxies.png"), title=title)
    return report


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A markdown table; ``align`` holds ``l`` or ``r`` per column."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def cells(row: Sequence[str]) -> list[str]:
        return [f"{c:<{w}}" if a == "l" else f"{c:>{w}}" for c, w, a in zip(row, widths, align)]

    rule = ["-" * w if a == "l" else "-" * (w - 1) + ":" for w, a in zip(widths, align)]
    return ["| " + " | ".join(r) + " |" for r in [cells(header), rule, *map(cells, rows)]]


def ranking_table(report: dict[str, Any]) -> str:
    """Markdown: each proxy's rank correlation with accuracy, then the candidates by accuracy.

    ``report`` is what :func:`run_search` returns (``candidates``, ``correlations``).
    """
    candidates = report["candidates"]
    lines = []
    if report["correlations"]:
        rows = [
            (
                name,
                c["score"],
                f"{c['kendall_tau']:+.2f}",
                f"{c['spearman_rho']:+.2f}",
                f"{c['top_pick_accuracy']:.3f}",
                c["source"],
            )
            for name, c in report["correlations"].items()
        ]
        header = ("proxy", "score", "Kendall τ", "Spearman ρ", "top pick acc.", "sign from")
        lines += _table(header, rows, "llrrrl")
        best = max(candidates, key=lambda c: c["accuracy"])
        lines += ["", f"Best of {len(candidates)}: {best['name']} at {best['accuracy']:.3f}.", ""]
    rows = [
        (
            str(i),
            c["name"],
            f"{c['accuracy']:.3f}",
            f"{c['n_params']:,}",
            f"{c['flops']:.3g}",
            f"{c['proxies']['condition_number']:.3g}",
            f"{c['proxies']['trace']:.3g}",
            f"{c['proxies']['lambda_max']:.3g}",
            f"{c['times_s']['proxies']:.1f}",
            f"{c['times_s']['train']:.1f}",
        )
        for i, c in enumerate(sorted(candidates, key=lambda c: -c["accuracy"]), 1)
    ]
    header = (
        "#",
        "candidate",
        "accuracy",
        "#params",
        "FLOPs",
        "κ",
        "trace",
        "λ_max",
        "proxy s",
        "train s",
    )
    lines += _table(header, rows, "llrrrrrrrr")
    return "\n".join(lines)


NAS = ConfigCommand(
    name="nas",
    summary="Training-free architecture search: NTK proxies at init vs trained accuracy.",
    description=(
        "Samples zoo architectures (MLPs, WideResNets, ViTs), scores each at initialisation by\n"
        "NTK proxies on one batch of digits (condition number, trace, lambda_max, beside #params\n"
        "and FLOPs), trains each briefly with optax, and writes nas.json, ranking.md (Kendall tau\n"
        "and Spearman rho of each proxy with accuracy) and proxies.png to --workdir."
    ),
    config="configs/nas.py",
    examples=(
        "ntk-zoo nas --config configs/nas.py --workdir runs/nas",
        "ntk-zoo nas --config configs/nas.py:num_candidates=24,steps=500 --workdir runs/nas24",
        "ntk-zoo nas --config configs/nas.py --workdir runs/te --config.proxies.kernel=sum_logits",
        "ntk-zoo nas --config configs/nas.py:runlocal --workdir runs/nas-tiny   (seconds)",
    ),
    job=run_search,
    report=ranking_table,
    float64=lambda config: config.proxies.dtype == "float64",
    errors=(*CONFIG_ERRORS, KeyError, AttributeError),
)
