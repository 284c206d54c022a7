"""Running the static one-token step: buffers kept across windows, compiled, captured in CUDA graphs.

:meth:`ConditionalAutoregressive.step <models.prior.autoregressive.ConditionalAutoregressive.step>`
is one pure function of tensors: the previous token, the position, the window's conditioning and
start embedding, the KV cache and the float32 output weights. A :class:`StepDecoder` owns those
tensors for one model and runs the step on them in one of three ways (:class:`DecodeOptions`):

- eager;
- ``torch.compile(fullgraph=True, dynamic=False)``: one compiled graph per batch size, reused
  for every position of every window (the position is a tensor, so nothing recompiles);
- captured in a CUDA graph (CUDA only), one per batch size, replayed for every token of every
  window: a step costs one launch instead of ~15 per layer.

Every batch size gets a :class:`DecodeSession` whose tensors are views of the first rows of one
allocation made for the largest batch seen, so a decoder holds one KV cache whatever batch sizes
it serves; a larger batch reallocates and drops the sessions (and their graphs). A model keeps its
decoder, so a pipeline actor keeps its graphs across windows. Windows of one model therefore run
one at a time (:attr:`StepDecoder.lock`); copies and pickles of a model leave its decoder behind.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from models.prior.kv_cache import KVCache

if TYPE_CHECKING:
    from models.prior.autoregressive import ConditionalAutoregressive, StepWeights

logger = logging.getLogger(__name__)

# Each batch size is one compiled graph of the step; dynamo's default of 8 per function would
# fall back to eager past the 8th batch size.
_RECOMPILE_LIMIT = 64


def _compile(step, device: torch.device):
    """``torch.compile`` of the step for ``device``. On CPU the generated code calls its kernels
    from C++ (``cpp_wrapper``), takes its intermediates from one planned pool
    (``memory_planning``) and does not re-check its ~100 inputs' sizes (``size_asserts``: dynamo's
    guards already did): per call, each of these costs as much as a small model's arithmetic. On
    CUDA the graph replay makes them irrelevant."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
    options = {"cpp_wrapper": True, "memory_planning": True, "size_asserts": False} if device.type == "cpu" else {}
    return torch.compile(step, fullgraph=True, dynamic=False, options=options)


@dataclass(frozen=True)
class DecodeOptions:
    """How the one-token step runs.

    Attributes:
        compile: ``torch.compile(fullgraph=True, dynamic=False)`` the step (compile time is paid
            once per batch size).
        cuda_graphs: capture the step in a CUDA graph per batch size; None: when the model is on
            a CUDA device. True on a CPU model is refused when the first window is sampled.
    """

    compile: bool = False
    cuda_graphs: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.compile, bool):
            raise ValueError(f"DecodeOptions.compile must be a bool, got {self.compile!r}")
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"DecodeOptions.cuda_graphs must be a bool or None (auto), got {self.cuda_graphs!r}")

    def use_graphs(self, device: torch.device) -> bool:
        """Whether to capture CUDA graphs for a model on ``device``."""
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError(f"DecodeOptions.cuda_graphs=True needs a CUDA model, this one is on {device}")
        return device.type == "cuda" if self.cuda_graphs is None else self.cuda_graphs


class _Buffers:
    """The step's input tensors for ``batch`` rows (views of a larger allocation are fine)."""

    def __init__(self, cache: KVCache, token: torch.Tensor, position: torch.Tensor, conditioning: torch.Tensor,
                 start: torch.Tensor, weights: StepWeights):
        self.cache, self.token, self.position = cache, token, position
        self.conditioning, self.start, self.weights = conditioning, start, weights

    def rows(self, batch: int) -> _Buffers:
        return _Buffers(self.cache.rows(batch), self.token[:batch], self.position, self.conditioning[:batch],
                        self.start[:batch], self.weights)


class DecodeSession:
    """The step of one batch size: its buffers and, when captured, its CUDA graph."""

    def __init__(self, decoder: StepDecoder, buffers: _Buffers, capture: bool):
        self.decoder, self.buffers = decoder, buffers
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        if capture:
            self._capture()

    @property
    def cache(self) -> KVCache:
        return self.buffers.cache

    @property
    def batch(self) -> int:
        return self.buffers.token.shape[0]

    def _run(self, position: int | None = None) -> torch.Tensor:
        """The step on the buffers; eager, ``position`` (the buffer's value) looks its cache
        reads up instead of computing them."""
        b = self.buffers
        reads = None if position is None or self.decoder.options.compile else b.cache.layout.reads_at(position)
        return self.decoder.step_fn(b.token, b.position, b.conditioning, b.start, b.cache, b.weights, reads)

    @torch.no_grad()
    def _capture(self) -> None:
        # Warm up on a side stream (this also compiles), then record one step. Both write the
        # cache slot of position 0: every window resets the cache before its prefill.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._run()

    def begin(self, conditioning: torch.Tensor, start: torch.Tensor, encoder_states: torch.Tensor | None) -> None:
        """Start a window: zero the cache, store the window's inputs, fill the cross-attention caches.

        conditioning: [batch, 1 or n_ctx, width]; start: [batch, width], the input of position 0;
        encoder_states: [batch, n_lyric, width] for cross attention, else None.
        """
        b = self.buffers
        b.cache.reset()
        b.conditioning.copy_(conditioning)
        b.start.copy_(start)
        self.decoder.model.transformer.fill_cross_caches(b.cache, encoder_states)
        b.weights.refresh_head()

    def logits(self, token: torch.Tensor | None, position: int) -> torch.Tensor:
        """float32 [batch, vocab] logits of ``position``, whose input is ``token`` long [batch]
        (the token at ``position - 1``; None at position 0). Every earlier position must be in
        the cache. With a CUDA graph the result is a buffer the next call overwrites."""
        b = self.buffers
        if token is not None:
            b.token.copy_(token)
        b.position.fill_(position)
        if self.graph is not None:
            self.graph.replay()
            return self.output
        return self._run(position)


class StepDecoder:
    """The one-token step of ``model`` with its buffers, sessions and graphs (module docstring)."""

    def __init__(self, model: ConditionalAutoregressive, options: DecodeOptions = DecodeOptions()):
        self.model, self.options = model, options
        self.step_fn = model.step  # compiled for the model's device at the first window
        # One window at a time: its session's buffers are the model's (callers hold it from the
        # window's start to its last token).
        self.lock = threading.Lock()
        self._buffers: _Buffers | None = None
        self._sessions: dict[int, DecodeSession] = {}
        self._placement: tuple | None = None

    def session(self, batch: int) -> DecodeSession:
        """The session of ``batch`` rows (made, and captured, on first use)."""
        weight = self.model.embed_tokens.weight
        # Graphs and the float32 head hold the parameters' memory: a model moved, cast or loaded
        # by assignment since gets new buffers and sessions.
        placement = (weight.device, weight.dtype, tuple(p.data_ptr() for p in self.model.parameters()))
        if placement != self._placement or self._buffers is None or batch > self._buffers.token.shape[0]:
            self._allocate(batch, placement)
        if batch not in self._sessions:
            # Normal tensors and views even when sampling under inference_mode or no_grad: later
            # windows write them again, whatever their grad mode.
            with torch.inference_mode(False):
                rows = self._buffers.rows(batch)
                self._sessions[batch] = DecodeSession(self, rows, self.options.use_graphs(weight.device))
        return self._sessions[batch]

    def _allocate(self, batch: int, placement: tuple) -> None:
        model = self.model
        device, dtype, _ = placement
        self._sessions.clear()
        self._buffers = None
        self._placement = placement
        if self.options.compile:
            self.step_fn = _compile(model.step, device)
        n_cond = model.n_ctx if model.audio_conditioning else 1
        with torch.inference_mode(False):
            self._buffers = _Buffers(
                model.transformer.new_cache(batch, dtype, device),
                torch.zeros(batch, dtype=torch.long, device=device),
                torch.zeros((), dtype=torch.long, device=device),
                torch.zeros(batch, n_cond, model.width, dtype=dtype, device=device),
                torch.zeros(batch, model.width, dtype=dtype, device=device),
                model.step_weights(),
            )
        logger.debug("decode buffers for %d rows on %s (%s)", batch, device, dtype)
