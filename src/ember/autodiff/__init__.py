"""Reverse-mode autodiff on the graph IR (see `engine`), and the gradient rules of every op.

Importing this package fills the `grad` field of every registry row: `import ember` imports it,
so the rules are complete before anything differentiates. Like the passes, nothing here knows
a backend: a backward graph is an ordinary graph.
"""

import ember.ops  # noqa: F401  (the rows the rules are set on)
from ember.autodiff import (  # noqa: F401
    rules_conv,
    rules_elementwise,
    rules_neural,
    rules_pool,
    rules_resample,
    rules_shape,
)
from ember.autodiff.engine import (
    NOT_DIFFERENTIABLE,
    GradientError,
    backward,
    grad_graph,
    sum_to,
)

__all__ = ["NOT_DIFFERENTIABLE", "GradientError", "backward", "grad_graph", "sum_to"]
