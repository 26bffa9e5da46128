"""Hypothesis strategies for random PyTorch models with gradient hazards, and their Python-source emitter.

A model is a random DAG over values of one shape ``(B, D)``: the float input ``x``, an
embedding of the integer input ``ids``, and one value per node. Nodes are layers
(Linear, Conv1d, Embedding, LayerNorm, a parameter matmul, a zero-initialised residual
layer that wakes up, two consecutive zero-initialised layers that never do), activations
and parameter-free ops (add, mul, cat, matmul, indexing, argmax-then-embedding lookup).
Hazards are injected on the edges (``.detach()``, ``.data``, ``torch.round``, a
comparison cast to float, ``* 0`` and ``zeros_like`` as an addend) and on nodes
(``torch.no_grad()`` blocks); modules may be tied, frozen or never called, nodes may be
dead, and the loss uses a random subset of the outputs (or no ``--loss`` at all).

:func:`emit_source` writes a spec as a target file with ``build_model()`` and ``loss()``,
so the models go through graphcheck's loader and frontends like a user's file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

B, D, VOCAB = 4, 8, 10

PARAM_OPS = ("linear", "conv", "layernorm", "pmatmul", "embed_ids", "argmax_embed", "zero_last", "zero_pair")
FREE_UNARY = ("act", "index", "reuse_weight")
BINARY = ("add", "mul", "cat", "matmul", "where", "masked_fill", "stack", "scale_item", "gather_argmax",
          "sub", "cat_first_half", "cat_second_half", "stack_select", "stack_narrow")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
# Hazards on an edge: they turn the operand expression into another expression.
EDGE_HAZARDS = ("detach", "data", "round", "compare", "sign", "floor", "long_cast", "new_leaf")
# Hazards that make the operand all zeros; only used as the second addend of an add.
ZERO_HAZARDS = ("times_zero", "zeros_like", "inplace_zero", "new_zeros", "times_zeros_constant",
                "times_zero_tensor", "dropout_all", "empty_slice")
# Zeros that flow into a layer rather than into an addend: a Linear, a LayerNorm, a product
# (their weights get an identically zero gradient, their biases still train).
ZERO_INPUT_OPS = ("linear", "layernorm", "pmatmul")
# Patterns of known limitations (docs/limitations.md): algebraic cancellation (``h - h``) and
# ``where`` on a constant condition; generated only with ``open_bugs=True``, where --verify
# must catch the disagreement.
OPEN_BUG_ZERO_HAZARDS: tuple = ()
OPEN_BUG_BINARY = ("self_subtract", "where_never")


@dataclass
class Node:
    op: str
    args: list[int]                      # value indices: 0 = x, then one per node (index + 1)
    hazards: list[str | None]
    activation: str = "relu"
    columns: list[int] = field(default_factory=list)
    no_grad: bool = False
    grad_switch: str = "torch.no_grad()"
    zero_input: bool = False             # the first operand is multiplied by 0.0 first


@dataclass
class ModelSpec:
    nodes: list[Node]
    outputs: list[int]                   # value indices returned by forward
    output_hazards: list[str | None]
    loss_outputs: list[int] | None       # positions in the output tuple; None: no --loss
    tied: list[tuple[int, int]]          # (node a, node b): b's linear weight is a's
    frozen: list[str]                    # attributes (modules or parameters) that are frozen
    spare_modules: int                   # modules built but never called

    @property
    def has_loss(self) -> bool:
        return self.loss_outputs is not None


def _value(index: int) -> str:
    return "x" if index == 0 else f"h{index}"


def _hazard(expr: str, hazard: str | None) -> str:
    if hazard is None:
        return expr
    return {
        "detach": f"{expr}.detach()",
        "data": f"{expr}.data",
        # The discrete hazards mix in the random input x: a value that happens to be one-signed
        # or constant (h * h > 0 is all ones) would make them constant, and a LayerNorm of a
        # constant is exactly zero, a value accident no static analysis can know about.
        "round": f"torch.round({expr} * 4 + x)",
        "compare": f"({expr} > x.flip(-1)).float()",
        "sign": f"torch.sign({expr} - x.flip(-1) * 0.5)",   # x - x.flip(-1) sums to zero
        "floor": f"torch.floor({expr} * 4 + x)",
        "long_cast": f"({expr} * 4 + x).long().float()",
        "new_leaf": f"{expr}.detach().requires_grad_()",
        "times_zero": f"({expr} * 0)",
        "zeros_like": f"torch.zeros_like({expr})",
        "inplace_zero": f"{expr}.clone().mul_(0)",
        "times_zeros_constant": f"({expr} * torch.zeros({D}))",
        "times_zero_tensor": f"({expr} * torch.tensor(0.0))",
        "new_zeros": f"{expr}.new_zeros({expr}.shape)",
        "dropout_all": f"F.dropout({expr}, p=1.0)",
        "empty_slice": f"torch.cat([{expr}[:, :0], {expr}.new_zeros({expr}.shape)], -1)",
    }[hazard]


def _modules(index: int, node: Node) -> list[tuple[str, str]]:
    """(attribute, constructor) pairs a node's op owns."""
    op = node.op
    if op == "linear":
        return [(f"lin{index}", f"nn.Linear({D}, {D})")]
    if op == "conv":
        return [(f"conv{index}", "nn.Conv1d(1, 1, 3, padding=1)")]
    if op == "layernorm":
        return [(f"ln{index}", f"nn.LayerNorm({D})")]
    if op == "pmatmul":
        return [(f"w{index}", f"nn.Parameter(torch.randn({D}, {D}) / {D ** 0.5})")]
    if op == "embed_ids":
        return [(f"emb{index}", f"nn.Embedding({VOCAB}, {D})")]
    if op == "argmax_embed":
        return [(f"emb{index}", f"nn.Embedding({D}, {D})")]
    if op == "zero_last":
        return [(f"zl{index}", f"nn.Linear({D}, {D})")]
    if op == "zero_pair":
        return [(f"za{index}", f"nn.Linear({D}, {D})"), (f"zb{index}", f"nn.Linear({D}, {D})")]
    return []


def _expression(index: int, node: Node) -> str:
    args = [_hazard(_value(a), h) for a, h in zip(node.args, node.hazards)]
    op = node.op
    if node.zero_input:
        args[0] = f"({args[0]} * 0.0)"
    if op == "linear":
        return f"self.lin{index}({args[0]})"
    if op == "conv":
        return f"self.conv{index}({args[0]}.unsqueeze(1)).squeeze(1)"
    if op == "layernorm":
        return f"self.ln{index}({args[0]})"
    if op == "pmatmul":
        return f"{args[0]} @ self.w{index}"
    if op == "embed_ids":
        return f"self.emb{index}(ids)"
    if op == "argmax_embed":
        return f"self.emb{index}({args[0]}.argmax(-1))"
    if op == "zero_last":
        return f"{args[0]} + self.zl{index}({args[0]})"
    if op == "zero_pair":
        return f"{args[0]} + self.zb{index}(torch.relu(self.za{index}({args[0]})))"
    if op == "act":
        return f"torch.{node.activation}({args[0]})" if node.activation != "gelu" else f"F.gelu({args[0]})"
    if op == "index":
        return f"{args[0]}[:, {node.columns}]"
    if op == "reuse_weight":
        # A functional use of another node's Linear weight (weight sharing by use, not by tying).
        return f"F.linear({args[0]}, self.lin{node.columns[0]}.weight.t())"
    if op == "where":
        # The condition comes from the input, so both branches are taken somewhere.
        return f"torch.where(x > 0, {args[0]}, {args[1]})"
    if op == "masked_fill":
        return f"{args[0]}.masked_fill(({args[1]} > 0) & (x > 0), 0.5)"
    if op == "stack":
        return f"torch.stack([{args[0]}, {args[1]}]).mean(0)"
    if op == "scale_item":
        return f"{args[0]} * {args[1]}.abs().mean().item()"
    if op == "gather_argmax":
        return f"{args[0]}.gather(1, {args[1]}.argsort(-1))"
    if op == "cat_first_half":
        return f"torch.cat([{args[0]}, {args[1]}], -1)[:, :{D}]"
    if op == "cat_second_half":
        return f"torch.tanh(torch.cat([{args[0]}, {args[1]}], -1)).narrow(1, {D}, {D})"
    if op == "stack_select":
        return f"(torch.stack([{args[0]}, {args[1]}], 1) * 2).select(1, 0)"
    if op == "stack_narrow":
        return f"torch.stack([{args[0]}, {args[1]}], 0).transpose(1, 2).narrow(0, 1, 1).squeeze(0).t()"
    if op == "self_subtract":
        return f"{args[0]} - {args[0]} + {args[1]}"
    if op == "where_never":
        return f"torch.where(x > 100, {args[0]}, {args[1]})"
    if op == "add":
        return f"{args[0]} + {args[1]}"
    if op == "sub":
        return f"{args[0]} - {args[1]}"
    if op == "mul":
        return f"{args[0]} * {args[1]}"
    if op == "cat":
        return f"torch.cat([{args[0]}, {args[1]}], -1)[:, ::2]"
    if op == "matmul":
        return f"(({args[0]}).unsqueeze(-1) @ ({args[1]}).unsqueeze(-2)).mean(-1)"
    raise ValueError(op)


def emit_source(spec: ModelSpec) -> str:
    """The spec as a target file: ``build_model() -> (model, (x, ids))`` and ``loss(out)``."""
    init = []
    for index, node in enumerate(spec.nodes, start=1):
        for attribute, constructor in _modules(index, node):
            init.append(f"self.{attribute} = {constructor}")
        if node.op == "zero_last":
            init.append(f"nn.init.zeros_(self.zl{index}.weight)")
            init.append(f"nn.init.zeros_(self.zl{index}.bias)")
        if node.op == "zero_pair":
            init.append(f"nn.init.zeros_(self.za{index}.weight)")
            init.append(f"nn.init.zeros_(self.za{index}.bias)")
            init.append(f"nn.init.zeros_(self.zb{index}.weight)")
    for source, target in spec.tied:
        init.append(f"self.lin{target}.weight = self.lin{source}.weight")
    for attribute in spec.frozen:
        init.append(f"self.{attribute}.requires_grad_(False)")
    for spare in range(spec.spare_modules):
        init.append(f"self.spare{spare} = nn.Linear({D}, {D})")
    for position in range(len(spec.outputs)):
        init.append(f"self.head{position} = nn.Linear({D}, {D})")

    body = []
    for index, node in enumerate(spec.nodes, start=1):
        line = f"h{index} = {_expression(index, node)}"
        if node.no_grad:
            body.append(f"with {node.grad_switch}:")
            body.append("    " + line)
        else:
            body.append(line)
    returned = [f"self.head{position}({_hazard(_value(v), h)})"
                for position, (v, h) in enumerate(zip(spec.outputs, spec.output_hazards))]
    body.append(f"return ({', '.join(returned)},)")

    lines = [
        '"""A random model generated by tests/model_strategies.py."""',
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
        "class Model(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *("        " + line for line in init),
        "",
        "    def forward(self, x, ids):",
        *("        " + line for line in body),
        "",
        "",
        "def build_model():",
        "    torch.manual_seed(0)",
        f"    return Model(), (torch.randn({B}, {D}), torch.randint(0, {VOCAB}, ({B},)))",
        "",
    ]
    if spec.has_loss:
        terms = " + ".join(f"out[{p}].pow(2).mean()" for p in spec.loss_outputs) or "out[0].sum().detach()"
        lines += ["", "def loss(out):", f"    return {terms}", ""]
    return "\n".join(lines)


@st.composite
def nodes(draw, count: int, open_bugs: bool = False) -> list[Node]:
    result: list[Node] = []
    hazard = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(EDGE_HAZARDS))
    for index in range(1, count + 1):
        available = index          # values 0 .. index-1
        kind = draw(st.sampled_from(PARAM_OPS + PARAM_OPS[:2] + FREE_UNARY + BINARY
                                    + (OPEN_BUG_BINARY if open_bugs else ())))
        arity = 0 if kind == "embed_ids" else 2 if kind in BINARY + OPEN_BUG_BINARY else 1
        # Half the operands are the latest value, so chains get deep; the rest any earlier one.
        args = [available - 1 if draw(st.booleans()) else draw(st.integers(0, available - 1))
                for _ in range(arity)]
        hazards = [draw(hazard) for _ in range(arity)]
        if kind == "sub" and args[0] == args[1]:
            kind = "add"     # h - h cancels: an open limitation (self_subtract), drawn with open_bugs only
        if kind in ("add", "sub") and draw(st.integers(0, 5)) == 0:
            hazards[1] = draw(st.sampled_from(ZERO_HAZARDS + (OPEN_BUG_ZERO_HAZARDS if open_bugs else ())))
        node = Node(op=kind, args=args, hazards=hazards,
                    zero_input=kind in ZERO_INPUT_OPS and draw(st.integers(0, 5)) == 0)
        if kind == "act":
            node.activation = draw(st.sampled_from(ACTIVATIONS))
        if kind == "reuse_weight":
            linears = [i for i, n in enumerate(result, start=1) if n.op == "linear"]
            if not linears:
                kind = node.op = "act"
            else:
                node.columns = [draw(st.sampled_from(linears))]
        if kind == "index":
            node.columns = draw(st.lists(st.integers(0, D - 1), min_size=D, max_size=D))
        node.no_grad = kind in PARAM_OPS and draw(st.integers(0, 7)) == 0
        node.grad_switch = draw(st.sampled_from(["torch.no_grad()", "torch.set_grad_enabled(False)"]))
        result.append(node)
    return result


@st.composite
def model_specs(draw, max_nodes: int = 7, freeze_zero_layers: bool = True,
                open_bugs: bool = False) -> ModelSpec:
    """A random model; ``freeze_zero_layers=False`` never freezes the zero-initialised pairs,
    ``open_bugs=True`` also generates the patterns of known, not yet fixed graphcheck bugs."""
    count = draw(st.integers(1, max_nodes))
    graph = draw(nodes(count, open_bugs))
    values = list(range(1, count + 1))
    n_outputs = draw(st.integers(1, min(3, count)))
    # The last node is usually an output; the others are random (dead branches happen).
    outputs = draw(st.lists(st.sampled_from(values), min_size=n_outputs, max_size=n_outputs))
    if draw(st.booleans()):
        outputs[0] = count
    output_hazards = [draw(st.one_of(st.none(), st.none(), st.none(), st.none(), st.sampled_from(EDGE_HAZARDS)))
                      for _ in outputs]
    loss_outputs = draw(st.one_of(
        st.none(),
        st.lists(st.integers(0, len(outputs) - 1), min_size=1, max_size=len(outputs), unique=True),
    ))
    linears = [i for i, node in enumerate(graph, start=1) if node.op == "linear"]
    tied = []
    if len(linears) >= 2 and draw(st.integers(0, 2)) == 0:
        source, target = sorted(draw(st.lists(st.sampled_from(linears), min_size=2, max_size=2, unique=True)))
        tied.append((source, target))
    attributes = [attribute for i, node in enumerate(graph, start=1) for attribute, _ in _modules(i, node)
                  if not (tied and attribute in (f"lin{tied[0][0]}", f"lin{tied[0][1]}"))
                  and (freeze_zero_layers or not attribute.startswith(("za", "zb")))]
    frozen = sorted(set(draw(st.lists(st.sampled_from(attributes), max_size=2)))) if attributes else []
    spare = draw(st.integers(0, 1))
    return ModelSpec(nodes=graph, outputs=outputs, output_hazards=output_hazards,
                     loss_outputs=loss_outputs, tied=tied, frozen=frozen, spare_modules=spare)
