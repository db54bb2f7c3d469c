"""`ntk-zoo run`: every config end to end with tiny overrides, its files, and its errors."""

import json
import os

import matplotlib.image
import numpy as np
import pytest

import ntk_zoo.spectrum
from ntk_zoo import cli

RUNNABLE = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")

CONFIGS = ["configs/mlp.py", "configs/wide_resnet.py", "configs/vit.py"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, capsys):
    code = cli.main(["run", *args, "--noprogress"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("framework", ["linen", "nnx", "haiku"])
@pytest.mark.parametrize("config", CONFIGS)
def test_config_runs_end_to_end(config, framework, tmp_path, capsys):
    workdir = tmp_path / "run"
    # The automatic block size (compiled at two sizes to measure memory) runs for the MLPs; the
    # other families take one explicit block of all 12 examples.
    block = [] if "mlp" in config else ["--config.ntk.batch_size=12"]
    code, out = _run(
        [
            f"--config={ROOT}/{config}:runlocal,framework={framework}",
            f"--workdir={workdir}",
            "--config.data.n=12",
            *block,
        ],
        capsys,
    )
    assert code == 0, out.err
    assert sorted(os.listdir(workdir)) == ["kernel.npz", "report.json", "spectrum.png"]
    report = json.loads((workdir / "report.json").read_text())
    with np.load(workdir / "kernel.npz") as f:
        kernel, eig = f["kernel"], f["eigenvalues"]
    assert kernel.shape == (12, 12) and report["kernel_shape"] == [12, 12]
    np.testing.assert_allclose(report["trace"], np.trace(kernel), rtol=1e-6)
    np.testing.assert_allclose(
        eig,
        np.linalg.eigvalsh(kernel.astype(np.float64))[::-1],
        rtol=1e-6,
        atol=1e-6 * abs(eig).max(),
    )
    assert report["lambda_max"] == pytest.approx(eig[0])
    assert report["lambda_min"] == pytest.approx(eig[-1])
    assert report["method"] in RUNNABLE
    # What the block programs ran, and how auto picked it (batched measures by default).
    assert report["method_source"] in ("estimate", "measured", "wisdom")
    assert report["n_params"] > 0 and report["flops_per_example"] > 0
    assert sum(report["per_layer_trace_share"].values()) == pytest.approx(1.0)
    image = matplotlib.image.imread(workdir / "spectrum.png")
    assert image.shape[0] > 100 and image.std() > 0  # a real, non-blank picture
    assert "condition no." in out.out


def test_full_logit_blocks_report(tmp_path, capsys):
    code, out = _run(
        [
            f"--config={ROOT}/configs/mlp.py:runlocal",
            f"--workdir={tmp_path}/r",
            "--config.data.n=6",
            "--config.ntk.trace_axes=()",
            "--config.ntk.method=ntk_vector_products",
        ],
        capsys,
    )
    assert code == 0, out.err
    with np.load(tmp_path / "r" / "kernel.npz") as f:
        assert f["kernel"].shape == (6, 6, 10, 10) and f["eigenvalues"].shape == (60,)


def _error(args, capsys):
    code, out = _run(args, capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert lines[0].startswith("ntk-zoo: error: ") and "Traceback" not in out.err
    return lines[0]


def test_unknown_config_file(tmp_path, capsys):
    assert "not found" in _error(["--config=configs/nope.py", f"--workdir={tmp_path}"], capsys)


def test_unknown_override_key(tmp_path, capsys):
    line = _error(
        [f"--config={ROOT}/configs/mlp.py", f"--workdir={tmp_path}", "--config.model.wdith=3"],
        capsys,
    )
    assert "wdith" in line


def test_unknown_config_argument(tmp_path, capsys):
    line = _error([f"--config={ROOT}/configs/mlp.py:widht=3", f"--workdir={tmp_path}"], capsys)
    assert "widht" in line


@pytest.mark.parametrize(
    "content,message",
    [
        ({"x": np.array(["a", "b"])}, "dtype"),
        ({"features": np.ones((3, 4))}, "no array 'x'"),
        ({"x": np.ones(5)}, "shape"),
        (None, "not a usable .npz"),
    ],
    ids=["strings", "no-x", "1d", "not-npz"],
)
def test_bad_data_file(content, message, tmp_path, capsys):
    path = tmp_path / "data.npz"
    if content is None:
        path.write_text("not a zip file")
    else:
        np.savez(path, **content)
    line = _error(
        [
            f"--config={ROOT}/configs/mlp.py:runlocal",
            f"--workdir={tmp_path}/w",
            f"--config.data.path={path}",
        ],
        capsys,
    )
    assert message in line


def test_images_required_for_conv_families(tmp_path, capsys):
    line = _error(
        [
            f"--config={ROOT}/configs/vit.py:runlocal",
            f"--workdir={tmp_path}/w",
            "--config.data.image=False",
        ],
        capsys,
    )
    assert "needs images" in line


def test_user_npz_data_runs(tmp_path, capsys):
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 255, (5, 3, 3)).astype(np.uint8))
    code, out = _run(
        [
            f"--config={ROOT}/configs/mlp.py:runlocal",
            f"--workdir={tmp_path}/w",
            f"--config.data.path={path}",
        ],
        capsys,
    )
    assert code == 0, out.err
    assert json.loads((tmp_path / "w" / "report.json").read_text())["data"]["n"] == 5


def test_existing_workdir_is_never_overwritten(tmp_path, capsys):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "keep.txt").write_text("mine")
    line = _error([f"--config={ROOT}/configs/mlp.py:runlocal", f"--workdir={workdir}"], capsys)
    assert "--overwrite" in line
    assert (workdir / "keep.txt").read_text() == "mine"


def test_row_blocks_equal_one_block(tmp_path, capsys):
    kernels = []
    for name, block in (("one", 0), ("blocks", 5)):  # 12 rows: blocks of 5, 5 and 2 (padded)
        code, out = _run(
            [
                f"--config={ROOT}/configs/mlp.py:runlocal",
                f"--workdir={tmp_path}/{name}",
                "--config.data.n=12",
                f"--config.ntk.batch_size={block}",
                "--config.ntk.dtype=float64",
            ],
            capsys,
        )
        assert code == 0, out.err
        with np.load(tmp_path / name / "kernel.npz") as f:
            kernels.append(f["kernel"])
    np.testing.assert_allclose(kernels[1], kernels[0], rtol=1e-10, atol=1e-12)
    # Blocks: auto measured; every method it could run was timed or named with why it was not.
    report = json.loads((tmp_path / "blocks" / "report.json").read_text())
    assert report["method_source"] in ("measured", "wisdom")
    timed, excluded = set(report["method_times"]), set(report["method_excluded"])
    assert timed | excluded == set(RUNNABLE) and not timed & excluded
    assert all(report["method_excluded"].values())
    # The reason says how the method was picked, with the times (not the estimate's words).
    assert "timed" in report["method_reason"] and report["method"] in report["method_reason"]
    if report["method_source"] == "measured":  # the timing calls' blocks were kept
        assert 1 <= report["measured_blocks"] <= 3  # 3 row blocks: 3 off the diagonal


@pytest.mark.parametrize(
    "override", ["--config.ntk.vmap=False", "--config.model.batch_norm=coupled"]
)
def test_whole_batch_kernels_when_examples_interact(override, tmp_path, capsys):
    code, out = _run(
        [
            f"--config={ROOT}/configs/wide_resnet.py:runlocal",
            f"--workdir={tmp_path}/w",
            "--config.data.n=6",
            override,
            "--config.ntk.per_layer=False",  # shares: test_config_runs_end_to_end
            "--config.output.plot=False",
        ],
        capsys,
    )
    assert code == 0, out.err
    with np.load(tmp_path / "w" / "kernel.npz") as f:
        assert f["kernel"].shape == (6, 6)


def test_kernel_forced_out_of_core_reports_as_dense(tmp_path, capsys):
    """A kernel file over dense_spectrum_limit is streamed (block Lanczos from the file); the
    dense path's figures come from the same file (one job: the per-layer shares are computed
    from per-example diagonals on either path)."""
    code, out = _run(
        [
            f"--config={ROOT}/configs/mlp.py:runlocal",
            f"--workdir={tmp_path}/w",
            "--config.data.n=24",
            "--config.ntk.batch_size=10",
            "--config.ntk.dtype=float64",
            "--config.ntk.out=kernel.npy",
            "--config.ntk.dense_spectrum_limit=0",
        ],
        capsys,
    )
    assert code == 0, out.err
    assert "block Lanczos" in out.out
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    kernel = np.load(tmp_path / "w" / "kernel.npy")
    dense = ntk_zoo.spectrum.spectrum(kernel)
    assert (report["spectrum"]["path"], dense.path) == ("streamed", "dense")
    # 24 examples: Lanczos fills the space, exact, before any factorisation would be needed.
    assert report["spectrum"]["lambda_min_method"] == "lanczos"
    for key in ("lambda_max", "lambda_min", "trace", "effective_rank"):
        assert report[key] == pytest.approx(getattr(dense, key), rel=1e-6), key
    with np.load(tmp_path / "w" / "kernel.npz") as f:
        np.testing.assert_allclose(f["eigenvalues"], dense.eigenvalues[:24], rtol=1e-6)
    assert sum(report["per_layer_trace_share"].values()) == pytest.approx(1.0)


def test_kernel_out_of_core_finds_lambda_min_by_shift_invert(tmp_path, capsys):
    """300 examples: more than the 16 passes of 16 Lanczos vectors hold, so λ_min comes from
    the out-of-core Cholesky; report.json says so and gives its residual."""
    code, out = _run(
        [
            f"--config={ROOT}/configs/mlp.py:runlocal",
            f"--workdir={tmp_path}/w",
            "--config.data.n=300",
            "--config.ntk.batch_size=100",
            "--config.ntk.dtype=float64",
            "--config.ntk.out=kernel.npy",
            "--config.ntk.dense_spectrum_limit=0",
            "--config.ntk.per_layer=False",
            "--config.output.plot=False",
        ],
        capsys,
    )
    assert code == 0, out.err
    assert "lambda_min by shift-invert" in out.out
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    dense = ntk_zoo.spectrum.spectrum(np.load(tmp_path / "w" / "kernel.npy"))
    assert report["spectrum"]["lambda_min_method"] == "shift_invert"
    assert report["lambda_min"] > -report["spectrum"]["shift"]  # K + δI factorised
    # The target, 1e-6 relative, for λ_min and what follows from it.
    for key in ("lambda_max", "lambda_min", "condition_number", "trace"):
        assert report[key] == pytest.approx(getattr(dense, key), rel=1e-6), key
    assert report["spectrum"]["lambda_min_residual"] <= 1e-3 * dense.lambda_min
    assert sorted(os.listdir(tmp_path / "w")) == ["kernel.npy", "kernel.npz", "report.json"]
