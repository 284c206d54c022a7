"""What a prior conditions on besides its own tokens: labels, timing, lyrics window, upper-level tokens.

- :class:`RangeEmbedding`: a learnt embedding of a real-valued position in a known range, binned.
- :class:`LabelConditioner`: artist + bag of genres -> the start embedding; total length, absolute
  and relative position of the window in the song -> a per-position timing embedding (top prior).
- :class:`MusicTokenConditioner`: the upper level's tokens, embedded and upsampled by the VQ-VAE's
  decoder block to one vector per position of this level (upsamplers).
- :func:`relevant_lyric_tokens`: the lyric characters a window attends to, chosen by where the
  window sits in the song.

State-dict layouts match transformers' ``JukeboxRangeEmbedding``, ``JukeboxLabelConditioner`` and
``JukeboxMusicTokenConditioner``.
"""
from __future__ import annotations

import torch
from torch import nn

from models.prior.transformer import LayerNorm
from models.vqvae.decoder import DecoderConvBlock

# Layout of a label row: [total_length, offset, window length, artist, genre slots..., lyrics...].
TOTAL_LENGTH, OFFSET, LENGTH, ARTIST, FIRST_GENRE = 0, 1, 2, 3, 4


def relevant_lyric_tokens(
    full_tokens: torch.Tensor, n_tokens: int, total_length: torch.Tensor, offset: torch.Tensor, duration: torch.Tensor
) -> tuple[torch.Tensor, list[int]]:
    """The ``n_tokens`` lyric tokens a window attends to, and their indices in ``full_tokens``.

    Short lyrics are left-padded with 0 (index -1). Longer ones are cut to the ``n_tokens``
    around the character at the same relative position in the lyrics as the window's middle in
    the song, kept inside the lyrics.

    Args:
        full_tokens: long [n_full], the song's lyric tokens.
        n_tokens: tokens to return.
        total_length, offset, duration: 0-dim integer tensors, in audio samples (song length,
            window start, window length).

    Returns:
        (long [n_tokens], list of n_tokens indices into ``full_tokens``, -1 for padding).
    """
    n_full = full_tokens.shape[0]
    if n_full < n_tokens:
        padding = full_tokens.new_zeros(n_tokens - n_full)
        return torch.cat([padding, full_tokens]), [-1] * (n_tokens - n_full) + list(range(n_full))
    # float32 arithmetic, as the reference computes it on tensors (decides the rounding at edges).
    middle = n_full * (offset.float() + duration.float() / 2.0) / total_length.float()
    half = n_tokens // 2
    first = min(max(int(middle), half), n_full - (n_tokens - half)) - half
    return full_tokens[first : first + n_tokens], list(range(first, first + n_tokens))


class RangeEmbedding(nn.Module):
    """Embeds positions in ``[pos_min, pos_max)`` as one of ``n_bins`` learnt vectors.

    With ``n_time > 1`` the span ``[pos_start, pos_end)`` is interpolated to ``n_time`` evenly
    spaced positions (one per token of a window), each binned separately.

    Args:
        n_time: positions produced per input span.
        n_bins: number of bins (embedding rows) over the range.
        pos_range: (pos_min, pos_max).
        width: embedding width.
        clamp: clamp ``pos_end`` into the range first.
        init_std: initial standard deviation of the embedding.
    """

    def __init__(self, n_time: int, n_bins: int, pos_range: tuple[float, float], width: int, clamp: bool = False, init_std: float = 0.01):
        super().__init__()
        self.n_time, self.n_bins, self.clamp = n_time, n_bins, clamp
        self.pos_min, self.pos_max = pos_range
        self.emb = nn.Embedding(n_bins, width)
        nn.init.normal_(self.emb.weight, std=init_std)

    def bins(self, pos_start: torch.Tensor, pos_end: torch.Tensor | None = None) -> torch.LongTensor:
        """Bin indices long [B, n_time] of spans given as float [B, 1] start/end positions."""
        if pos_start.dim() != 2:
            raise ValueError(f"RangeEmbedding expects positions of shape [batch, 1], got {tuple(pos_start.shape)}")
        position = pos_start.float()
        if self.n_time != 1:
            pos_end = pos_end.float()
            if self.clamp:
                pos_end = pos_end.clamp(self.pos_min, self.pos_max)
            steps = torch.arange(self.n_time, dtype=torch.float, device=pos_start.device).view(1, -1) / self.n_time
            position = position + (pos_end - position) * steps
        normalised = (position - self.pos_min) / (self.pos_max - self.pos_min)
        return (self.n_bins * normalised).floor().long()

    def forward(self, pos_start: torch.Tensor, pos_end: torch.Tensor | None = None) -> torch.Tensor:
        """float [B, 1] start (and end) -> float [B, n_time, width]. ValueError outside the range."""
        bins = self.bins(pos_start, pos_end)
        if bool((bins < 0).any()) or bool((bins >= self.n_bins).any()):
            raise ValueError(
                f"positions {pos_start.flatten().tolist()} (to {None if pos_end is None else pos_end.flatten().tolist()}) "
                f"fall outside this embedding's range [{self.pos_min}, {self.pos_max})"
            )
        return self.emb(bins)


class LabelConditioner(nn.Module):
    """Artist, genres and timing of a window -> (start embedding, per-position timing embedding).

    Args:
        width: model width.
        n_genres, n_artists: embedding rows (``metadata_dims``).
        max_nb_genres: genre slots in a label row (empty slots are -1).
        n_ctx: positions of a window (timing embedding length).
        timing_dims: bins of each timing embedding.
        sampling_rate: audio samples per second.
        min_duration, max_duration: song durations (seconds) the timing embeddings cover.
        include_time_signal: build the timing embeddings (only the top prior has them).
        init_std: initial standard deviation of the artist/genre embeddings (timing: half of it).
    """

    def __init__(
        self,
        width: int,
        n_genres: int,
        n_artists: int,
        max_nb_genres: int,
        n_ctx: int,
        timing_dims: int,
        sampling_rate: int,
        min_duration: float,
        max_duration: float,
        include_time_signal: bool,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.max_nb_genres, self.include_time_signal = max_nb_genres, include_time_signal
        self.bow_genre_emb = nn.Embedding(n_genres, width)
        self.artist_emb = nn.Embedding(n_artists, width)
        nn.init.normal_(self.bow_genre_emb.weight, std=init_std)
        nn.init.normal_(self.artist_emb.weight, std=init_std)
        if include_time_signal:
            max_samples = max_duration * sampling_rate
            self.total_length_emb = RangeEmbedding(1, timing_dims, (min_duration * sampling_rate, max_samples), width, init_std=init_std / 2)
            self.absolute_pos_emb = RangeEmbedding(n_ctx, timing_dims, (0.0, max_samples), width, init_std=init_std / 2)
            self.relative_pos_emb = RangeEmbedding(n_ctx, timing_dims, (0.0, 1.0), width, clamp=True, init_std=init_std / 2)

    def forward(self, metadata: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """metadata long [B, >= 4 + max_nb_genres] -> (float [B, 1, width], float [B, n_ctx, width] or None).

        Columns after the genre slots (lyrics) are ignored.
        """
        artist = metadata[:, ARTIST : ARTIST + 1]
        genres = metadata[:, FIRST_GENRE : FIRST_GENRE + self.max_nb_genres]
        n_artists, n_genres = self.artist_emb.num_embeddings, self.bow_genre_emb.num_embeddings
        if bool((artist < 0).any()) or bool((artist >= n_artists).any()):
            raise ValueError(f"artist ids {artist.flatten().tolist()} are outside [0, {n_artists}) for this prior")
        if bool((genres < -1).any()) or bool((genres >= n_genres).any()):
            raise ValueError(f"genre ids {genres.tolist()} are outside [0, {n_genres}) (or -1 for an empty slot)")
        present = (genres >= 0).unsqueeze(-1)
        genre_emb = (self.bow_genre_emb(genres.clamp(min=0)) * present).sum(dim=1, keepdim=True)
        start_emb = genre_emb + self.artist_emb(artist)
        if not self.include_time_signal:
            return start_emb, None
        total = metadata[:, TOTAL_LENGTH : TOTAL_LENGTH + 1].float()
        start = metadata[:, OFFSET : OFFSET + 1].float()
        end = start + metadata[:, LENGTH : LENGTH + 1].float()
        timing = self.total_length_emb(total) + self.absolute_pos_emb(start, end) + self.relative_pos_emb(start / total, end / total)
        return start_emb, timing


class MusicTokenConditioner(nn.Module):
    """Upper-level tokens long [B, m] -> float [B, m * stride_t**down_t, width] for this level.

    Embeds the tokens, runs one VQ-VAE decoder block (dilations not reversed) and a layer norm.

    Args:
        music_vocab_size: codebook size of the upper level.
        width: model width.
        res_conv_width, res_conv_depth: decoder block's channels and residual depth.
        down_t, stride_t: the block upsamples by ``stride_t ** down_t``.
        dilation_growth_rate, dilation_cycle, res_convolution_multiplier, conv_res_scale, zero_out:
            passed to :class:`models.vqvae.decoder.DecoderConvBlock`.
        init_std: initial standard deviation of the token embedding.
    """

    def __init__(
        self,
        music_vocab_size: int,
        width: int,
        res_conv_width: int,
        res_conv_depth: int,
        down_t: int,
        stride_t: int,
        *,
        dilation_growth_rate: int = 1,
        dilation_cycle: int | None = None,
        res_convolution_multiplier: int = 1,
        conv_res_scale: bool = False,
        zero_out: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.embed_tokens = nn.Embedding(music_vocab_size, width)
        nn.init.normal_(self.embed_tokens.weight, std=init_std)
        self.upsampler = DecoderConvBlock(
            width,
            res_conv_width,
            res_conv_depth,
            down_t,
            stride_t,
            res_convolution_multiplier=res_convolution_multiplier,
            dilation_growth_rate=dilation_growth_rate,
            dilation_cycle=dilation_cycle,
            conv_res_scale=bool(conv_res_scale),
            reverse_dilation=False,
            zero_out=zero_out,
        )
        self.layer_norm = LayerNorm(width)
        self.ratio = stride_t**down_t

    def forward(self, music_tokens: torch.Tensor, raw_audio_conditionning: torch.Tensor | None = None) -> torch.Tensor:
        """music_tokens long [B, m] (plus optional float [B, m, width] added to their embedding) -> [B, m * ratio, width]."""
        hidden_states = self.embed_tokens(music_tokens.long())
        if raw_audio_conditionning is not None:
            hidden_states = hidden_states + raw_audio_conditionning
        hidden_states = self.upsampler(hidden_states.transpose(1, 2)).transpose(1, 2)
        return self.layer_norm(hidden_states)
