"""``scan=True`` zoo models: the unrolled model's parameters, stacked, and the same kernels."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
import ntk_zoo
from configs import vit as vit_config
from configs import wide_resnet as wrn_config
from tests.oracle import rel_error

DEPTH = 3  # ViT blocks: one stack of 3
N = 2  # WRN-16: 2 blocks a group, the first unrolled and a stack of 1
MODELS = {
    "vit": {
        "family": "vit",
        "variant": "test/2",
        **{"depth": DEPTH, "width": 4, "heads": 1, "mlp_dim": 4},
        "num_classes": 2,
    },
    # BatchNorm on its running statistics (the same in both models); batch_norm="batch" would
    # freeze statistics computed from the scanned model's own initial params, not these.
    "wrn": {"family": "wide_resnet", "depth": 6 * N + 4, "width": 1, "num_classes": 2},
}


def _stacked_sources(case: str, framework: str, path: str) -> list[str]:
    """The unrolled params' paths whose leaves, stacked, make the scanned leaf at ``path``."""
    if case == "vit":
        pattern, unrolled = {
            "linen": (r"^encoderblocks/", "encoderblock_{i}/"),
            "nnx": (r"^blocks/", "blocks/{i}/"),
            "haiku": (r"^vi_t/encoderblocks/encoderblock/", "vi_t/encoderblock_{i}/"),
        }[framework]
        if re.search(pattern, path):
            return [re.sub(pattern, unrolled.format(i=i), path) for i in range(DEPTH)]
        return [path]
    stack = re.search(
        {"linen": r"^group(\d)_blocks/", "nnx": r"^stacks/(\d)/"}.get(
            framework, r"^wide_res_net/group(\d)_blocks/block/"
        ),
        path,
    )
    if framework == "nnx" and path.startswith("blocks/"):  # blocks/<g>: the group's first
        group = int(path.split("/")[1])
        return [re.sub(r"^blocks/\d+/", f"blocks/{group * N}/", path)]
    if stack is None:
        return [path]
    group, rest = int(stack.group(1)), path[stack.end() :]
    name = {"linen": "Block_{k}/", "nnx": "blocks/{k}/", "haiku": "wide_res_net/block_{k}/"}
    return [name[framework].format(k=group * N + j) + rest for j in range(1, N)]


def _path(keys) -> str:
    names = [getattr(k, "key", getattr(k, "idx", None)) for k in keys]
    return "/".join(str(n) for n in names if n is not None and n != "value")


def stack_unrolled(case: str, framework: str, unrolled, scanned):
    """``unrolled``'s params in the structure of ``scanned``'s (layers stacked on axis 0)."""
    source = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(unrolled)[0]}
    target, treedef = jax.tree_util.tree_flatten_with_path(scanned)
    leaves = []
    for path, like in target:
        parts = [source[s] for s in _stacked_sources(case, framework, _path(path))]
        leaf = parts[0] if len(parts) == 1 and parts[0].shape == like.shape else jnp.stack(parts)
        assert leaf.shape == like.shape, (_path(path), leaf.shape, like.shape)
        leaves.append(leaf)
    assert sum(map(np.size, leaves)) == sum(map(np.size, jax.tree.leaves(unrolled)))
    return jax.tree.unflatten(treedef, leaves)


@pytest.mark.parametrize("framework", architectures.FRAMEWORKS)
@pytest.mark.parametrize("case", sorted(MODELS))
def test_scanned_model_has_the_unrolled_kernel(case, framework):
    shape = (2, 2, 1) if case == "wrn" else (4, 4, 1)
    x1 = jnp.asarray(np.random.default_rng(0).standard_normal((2, *shape)))
    config = {**MODELS[case], "framework": framework}
    # The scanned model's own initial values are replaced: "jit" initialises it fastest
    # (batched_init does not see through scan and falls back to lazy_init).
    build = lambda scan, init: architectures.build(
        {**config, "scan": scan},
        key=jax.random.key(0),
        input_shape=(2, 2, 1) if case == "wrn" else (4, 4, 1),
        dtype=jnp.float64,
        init=init,
    )
    unrolled, scanned = build(False, "batched"), build(True, "jit")
    params = stack_unrolled(case, framework, unrolled.params, scanned.params)
    method = "jacobian_contraction"  # SD warns on today's engine: tests/structured covers it
    want = ntk_zoo.ntk_fn(unrolled, method=method)(x1, None, unrolled.params)
    got = ntk_zoo.ntk_fn(scanned, method=method)(x1, None, params)
    assert rel_error(got, want) <= 1e-10


@pytest.mark.parametrize("module", [vit_config, wrn_config], ids=["vit", "wide_resnet"])
def test_config_scan_field(module):
    assert module.get_config().model.scan is False
    assert module.get_config("scan=True").model.scan is True
