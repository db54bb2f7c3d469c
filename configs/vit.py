"""A Vision Transformer on scikit-learn's digits (8×8×1 images, so small patches).

    ntk-zoo run --config configs/vit.py --workdir runs/vit
    ntk-zoo run --config configs/vit.py:variant=Ti/4,pool=gap --workdir runs/vit_ti

Arguments: variant ("<size>/<patch>", size in test|Ti|S|B|L as in the ViT paper's table),
framework (linen|nnx|haiku), pool (tok|gap), runlocal.
Expected cost on a 2-core CPU: about 25 s wall for the default test/2 on 256 digits.
"""

from ntk_zoo.config import base_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, variant="test/2", framework="linen", pool="tok", runlocal=False)
    model = {
        "family": "vit",
        "framework": arg.framework,
        "variant": "test/4" if arg.runlocal else arg.variant,
        "num_classes": 10,
        "pool": arg.pool,
        "intermediates": False,
    }
    return base_config(model, n=256, image=True, runlocal=arg.runlocal)
