"""JukeboxPrior: one level's transformer with its conditioners, the transformers API and ``sample_window``.

Prior levels follow transformers: ``level`` 0 is the top prior (coarsest tokens, lyrics and
timing), ``level`` 1 and 2 the upsamplers, each conditioned on the tokens of the level above.
The VQ-VAE level of a prior is ``vqvae_level = levels - 1 - level``.

Where transformers 4.40.2 departs from the original OpenAI code, this follows the original:

- ``get_music_tokens_conds`` conditions a window on the upper-level tokens of *that window*
  (``[start // r, end // r)``, zero-padded to ``n_ctx // r``), not on the whole upper sequence;
- ``get_metadata`` reads ``offset`` in audio samples (the reference multiplies it by
  ``raw_to_tokens``) and windows each row's *own* lyrics (the reference uses row 0's for all);
- ``forward_tokens`` of a prior without lyrics returns a zero encoder loss instead of crashing,
  and ``get_attn_weights`` returns attention probabilities, not projection weights;
- a no-lyrics prior reads only its ``max_nb_genres`` genre slots, ignoring lyric tokens a label
  row may carry.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from torch.nn import functional as F

from models.config import AttentionKind, JukeboxPriorConfig
from models.pretrained import PreTrainedModule
from models.prior.autoregressive import ConditionalAutoregressive, LyricEncoder, next_token_bits
from models.prior.conditioners import (
    FIRST_GENRE,
    LENGTH,
    OFFSET,
    TOTAL_LENGTH,
    LabelConditioner,
    MusicTokenConditioner,
    relevant_lyric_tokens,
)
from models.prior.decoder import DecodeOptions
from models.prior.sampling import GlobalDrawer, PerRow, SamplingOptions, SeededDrawer, check_window_request, per_row
from models.windows import raw_to_tokens_per_level

Labels = torch.Tensor | Sequence[torch.Tensor]


class JukeboxPrior(PreTrainedModule):
    """A Jukebox prior (see module docstring); same constructor and public API as transformers'.

    Args:
        config: the prior's config.
        level: prior index, 0 = top (default ``config.level``).
        nb_priors: number of priors of the model.
        vqvae_encoder, vqvae_decoder: callables ``(x, start_level, end_level, bs_chunks)`` used
            by :meth:`encode`, :meth:`decode` and :meth:`forward` only.
    """

    config_class = JukeboxPriorConfig

    def __init__(
        self,
        config: JukeboxPriorConfig,
        level: int | None = None,
        nb_priors: int = 3,
        vqvae_encoder: Callable | None = None,
        vqvae_decoder: Callable | None = None,
    ):
        super().__init__()
        self.config = config
        self.vqvae_encoder, self.vqvae_decoder = vqvae_encoder, vqvae_decoder
        self.levels = nb_priors
        self.level = level if level is not None else config.level
        if not 0 <= self.level < nb_priors or len(config.res_downs_t) < nb_priors:
            raise ValueError(
                f"prior level {self.level} needs 0 <= level < nb_priors={nb_priors} and res_downs_t with an entry per "
                f"prior (got {config.res_downs_t})"
            )
        self.base_model_prefix = f"priors.{self.level}"
        self.n_ctx = config.n_ctx
        self.width = config.hidden_size
        self.lyric_conditioning = config.nb_relevant_lyric_tokens > 0
        self.nb_relevant_lyric_tokens = config.nb_relevant_lyric_tokens
        self.encoder_loss_fraction = config.encoder_loss_fraction
        init_std = 0.02 * config.init_scale

        # Upsamplers condition on the tokens of the level above.
        self.audio_conditioning = self.level != 0
        self.cond_level = self.level - 1
        if self.audio_conditioning:
            self.conditioner_blocks = MusicTokenConditioner(
                config.music_vocab_size, config.hidden_size, config.res_conv_width, config.res_conv_depth,
                config.res_downs_t[self.level], config.res_strides_t[self.level],
                dilation_growth_rate=config.res_dilation_growth_rate, dilation_cycle=config.res_dilation_cycle,
                res_convolution_multiplier=config.res_convolution_multiplier, conv_res_scale=bool(config.conv_res_scale),
                zero_out=config.zero_out, init_std=init_std,
            )
        self.metadata_conditioning = config.metadata_conditioning
        if self.metadata_conditioning:
            n_genres, n_artists = config.metadata_dims
            self.metadata_embedding = LabelConditioner(
                config.hidden_size, n_genres, n_artists, config.max_nb_genres, config.n_ctx, config.timing_dims,
                config.sampling_rate, config.min_duration, config.max_duration,
                include_time_signal=not self.audio_conditioning, init_std=init_std,
            )

        self.is_encoder_decoder = config.is_encoder_decoder
        conditioned = self.audio_conditioning or self.metadata_conditioning
        if self.is_encoder_decoder:
            # 1b_lyrics: one transformer over [lyrics, music], music ids shifted past the lyric ids.
            self.input_shapes = [config.nb_relevant_lyric_tokens, config.n_ctx]
            self.embed_dim_shift = [0, config.lyric_vocab_size]
            self.prior = ConditionalAutoregressive(
                config,
                n_ctx=config.nb_relevant_lyric_tokens + config.n_ctx,
                embed_dim=config.lyric_vocab_size + config.music_vocab_size,
                audio_conditioning=conditioned,
                metadata_conditioning=True,
            )
        else:
            if self.lyric_conditioning:
                # 5b_lyrics: a separate lyrics encoder read by cross-attention layers.
                encoder_config = config.encoder_config
                if encoder_config is None:
                    raise ValueError("a prior with nb_relevant_lyric_tokens > 0 and is_encoder_decoder=False needs encoder_config")
                self.lyric_acts_width = encoder_config.hidden_size
                self.encoder_width = config.hidden_size
                self.encoder_dim = config.lyric_vocab_size
                self.encoder = LyricEncoder(
                    encoder_config, config.nb_relevant_lyric_tokens, config.lyric_vocab_size, config.hidden_size, config.init_scale
                )
            self.prior = ConditionalAutoregressive(
                config, audio_conditioning=conditioned, metadata_conditioning=self.metadata_conditioning
            )

        self.next_token_prediction_loss_dims = config.n_ctx
        self.total_loss_dims = self.nb_relevant_lyric_tokens + self.next_token_prediction_loss_dims
        self.downsamples = [stride**down for stride, down in zip(config.res_strides_t, config.res_downs_t)]
        self.cond_downsample = self.downsamples[self.level] if self.level != 0 else None
        self.raw_to_tokens = raw_to_tokens_per_level(config.res_downs_t, config.res_strides_t)[nb_priors - 1 - self.level]
        self.sample_length = self.n_ctx * self.raw_to_tokens

    @property
    def vqvae_level(self) -> int:
        """The VQ-VAE level this prior samples (0 = finest), e.g. the ``level`` of ``window_seed``."""
        return self.levels - 1 - self.level

    @property
    def _label_head(self) -> int:
        """Columns of a label row before the lyrics: total length, offset, length, artist, genres."""
        return FIRST_GENRE + self.config.max_nb_genres

    def _device(self) -> torch.device:
        return self.prior.embed_tokens.weight.device

    def set_decode_options(self, options: DecodeOptions) -> None:
        """How the one-token sampling step runs (eager, compiled, CUDA graphs) from the next window on."""
        self.prior.set_decode_options(options)

    # ------------------------------------------------------------------ labels and conditioning
    def _label_rows(self, labels: Labels) -> list[torch.Tensor]:
        rows = list(labels) if isinstance(labels, torch.Tensor) else [torch.as_tensor(row).reshape(-1) for row in labels]
        for index, row in enumerate(rows):
            if row.dim() != 1 or row.shape[0] < self._label_head:
                raise ValueError(
                    f"label row {index} has shape {tuple(row.shape)}: this prior needs rows of at least {self._label_head} "
                    f"values (total_length, offset, length, artist, {self.config.max_nb_genres} genre slots, lyrics...)"
                )
        return rows

    def set_metadata_lyric_tokens(self, labels: Labels) -> tuple[torch.Tensor, list[list[int]] | None]:
        """Replace each row's lyrics by the ``nb_relevant_lyric_tokens`` relevant to its window.

        labels: long [B, label_len] (or B rows of different lengths) with timing already set.
        Returns (long [B, 4 + max_nb_genres + nb_relevant_lyric_tokens], per-row lyric indices);
        a prior without lyrics returns its labels unchanged (rows: cut to the label head) and None.
        """
        rows = self._label_rows(labels)
        head = self._label_head
        if self.nb_relevant_lyric_tokens > 0:
            windows, indices = [], []
            for row in rows:
                tokens, index = relevant_lyric_tokens(row[head:], self.nb_relevant_lyric_tokens, row[TOTAL_LENGTH], row[OFFSET], row[LENGTH])
                windows.append(torch.cat([row[:head], tokens]))
                indices.append(index)
            return torch.stack(windows), indices
        if isinstance(labels, torch.Tensor):
            return labels, None
        return torch.stack([row[:head] for row in rows]), None

    def get_metadata(self, labels: Labels, start: PerRow, total_length: PerRow, offset: PerRow, get_indices: bool = False):
        """Labels of the window starting at token ``start``: total length, offset (audio samples,
        ``offset + start * raw_to_tokens``) and window length set, lyrics windowed.

        ``start``, ``total_length`` and ``offset`` are each one int for every row or a sequence of
        one int per row (rows of different songs, or of different windows of one song).

        Returns long [B, 4 + max_nb_genres (+ nb_relevant_lyric_tokens)] (and the lyric indices).
        """
        rows = self._label_rows(labels)
        starts, totals, offsets = (per_row(value, len(rows), name) for name, value in (
            ("start", start), ("total_length", total_length), ("offset", offset)))
        timed = []
        for row, row_start, row_total, row_offset in zip(rows, starts, totals, offsets):
            row = row.clone()
            row[TOTAL_LENGTH], row[OFFSET] = int(row_total), int(row_offset) + int(row_start * self.raw_to_tokens)
            row[LENGTH] = int(self.sample_length)
            timed.append(row)
        metadata, indices = self.set_metadata_lyric_tokens(torch.stack(timed) if isinstance(labels, torch.Tensor) else timed)
        return (metadata, indices) if get_indices else metadata

    def _pad_upper(self, upper: torch.Tensor) -> torch.Tensor:
        """Upper-level tokens [B, m <= n_ctx // r] zero-padded at the end to [B, n_ctx // r]."""
        needed = self.n_ctx // self.cond_downsample
        if upper.shape[1] > needed:
            raise ValueError(f"{upper.shape[1]} upper-level tokens exceed the {needed} that condition one window")
        return F.pad(upper.long(), (0, needed - upper.shape[1]))

    def get_music_tokens_conds(self, music_tokens: Sequence[torch.Tensor], start: int, end: int) -> list[torch.Tensor] | None:
        """Upper-level tokens conditioning window ``[start, end)``: ``[long [B, n_ctx // r]]`` (the
        window's slice ``[start // r, end // r)`` of ``music_tokens[level - 1]``, zero-padded), None for the top prior."""
        if self.level == 0:
            return None
        upper = music_tokens[self.level - 1]
        return [self._pad_upper(upper[:, start // self.cond_downsample : end // self.cond_downsample])]

    def prior_preprocess(self, tokens: Sequence[torch.Tensor], conds: Sequence[torch.Tensor | None]):
        """Merge [lyrics, music] into one sequence: ids shifted by ``embed_dim_shift``, missing
        conditionings zero. Returns (long [B, T], float [B, T, width])."""
        batch = tokens[0].shape[0]
        merged = [(part + int(shift)).view(batch, -1) for part, shift in zip(tokens, self.embed_dim_shift)]
        dtype = next((c.dtype for c in conds if c is not None), self.prior.embed_tokens.weight.dtype)
        filled = [
            c if c is not None else torch.zeros(batch, self.input_shapes[i], self.width, dtype=dtype, device=tokens[0].device)
            for i, c in enumerate(conds)
        ]
        return torch.cat(merged, dim=1), torch.cat(filled, dim=1)

    def prior_postprocess(self, tokens: torch.Tensor) -> torch.Tensor:
        """Music part of a merged sequence long [B, T], shifted back to music ids (clamped at 0)."""
        music = tokens[:, self.input_shapes[0] :] - int(self.embed_dim_shift[1])
        return music.clamp(min=0)

    def embed_tokens(self, music_tokens_conds: Sequence[torch.Tensor] | None) -> torch.Tensor | None:
        """Upper-level tokens ``[long [B, m]]`` -> float [B, n_ctx, width] (zero-padded to a window)."""
        if not music_tokens_conds:
            return None
        return self.conditioner_blocks(self._pad_upper(music_tokens_conds[0]))

    def encode(self, hidden_states: torch.Tensor, start_level: int | None = None, end_level: int | None = None, bs_chunks: int = 1):
        """Tokens of raw audio through the VQ-VAE encoder given at construction."""
        if self.vqvae_encoder is None:
            raise ValueError("this prior was built without vqvae_encoder")
        start_level = self.level if start_level is None else start_level
        end_level = self.levels if end_level is None else end_level
        with torch.no_grad():
            return self.vqvae_encoder(hidden_states, start_level=start_level, end_level=end_level, bs_chunks=bs_chunks)

    def decode(self, music_tokens, start_level: int | None = None, end_level: int | None = None, bs_chunks: int = 1):
        """Raw audio of tokens through the VQ-VAE decoder given at construction."""
        if self.vqvae_decoder is None:
            raise ValueError("this prior was built without vqvae_decoder")
        start_level = self.level if start_level is None else start_level
        end_level = self.levels if end_level is None else end_level
        with torch.no_grad():
            return self.vqvae_decoder(music_tokens, start_level=start_level, end_level=end_level, bs_chunks=bs_chunks)

    def get_cond(self, music_tokens_conds, metadata: torch.Tensor | None):
        """(per-position conditioning [B, n_ctx, width] or None, start embedding [B, 1, width] or
        None, lyric tokens [B, nb_relevant_lyric_tokens] or None) of a window's metadata."""
        lyric_tokens = None
        if metadata is not None:
            n_labels = metadata.shape[1] - self.nb_relevant_lyric_tokens
            metadata, lyric_tokens = metadata[:, :n_labels], metadata[:, n_labels:]
        start_emb, timing = self.metadata_embedding(metadata) if self.metadata_conditioning else (None, None)
        conditioning = self.embed_tokens(music_tokens_conds) if self.audio_conditioning else timing
        return conditioning, start_emb, lyric_tokens

    def get_encoder_states(self, lyric_tokens: torch.Tensor | None, sample: bool = False) -> torch.Tensor | None:
        """Lyric-encoder states float [B, nb_relevant_lyric_tokens, width], None without an encoder."""
        if not hasattr(self, "encoder") or lyric_tokens is None:
            return None
        return self.encoder.encode(lyric_tokens)

    def get_encoder_loss(self, last_encoder_hidden_states: torch.Tensor | None, target_lyrics: torch.Tensor | None) -> torch.Tensor:
        """Next-lyric-token loss (bits) of the encoder; 0 for a prior without a lyrics encoder."""
        if hasattr(self, "encoder") and last_encoder_hidden_states is not None:
            return next_token_bits(self.encoder.lm_head(last_encoder_hidden_states), target_lyrics)
        device = next((t.device for t in (last_encoder_hidden_states, target_lyrics) if t is not None), self._device())
        return torch.tensor(0.0, device=device)

    # ------------------------------------------------------------------ teacher forcing
    def _record_layers(self, get_attn_weights: bool | Collection[int]) -> set[int]:
        n_layers = len(self.prior.transformer.kinds)
        if get_attn_weights is True:
            return set(range(n_layers))
        if not get_attn_weights:
            return set()
        layers = set(get_attn_weights)
        bad = sorted(i for i in layers if not 0 <= i < n_layers)
        if bad:
            raise ValueError(f"cannot record attention of layers {bad}: the prior has {n_layers} layers")
        return layers

    def forward_tokens(self, music_tokens, music_tokens_conds=(), metadata=None, get_preds=False, get_attn_weights=False):
        """Teacher-forced pass over a window of ``music_tokens`` long [B, T].

        Returns ``(loss, metrics)`` with metrics ``bpd``, ``encoder_loss``,
        ``next_token_prediction_loss`` (bits) and, with ``get_preds``, ``preds``: logits
        [B, T (+ lyrics when merged), vocab]. With ``get_attn_weights`` (True, or a set of layer
        indices) returns instead the list of recorded attention probabilities, in layer order.
        """
        record = self._record_layers(get_attn_weights)
        conditioning, start_emb, lyric_tokens = self.get_cond(music_tokens_conds, metadata)
        if self.is_encoder_decoder:
            tokens, conditioning = self.prior_preprocess([lyric_tokens, music_tokens], [None, conditioning])
            hidden, recorded = self.prior.hidden_states(tokens, conditioning, start_emb, None, record)
            preds = self.prior.fc_proj_out(hidden)
            n_lyrics = self.nb_relevant_lyric_tokens
            encoder_loss = next_token_bits(preds[:, :n_lyrics], tokens[:, :n_lyrics])
            next_token_loss = next_token_bits(preds[:, n_lyrics:], tokens[:, n_lyrics:])
        else:
            encoder_states = self.get_encoder_states(lyric_tokens)
            encoder_loss = self.get_encoder_loss(encoder_states, lyric_tokens)
            hidden, recorded = self.prior.hidden_states(music_tokens.long(), conditioning, start_emb, encoder_states, record)
            preds = self.prior.fc_proj_out(hidden)
            next_token_loss = next_token_bits(preds, music_tokens.long())
        if get_attn_weights:
            return [recorded[i] for i in sorted(recorded)]
        loss = self.encoder_loss_fraction * encoder_loss * self.nb_relevant_lyric_tokens / self.total_loss_dims
        loss = loss + next_token_loss * self.next_token_prediction_loss_dims / self.total_loss_dims
        metrics = {
            "bpd": next_token_loss.detach().clone(),
            "encoder_loss": encoder_loss.detach().clone(),
            "next_token_prediction_loss": next_token_loss.detach().clone(),
        }
        if get_preds:
            metrics["preds"] = preds.detach().clone()
        return loss, metrics

    def forward(self, hidden_states: torch.Tensor, metadata, decode: bool = False, get_preds: bool = False):
        """Raw audio -> tokens (VQ-VAE encoder) -> ``forward_tokens``. Returns (audio or None, loss, metrics)."""
        music_tokens, *music_tokens_conds = self.encode(hidden_states, bs_chunks=hidden_states.shape[0])
        loss, metrics = self.forward_tokens(music_tokens, music_tokens_conds, metadata, get_preds=get_preds)
        dequantised = self.decode([music_tokens, *music_tokens_conds]) if decode else None
        return dequantised, loss, metrics

    @torch.no_grad()
    def get_alignment_weights(self, music_tokens: torch.Tensor, metadata: torch.Tensor, music_tokens_conds=()) -> torch.Tensor:
        """Lyric-to-music attention of ``config.alignment_layer`` / ``alignment_head`` over a window:
        float32 [B, T, nb_relevant_lyric_tokens] (row t: how music token t attends to each lyric token).

        In a merged (1b_lyrics) prior any layer kind works (prime layers are the ones trained to
        align); with a separate lyrics encoder the layer must be a cross-attention layer.
        """
        layer, head = self.config.alignment_layer, self.config.alignment_head
        kinds = self.prior.transformer.kinds
        if not self.lyric_conditioning or not 0 <= head < self.config.n_heads or not 0 <= layer < len(kinds):
            raise ValueError(
                f"no lyric alignment: lyrics={self.lyric_conditioning}, alignment_layer={layer} of {len(kinds)}, "
                f"alignment_head={head} of {self.config.n_heads}"
            )
        if not self.is_encoder_decoder and kinds[layer] is not AttentionKind.CROSS:
            raise ValueError(f"alignment_layer={layer} is {kinds[layer].value}: only cross_attention layers see the lyrics here")
        (weights,) = self.forward_tokens(music_tokens, music_tokens_conds, metadata, get_attn_weights={layer})
        if self.is_encoder_decoder and kinds[layer] is not AttentionKind.PRIME:
            n_lyrics = self.nb_relevant_lyric_tokens
            weights = weights[:, :, n_lyrics:, :n_lyrics]
        return weights[:, head]

    # ------------------------------------------------------------------ sampling
    def sample(self, n_samples, music_tokens=None, music_tokens_conds=None, metadata=None, temp=1.0, top_k=0, top_p=0.0, chunk_size=None, sample_tokens=None):
        """Sample a window with the global torch RNG (transformers' signature and behaviour).

        Returns long [n_samples, sample_tokens or n_ctx]: the given ``music_tokens`` followed by the
        new ones. Merged (1b_lyrics) priors draw from the whole merged vocabulary and clamp
        non-music draws to 0, as the reference.
        """
        options = SamplingOptions(temperature=temp, top_k=top_k, top_p=top_p, chunk_size=chunk_size)
        device = self._device()
        total = self.n_ctx if sample_tokens is None else sample_tokens
        context = music_tokens if music_tokens is not None else torch.zeros(n_samples, 0, dtype=torch.long, device=device)
        with torch.no_grad():
            conditioning, start_emb, lyric_tokens = self.get_cond(music_tokens_conds, metadata)
            draw = GlobalDrawer(options)
            if self.is_encoder_decoder:
                parts = [lyric_tokens] if context.shape[1] == 0 else [lyric_tokens, context]
                merged, conditioning = self.prior_preprocess(parts, [None, conditioning])
                new = self.prior.generate(merged, total + self.nb_relevant_lyric_tokens - merged.shape[1], draw, conditioning, start_emb, None, chunk_size)
                return self.prior_postprocess(torch.cat([merged, new], dim=1))
            encoder_states = self.get_encoder_states(lyric_tokens, sample=True)
            new = self.prior.generate(context, total - context.shape[1], draw, conditioning, start_emb, encoder_states, chunk_size)
            return torch.cat([context, new], dim=1)

    @torch.inference_mode()
    def sample_window(
        self,
        labels: Labels,
        context: torch.Tensor,
        upper: torch.Tensor | None,
        start: PerRow,
        n_new: int,
        total_length: PerRow,
        seeds: Sequence[int],
        options: SamplingOptions,
        offset: PerRow = 0,
    ) -> torch.LongTensor:
        """Sample ``n_new`` tokens after ``context`` in the window starting at token ``start``.

        Args:
            labels: long [B, label_len] as the tokenizer gives for this prior (or B rows of
                different lengths); timing and lyric window are set here via :meth:`get_metadata`.
            context: long [B, n_context], this level's tokens at ``[start, start + n_context)``.
            upper: long [B, m], upper-level tokens from position ``start // r`` covering at least
                ``[start, start + n_context + n_new)`` of this level (at most a whole window,
                ``n_ctx // r``); None for the top prior.
            start: window start in this level's tokens: one int, or one per row.
            n_new: tokens to sample (``n_context + n_new <= n_ctx``).
            total_length: song length in audio samples: one int, or one per row.
            seeds: one int per row; row i's randomness comes only from ``seeds[i]``.
            options: temperature, top-k, top-p, prefill chunk size.
            offset: audio samples before the song's first token (0 for a song sampled from its
                start): one int, or one per row.

        Rows may thus be windows of different songs (of different lengths) at different
        positions, as long as they share ``n_context``, ``n_new`` and the upper-token count.

        Returns:
            long [B, n_new] on the model's device. Row i depends only on row i's inputs and seed.
            A merged (1b_lyrics) prior draws only music ids here (``sample`` can draw lyric ids
            and clamps them to 0, as the reference).
        """
        check_window_request(
            labels, context, upper, start, n_new, total_length, seeds, options, offset,
            n_ctx=self.n_ctx, music_vocab_size=self.config.music_vocab_size,
            max_length=self.config.max_duration * self.config.sampling_rate, raw_to_tokens=self.raw_to_tokens,
            upper_ratio=self.cond_downsample,
        )
        device = self._device()
        context = context.to(device=device, dtype=torch.long)
        metadata = self.get_metadata(labels, start, total_length, offset).to(device)
        lyric_tokens = metadata[:, metadata.shape[1] - self.nb_relevant_lyric_tokens :]
        if lyric_tokens.numel() and (int(lyric_tokens.min()) < 0 or int(lyric_tokens.max()) >= self.config.lyric_vocab_size):
            raise ValueError(f"lyric tokens must be in [0, {self.config.lyric_vocab_size}) for this prior")
        conds = [upper.to(device=device, dtype=torch.long)] if self.audio_conditioning else None
        conditioning, start_emb, lyric_tokens = self.get_cond(conds, metadata)
        draw = SeededDrawer(options, seeds, n_new, device)
        if self.is_encoder_decoder:
            merged, conditioning = self.prior_preprocess([lyric_tokens, context], [None, conditioning])
            shift = self.config.lyric_vocab_size
            music_ids = (shift, shift + self.config.music_vocab_size)
            new = self.prior.generate(merged, n_new, draw, conditioning, start_emb, None, options.chunk_size, music_ids)
            return new - shift
        encoder_states = self.get_encoder_states(lyric_tokens, sample=True)
        return self.prior.generate(context, n_new, draw, conditioning, start_emb, encoder_states, options.chunk_size)
