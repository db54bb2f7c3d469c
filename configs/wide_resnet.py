"""A WideResNet WRN-d-k on scikit-learn's digits (8×8×1 images).

    ntk-zoo run --config configs/wide_resnet.py --workdir runs/wrn
    ntk-zoo run --config configs/wide_resnet.py:variant=16-2,norm=layer --workdir runs/wrn16

Arguments: variant ("d-k", e.g. 10-1, 16-4, 28-10), framework (linen|nnx|haiku), norm
(batch|layer|none), batch_norm (running|batch|coupled), parameterization, scan (True: each
group's blocks after its first stacked and scanned; the same model), runlocal.
Expected cost on a 2-core CPU: about 40 s wall for the default WRN-10-1 on 256 digits.
"""

from ntk_zoo.config import base_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(
        arg,
        variant="10-1",
        framework="linen",
        norm="batch",
        batch_norm="batch",
        parameterization="standard",
        scan=False,
        runlocal=False,
    )
    depth, width = (int(v) for v in arg.variant.split("-"))
    model = {
        "family": "wide_resnet",
        "framework": arg.framework,
        "depth": 10 if arg.runlocal else depth,
        "width": 1 if arg.runlocal else width,
        "num_classes": 10,
        "norm": arg.norm,
        "batch_norm": arg.batch_norm,
        "parameterization": arg.parameterization,
        "scan": arg.scan,
    }
    return base_config(model, n=256, image=True, runlocal=arg.runlocal)
