"""The streamed spectrum's fixed costs: what it skips must not change what it reports."""

import warnings

import numpy as np
import pytest

from ntk_zoo.spectrum import _shift_invert, _streamed, _threads
from tests.spectrum.test_shift_invert import as_file, psd


def test_lanczos_on_k_stops_once_what_it_reports_has_settled(tmp_path):
    """With λ_min from shift-invert, Lanczos on K stops when λ_max, the top 32 and the effective
    rank settled (9 passes here) instead of running all 16 for an end it does not report."""
    path, matrix = as_file(tmp_path, psd(400, 1e-6))  # 256 Krylov vectors < 400: no exhaustion
    dense = np.linalg.eigvalsh(matrix)
    kernel = np.load(path, mmap_mode="r")
    short = _streamed.streamed_spectrum(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # λ_min by Lanczos on K does not converge: expected
        full = _streamed.streamed_spectrum(kernel, lambda_min="lanczos")
    assert short["lambda_min_method"] == "shift_invert" and full["passes"] == 16
    assert short["passes"] < full["passes"]
    assert short["lambda_max"] == pytest.approx(dense[-1], rel=1e-6)
    assert short["lambda_min"] == pytest.approx(dense[0], rel=1e-6)
    assert short["trace"] == pytest.approx(matrix.trace(), rel=1e-12)
    top = dense[::-1][:32]
    assert np.abs(short["eigenvalues"] - top).max() <= 1e-6 * dense[-1]
    # The effective rank from the shorter basis: the same estimate as the full basis's, well
    # within its sampling error (measured 0.05 apart, standard error 6.2).
    assert (
        abs(short["effective_rank"] - full["effective_rank"]) <= 0.02 * full["effective_rank_error"]
    )
    assert short["converged"]


def test_the_first_pass_reads_the_diagonal(tmp_path, monkeypatch):
    """The trace costs no pass of its own: the first product's reads give the diagonal."""
    path, matrix = as_file(tmp_path, psd(90, 1e-3), o=3)
    stream = _streamed.RowStream(np.load(path, mmap_mode="r"), 64 << 10)
    v = np.random.default_rng(0).standard_normal((matrix.shape[0], 2))
    np.testing.assert_allclose(stream.matmat(v), matrix @ v, rtol=1e-12, atol=1e-14)
    reads = []
    monkeypatch.setattr(stream, "_read", lambda *a: reads.append(a))
    np.testing.assert_array_equal(stream.diagonal(), np.diag(matrix))
    assert reads == []


def test_mapped_tiles_equal_the_written_ones(tmp_path):
    factor = _shift_invert.TiledFactor(10, 4, str(tmp_path))  # tile rows of 4, 4, 2
    try:
        rng = np.random.default_rng(0)
        tiles = {(i, k): rng.standard_normal((factor.rows(i), factor.rows(k))) for i in range(3)
                 for k in range(i + 1)}  # fmt: skip
        for (i, k), tile in tiles.items():
            factor.write(i, k, tile)
        mapped = factor.mapped_left(2, 2)  # the short last tile row, at an unaligned offset
        assert mapped.shape == (2, 2, 4) and not mapped.flags.writeable
        for k in range(2):
            np.testing.assert_array_equal(mapped[k], tiles[2, k])
        del mapped
    finally:
        factor.close()


def test_blas_runs_on_one_thread_but_for_the_panel_products():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def threads():
        return {
            i["filepath"]: i["num_threads"]
            for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"
        }

    before = threads()
    with _threads.few_threads():
        assert set(threads().values()) == {1}
        with _threads.all_threads():
            assert set(threads().values()) == {max(before.values())}
        assert set(threads().values()) == {1}
    assert threads() == before
    with _threads.all_threads():  # outside few_threads: nothing to give back
        assert threads() == before


@pytest.mark.parametrize("o", [1, 3])
def test_a_pass_in_cast_chunks_equals_the_product(tmp_path, monkeypatch, o):
    """A pass casts a few examples at a time (CAST_CHUNK bytes): chunks that do not divide a
    read, and logits reordered per chunk, give the same ``K v`` and diagonal."""
    path, matrix = as_file(tmp_path, psd(60 * o, 1e-3), o=o)
    monkeypatch.setattr(_streamed, "CAST_CHUNK", 3 * 8 * matrix.shape[0] * o)  # 3 examples
    stream = _streamed.RowStream(np.load(path, mmap_mode="r"), 0, rows=7)  # reads of 7
    v = np.random.default_rng(1).standard_normal((matrix.shape[0], 4))
    for _ in range(2):  # the first pass (K v and Kᵀ v), then K v alone
        np.testing.assert_allclose(stream.matmat(v), matrix @ v, rtol=1e-12, atol=1e-14)
    assert stream.symmetric
    np.testing.assert_array_equal(stream.diagonal(), np.diag(matrix))
