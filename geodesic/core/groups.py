"""Coupled channel groups: for any net, the parameter slices that must be zero together for one channel to be
exactly zero everywhere it is used, so that it can be removed.

A group is one output channel of a convolution (or neuron of a hidden linear layer) together with every channel
tied to it: the γ and β of the BatchNorm after it, and the channels of the other convolutions that feed the same
residual addition (or the concatenation slot it lands in). Its `idx` holds the PRODUCER slices only: the output
rows (and bias entries) of each conv/linear in the group and γ/β of each BatchNorm. The consumers' input slices are
not in it: a zero channel contributes nothing through them, whatever they hold, and zeroing them would change the
function. With a group's idx at zero, its channel is exactly 0 after every conv, BatchNorm, ReLU, pooling and
residual sum of the group, for every input (tests/test_groups.py checks it with forward hooks).

The coupling comes from Torch-Pruning's DependencyGraph (the reference implementation of "DepGraph: Towards Any
Structural Pruning", CVPR 2023), traced through autograd from one forward pass: it knows residual additions,
concatenations and splits (with index mappings), flatten into a linear layer, BatchNorm, depthwise and grouped
convolutions, and it also does the removal (export.py). Hand tracing with torch.fx would redo all of that and
break on the same dynamic code; torch.nn.utils.prune only masks, and NNI's mask propagation is a heavier framework.
Roots are the modules a model lists in its `prunable` attribute, else every Conv1d/2d/3d and Linear; a group whose
channel reaches the net's output (the classifier's logits) is never one. Elementwise operations between a producer
and its consumers must map 0 to 0 (ReLU, max/avg pooling, addition of coupled channels do); export.py checks the
compact net against the zeroed one, so a net that breaks this is refused there rather than exported wrong.
A model may set `input_shape` (C, H, W without the batch); the zoo's default is (1, 28, 28).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .params import Group, spec_of

DEFAULT_INPUT_SHAPE = (1, 28, 28)
ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A fixed random batch the model accepts: (batch, *model.input_shape), default (batch, 1, 28, 28), in [0, 1]."""
    shape = tuple(getattr(model, "input_shape", DEFAULT_INPUT_SHAPE))
    return torch.rand((batch, *shape), generator=torch.Generator().manual_seed(0))


def dependency_graph(model: nn.Module, example: torch.Tensor | None = None):
    """Torch-Pruning's DependencyGraph of `model`, traced on `example` (the model itself is traced, and left in
    the train/eval mode it had; its parameters must require grad, as tracing follows autograd)."""
    import torch_pruning as tp

    example = example_input(model) if example is None else example
    was_training = model.training
    try:
        with torch.inference_mode(False), torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        model.train(was_training)


def candidate_roots(model: nn.Module) -> list[str]:
    """Names of the modules whose output channels start a group: `model.prunable` when the model lists them, else
    every (non-transposed) convolution and linear layer, in definition order."""
    listed = getattr(model, "prunable", None)
    if listed is not None:
        return list(listed)
    return [name for name, m in model.named_modules() if isinstance(m, ROOT_TYPES)]


def _out_channel_items(DG, group) -> list[tuple[nn.Module, list[int], list[int]]]:
    """(module, own channel indices, root channel indices) of every output-side item of a Torch-Pruning group."""
    items = []
    for item in group:
        if DG.is_out_channel_pruning_fn(item.dep.handler):
            items.append((item.dep.target.module, list(item.idxs), list(item.root_idxs)))
    return items


def _reaches_output(DG, group) -> bool:
    """Whether the group's channels are part of the net's output: an output side with no consumer, or the
    output node itself."""
    import torch_pruning as tp

    for item in group:
        node = item.dep.target
        if node.type == tp.ops.OPTYPE.OUTPUT or (DG.is_out_channel_pruning_fn(item.dep.handler) and not node.outputs):
            return True
    return False


def _producer_slices(spec, name: str, module: nn.Module, channel: int) -> list[torch.Tensor]:
    """Flat indices of output channel `channel` of one producer: a conv/linear weight row and bias entry, or a
    BatchNorm's γ and β."""
    if isinstance(module, ROOT_TYPES) or isinstance(module, NORM_TYPES):
        out = []
        for pname in ("weight", "bias"):
            full = f"{name}.{pname}" if name else pname
            if full not in spec.names:
                continue
            shape = spec.shapes[spec.names.index(full)]
            per = shape[1:].numel()
            start = spec.slice(full).start + channel * per
            out.append(torch.arange(start, start + per))
        return out
    if any(True for _ in module.parameters(recurse=False)):
        raise ValueError(f"{name} ({type(module).__name__}) is coupled to a prunable channel, but only convolutions, "
                         "linear layers and BatchNorm are known to output exact zeros for a zeroed channel")
    return []


def coupled_groups(model: nn.Module, example_input: torch.Tensor | None = None,
                   roots: list[str] | None = None) -> list[Group]:
    """One Group per coupled output channel, sorted by root module (definition order), then channel.

    name: "conv1[3]" for a channel coupled to nothing else, "conv1+layer1.conv2[3]" for channel 3 of both convs
    feeding one residual sum (their BatchNorms go with them), "a[10]+b[2]" when the coupled channels have different
    numbers (a concatenation); layer: the root (the group's first conv/linear in definition order); index: its
    channel there; idx: the producer slices in the flat vector of `params.spec_of(model)`, ascending.
    `example_input` defaults to `example_input(model)`; `roots` to `candidate_roots(model)`.
    """
    traced = copy.deepcopy(model)  # traced with every parameter requiring grad; the caller's model stays as it is
    for p in traced.parameters():
        p.requires_grad_(True)
    DG = dependency_graph(traced, example_input)
    names = {m: n for n, m in traced.named_modules()}
    order = {n: i for i, (n, _) in enumerate(traced.named_modules())}
    spec = spec_of(model)
    covered: set[nn.Module] = set()
    groups: list[Group] = []
    for root_name in roots if roots is not None else candidate_roots(traced):
        try:
            root = traced.get_submodule(root_name)
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no module {root_name!r} to prune") from None
        if root in covered or root not in DG.module2node:
            continue
        pruner = DG.get_pruner_of_module(root)
        if pruner is None or pruner.get_out_channels(root) is None:
            continue
        tg = DG.get_pruning_group(root, pruner.prune_out_channels, list(range(pruner.get_out_channels(root))))
        items = [(m, idxs, ridxs) for m, idxs, ridxs in _out_channel_items(DG, tg) if m in names]
        covered.update(m for m, _, _ in items)
        if _reaches_output(DG, tg):
            continue
        items.sort(key=lambda t: order[names[t[0]]])
        producers = []  # (name, module, {root index: [own channel indices]})
        for m, idxs, ridxs in items:
            own: dict[int, list[int]] = {}
            for i, r in zip(idxs, ridxs):
                own.setdefault(r, []).append(i)
            producers.append((names[m], m, own))
        for r in range(pruner.get_out_channels(root)):
            here = [(n, m, own[r]) for n, m, own in producers if r in own]
            convs = [t for t in here if isinstance(t[1], ROOT_TYPES)] or here
            lead, c = convs[0][0], convs[0][2][0]  # the first conv/linear in definition order, its channel
            if all(own == [c] for _, _, own in convs):
                label = "+".join(n for n, _, _ in convs) + f"[{c}]"
            else:
                label = "+".join(f"{n}[{','.join(map(str, own))}]" for n, _, own in convs)
            slices = [s for n, m, own in here for i in own for s in _producer_slices(spec, n, m, i)]
            idx = torch.cat(slices).unique(sorted=True) if slices else torch.zeros(0, dtype=torch.long)
            groups.append(Group(label, lead, c, idx))
    groups.sort(key=lambda g: (order[g.layer], g.index))
    return groups
