"""A search space of zoo architectures and deterministic sampling from it."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

# The choices each family's space must list, and how one choice becomes an `architectures` config.
SPACE_KEYS = {
    "mlp": ("depth", "width", "activation", "parameterization"),
    "wide_resnet": ("depth", "width", "norm"),
    "vit": ("size", "patch", "pool"),
}
# Choices a family's space may list (absent or 0: the named size's own, e.g. a ViT-test's depth).
OPTIONAL_KEYS = {"mlp": (), "wide_resnet": (), "vit": ("depth", "width", "heads", "mlp_dim")}


def _model(family: str, choice: dict[str, Any], framework: str) -> dict[str, Any]:
    base = {"family": family, "framework": framework, "num_classes": 10}
    if family == "mlp":
        return {**base, **choice, "bias": True}
    if family == "wide_resnet":
        # Batch statistics of a calibration batch, frozen: examples stay independent.
        return {**base, **choice, "batch_norm": "batch", "parameterization": "standard"}
    variant = f"{choice['size']}/{choice['patch']}"
    knobs = {k: choice[k] for k in OPTIONAL_KEYS["vit"] if choice.get(k)}
    return {**base, "variant": variant, "pool": choice["pool"], "intermediates": False, **knobs}


def candidate_name(model: Mapping[str, Any]) -> str:
    """A short readable name, e.g. ``mlp-2x128-relu-ntk``, ``wrn-16-2-batch``, ``vit-test/4-tok``
    (a ViT's overridden knobs follow its variant: ``vit-test/4-d4-w32-gap``).

    Example:
      >>> candidate_name({"family": "wide_resnet", "depth": 16, "width": 2, "norm": "layer"})
      'wrn-16-2-layer'
      >>> candidate_name({"family": "vit", "variant": "test/4", "depth": 4, "pool": "gap"})
      'vit-test/4-d4-gap'
    """
    family = model["family"]
    if family == "mlp":
        return (
            f"mlp-{model['depth']}x{model['width']}-{model['activation']}-"
            f"{model['parameterization']}"
        )
    if family == "wide_resnet":
        return f"wrn-{model['depth']}-{model['width']}-{model['norm']}"
    short = {"depth": "d", "width": "w", "heads": "h", "mlp_dim": "m"}
    knobs = "".join(f"-{short[k]}{model[k]}" for k in OPTIONAL_KEYS["vit"] if model.get(k))
    return f"vit-{model['variant']}{knobs}-{model['pool']}"


def enumerate_space(space: Mapping[str, Any], framework: str = "linen") -> dict[str, list[dict]]:
    """Every architecture config of each family listed in ``space["families"]``, in order.

    ``space[family]`` maps each of the family's keys (``SPACE_KEYS``, and any of
    ``OPTIONAL_KEYS``) to a sequence of choices (or one value).
    """
    families = tuple(space["families"])
    unknown_families = [f for f in families if f not in SPACE_KEYS]
    if unknown_families or not families:
        raise ValueError(
            f"space.families={families} must name some of {sorted(SPACE_KEYS)}; "
            f"unknown: {unknown_families}."
        )
    out = {}
    for family in families:
        options = dict(space[family]) if family in space else {}
        optional = [k for k in OPTIONAL_KEYS[family] if k in options]
        keys = (*SPACE_KEYS[family], *optional)
        unknown = sorted(set(options) - set(keys))
        missing = [k for k in SPACE_KEYS[family] if k not in options]
        if unknown or missing:
            also = (
                f" (and optionally {list(OPTIONAL_KEYS[family])})" if OPTIONAL_KEYS[family] else ""
            )
            raise ValueError(
                f"space.{family} must list choices for {list(SPACE_KEYS[family])}{also}; "
                f"unknown {unknown}, missing {missing}."
            )
        lists = []
        for k in keys:
            value = options[k]
            value = tuple(value) if isinstance(value, list | tuple) else (value,)
            if not value:
                raise ValueError(f"space.{family}.{k} is empty; give at least one choice.")
            lists.append(value)
        out[family] = [
            _model(family, dict(zip(keys, combo)), framework) for combo in itertools.product(*lists)
        ]
    return out


def sample_space(
    space: Mapping[str, Any], num_candidates: int, *, seed: int, framework: str = "linen"
) -> list[dict[str, Any]]:
    """``num_candidates`` distinct architecture configs, drawn deterministically from ``seed``.

    Each draw picks a family uniformly among those with architectures left, then one of its
    remaining architectures uniformly (without replacement), so small families are not
    swamped by large ones.

    Example:
      >>> space = {"families": ("mlp",), "mlp": {"depth": (1, 2), "width": 8,
      ...          "activation": "relu", "parameterization": "ntk"}}
      >>> [candidate_name(m) for m in sample_space(space, 2, seed=0)]
      ['mlp-2x8-relu-ntk', 'mlp-1x8-relu-ntk']
    """
    pools = enumerate_space(space, framework)
    total = sum(len(p) for p in pools.values())
    if not 0 < num_candidates <= total:
        raise ValueError(
            f"num_candidates={num_candidates}, but the space holds {total} distinct "
            f"architectures; ask for 1..{total} or widen the space."
        )
    rng = np.random.default_rng(seed)
    pools = {k: list(v) for k, v in pools.items()}
    chosen = []
    for _ in range(num_candidates):
        families = [f for f, pool in pools.items() if pool]
        pool = pools[families[rng.integers(len(families))]]
        chosen.append(pool.pop(rng.integers(len(pool))))
    return chosen
