"""Kernel distance, alignment, spectral change and top-k overlap: identities and hand values."""

import numpy as np
import pytest

from ntk_zoo.dynamics import (
    kernel_alignment,
    kernel_distance,
    label_matrix,
    spectral_change,
    top_k_overlap,
)
from ntk_zoo.spectrum import flatten_kernel


def _psd(n, seed, rank=None):
    a = np.random.default_rng(seed).normal(size=(n, rank or n))
    return a @ a.T


def _full(n, o, seed):
    """A random PSD (n, n, o, o) kernel (the inverse of flatten_kernel applied to n·o PSD)."""
    return _psd(n * o, seed).reshape(n, o, n, o).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("layout", ["nn", "nnoo"])
def test_distance_zero_for_proportional_kernels_and_symmetric(layout):
    k1 = _psd(6, 0) if layout == "nn" else _full(4, 3, 0)
    k2 = _psd(6, 1) if layout == "nn" else _full(4, 3, 1)
    assert kernel_distance(k1, k1) == 0.0
    assert kernel_distance(k1, 7.5 * k1) == pytest.approx(0.0, abs=1e-15)
    d = kernel_distance(k1, k2)
    assert d == kernel_distance(k2, k1) and 0 < d < 1  # PSD kernels: inner product > 0
    oracle = 1 - np.sum(k1 * k2) / np.sqrt(np.sum(k1 * k1) * np.sum(k2 * k2))
    assert d == pytest.approx(oracle, rel=1e-12)


def test_distance_of_opposite_kernels_is_two():
    k = _psd(4, 0)
    assert kernel_distance(k, -k) == pytest.approx(2.0, rel=1e-14)


@pytest.mark.parametrize(
    "labels", [np.array([0, 1, 2, 0, 1, 2, 0]), np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0])]
)
@pytest.mark.parametrize("centered", [True, False], ids=["centred", "uncentred"])
def test_alignment_is_one_for_the_label_kernel(labels, centered):
    y = label_matrix(labels, len(labels))
    assert kernel_alignment(3.0 * y @ y.T, labels, centered=centered) == pytest.approx(1.0, 1e-14)


def test_alignment_in_unit_interval_and_matches_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 10)
    y = np.eye(3)[labels]
    h = np.eye(10) - 1 / 10
    for seed in range(5):
        k = _psd(10, seed, rank=3) * rng.uniform(0.1, 10)
        kc, tc = h @ k @ h, h @ y @ y.T @ h
        oracle = np.sum(kc * tc) / (np.linalg.norm(kc) * np.linalg.norm(tc))
        a = kernel_alignment(k, labels)
        assert a == pytest.approx(oracle, rel=1e-12) and -1 <= a <= 1
        raw = np.sum(k * (y @ y.T)) / (np.linalg.norm(k) * np.linalg.norm(y @ y.T))
        assert kernel_alignment(k, labels, centered=False) == pytest.approx(raw, rel=1e-12)
    # Anti-aligned: the negated label kernel has alignment −1 (not a kernel, but a valid input).
    assert kernel_alignment(-(y @ y.T), labels) == pytest.approx(-1.0, rel=1e-14)


def test_centring_removes_the_constant_component():
    labels = np.array([0, 1, 0, 1, 1, 0])
    y = np.eye(2)[labels]
    k = y @ y.T + 50.0  # a large constant added to the ideal kernel
    assert kernel_alignment(k, labels) == pytest.approx(1.0, rel=1e-12)
    assert kernel_alignment(k, labels, centered=False) < 0.8


def test_alignment_full_layout_uses_vec_targets_centred_over_examples():
    n, o = 5, 3
    labels = np.array([0, 2, 1, 2, 0])
    k = _full(n, o, 2)
    yc = np.eye(o)[labels] - np.eye(o)[labels].mean(0)
    v = yc.reshape(-1)
    center = np.kron(np.eye(n) - 1 / n, np.eye(o))
    kc = center @ flatten_kernel(k) @ center
    oracle = v @ kc @ v / (np.linalg.norm(kc) * (v @ v))
    assert kernel_alignment(k, labels) == pytest.approx(oracle, rel=1e-12)
    ideal = np.outer(v, v).reshape(n, o, n, o).transpose(0, 2, 1, 3)
    assert kernel_alignment(ideal, labels) == pytest.approx(1.0, rel=1e-12)


def test_spectral_change_by_hand():
    old, new = np.diag([4.0, 2.0, 1.0]), np.diag([8.0, 2.0, 0.5])
    change = spectral_change(old, new)
    assert change.trace == pytest.approx((10.5 - 7) / 7)
    assert change.lambda_max == pytest.approx(1.0)
    assert change.condition_number == pytest.approx((16 - 4) / 4)
    assert np.isnan(spectral_change(old, np.diag([1.0, 1.0, 0.0])).condition_number)  # κ = inf


def test_top_k_overlap_by_hand():
    # Θ₁'s top-2 space is span(e1, e2); Θ₂'s is span(e1, (e2 + e3)/√2): U₁ᵀU₂ has entries 1
    # and 1/√2, so the overlap is (1 + 1/2) / 2.
    k1 = np.diag([3.0, 2.0, 1.0])
    u = np.array([[1, 0, 0], [0, 1, 1], [0, 1, -1]]) / np.array([1, np.sqrt(2), np.sqrt(2)])
    k2 = u.T @ np.diag([3.0, 2.0, 1.0]) @ u
    assert top_k_overlap(k1, k2, 2) == pytest.approx(0.75, rel=1e-12)
    assert top_k_overlap(k1, k2, 1) == pytest.approx(1.0, rel=1e-12)
    assert top_k_overlap(k1, k2, 3) == pytest.approx(1.0, rel=1e-12)  # the whole space
    assert top_k_overlap(k1, np.diag([1.0, 2.0, 3.0]), 1) == pytest.approx(0.0, abs=1e-15)
    full = _full(3, 2, 0)
    assert top_k_overlap(full, 2 * full, 4) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kernel_distance(np.eye(3), np.eye(4)), "k1 has shape"),
        (lambda: kernel_distance(np.ones((3, 4)), np.ones((3, 4))), "square"),
        (lambda: kernel_distance(np.zeros((2, 2)), np.eye(2)), "zero kernel"),
        (lambda: kernel_distance(np.ones(3), np.ones(3)), "expected an"),
        (lambda: kernel_alignment(np.eye(3), [0, 1]), "over 3 examples"),
        (lambda: kernel_alignment(np.eye(3), [0, 0, 0]), "same label"),
        (lambda: kernel_alignment(np.eye(3), [0, -1, 1]), ">= 0"),
        (lambda: kernel_alignment(np.ones((2, 2, 3, 3)), np.ones((2, 2))), r"\(2, 3\)"),
        (lambda: kernel_alignment(np.ones((2, 2, 3, 3)), [0, 3]), "fit"),
        (lambda: top_k_overlap(np.eye(3), np.eye(3), 4), "k must be"),
    ],
    ids=[
        "distance-shapes",
        "distance-not-square",
        "distance-zero",
        "distance-1d",
        "alignment-n",
        "alignment-one-class",
        "alignment-negative-label",
        "alignment-full-targets",
        "alignment-label-range",
        "overlap-k",
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
