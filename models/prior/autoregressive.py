"""Conditional autoregressive transformer over tokens, and its fast sampler.

:class:`ConditionalAutoregressive` predicts token ``t`` from the tokens before it plus the
conditioning: a start embedding at position 0 (labels, or a learnt token), a per-position
conditioning added to every input (timing or upsampled upper-level tokens) and, through cross
attention, lyric-encoder states. It runs teacher-forced over whole sequences (:meth:`forward`)
or samples (:meth:`generate`), gpt-fast style:

- a :class:`~models.prior.kv_cache.KVCache` preallocated for the window;
- :meth:`prefill`: the given context through the stack in chunks of ``chunk_size`` positions;
- :meth:`step`: the static one-token step (the position a tensor, fixed-shape cache reads),
  run by a :class:`~models.prior.decoder.StepDecoder` eager, compiled or in a CUDA graph;
- :meth:`decode_one_token`: one position -> logits through the decoder's session;
- :meth:`decode_n_tokens`: the loop that feeds each drawn token back.

:class:`LyricEncoder` is the same transformer used as the separate lyrics encoder of 5b_lyrics.
State-dict layout matches transformers' ``JukeboxConditionalAutoregressive``.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from models.config import JukeboxPriorConfig
from models.prior.attention import Conv1D
from models.prior.decoder import DecodeOptions, DecodeSession, StepDecoder
from models.prior.kv_cache import KVCache
from models.prior.sampling import TokenDrawer
from models.prior.transformer import BlockWeights, LayerNorm, affine, LayerStack, embedding_init_std, positional_init_std


class PositionalEmbedding(nn.Module):
    """Learnt absolute position embedding, ``pos_emb`` float [n_ctx, width]."""

    def __init__(self, n_ctx: int, width: int, init_std: float = 0.01):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.empty(n_ctx, width))
        nn.init.normal_(self.pos_emb, std=init_std)

    def forward(self) -> torch.Tensor:
        return self.pos_emb


def next_token_bits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy in bits of logits [..., vocab] against target ids [...]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1)) / math.log(2.0)


def _at_positions(conditioning: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Per-position conditioning [B, L, width] cut to ``[start, end)``; a [B, 1, width] one broadcasts."""
    return conditioning if conditioning.shape[1] == 1 else conditioning[:, start:end]


class StepWeights(NamedTuple):
    """What :meth:`ConditionalAutoregressive.step` reads besides its inputs and cache.

    embed: [embed_dim, width] token embedding; pos_emb: [n_ctx, width]; blocks: each block's
    :class:`~models.prior.transformer.BlockWeights`; head: float32 [embed_dim, width], the output
    projection (logits are float32 whatever the model's dtype); head_source: the model's own
    output projection weight, which ``head`` copies when the dtypes differ.
    """

    embed: torch.Tensor
    pos_emb: torch.Tensor
    blocks: list[BlockWeights]
    head: torch.Tensor
    head_source: torch.Tensor

    def refresh_head(self) -> None:
        """Copy the model's output projection into ``head`` (when they are not one tensor)."""
        if self.head.data_ptr() != self.head_source.data_ptr():
            with torch.no_grad():
                self.head.copy_(self.head_source)


class ConditionalAutoregressive(nn.Module):
    """Autoregressive transformer over ``embed_dim`` token ids and ``n_ctx`` positions.

    Args:
        config: the prior (or lyric-encoder) config: widths, layers, attention pattern, dropouts.
        n_ctx: sequence length (default ``config.n_ctx``; lyrics + music when merged).
        embed_dim: vocabulary size (default ``config.music_vocab_size``).
        audio_conditioning: inputs get a per-position conditioning (timing or upper tokens).
        metadata_conditioning: position 0 gets the label embedding; otherwise a learnt start token.
        is_encoder: no output projection (the lyric encoder).
    """

    def __init__(
        self,
        config: JukeboxPriorConfig,
        n_ctx: int | None = None,
        embed_dim: int | None = None,
        audio_conditioning: bool = False,
        metadata_conditioning: bool = False,
        is_encoder: bool = False,
    ):
        super().__init__()
        self.width = config.hidden_size
        self.num_layers = config.num_layers
        self.n_ctx = n_ctx if n_ctx is not None else config.n_ctx
        self.embed_dim = embed_dim if embed_dim is not None else config.music_vocab_size
        self.audio_conditioning = audio_conditioning
        self.metadata_conditioning = metadata_conditioning
        self.is_encoder = is_encoder
        self.encoder_len = config.nb_relevant_lyric_tokens
        self.embed_tokens = nn.Embedding(self.embed_dim, self.width)
        nn.init.normal_(self.embed_tokens.weight, std=embedding_init_std(config))
        self.embed_tokens_dropout = nn.Dropout(config.emb_dropout)
        if not metadata_conditioning:
            self.start_token = nn.Parameter(torch.empty(1, self.width))
            nn.init.normal_(self.start_token, std=positional_init_std(config))
        self.pos_emb = PositionalEmbedding(self.n_ctx, self.width, positional_init_std(config))
        self.pos_emb_dropout = nn.Dropout(config.emb_dropout)
        self.transformer = LayerStack.from_config(config, self.n_ctx)
        # The merged lyrics/music model adds the conditioning only to the inputs; the others also
        # add it to the outputs and tie the output projection to the token embedding.
        self.add_cond_after_transformer = not config.merged_decoder
        self.share_embed_tokens_fc_proj_out = not config.merged_decoder
        if not is_encoder:
            self.fc_proj_out = nn.Linear(self.width, self.embed_dim, bias=False)
            if self.share_embed_tokens_fc_proj_out:
                self.fc_proj_out.weight = self.embed_tokens.weight
            else:
                nn.init.normal_(self.fc_proj_out.weight, std=embedding_init_std(config))

        # The one-token step's buffers, sessions and graphs, made at the first window.
        self._decode_options, self._decoder = DecodeOptions(), None

    def reset_non_persistent_buffers(self) -> None:
        """Re-tie the output projection to the token embedding (``load_state_dict(assign=True)``
        replaces the two tied parameters by separate tensors; the loader calls this afterwards)."""
        if not self.is_encoder and self.share_embed_tokens_fc_proj_out:
            self.fc_proj_out.weight = self.embed_tokens.weight

    # ------------------------------------------------------------------ shared pieces
    def _start_embedding(self, batch: int, metadata_conditioning: torch.Tensor | None) -> torch.Tensor:
        """Input of position 0: float [batch, 1, width]."""
        if self.metadata_conditioning:
            if metadata_conditioning is None:
                raise ValueError("this model starts from the label embedding: metadata_conditioning is required")
            return metadata_conditioning.reshape(batch, 1, self.width)
        return self.start_token.expand(batch, 1, self.width)

    def _conditioning(self, audio_conditioning: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The per-position conditioning, or a zero [batch, 1, width] one when there is none."""
        if self.audio_conditioning and audio_conditioning is not None:
            return audio_conditioning
        return torch.zeros(batch, 1, self.width, device=device, dtype=self.embed_tokens.weight.dtype)

    # ------------------------------------------------------------------ teacher forcing
    def hidden_states(
        self,
        tokens: torch.Tensor,
        audio_conditioning: torch.Tensor | None = None,
        metadata_conditioning: torch.Tensor | None = None,
        last_encoder_hidden_states: torch.Tensor | None = None,
        record_layers: Collection[int] = (),
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Final hidden states float [B, T, width] of ``tokens`` long [B, T] (inputs shifted right
        behind the start embedding), and the attention probabilities of ``record_layers``."""
        batch, length = tokens.shape
        cond = self._conditioning(audio_conditioning, batch, tokens.device)
        inputs = torch.cat([self._start_embedding(batch, metadata_conditioning), self.embed_tokens(tokens[:, :-1])], dim=1)
        hidden = (
            self.embed_tokens_dropout(inputs)
            + self.pos_emb_dropout(self.pos_emb()[:length])
            + _at_positions(cond, 0, length)
        )
        hidden, recorded = self.transformer(hidden, last_encoder_hidden_states, record_layers)
        if self.add_cond_after_transformer:
            hidden = hidden + _at_positions(cond, 0, length)
        return hidden, recorded

    def forward(
        self,
        tokens: torch.Tensor,
        audio_conditioning: torch.Tensor | None = None,
        metadata_conditioning: torch.Tensor | None = None,
        last_encoder_hidden_states: torch.Tensor | None = None,
        get_preds: bool = False,
        get_acts: bool = False,
        get_sep_loss: bool = False,
    ):
        """Teacher-forced pass over ``tokens`` long [B, T].

        Returns the hidden states for an encoder; otherwise ``(loss, extra)`` where loss is the
        next-token cross entropy in bits (a pair ``(lyric_loss, music_loss)`` split at
        ``encoder_len`` with ``get_sep_loss``) and extra is the logits [B, T, embed_dim]
        (``get_preds``), the hidden states (``get_acts``) or None.
        """
        tokens = tokens.reshape(tokens.shape[0], -1).long()
        hidden, _ = self.hidden_states(tokens, audio_conditioning, metadata_conditioning, last_encoder_hidden_states)
        if self.is_encoder:
            return hidden
        logits = self.fc_proj_out(hidden)
        if get_sep_loss:
            n = self.encoder_len
            loss = (next_token_bits(logits[:, :n], tokens[:, :n]), next_token_bits(logits[:, n:], tokens[:, n:]))
        else:
            loss = next_token_bits(logits, tokens)
        if get_preds:
            return loss, logits
        if get_acts:
            return loss, hidden
        return loss, None

    # ------------------------------------------------------------------ sampling
    def embed_positions(
        self,
        prev_tokens: torch.Tensor | None,
        start: int,
        conditioning: torch.Tensor,
        metadata_conditioning: torch.Tensor | None,
    ) -> torch.Tensor:
        """Inputs float [B, n, width] of positions ``[start, start + n)``.

        ``prev_tokens`` long [B, k] are the tokens at positions ``start - 1 ...`` (fed at the
        next position); at ``start == 0`` the start embedding comes first (n = k + 1).
        """
        parts = []
        if start == 0:
            parts.append(self._start_embedding(conditioning.shape[0], metadata_conditioning))
        if prev_tokens is not None and prev_tokens.shape[1]:
            parts.append(self.embed_tokens(prev_tokens))
        inputs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        end = start + inputs.shape[1]
        return inputs + self.pos_emb.pos_emb[start:end] + _at_positions(conditioning, start, end)

    def _run_cached(self, inputs: torch.Tensor, start: int, cache: KVCache, conditioning: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer.forward_cached(inputs, start, cache)
        if self.add_cond_after_transformer:
            hidden = hidden + _at_positions(conditioning, start, start + inputs.shape[1])
        return hidden

    def prefill(
        self,
        context: torch.Tensor,
        cache: KVCache,
        conditioning: torch.Tensor,
        metadata_conditioning: torch.Tensor | None,
        chunk_size: int | None = None,
    ) -> None:
        """Run positions ``[0, L)`` of ``context`` long [B, L] through the stack, filling ``cache``.

        Chunks of ``chunk_size`` positions (all at once when None) bound the memory; the result
        does not depend on the chunking.
        """
        length = context.shape[1]
        step = chunk_size or max(length, 1)
        for start in range(0, length, step):
            end = min(start + step, length)
            inputs = self.embed_positions(context[:, max(start - 1, 0) : end - 1], start, conditioning, metadata_conditioning)
            self._run_cached(inputs, start, cache, conditioning)

    def step(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        conditioning: torch.Tensor,
        start: torch.Tensor,
        cache: KVCache,
        weights: StepWeights,
        reads: dict | None = None,
    ) -> torch.Tensor:
        """The static one-token step: logits of ``position`` given the token before it.

        One function of tensors for every position of every window (eager, compiled or captured
        in a CUDA graph, see :mod:`models.prior.decoder`); nothing branches on the position.

        Args:
            token: long [B], the token at ``position - 1`` (ignored at position 0).
            position: long [] (0-dim), the position whose logits to compute.
            conditioning: [B, 1 or n_ctx, width], the window's per-position conditioning.
            start: [B, width], the input of position 0 (start embedding).
            cache: this stack's :class:`KVCache` with every earlier position; the position's
                keys/values are stored in it.
            weights: :meth:`step_weights`, with the float32 output projection.
            reads: ``cache.layout.reads(position)`` when the caller has them (the eager runner
                looks them up by the position's int); None: computed here, from ``position``.

        Returns:
            float32 logits [B, embed_dim].
        """
        batch, t = token.shape[0], position.view(1)
        cond = conditioning[:, 0] if conditioning.shape[1] == 1 else conditioning.index_select(1, t).view(batch, self.width)
        embedded = torch.where(position == 0, start, F.embedding(token, weights.embed))
        inputs = embedded + weights.pos_emb.index_select(0, t) + cond
        hidden = self.transformer.step(inputs, t, cache, weights.blocks, reads)
        if self.add_cond_after_transformer:
            hidden = hidden + cond
        hidden = hidden if hidden.dtype == torch.float32 else hidden.float()
        if torch.compiler.is_compiling():
            return affine(hidden, weights.head.t())
        return F.linear(hidden, weights.head)

    def step_weights(self, head: torch.Tensor | None = None) -> StepWeights:
        """The tensors :meth:`step` reads, as plain references. ``head``: the float32 output
        projection; None: the weight itself for a float32 model, else a copy (refresh it with
        :meth:`StepWeights.refresh_head` after loading weights)."""
        source = self.fc_proj_out.weight
        if head is None:
            head = source.detach().float()
        return StepWeights(self.embed_tokens.weight, self.pos_emb.pos_emb, self.transformer.step_weights(), head, source)

    @property
    def decoder(self) -> StepDecoder:
        """This model's :class:`StepDecoder` (kept across windows; see :meth:`set_decode_options`)."""
        if self._decoder is None:
            self._decoder = StepDecoder(self, self._decode_options)
        return self._decoder

    def __getstate__(self) -> dict:
        # Copies and pickles start without this instance's decode buffers, graphs and compiled code.
        state = self.__dict__.copy()
        state["_decoder"] = None
        return state

    def set_decode_options(self, options: DecodeOptions) -> None:
        """Run the one-token step eager, compiled and/or in CUDA graphs from the next window on."""
        if not isinstance(options, DecodeOptions):
            raise ValueError(f"expected DecodeOptions, got {type(options).__name__}")
        self._decode_options, self._decoder = options, None

    def decode_one_token(self, session: DecodeSession, prev_token: torch.Tensor | None, position: int) -> torch.Tensor:
        """float32 logits [B, embed_dim] of ``position`` whose input is ``prev_token`` long [B]
        (None at position 0), every earlier position being in ``session``'s cache."""
        return session.logits(prev_token, position)

    def decode_n_tokens(
        self,
        session: DecodeSession,
        prev_token: torch.Tensor | None,
        start: int,
        n_new: int,
        draw: TokenDrawer,
        vocab_range: tuple[int, int] | None = None,
    ) -> torch.LongTensor:
        """Draw the tokens of positions ``[start, start + n_new)`` one by one: long [B, n_new].

        ``prev_token`` long [B] is the token at ``start - 1`` (None when ``start == 0``);
        ``vocab_range`` = (lo, hi) restricts the draws to ids ``lo <= id < hi``.
        """
        if n_new == 0:
            return torch.empty(session.batch, 0, dtype=torch.long, device=session.buffers.token.device)
        lo, hi = vocab_range or (0, self.embed_dim)
        restricted = (lo, hi) != (0, self.embed_dim)
        drawn = []
        for step in range(n_new):
            logits = self.decode_one_token(session, prev_token, start + step)
            prev_token = draw(logits[:, lo:hi], step) + lo if restricted else draw(logits, step)
            drawn.append(prev_token)
        return torch.stack(drawn, dim=1)

    def generate(
        self,
        context: torch.Tensor,
        n_new: int,
        draw: TokenDrawer,
        audio_conditioning: torch.Tensor | None = None,
        metadata_conditioning: torch.Tensor | None = None,
        last_encoder_hidden_states: torch.Tensor | None = None,
        chunk_size: int | None = None,
        vocab_range: tuple[int, int] | None = None,
    ) -> torch.LongTensor:
        """Continue ``context`` long [B, L] (positions 0..L-1) by ``n_new`` drawn tokens: long [B, n_new].

        ``audio_conditioning`` [B, n_ctx, width] (or [B, 1, width]), ``metadata_conditioning``
        [B, 1, width], ``last_encoder_hidden_states`` [B, n_lyric, width] for cross attention,
        all in the model's dtype.
        """
        batch, length = context.shape
        if n_new < 0 or length + n_new > self.n_ctx:
            raise ValueError(f"cannot add {n_new} new tokens to {length} context tokens within this model's {self.n_ctx} positions")
        conditioning = self._conditioning(audio_conditioning, batch, context.device)
        if conditioning.shape[0] != batch:
            conditioning = conditioning.expand(batch, -1, -1)
        decoder = self.decoder
        with decoder.lock:
            session = decoder.session(batch)
            session.begin(conditioning, self._start_embedding(batch, metadata_conditioning)[:, 0], last_encoder_hidden_states)
            self.prefill(context, session.cache, conditioning, metadata_conditioning, chunk_size)
            last = context[:, -1] if length else None
            return self.decode_n_tokens(session, last, length, n_new, draw, vocab_range)


class LyricEncoder(ConditionalAutoregressive):
    """The separate lyrics encoder (5b_lyrics): a transformer over lyric tokens whose states,
    projected to the prior's width and normalised, are what cross attention reads.

    Args:
        config: the encoder's config (``encoder_config`` of the prior).
        n_ctx: lyric tokens per window (the prior's ``nb_relevant_lyric_tokens``).
        lyric_vocab_size: lyric vocabulary.
        out_width: the prior's width.
        init_scale: the prior's init scale (for the projection and lyric head).
    """

    def __init__(self, config: JukeboxPriorConfig, n_ctx: int, lyric_vocab_size: int, out_width: int, init_scale: float = 0.2):
        super().__init__(config, n_ctx=n_ctx, embed_dim=lyric_vocab_size, is_encoder=True)
        self.proj_in = Conv1D(config.hidden_size, out_width, 0.02 * init_scale)
        self.final_layer_norm = LayerNorm(out_width)
        self.lm_head = nn.Linear(out_width, lyric_vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02 * init_scale)

    def encode(self, lyric_tokens: torch.Tensor) -> torch.Tensor:
        """lyric_tokens long [B, n_ctx] -> encoder states float [B, n_ctx, out_width]."""
        hidden, _ = self.hidden_states(lyric_tokens.long())
        return self.final_layer_norm(self.proj_in(hidden))
