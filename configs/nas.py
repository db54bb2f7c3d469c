"""Training-free architecture search over the zoo on scikit-learn's digits.

    ntk-zoo nas --config configs/nas.py --workdir runs/nas
    ntk-zoo nas --config configs/nas.py:num_candidates=24,steps=500 --workdir runs/nas24
    ntk-zoo nas --config configs/nas.py --workdir runs/tenas --config.proxies.kernel=sum_logits

Samples `num_candidates` distinct architectures (seeded) from MLPs (depth, width, activation,
parameterisation), WideResNets (depth, width, normalisation) and ViTs (size, patch, pooling,
and optionally depth and width beyond the size's own), scores each at initialisation on one batch of
`data.proxy_batch` digits (NTK condition number, trace, λ_max, beside #params and FLOPs), trains
it for `train.steps` Adam steps and ranks the proxies by Kendall τ with test accuracy.

Arguments: framework (linen|nnx|haiku), num_candidates, steps, seed, runlocal (3 tiny
candidates, 20 steps: for tests).
Expected cost on a 2-core CPU: about 5 minutes wall for the default 16 candidates (5:06
measured on a shared machine; WideResNets take most of it, MLPs a few seconds each).
"""

import ml_collections

from ntk_zoo.config import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, framework="linen", num_candidates=16, steps=200, seed=0, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = arg.seed
    config.framework = arg.framework
    # A seeded split of the 1,797 digits; the proxies see the first proxy_batch training digits.
    config.data = {"n_train": 1200, "n_test": 597, "proxy_batch": 64}
    config.space = {
        "num_candidates": arg.num_candidates,
        "families": ("mlp", "wide_resnet", "vit"),
        "mlp": {
            "depth": (1, 2, 4),
            "width": (16, 64, 256),
            "activation": ("relu", "tanh", "gelu"),
            "parameterization": ("ntk", "standard"),
        },
        # WideResNets cost most on a CPU (about a minute each to build and train): widen with
        # --config.space.wide_resnet.depth="(10,16)" --config.space.wide_resnet.width="(1,2)".
        "wide_resnet": {"depth": (10,), "width": (1,), "norm": ("batch", "layer", "none")},
        # A ViT's depth, width, heads and mlp_dim follow its size unless listed (0: the size's
        # own), e.g. --config.space.vit.depth="(1,2,4)" --config.space.vit.width="(16,32)".
        "vit": {
            "size": ("test",),
            "patch": (2, 4),
            "pool": ("tok", "gap"),
            "depth": (0,),
            "width": (0,),
        },
    }
    # kernel: mean_logits (Θ averaged over logits) | sum_logits (as TE-NAS) | full.
    # Jacobian contraction: the fastest to compile for 64-example kernels of small nets. dtype is
    # that of scoring and of training (float64 needs jax_enable_x64; the command line sets it).
    config.proxies = {"kernel": "mean_logits", "method": "jacobian_contraction", "dtype": "float32"}
    config.train = {
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "steps": arg.steps,
        "batch_size": 64,
    }
    config.output = {"plot": True}
    if arg.runlocal:
        config.data = {"n_train": 200, "n_test": 100, "proxy_batch": 8}
        config.space.num_candidates = 3
        config.space.mlp.width = (8, 16)
        config.space.wide_resnet = {"depth": (10,), "width": (1,), "norm": ("layer",)}
        config.space.vit = {
            "size": ("test",),
            "patch": (4,),
            "pool": ("gap",),
            "depth": (0,),
            "width": (0,),
        }
        config.train.steps = 20
        config.train.batch_size = 32
    return config
