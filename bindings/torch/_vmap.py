"""Batching rules (``torch.vmap``) for the custom ops.

The solves are opaque to torch, so they batch by hand: a vmapped image batch
joins the images' own batch dimension (one call); a vmapped weight means one
call per weight (one triangular system per weight), stacked. Under the
default convolution route, ``torch.func`` never needs the rules of the other
ops: it sees through the plain-torch convolutions (see :mod:`.ops`); the
loop serves direct calls of those ops and the ``"invconv_cupy"`` route.
"""

from __future__ import annotations

import torch


def _element(args, in_dims, index):
    return [a.select(dim, index) if dim is not None else a for a, dim in zip(args, in_dims)]


def loop(op):
    """The rule that calls ``op`` once per vmapped element and stacks the results on dimension 0."""

    def rule(info, in_dims, *args, **kwargs):
        results = [op(*_element(args, in_dims, index), **kwargs) for index in range(info.batch_size)]
        if isinstance(results[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*results)), (0,) * len(results[0])
        return torch.stack(results), 0

    return rule


def fold_images(op):
    """The rule of a solve ``op(image, weight, orientation)``: one call for vmapped images, a loop over weights."""
    per_element = loop(op)

    def rule(info, in_dims, image, weight, *args, **kwargs):
        image_dim, weight_dim = in_dims[:2]
        if weight_dim is not None:
            return per_element(info, in_dims, image, weight, *args, **kwargs)
        stacked = image.movedim(image_dim, 0)
        result = op(stacked.reshape(-1, *stacked.shape[2:]), weight, *args, **kwargs)
        return result.view(stacked.shape), 0

    return rule
