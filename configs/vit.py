"""A Vision Transformer on scikit-learn's digits (8×8×1 images, so small patches).

    ntk-zoo run --config configs/vit.py --workdir runs/vit
    ntk-zoo run --config configs/vit.py:variant=Ti/4,pool=gap --workdir runs/vit_ti
    ntk-zoo run --config configs/vit.py:depth=4,width=32,heads=4 --workdir runs/vit_d4w32

Arguments: variant ("<size>/<patch>", size in test|Ti|S|B|L as in the ViT paper's table),
depth, width, heads, mlp_dim (override the size's own; 0 keeps it; width must be a multiple of
heads), framework (linen|nnx|haiku), pool (tok|gap), scan (True: the encoder blocks stacked
and applied with the framework's scan; the same model), runlocal.
Expected cost on a 2-core CPU: about 25 s wall for the default test/2 on 256 digits.
"""

from ntk_zoo.config import base_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(
        arg,
        variant="test/2",
        depth=0,
        width=0,
        heads=0,
        mlp_dim=0,
        framework="linen",
        pool="tok",
        scan=False,
        runlocal=False,
    )
    model = {
        "family": "vit",
        "framework": arg.framework,
        "variant": "test/4" if arg.runlocal else arg.variant,
        # 0: the named size's own (see architectures/_common.py's decode_vit_variant).
        "depth": arg.depth,
        "width": arg.width,
        "heads": arg.heads,
        "mlp_dim": arg.mlp_dim,
        "num_classes": 10,
        "pool": arg.pool,
        "scan": arg.scan,
        "intermediates": False,
    }
    return base_config(model, n=256, image=True, runlocal=arg.runlocal)
