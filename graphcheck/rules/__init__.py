"""Rule families; importing this package registers every built-in rule."""

from graphcheck.rules import params  # noqa: F401  GC1xx: parameters that get no gradient
from graphcheck.rules import gradients  # noqa: F401  GC2xx: partial gradient cuts
from graphcheck.rules import activations  # noqa: F401  GC3xx
from graphcheck.rules import init  # noqa: F401  GC5xx
from graphcheck.rules import topology  # noqa: F401  GC4xx: bottlenecks, deep plain stacks
