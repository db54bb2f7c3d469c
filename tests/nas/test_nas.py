"""ntk_zoo.nas: rank correlations against scipy, proxies of known kernels, `ntk-zoo nas`."""

import json
import math
import os

import matplotlib.image
import numpy as np
import pytest
import scipy.stats

from ntk_zoo import cli, jobs, nas

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = f"{ROOT}/configs/nas.py"


def _arrays(kind, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    if kind == "continuous":
        return rng.normal(size=n), rng.normal(size=n)
    if kind == "ties":  # few distinct values: many ties in both
        return rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)
    a = rng.normal(size=n)  # correlated, with ties in one and infinities in the other
    b = np.round(a + 0.5 * rng.normal(size=n), 1)
    a[:2] = -np.inf
    return a, b


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["continuous", "ties", "correlated-inf"])
def test_rank_correlations_match_scipy(kind, seed):
    a, b = _arrays(kind, seed)
    tau = scipy.stats.kendalltau(a, b, variant="b").statistic
    rho = scipy.stats.spearmanr(a, b).statistic
    assert nas.kendall_tau(a, b) == pytest.approx(tau, abs=1e-12)
    assert nas.spearman_rho(a, b) == pytest.approx(rho, abs=1e-12)


def test_rank_correlations_of_edge_cases():
    assert nas.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert nas.spearman_rho([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert math.isnan(nas.kendall_tau([1, 1, 1], [1, 2, 3]))  # constant: undefined, as scipy
    assert math.isnan(nas.spearman_rho([1, 2, 3], [5, 5, 5]))
    np.testing.assert_array_equal(
        nas.average_ranks([2, 1, 2, 2]), scipy.stats.rankdata([2, 1, 2, 2])
    )
    with pytest.raises(ValueError, match="equally long"):
        nas.kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        nas.spearman_rho([1, np.nan], [1, 2])


def test_proxies_of_a_diagonal_kernel():
    values = nas.kernel_proxies(np.diag([8.0, 2.0, 0.5]))
    assert values["condition_number"] == pytest.approx(16.0)
    assert values["trace"] == pytest.approx(10.5)
    assert values["lambda_max"] == pytest.approx(8.0)
    assert values["lambda_min"] == pytest.approx(0.5)
    scores = nas.proxy_scores(values)
    # Signs: κ lower is better (TE-NAS), trace and λ_max higher is better (NASI; ours).
    assert scores == pytest.approx(
        {
            "condition_number": -math.log10(16),
            "trace": math.log10(10.5),
            "lambda_max": math.log10(8),
        }
    )
    better = nas.proxy_scores(nas.kernel_proxies(np.diag([8.0, 4.0, 2.0])))
    assert better["condition_number"] > scores["condition_number"]  # κ 4 beats κ 16


def test_singular_kernel_scores_worst():
    values = nas.kernel_proxies(np.ones((3, 3)))  # rank one: λ_min = 0 up to rounding
    assert values["n_nonpositive"] >= 1 or values["condition_number"] > 1e12
    if values["n_nonpositive"]:
        assert values["condition_number"] == math.inf
        assert nas.proxy_score("condition_number", values["condition_number"]) == -math.inf


def test_full_kernel_flattened_and_sum_logits():
    import jax
    import jax.numpy as jnp

    f = lambda p, x: x @ p["w"]
    params = {"w": jnp.arange(6.0).reshape(3, 2)}
    x = jax.random.normal(jax.random.key(1), (4, 3))
    full = nas.ntk_proxies(f, x, params, kernel="full", vmap_axes=0)
    mean = nas.ntk_proxies(f, x, params, kernel="mean_logits", vmap_axes=0)
    summed = nas.ntk_proxies(f, x, params, kernel="sum_logits", vmap_axes=0)
    gram = np.asarray(x @ x.T)  # a linear model's NTK: x·xᵀ per logit, none across logits
    assert full["trace"] == pytest.approx(2 * np.trace(gram))
    assert mean["trace"] == pytest.approx(np.trace(gram))
    assert summed["trace"] == pytest.approx(2 * np.trace(gram))  # 1ᵀΘ1 over two logits
    assert full["n_params"] == 6 and full["flops"] > 0
    with pytest.raises(ValueError, match="sum_logits"):
        nas.ntk_proxies(f, x, params, kernel="diag")


def _config(arg="runlocal"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("nas_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_sampling_is_deterministic_and_distinct():
    space = _config("").space
    first = jobs.sample_space(space, 16, seed=3)
    assert first == jobs.sample_space(space, 16, seed=3)
    assert first != jobs.sample_space(space, 16, seed=4)
    names = [jobs.candidate_name(m) for m in first]
    assert len(set(names)) == 16
    assert {m["family"] for m in first} == {"mlp", "wide_resnet", "vit"}
    with pytest.raises(ValueError, match="holds"):
        jobs.sample_space(_config().space, 100, seed=0)


def test_vit_knobs_in_the_space():
    space = {
        "families": ("vit",),
        "vit": {"size": "test", "patch": 4, "pool": "gap", "depth": (1, 3), "width": (0, 32)},
    }
    models = jobs.sample_space(space, 4, seed=0)
    names = sorted(jobs.candidate_name(m) for m in models)
    assert names == [
        "vit-test/4-d1-gap",
        "vit-test/4-d1-w32-gap",
        "vit-test/4-d3-gap",
        "vit-test/4-d3-w32-gap",
    ]
    assert {(m["depth"], m.get("width")) for m in models} == {
        (1, None),
        (1, 32),
        (3, None),
        (3, 32),
    }
    with pytest.raises(ValueError, match=r"optionally \['depth', 'width', 'heads', 'mlp_dim'\]"):
        jobs.sample_space({"families": ("vit",), "vit": {**space["vit"], "dpeth": 2}}, 1, seed=0)


def test_unknown_family_is_an_error():
    space = {"families": ("mlp", "resnet"), "mlp": {}}
    with pytest.raises(ValueError, match="resnet"):
        jobs.sample_space(space, 1, seed=0)


def _nas(args, capsys):
    code = cli.main(["nas", *args, "--noprogress"])
    return code, capsys.readouterr()


def test_nas_command_end_to_end(tmp_path, capsys):
    workdir = tmp_path / "nas"
    code, out = _nas(
        [
            f"--config={CONFIG}:runlocal",
            f"--workdir={workdir}",
            "--config.space.families=('mlp','vit')",  # WideResNets: slow to build, see test_run
        ],
        capsys,
    )
    assert code == 0, out.err
    assert sorted(os.listdir(workdir)) == ["nas.json", "proxies.png", "ranking.md"]
    report = json.loads((workdir / "nas.json").read_text())
    candidates = report["candidates"]
    assert len(candidates) == 3
    assert {c["model"]["family"] for c in candidates} == {"mlp", "vit"}
    for c in candidates:
        assert c["n_params"] > 0 and c["flops"] > 0
        assert set(c["proxies"]) >= {"condition_number", "trace", "lambda_max", "lambda_min"}
        assert set(c["scores"]) == set(nas.PROXIES)
        assert 0.0 <= c["accuracy"] <= 1.0 and math.isfinite(c["final_loss"])
        assert set(c["times_s"]) == {"build", "proxies", "train"}
        assert c["scores"]["trace"] == pytest.approx(math.log10(c["proxies"]["trace"]))
    accuracy = [c["accuracy"] for c in candidates]
    for name, corr in report["correlations"].items():
        scores = [c["scores"][name] for c in candidates]
        assert corr["kendall_tau"] == pytest.approx(nas.kendall_tau(scores, accuracy))
        assert corr["spearman_rho"] == pytest.approx(nas.spearman_rho(scores, accuracy))
        assert f"{corr['kendall_tau']:+.2f}" in out.out  # the printed table
    ranking = (workdir / "ranking.md").read_text()
    assert ranking.strip() in out.out
    rows = [
        ln.split("|")[2].strip() for ln in ranking.splitlines() if ln[:3] in ("| 1", "| 2", "| 3")
    ]
    by_accuracy = sorted(candidates, key=lambda c: -c["accuracy"])
    assert rows == [c["name"] for c in by_accuracy]
    for name in nas.PROXIES:  # one row per proxy, baselines included
        assert f"| {name} " in ranking
    image = matplotlib.image.imread(workdir / "proxies.png")
    assert image.shape[0] > 200 and image.std() > 0  # decodable, not blank


def _error(args, capsys):
    code, out = _nas(args, capsys)
    assert code == 2, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntk-zoo: error: "), out.err
    return lines[0]


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.space.families=('mlp','resnet')", "resnet"),
        ("--config.space.num_candidates=500", "holds"),
        ("--config.proxies.kernel=diag", "diag"),
        ("--config.data.n_train=1790", "n_train"),
        ("--config.train.optimizer=lbfgs", "lbfgs"),
        ("--config.space.mlp.dept=3", "dept"),
    ],
    ids=["family", "too-many", "kernel", "split", "optimizer", "unknown-key"],
)
def test_bad_config_is_a_one_line_error(override, message, tmp_path, capsys):
    line = _error([f"--config={CONFIG}:runlocal", f"--workdir={tmp_path}/w", override], capsys)
    assert message in line


def test_missing_workdir_and_existing_workdir(tmp_path, capsys):
    assert "--workdir" in _nas([f"--config={CONFIG}"], capsys)[1].err
    (tmp_path / "keep.txt").write_text("mine")
    assert "--overwrite" in _error([f"--config={CONFIG}:runlocal", f"--workdir={tmp_path}"], capsys)
