"""How the NTK moves while zoo models train on digits: `ntk-zoo train`.

    ntk-zoo train --config configs/train.py --workdir runs/train
    ntk-zoo train --config configs/train.py:widths=64+256+1024,parameterization=ntk --workdir runs/t
    ntk-zoo train --config configs/train.py:optimizer=adam,loss=cross_entropy --workdir runs/adam
    ntk-zoo train --config configs/train.py:family=wide_resnet,widths=1+2 --workdir runs/wrn
    ntk-zoo train --config configs/train.py:runlocal --workdir runs/tiny

Trains one model per width × parameterisation (`+`-separated lists) with optax on a seeded split
of scikit-learn's digits and, at `record.num` log-spaced steps, records the loss and accuracy,
the NTK on a fixed probe batch of training digits (method `ntk.method`, auto by default), its
kernel distance from initialisation, its centred alignment with the labels, its trace, λ_max and
κ, and the linearised network's predictions and their gap to the real network: in closed form
(`ntk_zoo.predict.gradient_descent_mse`) for full-batch SGD without momentum on the MSE loss,
otherwise by training `ntk_zoo.linearize(model)` with the same optimizer and batches.

The MSE loss is ‖f − Y‖² / (2·n·o) on one-hot Y (neural-tangents' normalisation). In standard
parameterisation the NTK grows with the width, so by default its learning rate is divided by
the width (`train.standard_lr_scale="width"`), which keeps every width stable and comparable.

Arguments: family (mlp|wide_resnet), framework (linen|nnx|haiku), depth (default 2 hidden
layers for MLPs, 10 for WideResNets), widths (`+`-separated; default 64+256+1024 for MLPs,
channel multipliers 1+2+4 for WideResNets), parameterization (ntk, standard or ntk+standard),
optimizer (sgd|adam), loss (mse|cross_entropy), steps, learning_rate, seed, runlocal (tiny
sizes, for tests; explicit widths are kept).
Expected cost on a 2-core CPU: about 4 minutes wall for the default 6 MLPs and 1,000 steps
(4:18 measured, 3:33 of CPU, on a machine shared with other jobs); runlocal about 25 s.
"""

import ml_collections

from ntk_zoo.config import parse_arg


def get_config(arg=None):
    arg = parse_arg(
        arg,
        family="mlp",
        framework="linen",
        depth=0,
        widths="",
        parameterization="ntk+standard",
        optimizer="sgd",
        loss="mse",
        steps=1000,
        learning_rate=8.0,
        seed=0,
        runlocal=False,
    )
    config = ml_collections.ConfigDict()
    config.seed = arg.seed
    config.model = {
        "family": arg.family,
        "framework": arg.framework,
        "depth": arg.depth or (2 if arg.family == "mlp" else 10),
        "num_classes": 10,
        "activation": "relu",
        "bias": True,
    }
    if arg.family == "wide_resnet":
        config.model.norm = "none"
    # One model per (width, parameterization); a WideResNet's width is its channel multiplier.
    widths = arg.widths or ("64+256+1024" if arg.family == "mlp" else "1+2+4")
    config.sweep = {
        "widths": tuple(int(w) for w in widths.split("+")),
        "parameterizations": tuple(arg.parameterization.split("+")),
    }
    # A seeded split of the 1,797 digits; the probe kernel is over the first `probe` train digits.
    config.data = {"n_train": 256, "n_test": 256, "probe": 64, "image": arg.family != "mlp"}
    config.train = {
        "optimizer": arg.optimizer,
        "learning_rate": arg.learning_rate,
        "momentum": 0.0,  # SGD only; 0 keeps the closed-form linearised predictions available
        "batch_size": 0,  # 0: full batch (gradient descent)
        "steps": arg.steps,
        "loss": arg.loss,
        "standard_lr_scale": "width",  # width | none: standard parameterisation's lr / width
    }
    # Steps at which everything is recorded: 0 and `num` log-spaced steps up to train.steps.
    config.record = {"num": 12}
    # linearized: auto (closed form when it applies) | closed_form | linearize | none.
    config.ntk = {"method": "auto", "dtype": "float32", "linearized": "auto"}
    config.output = {"plot": True, "save_kernels": True}
    if arg.runlocal:
        if not arg.widths:
            config.sweep.widths = (8, 32) if arg.family == "mlp" else (1,)
        config.data = {"n_train": 32, "n_test": 32, "probe": 8, "image": arg.family != "mlp"}
        config.train.steps = 20
        config.train.learning_rate = 2.0  # 8 is past the linearisation's stability on 32 digits
        config.record.num = 4
    return config
