"""The ``ntk-zoo train`` job: how the NTK of zoo models moves while they train on digits.

For each (width, parameterisation) of the sweep, trains the model with optax and, at log-spaced
steps, records losses and accuracies, the NTK on a fixed probe batch and how far it has moved
(:mod:`ntk_zoo.dynamics`), and the linearised network's predictions beside the real ones.
Writes ``dynamics.json``, ``dynamics.png`` and ``kernels.npz``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo import linearize
from ntk_zoo.core import check_params_finite
from ntk_zoo.dynamics import kernel_alignment, kernel_distance, spectral_change
from ntk_zoo.engine import ntk_fn
from ntk_zoo.jobs._classifier import check_digit_split, split_digits
from ntk_zoo.jobs._command import CONFIG_ERRORS, ConfigCommand
from ntk_zoo.predict import gradient_descent_mse
from ntk_zoo.spectrum import spectrum

FAMILIES = ("mlp", "wide_resnet")
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("mse", "cross_entropy")
LINEARIZED = ("auto", "closed_form", "linearize", "none")
PARAMETERIZATIONS = ("ntk", "standard")


def _check(config: Any) -> None:
    d, t = config.data, config.train
    if config.model.family not in FAMILIES:
        raise ValueError(
            f"model.family={config.model.family!r} cannot be swept over widths; use one of "
            f"{FAMILIES}."
        )
    check_digit_split(d.n_train, d.n_test)
    if not 1 < d.probe <= d.n_train:
        raise ValueError(f"data.probe={d.probe} must be in 2..n_train={d.n_train}.")
    if not config.sweep.widths or min(config.sweep.widths) < 1:
        raise ValueError(f"sweep.widths={config.sweep.widths} must be positive integers.")
    bad = [p for p in config.sweep.parameterizations if p not in PARAMETERIZATIONS]
    if bad or not config.sweep.parameterizations:
        raise ValueError(
            f"sweep.parameterizations={config.sweep.parameterizations}: use {PARAMETERIZATIONS}."
        )
    if t.optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown train.optimizer {t.optimizer!r}; use one of {OPTIMIZERS}.")
    if t.loss not in LOSSES:
        raise ValueError(f"Unknown train.loss {t.loss!r}; use one of {LOSSES}.")
    if t.standard_lr_scale not in ("width", "none"):
        raise ValueError(f"train.standard_lr_scale={t.standard_lr_scale!r}: use width or none.")
    if t.steps < 1 or t.batch_size < 0 or not t.learning_rate > 0:
        raise ValueError(
            "train.steps must be >= 1, train.batch_size >= 0 (0: full batch) and "
            "train.learning_rate > 0."
        )
    if config.record.num < 1:
        raise ValueError(f"record.num={config.record.num} must be at least 1.")
    if config.ntk.linearized not in LINEARIZED:
        raise ValueError(f"Unknown ntk.linearized {config.ntk.linearized!r}; use {LINEARIZED}.")
    if config.ntk.linearized == "closed_form" and not closed_form_applies(config):
        raise ValueError(
            "ntk.linearized='closed_form' needs train.loss='mse', train.optimizer='sgd', "
            "train.momentum=0 and train.batch_size=0 (full-batch gradient descent); use "
            "'linearize' otherwise."
        )
    if config.ntk.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "ntk.dtype='float64' needs jax_enable_x64 (the command line sets it); call "
            "jax.config.update('jax_enable_x64', True) first, or use ntk.dtype='float32'."
        )


def closed_form_applies(config: Any) -> bool:
    """Full-batch gradient descent on the MSE loss: what ``gradient_descent_mse`` solves."""
    t = config.train
    return t.loss == "mse" and t.optimizer == "sgd" and t.momentum == 0 and t.batch_size == 0


def record_steps(steps: int, num: int) -> list[int]:
    """Step 0 and about ``num`` log-spaced steps up to ``steps`` (distinct integers, sorted).

    Example:
      >>> record_steps(1000, 4)
      [0, 1, 10, 100, 1000]
    """
    logs = np.logspace(0, math.log10(steps), num) if num > 1 else np.array([steps])
    return sorted({0, *(round(float(s)) for s in logs)})


def _loss(kind: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    import optax

    if kind == "mse":  # ‖f − Y‖² / (2·n·o), as gradient_descent_mse normalises it
        return 0.5 * jnp.mean(jnp.square(logits - jax.nn.one_hot(labels, logits.shape[-1])))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _optimizer(train: Any, learning_rate: float):
    import optax

    if train.optimizer == "adam":
        return optax.adam(learning_rate)
    return optax.sgd(learning_rate, train.momentum or None)


def _metrics(kind: str, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(loss, accuracy)`` in float64 NumPy, the same losses as :func:`_loss`."""
    logits = np.asarray(logits, np.float64)
    if kind == "mse":
        loss = 0.5 * np.mean(np.square(logits - np.eye(logits.shape[-1])[labels]))
    else:
        top = logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        loss = np.mean(log_z - np.take_along_axis(logits, labels[:, None], -1)[:, 0])
    return float(loss), float(np.mean(np.argmax(logits, -1) == labels))


def _alignment(kernel: np.ndarray, labels: np.ndarray) -> float:
    """The centred alignment, ``nan`` where it is undefined (a constant kernel or labels)."""
    try:
        return kernel_alignment(kernel, labels)
    except ValueError:  # e.g. every ReLU dead: only the output biases' constant kernel is left
        return float("nan")


def _trainer(apply, loss: str, tx, x, y, batches):
    """``advance(params, state, start, stop)``: steps ``start..stop-1``, one compilation."""

    def loss_fn(params, idx):
        return _loss(loss, apply(params, x[idx]), y[idx])

    @jax.jit
    def advance(params, state, start, stop):
        def step(i, carry):
            params, state = carry
            grads = jax.grad(loss_fn)(params, batches[i])
            updates, state = tx.update(grads, state, params)
            return jax.tree.map(jnp.add, params, updates), state

        return jax.lax.fori_loop(start, stop, step, (params, state))

    return advance


def train_model(
    model: dict[str, Any],
    config: Any,
    data: dict[str, np.ndarray],
    on_record: Callable[[int], None] | None = None,
) -> dict:
    """Trains one zoo model; returns its records and its probe kernels.

    ``on_record(step)`` is called as each recorded step is reached (the progress bar's hook).
    """
    import architectures

    dtype = jnp.dtype(config.ntk.dtype)
    x_train, y_train = jnp.asarray(data["x_train"], dtype), jnp.asarray(data["y_train"])
    x_test, y_test = jnp.asarray(data["x_test"], dtype), data["y_test"]
    probe, probe_y = x_train[: config.data.probe], data["y_train"][: config.data.probe]
    key = jax.random.key(config.seed)
    pure = architectures.build(
        model, key=key, input_shape=x_train.shape[1:], calibration=x_train, dtype=dtype
    )
    apply, params0 = pure.apply, pure.params
    forward = jax.jit(apply)
    t = config.train
    lr = t.learning_rate
    if model["parameterization"] == "standard" and t.standard_lr_scale == "width":
        lr = lr / model["width"]
    steps = record_steps(t.steps, config.record.num)
    n = x_train.shape[0]
    rng = np.random.default_rng(config.seed)
    if t.batch_size == 0:
        batches = jnp.broadcast_to(jnp.arange(n), (t.steps, n))
    else:
        batches = jnp.asarray(rng.integers(0, n, (t.steps, t.batch_size)))
    tx = _optimizer(t, lr)
    advance = _trainer(apply, t.loss, tx, x_train, y_train, batches)

    mode = config.ntk.linearized
    if mode == "auto":
        mode = "closed_form" if closed_form_applies(config) else "linearize"
    kernel_fn = ntk_fn(pure, method=config.ntk.method, trace_axes=(-1,))
    method = kernel_fn.choose(probe)[0] if config.ntk.method == "auto" else config.ntk.method
    x_all = jnp.concatenate([x_train, x_test])  # one compiled forward pass and kernel for both

    def outputs(p):
        out = np.asarray(forward(p, x_all))
        return out[:n], out[n:]

    f0_train, f0_test = outputs(params0)
    if mode == "closed_form":
        full = np.asarray(ntk_fn(pure, method=config.ntk.method, trace_axes=())(x_all))
        onehot = np.eye(f0_train.shape[-1])[data["y_train"]]
        predict = gradient_descent_mse(full[:n, :n], onehot, learning_rate=lr, discrete=True)
        k_test_train = full[n:, :n]
    elif mode == "linearize":
        apply_lin = jax.jit(linearize(apply, params0))
        advance_lin = _trainer(apply_lin, t.loss, tx, x_train, y_train, batches)
        lin_params, lin_state = params0, tx.init(params0)

    params, state = params0, tx.init(params0)
    kernels, records, done = [], [], 0
    k0 = None
    for step in steps:
        if on_record is not None:
            on_record(step)
        params, state = advance(params, state, done, step)
        if mode == "linearize":
            lin_params, lin_state = advance_lin(lin_params, lin_state, done, step)
        done = step
        try:
            check_params_finite(params)  # one device round trip for all leaves
        except ValueError:
            raise ValueError(
                f"Training {model_name(model)} diverged by step {step} (non-finite "
                f"parameters) at learning rate {lr:g}: lower train.learning_rate."
            ) from None
        k = np.asarray(kernel_fn(probe, None, params), np.float64)
        spec = spectrum(k)
        if k0 is None:
            k0, spec0 = k, spec
        change = spectral_change(spec0, spec)
        f_train, f_test = outputs(params)
        loss, acc = _metrics(t.loss, f_train, data["y_train"])
        test_loss, test_acc = _metrics(t.loss, f_test, y_test)
        record = {
            "step": step,
            "loss": loss,
            "train_accuracy": acc,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "kernel_distance": kernel_distance(k0, k),
            "alignment": _alignment(k, probe_y),
            "trace": spec.trace,
            "lambda_max": spec.lambda_max,
            "condition_number": spec.condition_number,
            "trace_change": change.trace,
            "lambda_max_change": change.lambda_max,
            "condition_number_change": change.condition_number,
            "parameter_change": math.sqrt(
                sum(
                    float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
                    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params0))
                )
            ),
        }
        if mode != "none":
            if mode == "closed_form":
                lin_train, lin_test = predict(step, f0_train, f0_test, k_test_train)
            else:
                lin_all = np.asarray(apply_lin(lin_params, x_all))
                lin_train, lin_test = lin_all[:n], lin_all[n:]
            lin_loss, lin_acc = _metrics(t.loss, lin_train, data["y_train"])
            _, lin_test_acc = _metrics(t.loss, lin_test, y_test)
            record |= {
                "linearized_loss": lin_loss,
                "linearized_train_accuracy": lin_acc,
                "linearized_test_accuracy": lin_test_acc,
                # RMS over the test outputs of f_t − f_t^lin (Lee et al. 2019's gap).
                "linearized_gap": float(np.sqrt(np.mean((f_test - lin_test) ** 2))),
            }
        records.append(record)
        kernels.append(k)
    n_params = sum(math.prod(a.shape) for a in jax.tree.leaves(params0))
    info = {"n_params": n_params, "method": str(method), "learning_rate": lr, "linearized": mode}
    return {"info": info, "records": records, "kernels": np.stack(kernels), "steps": steps}


def model_name(model: dict[str, Any]) -> str:
    """``mlp-2x256-ntk``-style names for the sweep's models."""
    return f"{model['family']}-{model['depth']}x{model['width']}-{model['parameterization']}"


def _digits(config: Any) -> dict[str, np.ndarray]:
    d = config.data
    return split_digits(config.seed, d.n_train, d.n_test, image=d.image)


def run_training(config: Any, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs ``config`` (see ``configs/train.py``) and writes its files into ``workdir``.

    ``dynamics.json`` holds ``config``, ``models`` (name, width, parameterisation, #params,
    kernel method, learning rate, how the linearised predictions were made) and ``records``:
    one per model and recorded step, with ``model`` (its name), ``step``, ``loss``,
    ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``kernel_distance`` (from the step-0
    probe kernel), ``alignment`` (centred, with the probe labels), ``trace``, ``lambda_max``,
    ``condition_number``, their relative changes (``*_change``), ``parameter_change``
    (‖θ_t − θ_0‖) and, unless ``ntk.linearized="none"``, ``linearized_loss``,
    ``linearized_train_accuracy``, ``linearized_test_accuracy`` and ``linearized_gap`` (RMS of
    ``f_t − f_t^lin`` over the test outputs). ``kernels.npz`` holds per model ``i`` the probe
    kernels ``kernels_i`` (``(records, probe, probe)``, averaged over logits) and ``steps_i``,
    with ``probe_labels``. ``dynamics.png`` plots distance, alignment, κ and the gap against
    the step. Returns what ``dynamics.json`` holds.
    """
    from tqdm.auto import tqdm

    _check(config)
    start = time.perf_counter()
    data = _digits(config)
    models = [
        {**config.model.to_dict(), "width": w, "parameterization": p}
        for p in config.sweep.parameterizations
        for w in config.sweep.widths
    ]
    entries, records, arrays = [], [], {}
    bar = tqdm(models, desc="ntk-zoo train", unit="model", disable=not progress)
    for i, model in enumerate(bar):
        name = model_name(model)
        bar.set_postfix_str(name)
        begin = time.perf_counter()
        result = train_model(
            model, config, data, lambda step, name=name: bar.set_postfix_str(f"{name}, step {step}")
        )
        entries.append(
            {
                "name": name,
                "width": model["width"],
                "parameterization": model["parameterization"],
                **result["info"],
                "wall_s": time.perf_counter() - begin,
            }
        )
        records += [
            {
                "model": name,
                "width": model["width"],
                "parameterization": model["parameterization"],
                **r,
            }
            for r in result["records"]
        ]
        arrays[f"kernels_{i}"] = result["kernels"]
        arrays[f"steps_{i}"] = np.asarray(result["steps"])
    report = {
        "config": config.to_dict(),
        "models": entries,
        "records": records,
        "wall_s": time.perf_counter() - start,
    }
    with open(os.path.join(workdir, "dynamics.json"), "w") as f:
        json.dump(report, f, indent=2)
    if config.output.save_kernels:
        arrays["probe_labels"] = data["y_train"][: config.data.probe]
        np.savez(os.path.join(workdir, "kernels.npz"), **arrays)
    if config.output.plot:
        plot_dynamics(report, os.path.join(workdir, "dynamics.png"))
    return report


def plot_dynamics(report: dict[str, Any], path: str) -> None:
    """Distance from init, alignment, κ and the linearised gap against the step, per model."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    panels = [
        ("kernel_distance", "kernel distance from init"),
        ("alignment", "centred alignment with labels"),
        ("condition_number", "κ = λ_max / λ_min"),
        ("linearized_gap", "RMS gap to the linearised net"),
    ]
    records = report["records"]
    panels = [p for p in panels if p[0] in records[0]]
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels))
    widths = sorted({m["width"] for m in report["models"]})
    colors = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.85, len(widths)))
    styles = {"ntk": "-", "standard": "--"}
    for model in report["models"]:
        rows = [r for r in records if r["model"] == model["name"]]
        for ax, (key, _) in zip(axes, panels):
            # The distance is exactly 0 at step 0, off its log scale.
            shown = rows[1:] if key == "kernel_distance" else rows
            ax.plot(
                [r["step"] for r in shown],
                [r[key] for r in shown],
                styles[model["parameterization"]],
                color=colors[widths.index(model["width"])],
                marker="o",
                markersize=3,
                label=f"width {model['width']}, {model['parameterization']}",
            )
    for ax, (key, title) in zip(axes, panels):
        ax.set_xscale("symlog", linthresh=1)
        if key in ("kernel_distance", "condition_number"):
            ax.set_yscale("log")
        ax.set(title=title, xlabel="step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    cfg = report["config"]
    fig.suptitle(
        f"{cfg['model']['family']} depth {cfg['model']['depth']} on digits: "
        f"{cfg['train']['optimizer']}, {cfg['train']['loss']}, n={cfg['data']['n_train']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def train_summary(report: dict[str, Any]) -> str:
    """One line per model at its last recorded step, for the terminal."""
    header = (
        f"  {'model':<24} {'params':>9} {'test acc':>8} {'distance':>8} {'align':>6} "
        f"{'κ change':>9} {'lin. gap':>8}"
    )
    lines = [header]
    for model in report["models"]:
        last = [r for r in report["records"] if r["model"] == model["name"]][-1]
        gap = last.get("linearized_gap", float("nan"))
        lines.append(
            f"  {model['name']:<24} {model['n_params']:>9,} {last['test_accuracy']:>8.3f} "
            f"{last['kernel_distance']:>8.2e} {last['alignment']:>6.3f} "
            f"{last['condition_number_change']:>+9.2%} {gap:>8.4f}"
        )
    return "\n".join(lines)


TRAIN = ConfigCommand(
    name="train",
    summary="How the NTK moves during training: drift, alignment, κ, linearisation gap.",
    description=(
        "Trains zoo models of several widths and parameterisations on digits with optax and, at\n"
        "log-spaced steps, records loss and accuracy, the NTK on a fixed probe batch (by auto),\n"
        "its kernel distance from initialisation, its centred alignment with the labels, trace,\n"
        "lambda_max, condition number, and the linearised network's predictions and gap to the\n"
        "real one (closed form for full-batch GD on the MSE, trained otherwise). Writes\n"
        "dynamics.json, dynamics.png and kernels.npz to --workdir."
    ),
    config="configs/train.py",
    examples=(
        "ntk-zoo train --config configs/train.py --workdir runs/train",
        "ntk-zoo train --config configs/train.py:widths=64+256+1024,parameterization=ntk "
        "--workdir runs/t",
        "ntk-zoo train --config configs/train.py:optimizer=adam,loss=cross_entropy "
        "--workdir runs/adam",
        "ntk-zoo train --config configs/train.py:runlocal --workdir runs/tiny   (seconds)",
    ),
    job=run_training,
    report=train_summary,
    float64=lambda config: config.ntk.dtype == "float64",
    errors=(*CONFIG_ERRORS, KeyError, AttributeError),
)
