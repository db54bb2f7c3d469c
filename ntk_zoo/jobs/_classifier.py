"""A short, deterministic training run of a ``PureFn`` classifier with optax."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo import PureFn
from ntk_zoo.data import load_digits

OPTIMIZERS = ("adam", "sgd")


class TrainResult(NamedTuple):
    """Accuracy on the test split after training, and the last training loss."""

    accuracy: float
    final_loss: float
    params: Any


def train_classifier(
    pure: PureFn,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str = "adam",
    seed: int = 0,
) -> TrainResult:
    """Trains ``pure.params`` by softmax cross-entropy for ``steps`` minibatch steps.

    Minibatches are drawn with replacement by a NumPy generator seeded with ``seed``; the whole
    loop is one ``jax.lax.scan`` (one compilation). Only ``pure.params`` change: whatever
    ``pure.apply`` holds as constants (e.g. BatchNorm statistics frozen from a calibration
    batch) stays as it is. ``optimizer="sgd"`` uses momentum 0.9.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
      >>> y = (x[:, 0] > 0).astype(np.int32)
      >>> pure = PureFn(lambda p, x: x @ p["w"], {"w": jnp.zeros((3, 2), jnp.float32)})
      >>> r = train_classifier(pure, x[:30], y[:30], x[30:], y[30:], steps=50, batch_size=10,
      ...                      learning_rate=0.1)
      >>> r.accuracy > 0.6
      True
    """
    import optax

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use one of {OPTIMIZERS}.")
    tx = optax.adam(learning_rate) if optimizer == "adam" else optax.sgd(learning_rate, 0.9)
    rng = np.random.default_rng(seed)
    batches = rng.integers(0, len(x_train), (steps, batch_size))

    def loss_fn(params, xb, yb):
        logits = pure.apply(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit  # one program: the training loop, then the test accuracy
    def fit(params, xs, ys, batches, x_test, y_test):
        def step(carry, idx):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, xs[idx], ys[idx])
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), batches)
        correct = jnp.argmax(pure.apply(params, x_test), axis=-1) == y_test
        return params, losses[-1], jnp.mean(correct)

    params, loss, acc = fit(
        pure.params,
        jnp.asarray(x_train),
        jnp.asarray(y_train),
        batches,
        jnp.asarray(x_test),
        jnp.asarray(y_test),
    )
    return TrainResult(float(acc), float(loss), params)


N_DIGITS = 1797  # scikit-learn's digits, the data the training jobs split


def check_digit_split(n_train: int, n_test: int) -> None:
    """Refuse a train/test split of the digits that is empty or larger than the data set."""
    if not (0 < n_train and 0 < n_test and n_train + n_test <= N_DIGITS):
        raise ValueError(
            f"data.n_train={n_train} and data.n_test={n_test} must be positive and add up "
            f"to at most the {N_DIGITS} digits."
        )


def split_digits(seed: int, n_train: int, n_test: int, *, image: bool = False) -> dict:
    """A seeded train/test split of the digits: ``x_train, y_train, x_test, y_test``."""
    check_digit_split(n_train, n_test)
    x, y = load_digits(image=image)
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
