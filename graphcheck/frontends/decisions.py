"""Decision points: where forward makes a Python decision that another execution may make differently.

Three kinds, each recorded with its source line and module:

* ``random``: a value drawn at random turned into a Python bool or number (``if torch.rand([]) <
  self.layerdrop``), or a call of Python's or NumPy's random module in forward;
* ``input``: a value computed from the inputs turned into a Python bool or number (``if x.sum() > 0``,
  ``torch.equal``, ``.tolist()`` of the experts that receive tokens);
* ``state``: forward assigns a new plain value to a module attribute (a step counter, a toggle).

Tensor conversions are read from the recorded graph (fx and ``torch.export`` cannot trace them, so
the recorded-pass frontend is the one that ran); Python randomness and attribute changes are watched
while any frontend runs the model (``DecisionWatch``).
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
import weakref

import networkx as nx
try:   # NumPy is optional: a model without it draws no NumPy randomness
    import numpy as np
except ImportError:
    np = None
import torch
from torch.overrides import TorchFunctionMode

from graphcheck.model_graph import Decision, ModelGraph
from graphcheck.running import op_name, tensors_in
from graphcheck.sources import location_here

# Ops that turn a tensor into a Python value that control flow can branch on.
CONVERSIONS = {"__bool__", "__int__", "__float__", "__index__", "__format__", "item", "tolist", "equal",
               "is_nonzero", "allclose", "_local_scalar_dense"}
# Ops whose result is drawn at random.
RANDOM_OPS = {"rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "bernoulli",
              "bernoulli_", "multinomial", "normal", "normal_", "uniform_", "random_", "exponential_",
              "poisson", "geometric_", "cauchy_", "log_normal_"}
# Python's and NumPy's random functions forward may call.
PYTHON_RANDOM = ("random", "uniform", "randint", "randrange", "choice", "choices", "sample", "shuffle",
                 "gauss", "normalvariate", "betavariate", "expovariate", "triangular", "getrandbits")
NUMPY_RANDOM = ("rand", "random", "random_sample", "uniform", "randint", "choice", "binomial", "permutation",
                "shuffle", "normal", "randn", "integers", "poisson", "beta")
_PLAIN = (bool, int, float, str, type(None))


def graph_decisions(mg: ModelGraph) -> list[Decision]:
    """Conversions to Python of values derived from the inputs or from a random draw."""
    graph = mg.graph
    conversions = [n for n, d in graph.nodes(data=True) if d.get("kind") == "op" and d.get("target") in CONVERSIONS]
    if not conversions:
        return []
    view = mg.data_view()
    random_sources = [n for n, d in graph.nodes(data=True) if d.get("target") in RANDOM_OPS]
    random_derived = _downstream(view, random_sources)
    input_derived = _downstream(view, [n for n, d in graph.nodes(data=True) if d.get("kind") == "input"])
    found = []
    parameters = [n for n, d in graph.nodes(data=True) if d.get("kind") == "parameter"]
    weight_derived = functools.lru_cache(maxsize=None)(lambda: _downstream(view, parameters))
    for node in conversions:
        data = graph.nodes[node]
        target = data["target"]
        if node in random_derived:
            origin = next((graph.nodes[s]["target"] for s in random_sources if s in nx.ancestors(view, node)), "rand")
            found.append(Decision("random", f"`{target}` of a value drawn by `torch.{origin}`",
                                  data.get("location"), data.get("module") or ""))
        elif node in input_derived:
            found.append(Decision("input", f"`{target}` of a value computed from the inputs",
                                  data.get("location"), data.get("module") or ""))
        elif data.get("stand_in") and node in weight_derived():
            # On meta the weights have no values: which way this goes is unknown (a condition on
            # constants alone, such as positions from arange, is the same in every execution).
            found.append(Decision("meta", f"`{target}` of a value the meta device does not have",
                                  data.get("location"), data.get("module") or ""))
    return found


def _downstream(view, sources) -> set:
    """The sources and every node reachable from them: one breadth-first search from all at once
    (a search per source is quadratic on a model with hundreds of weights)."""
    sources = list(dict.fromkeys(sources))
    return {node for layer in nx.bfs_layers(view, sources) for node in layer} if sources else set()


def unique(decisions: list[Decision]) -> list[Decision]:
    """One decision per (kind, line); a loop over layers decides on one line."""
    seen, kept = set(), []
    for decision in decisions:
        key = (decision.kind, decision.location)
        if key not in seen:
            seen.add(key)
            kept.append(decision)
    return kept


class _RandomTaint(TorchFunctionMode):
    """Follows values drawn at random through concrete torch calls and records their conversion to
    Python. fx traces ``torch.rand([]) < p`` as a constant (its arguments are not proxies), so the
    decision leaves no trace in the graph; this sees it while the tracer runs forward."""

    def __init__(self, watch: "DecisionWatch"):
        super().__init__()
        self.watch = watch
        # id -> (the random op it comes from, a weak reference: derived activations are not kept alive)
        self.tainted: dict[int, tuple[str, weakref.ref]] = {}

    def origin(self, tensor: torch.Tensor) -> str | None:
        entry = self.tainted.get(id(tensor))
        return entry[0] if entry is not None and entry[1]() is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        value = func(*args, **kwargs)
        if not self.tainted and getattr(func, "__name__", "") not in RANDOM_OPS:
            return value   # nothing drawn at random yet: the common case costs one lookup
        name = op_name(func)
        if name in RANDOM_OPS:
            origin = name
        else:
            origin = next((o for o in map(self.origin, tensors_in((args, kwargs))) if o is not None), None)
        if origin is None:
            return value
        if name in CONVERSIONS:
            module = self.watch.calling_module()
            if module is not None:
                self.watch.decisions.append(Decision("random", f"`{name}` of a value drawn by `torch.{origin}`",
                                                     location_here(), module))
        for tensor in tensors_in(value):
            try:
                self.tainted[id(tensor)] = (origin, weakref.ref(tensor))
            except TypeError:   # a tensor subclass without weak references: not followed
                continue
        return value


class DecisionWatch:
    """While active: calls of Python's/NumPy's random module from the model's forward, and plain
    attribute values forward assigns to the model's modules, are recorded as decisions."""

    def __init__(self, model: torch.nn.Module):
        self.names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
        self.decisions: list[Decision] = []
        self._stack = contextlib.ExitStack()

    def calling_module(self) -> str | None:
        """Qualified name of the innermost module of the model whose method is running, if any."""
        frame = sys._getframe(2)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in self.names:
                return self.names[id(owner)]
            frame = frame.f_back
        return None

    def _wrap_random(self, owner, name: str, label: str):
        original = getattr(owner, name, None)
        if original is None:
            return

        def recorded(*args, **kwargs):
            module = self.calling_module()
            if module is not None:
                self.decisions.append(Decision("random", f"`{label}.{name}()`", location_here(), module))
            return original(*args, **kwargs)

        self._stack.enter_context(patched_attribute(owner, name, recorded))

    def __enter__(self):
        for name in PYTHON_RANDOM:
            self._wrap_random(random, name, "random")
        for name in NUMPY_RANDOM if np is not None else ():
            self._wrap_random(np.random, name, "np.random")
        watch = self
        original_setattr = torch.nn.Module.__setattr__

        def recorded_setattr(module, name, value):
            if id(module) in watch.names and isinstance(value, _PLAIN) and name in module.__dict__ \
                    and module.__dict__[name] != value and isinstance(module.__dict__[name], _PLAIN) \
                    and watch.calling_module() is not None:
                qualified = watch.names[id(module)]
                watch.decisions.append(Decision(
                    "state", f"forward changes `{qualified + '.' if qualified else 'self.'}{name}`",
                    location_here(), qualified))
            original_setattr(module, name, value)

        self._stack.enter_context(patched_attribute(torch.nn.Module, "__setattr__", recorded_setattr))
        self._stack.enter_context(_RandomTaint(self))
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False


@contextlib.contextmanager
def patched_attribute(owner, name: str, value):
    """``owner.name`` is ``value`` inside the block."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)
