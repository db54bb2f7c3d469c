"""The NTK algorithms, and when each one wins."""

from __future__ import annotations

import enum


class Method(enum.StrEnum):
    """How the NTK ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` is computed; plain strings are accepted too.

    Notation: ``n`` examples, ``o`` outputs per example, ``p`` parameters, ``[FP]`` the cost of
    one forward pass. All methods give the same numbers (up to floating-point rounding).

    ``JACOBIAN_CONTRACTION`` (``"jacobian_contraction"``)
      Builds per-example Jacobians (``n·o`` VJPs) and contracts them: time
      ``n·o·[FP] + n1·n2·o²·p``, memory ``n·o·p + n1·n2·o²``. Wins when ``o`` is small or the
      traced axes remove it (the default ``trace_axes=(-1,)``), and when the forward pass is costly
      relative to ``p`` (convolutions, attention over many tokens).

    ``NTK_VECTOR_PRODUCTS`` (``"ntk_vector_products"``)
      One VJP then one JVP per kernel column and pair of examples, no Jacobian contraction: time
      ``n1·n2·o·[FP]``, memory about that of Jacobian contraction. Wins when the forward pass is
      cheap relative to ``o·p`` (MLPs) and ``o`` is large with ``trace_axes=()``, or when
      ``vmap_axes`` meets diagonal batch axes (only ``n`` pairs).

    ``STRUCTURED_DERIVATIVES`` (``"structured_derivatives"``)
      The paper's main algorithm (Novak et al., 2022). ``f`` is linearised in its params
      (``jax.linearize``); for every use of a param by a primitive, one transposed pass per
      output records ``∂f/∂y`` at that primitive's output, and a rule per primitive describes
      ``∂y/∂w`` by its structure (identity, diagonal and tiled axes, a small dense block: the
      inputs of a dense layer, the patches of a convolution, the token ids of an embedding)
      instead of forming it. Each pair of uses is then one einsum whose contraction order is
      chosen by cost for the actual shapes. Time ``n·o·[FP]`` plus the sum of those einsums
      (for a dense layer ``n1·n2·(w_in + o²·w_out)`` instead of ``n1·n2·o²·w_in·w_out``),
      memory ``n·o·Y`` (``Y``: the outputs of the primitives that use params) plus the kernel.
      Wins almost always, by orders of magnitude on fully connected networks. Primitives without
      a rule (``cumsum``, ``scan``, ``cond``, ...) contribute through their transpose rule with a
      one-time warning, exactly; a program JAX cannot transpose (a ``while_loop`` with a dynamic
      trip count) is computed by forward-mode Jacobian contraction with a warning.

    ``AUTO`` (``"auto"``, the default)
      Picks the method with the lowest estimated time in seconds. Each method is a sum of steps;
      a step of kind ``k`` doing ``F`` FLOPs and moving ``B`` bytes takes
      ``overhead + max(F / rate[k], B / bandwidth)`` (a whole pass over the network takes
      ``F / rate + B / bandwidth``: its matrix products and elementwise work do not overlap),
      with the rates of the machine's cost table (:class:`ntk_zoo.core.CostTable`): large
      matrix products and convolutions, small batched einsums (an output tile under 1024 values
      per batch element), memory bandwidth, and a fixed cost per step:

      * Jacobian contraction: a forward pass and ``n·o`` VJPs (about two passes each) writing
        ``n·o·p`` values, then ``2·n1·n2·o²·p`` FLOPs reading the Jacobians, one product per
        param leaf (a small einsum when the kernel block per diagonal entry is small);
      * NTK-vector products: ``n2·o`` VJPs writing ``n2·o·p`` values, then one JVP (about two
        forward passes) per kernel column and pair of examples (``n`` pairs when the batch axis
        is traced or diagonal);
      * structured derivatives: ``n·o`` transposed passes writing the factors, then every
        pairwise step of every einsum on the path the planner picks for the actual shapes (by
        the same seconds), each at its kind's rate, its operands laid out for the product; the
        structure is found by tracing ``f`` (nothing is computed).

      FLOPs of ``f`` are counted on its traced program (``dot_general`` and convolutions
      exactly, one per element elsewhere). XLA's ``cost_analysis()`` is not used: it is wrong
      on CPU and GPU. The table is, in order: the one :func:`ntk_zoo.calibrate` measured on this
      machine and cached (``~/.cache/ntk_zoo/cost_table-<backend>.json``), else the row of the
      backend shipped with the package (measured by ``python -m benchmarks calibrate``), else a
      default (100 GFLOP/s, 25 GFLOP/s, 10 GB/s, 3 µs). On equal estimates structured
      derivatives win (they then run Jacobian contraction's arithmetic leaf by leaf, through
      each primitive's transpose), then Jacobian contraction. ``KernelFn.choose()`` shows the
      estimates and the table (``choice.table.source``). Decision guide: fully connected and
      attention models, any ``o`` → structured derivatives; small convolutional and attention
      models with few outputs or ``trace_axes=(-1,)`` may go to Jacobian contraction; a cheap
      forward pass with many outputs and traced or diagonal batch axes may go to NTK-vector
      products.
    """

    JACOBIAN_CONTRACTION = "jacobian_contraction"
    NTK_VECTOR_PRODUCTS = "ntk_vector_products"
    STRUCTURED_DERIVATIVES = "structured_derivatives"
    AUTO = "auto"


def canonicalize_method(method: Method | str) -> Method:
    try:
        return Method(method)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in Method)
        raise ValueError(f"Unknown NTK method {method!r}; valid methods are {valid}.") from None
