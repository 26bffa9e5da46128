"""Parameter naming: canonical names as ``named_parameters()`` gives them, aliases, and the tensors a run uses."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from graphcheck.model_graph import ParamInfo
from graphcheck.running import buffers_on, canonical_parameters, own_leaves
from graphcheck.sources import assignment_location


@dataclass
class Execution:
    """Where the structure is executed: the meta device or the CPU with the real weights."""
    device: str                         # "meta" or "cpu"
    params: dict[str, torch.Tensor]     # canonical name -> tensor used in the run
    names_by_id: dict[int, str]         # id(tensor used in the run) -> canonical name



class ParamTable:
    """Canonical parameter names (as ``named_parameters()`` gives them) and their aliases."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        tensors, self.alias = canonical_parameters(model)
        self.canonical: dict[str, ParamInfo] = {
            name: ParamInfo(name=name, shape=tuple(param.shape), requires_grad=param.requires_grad,
                            module=name.rpartition(".")[0], locate=functools.partial(assignment_location, model, name))
            for name, param in tensors.items()}
        for name, first in self.alias.items():
            if name != first:
                self.canonical[first].aliases.append(name)
        self.buffers = {name: buf for name, buf in model.named_buffers(remove_duplicate=False)}
        self.real = any(not p.is_meta for p in model.parameters())

    def execution(self, device: str) -> tuple[Execution, dict[str, torch.Tensor]]:
        """Tensors to run with: fresh meta leaves, or copies of the real parameters on the CPU.

        Copies, because forward may write to its weights (a momentum encoder's update under
        ``no_grad``, as in MoCo): the user's tensors must come out as they went in.
        """
        named = dict(self.model.named_parameters(remove_duplicate=False))
        params = own_leaves({name: named[name] for name in self.canonical}, device)
        everything = {alias: params[canon] for alias, canon in self.alias.items()}
        everything.update(buffers_on(self.model, device))
        names_by_id = {id(t): name for name, t in params.items()}
        return Execution(device, params, names_by_id), everything

