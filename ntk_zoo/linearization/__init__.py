"""A model expanded in its parameters around given ones: to first order (``linearize``, the
model whose training the NTK describes exactly) or to any order (``taylor_expand``)."""

from ntk_zoo.linearization._linearize import linearize as linearize
from ntk_zoo.linearization._taylor import taylor_expand as taylor_expand

__all__ = ["linearize", "taylor_expand"]
