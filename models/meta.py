"""Building modules on the meta device, with no initialisation.

A module built under ``torch.device("meta")`` has shapes and no storage, to be filled from a
checkpoint. Its constructors still run their initialisers (``nn.init.normal_`` in
``nn.Embedding.reset_parameters`` and ours); on meta tensors PyTorch dispatches those to its
Python reference kernels, and the first one imports ``torch._dynamo`` (about 1.4 s of CPU, paid
again by every stage actor that loads a model). :func:`empty_on_meta` builds on meta and skips
the initialisers of meta tensors: there is nothing to initialise there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

_INITIALISERS = frozenset({
    torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.trunc_normal_, torch.nn.init.constant_,
    torch.nn.init.zeros_, torch.nn.init.ones_, torch.nn.init.xavier_uniform_, torch.nn.init.xavier_normal_,
    torch.nn.init.kaiming_uniform_, torch.nn.init.kaiming_normal_, torch.nn.init.orthogonal_,
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_,
})


class _SkipMetaInit(TorchFunctionMode):
    """Initialisers of meta tensors return the tensor untouched; everything else runs as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _INITIALISERS:
            tensor = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


@contextlib.contextmanager
def empty_on_meta() -> Iterator[None]:
    """Modules constructed inside are on the meta device, their initialisers skipped."""
    with torch.device("meta"), _SkipMetaInit():
        yield
