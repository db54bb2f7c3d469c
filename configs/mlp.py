"""An MLP on scikit-learn's digits: the default `make run` job.

    ntk-zoo run --config mlp --workdir runs/mlp
    ntk-zoo run --config mlp:framework=haiku,depth=3,width=1024 --workdir runs/m3
    ntk-zoo run --config mlp --workdir runs/m --config.ntk.trace_axes="()"

Arguments (after the colon): framework (linen|nnx|haiku), depth (hidden layers), width,
activation, parameterization (ntk|standard), runlocal (tiny sizes, for tests).
Expected cost on a 2-core CPU, for the default 512 digits (kernel 512×512): auto picks
structured derivatives; the whole command took 23 s of CPU (17 s user, 6 s system), start-up and
compilation included (2 min 8 s wall on a machine shared at load 12).
"""

from ntk_zoo.config import base_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(
        arg,
        framework="linen",
        depth=2,
        width=512,
        activation="relu",
        parameterization="ntk",
        runlocal=False,
    )
    model = {
        "family": "mlp",
        "framework": arg.framework,
        "depth": arg.depth,
        "width": 16 if arg.runlocal else arg.width,
        "num_classes": 10,
        "activation": arg.activation,
        "parameterization": arg.parameterization,
        "bias": True,
    }
    return base_config(model, n=512, image=False, runlocal=arg.runlocal)
