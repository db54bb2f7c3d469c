"""`batched` equals the unbatched kernel exactly, resumes from checkpoints, fits budgets."""

import jax
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.parallel import _checkpoint, _memory
from ntk_zoo.parallel._blocks import Layout
from tests.cases import CASES
from tests.oracle import rel_error
from tests.parallel._counting import count_blocks_computed

EXACT = 1e-12  # the same blocks computed twice: only the summation order may differ
RNG = np.random.default_rng(0)
CASE = {c.name: c for c in CASES}
X1, X2 = RNG.standard_normal((37, 4)), RNG.standard_normal((23, 4))  # odd sizes, block 8


def _big(name):
    """A case with 37 and 23 examples (the same ones in every test, whatever the order the tests
    run in: the unbatched kernels are shared by the tests)."""
    case = CASE[name]
    rng = np.random.default_rng(sorted(CASE).index(name))
    if name == "kwarg":
        x1, x2 = rng.standard_normal((37, 3)), rng.standard_normal((23, 3))
        m1, m2 = rng.standard_normal((37, 3)), rng.standard_normal((23, 3))
        return (
            case,
            x1,
            x2,
            {"mask": m1, "temperature": np.asarray(2.0)},
            {"mask": (m1, m2), "temperature": np.asarray(2.0)},
        )
    d = case.x1.shape[1]
    x1, x2 = rng.standard_normal((37, d)), rng.standard_normal((23, d))
    return case, x1, x2, {}, {}


_UNBATCHED: dict = {}


@pytest.mark.parametrize("mesh", [None, True], ids=["1-device", "4-devices"])
@pytest.mark.parametrize("same", [True, False], ids=["x2=None", "x2"])
@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["trace", "full"])
@pytest.mark.parametrize("method", ["jacobian_contraction", "ntk_vector_products", "auto"])
@pytest.mark.parametrize("name", ["mlp", "pytree_out", "kwarg"])
def test_batched_equals_unbatched(name, method, trace_axes, same, mesh):
    assert jax.device_count() == 4
    case, x1, x2, kw_same, kw_pair = _big(name)
    kernel_fn = ntk_zoo.ntk_fn(
        case.f, method=method, trace_axes=trace_axes, vmap_axes=case.vmap_axes
    )
    kwargs = kw_same if same else kw_pair
    x2 = None if same else x2
    got = ntk_zoo.batched(kernel_fn, batch_size=8, mesh=mesh, progress=False)(
        x1, x2, case.params, **kwargs
    )
    key = (name, method, trace_axes, same)  # one unbatched kernel for both meshes
    if key not in _UNBATCHED:
        _UNBATCHED[key] = kernel_fn(x1, x2, case.params, **kwargs)
    want = _UNBATCHED[key]
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("same", [True, False], ids=["x2=None", "x2"])
def test_output_chunking(same):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, trace_axes=(), vmap_axes=0)
    x2 = None if same else X2
    got = ntk_zoo.batched(kernel_fn, batch_size=8, output_chunk=2, progress=False)(
        X1, x2, CASE["mlp"].params
    )
    assert rel_error(got, kernel_fn(X1, x2, CASE["mlp"].params)) <= EXACT


@pytest.mark.parametrize(
    "axes",
    [{"diagonal_axes": (0,)}, {"trace_axes": (0, 1)}],
    ids=["diagonal-batch", "traced-batch"],
)
def test_diagonal_and_traced_batch_axis(axes):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0, **axes)
    got = ntk_zoo.batched(kernel_fn, batch_size=8, progress=False)(X1, None, CASE["mlp"].params)
    assert rel_error(got, kernel_fn(X1, None, CASE["mlp"].params)) <= EXACT


def test_resume_after_interruption_is_identical(tmp_path, monkeypatch):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    params = CASE["mlp"].params
    whole = ntk_zoo.batched(
        kernel_fn, batch_size=8, progress=False, checkpoint_dir=str(tmp_path / "ckpt")
    )
    real_save, saved = _checkpoint.BlockStore.save, []

    def save_then_stop(self, task, leaves):
        if len(saved) == 3:
            raise KeyboardInterrupt  # the run dies after three blocks
        real_save(self, task, leaves)
        saved.append(task)

    monkeypatch.setattr(_checkpoint.BlockStore, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        whole(X1, None, params)
    monkeypatch.setattr(_checkpoint.BlockStore, "save", real_save)
    assert len(list((tmp_path / "ckpt").glob("block_*.npz"))) == 3

    computed = count_blocks_computed(monkeypatch)
    resumed = whole(X1, None, params)
    n_blocks = 5 * 6 // 2  # upper triangle of 5x5 blocks
    assert len(computed) == n_blocks - 3  # the saved blocks were not recomputed
    fresh = ntk_zoo.batched(kernel_fn, batch_size=8, progress=False)(X1, None, params)
    np.testing.assert_array_equal(resumed, fresh)


def test_mismatched_checkpoint_is_refused(tmp_path):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    params = CASE["mlp"].params
    directory = str(tmp_path / "ckpt")
    ntk_zoo.batched(kernel_fn, batch_size=8, progress=False, checkpoint_dir=directory)(
        X1, None, params
    )
    other = jax.tree.map(lambda a: a * 1.01, params)
    with pytest.raises(ValueError, match="different computation"):
        ntk_zoo.batched(kernel_fn, batch_size=8, progress=False, checkpoint_dir=directory)(
            X1, None, other
        )
    with pytest.raises(ValueError, match="different computation"):  # other settings
        ntk_zoo.batched(kernel_fn, batch_size=4, progress=False, checkpoint_dir=directory)(
            X1, None, params
        )
    forced = kernel_fn.replace(structured=ntk_zoo.StructuredOptions(uses="jacobian"))
    with pytest.raises(ValueError, match="different computation"):  # other method options
        ntk_zoo.batched(forced, batch_size=8, progress=False, checkpoint_dir=directory)(
            X1, None, params
        )


def test_automatic_block_size_respects_the_budget():
    case = CASE["mlp"]
    kernel_fn = ntk_zoo.ntk_fn(case.f, trace_axes=(), vmap_axes=0)
    layout = Layout(kernel_fn, X1, case.params, {})
    budget = 150_000
    size = _memory.pick_block_size(kernel_fn, X1, None, case.params, {}, budget, layout)
    assert 1 <= size < 37
    assert _memory.block_bytes(kernel_fn, X1, None, case.params, {}, size, layout) <= budget
    assert _memory.block_bytes(kernel_fn, X1, None, case.params, {}, 2 * size, layout) > budget
    got = ntk_zoo.batched(kernel_fn, memory_budget=budget, progress=False)(X1, None, case.params)
    assert rel_error(got, kernel_fn(X1, None, case.params)) <= EXACT


def test_progress_bar(capsys):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    ntk_zoo.batched(kernel_fn, batch_size=8)(X1, None, CASE["mlp"].params)
    err = capsys.readouterr().err
    assert "NTK blocks" in err and "15/15" in err


def test_errors():
    with pytest.raises(TypeError, match=r"ntk_zoo\.ntk_fn"):
        ntk_zoo.batched(lambda x1, x2, p: x1)
    coupled = ntk_zoo.ntk_fn(CASE["mlp"].f)  # no vmap_axes: examples may interact
    with pytest.raises(ValueError, match="independent"):
        ntk_zoo.batched(coupled, batch_size=8)(X1, None, CASE["mlp"].params)
    traced = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    with pytest.raises(ValueError, match=r"trace_axes=\(\)"):
        ntk_zoo.batched(traced, output_chunk=2)
    in_axes = ntk_zoo.ntk_fn(CASE["batch_last"].f, vmap_axes=(1, -1, {}), trace_axes=(0,))
    with pytest.raises(ValueError, match="axis 0"):
        ntk_zoo.batched(in_axes, batch_size=2)(
            CASE["batch_last"].x1, None, CASE["batch_last"].params
        )


@pytest.mark.parametrize("same", [True, False], ids=["x2=None", "x2"])
def test_out_file_equals_in_memory(tmp_path, same):
    """`out=`: one .npy per output leaf, named by its path, returned as memmaps."""
    case, x1, x2, _, _ = _big("pytree_out")
    x2 = None if same else x2
    kernel_fn = ntk_zoo.ntk_fn(case.f, trace_axes=(), vmap_axes=0)
    path = str(tmp_path / "kernel.npy")
    got = ntk_zoo.batched(kernel_fn, batch_size=8, progress=False, out=path)(x1, x2, case.params)
    want = kernel_fn(x1, x2, case.params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel.aux.0.npy", "kernel.logits.npy"]
    assert all(isinstance(a, np.memmap) for a in jax.tree.leaves(got))
    assert rel_error(got, want) <= EXACT
    assert rel_error(np.load(tmp_path / "kernel.logits.npy"), want["logits"]) <= EXACT


def test_out_diagonal_batch_axis(tmp_path):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0, diagonal_axes=(0,), trace_axes=())
    path = str(tmp_path / "diag.npy")
    got = ntk_zoo.batched(kernel_fn, batch_size=8, progress=False, out=path)(
        X1, None, CASE["mlp"].params
    )
    assert got.shape == (37, 3, 3)
    assert rel_error(got, kernel_fn(X1, None, CASE["mlp"].params)) <= EXACT


def test_out_resumes_into_the_same_file(tmp_path, monkeypatch):
    """With `out` and `checkpoint_dir` the file is the checkpoint: blocks are written once."""
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    params = CASE["mlp"].params
    whole = ntk_zoo.batched(
        kernel_fn,
        batch_size=8,
        progress=False,
        checkpoint_dir=str(tmp_path / "ckpt"),
        out=str(tmp_path / "kernel.npy"),
    )
    real_mark, marked = _checkpoint.BlockStore.mark, []

    def mark_then_stop(self, tasks):
        if len(marked) == 3:
            raise KeyboardInterrupt
        real_mark(self, tasks)
        marked.extend(tasks)

    monkeypatch.setattr(_checkpoint.BlockStore, "mark", mark_then_stop)
    with pytest.raises(KeyboardInterrupt):
        whole(X1, None, params)
    monkeypatch.setattr(_checkpoint.BlockStore, "mark", real_mark)
    ckpt = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert ckpt == ["done_0_0", "done_0_1", "done_0_2", "manifest.json"]
    # Single storage: the checkpoint's bytes are the manifest's; the blocks are in the file.
    assert sum(p.stat().st_size for p in (tmp_path / "ckpt").iterdir()) < 1024
    computed = count_blocks_computed(monkeypatch)
    resumed = whole(X1, None, params)
    assert len(computed) == 15 - 3
    assert (whole.stats.computed, whole.stats.loaded) == (15 - 3, 3)
    assert rel_error(resumed, kernel_fn(X1, None, params)) <= EXACT
    assert not list(tmp_path.glob("ckpt/block_*"))
    (tmp_path / "kernel.npy").unlink()  # the file gone: its markers void, all recomputed
    again = whole(X1, None, params)
    assert (whole.stats.computed, whole.stats.loaded) == (15, 0)
    np.testing.assert_array_equal(again, resumed)


def test_output_chunking_into_a_file_with_checkpoints(tmp_path):
    """Each pair of output chunks has its own checkpoint; `out` receives them one by one."""
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, trace_axes=(), vmap_axes=0)
    options = dict(batch_size=8, output_chunk=2, progress=False)
    directory, path = str(tmp_path / "ckpt"), str(tmp_path / "kernel.npy")
    chunked = ntk_zoo.batched(kernel_fn, checkpoint_dir=directory, out=path, **options)
    got = chunked(X1, X2, CASE["mlp"].params)
    assert isinstance(got, np.memmap)
    assert rel_error(got, kernel_fn(X1, X2, CASE["mlp"].params)) <= EXACT
    assert len(list((tmp_path / "ckpt").iterdir())) == 4  # 2×2 pairs of chunks of 3 logits
    again = chunked(X1, X2, CASE["mlp"].params)  # resumes from every pair's checkpoint
    np.testing.assert_array_equal(again, got)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A writer dying mid-write leaves nothing; concurrent writers of a block leave a whole one."""
    import threading

    store = _checkpoint.BlockStore(str(tmp_path), "key")

    def dying_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        store.save((0, 0), [np.ones(3)])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]

    def write(value):
        for _ in range(20):
            store.save((0, 1), [np.full((64, 64), value)])

    seen = []
    writers = [threading.Thread(target=write, args=(v,)) for v in (1.0, 2.0)]
    for w in writers:
        w.start()
    while any(w.is_alive() for w in writers):
        block = store.load((0, 1))
        if block is not None:
            seen.append(np.unique(block[0]).tolist())
    for w in writers:
        w.join()
    assert all(values in ([1.0], [2.0]) for values in seen)
    assert store.load((0, 1)) is not None
    assert not list(tmp_path.glob(".tmp-*"))


def test_gather_and_out_errors(tmp_path):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    with pytest.raises(ValueError, match="gather='everyone'"):
        ntk_zoo.batched(kernel_fn, gather="everyone")
    with pytest.raises(ValueError, match="checkpoint_dir= or out="):
        ntk_zoo.batched(kernel_fn, gather="none")
    with pytest.raises(ValueError, match=r"\.npy"):
        ntk_zoo.batched(kernel_fn, out=str(tmp_path / "kernel.npz"))
    traced = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0, trace_axes=(0, 1))
    with pytest.raises(ValueError, match="traced batch axis"):
        ntk_zoo.batched(traced, batch_size=8, out=str(tmp_path / "k.npy"))(
            X1, None, CASE["mlp"].params
        )


def test_gather_none_keeps_blocks_for_a_later_run(tmp_path):
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    options = dict(batch_size=8, progress=False, checkpoint_dir=str(tmp_path))
    assert (
        ntk_zoo.batched(kernel_fn, gather="none", **options)(X1, None, CASE["mlp"].params) is None
    )
    assert len(list(tmp_path.glob("block_*.npz"))) == 15
    got = ntk_zoo.batched(kernel_fn, **options)(X1, None, CASE["mlp"].params)
    assert rel_error(got, kernel_fn(X1, None, CASE["mlp"].params)) <= EXACT


def test_automatic_blocks_into_a_file_stay_a_fraction_of_it(tmp_path):
    """With out=, the budget may allow one whole-kernel block; the file gets ⌈n/4⌉ at most."""
    kernel_fn = ntk_zoo.ntk_fn(CASE["mlp"].f, vmap_axes=0)
    whole = ntk_zoo.batched(kernel_fn, progress=False, out=str(tmp_path / "k.npy"))
    got = whole(X1, None, CASE["mlp"].params)
    assert whole.stats.block_size == 10  # ⌈37/4⌉, under the budget's power of two (64)
    assert rel_error(got, kernel_fn(X1, None, CASE["mlp"].params)) <= EXACT
