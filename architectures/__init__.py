"""The architecture zoo: ready-made models as pure ``f(params, x)`` functions.

``architectures.jax`` holds plain-JAX models (no framework); Flax and Haiku variants and the
config-driven ``build`` entry point arrive with the zoo.
"""
