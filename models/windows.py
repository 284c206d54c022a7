"""Window arithmetic for sampling a song level by level: pure integers, no torch.

A level of ``T`` tokens is sampled by a prior that sees ``n_ctx`` tokens at a time. Windows start
every ``hop_length = int(hop_fraction * n_ctx)`` tokens (the original Jukebox rule); the last
window is pulled back to end exactly at ``T`` so that it has a full context. A window's first
tokens are context (already sampled by earlier windows or given as a prompt), the rest is new.
A window of an upsampler is conditioned on the upper-level tokens covering the same span of time:
upper positions ``[start // r, end // r)`` with ``r`` the number of tokens of this level per
upper-level token.

Two numberings appear in Jukebox and both are kept explicit here:

- ``level``: the VQ-VAE level, 0 the finest, ``n_levels - 1`` the top (used by seeds and by the
  pipeline);
- ``prior_index``: the position in ``JukeboxModel.priors`` / ``JukeboxConfig.prior_configs``,
  0 the top prior (the transformers order; ``config.hop_fraction`` is indexed this way).

This module is shared by :class:`models.jukebox.JukeboxModel` and the Ray pipeline, so both plan
exactly the same windows.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.checks import check_int, is_number


def hop_length(n_ctx: int, hop_fraction: float) -> int:
    """Tokens between two window starts: ``int(hop_fraction * n_ctx)``, as the original.

    Raises ValueError unless ``0 < hop_fraction <= 1`` and the hop is at least one token (a hop
    longer than the window would leave gaps no window samples).
    """
    check_int("n_ctx", n_ctx, 1)
    if not is_number(hop_fraction) or not 0 < hop_fraction <= 1:
        raise ValueError(f"hop_fraction must be a number in (0, 1], got {hop_fraction!r}")
    hop = int(hop_fraction * n_ctx)
    if hop < 1:
        raise ValueError(f"hop_fraction={hop_fraction} gives a hop of 0 tokens for n_ctx={n_ctx}: use a larger fraction")
    return hop


def get_starts(total_tokens: int, n_ctx: int, hop: int) -> list[int]:
    """Start positions of the windows covering ``total_tokens`` tokens of one level.

    For ``total_tokens >= n_ctx`` this is the original ``get_starts(total_length, n_ctx,
    hop_length)``: ``0, hop, 2 * hop, ...`` while the window ends before the song does, then one
    last window ``total_tokens - n_ctx`` ending exactly at the end. A level shorter than one
    window gets the single window ``[0]`` (the original rule would give a negative start; its
    callers sample such a level as one partial window instead). No tokens, no windows.
    """
    check_int("total_tokens", total_tokens, 0)
    check_int("n_ctx", n_ctx, 1)
    check_int("hop", hop, 1)
    if total_tokens == 0:
        return []
    if total_tokens <= n_ctx:
        return [0]
    return list(range(0, total_tokens - n_ctx, hop)) + [total_tokens - n_ctx]


@dataclass(frozen=True)
class Window:
    """One call of a prior: tokens ``[start, start + n_context)`` are given, ``n_new`` are made.

    All positions are in tokens of the window's own level.
    """

    start: int
    n_context: int
    n_new: int

    @property
    def new_start(self) -> int:
        """Position of the first new token."""
        return self.start + self.n_context

    @property
    def end(self) -> int:
        """One past the last new token."""
        return self.start + self.n_context + self.n_new

    def upper_span(self, ratio: int) -> tuple[int, int]:
        """Upper-level positions ``[start // ratio, end // ratio)`` covering this window's time span."""
        check_int("ratio", ratio, 1)
        return self.start // ratio, self.end // ratio


def plan_windows(
    total_tokens: int, n_ctx: int, hop: int, n_existing: int = 0, max_new: int | None = None
) -> list[Window]:
    """The windows that bring a level from ``n_existing`` to ``total_tokens`` tokens, in order.

    Each window of :func:`get_starts` takes as context everything this level holds from its start
    on (up to ``n_ctx``) and samples the rest of its span; windows already covered by existing
    tokens are skipped, exactly as the original ``sample_level``. A level shorter than ``n_ctx``
    is one window from 0 with the existing tokens as context, ending at ``total_tokens`` like any
    level (the original's partial-window rule would add ``total_tokens`` *more* tokens to a level
    being continued). ``max_new`` stops the plan after that many new tokens (the last window is
    cut short); positions are unchanged.
    """
    check_int("n_ctx", n_ctx, 1)
    check_int("hop", hop, 1)
    check_int("n_existing", n_existing, 0)
    if max_new is not None:
        check_int("max_new", max_new, 0)
    if hop > n_ctx:
        raise ValueError(f"hop={hop} is longer than the window n_ctx={n_ctx}: tokens between windows would never be sampled")
    windows: list[Window] = []
    length = n_existing
    budget = math.inf if max_new is None else max_new
    for start in get_starts(total_tokens, n_ctx, hop):
        end = min(start + n_ctx, total_tokens)
        if length >= end:
            continue
        if budget <= 0:
            break
        # With hop <= n_ctx every window starts at or before the current end of the level.
        assert length >= start, f"window start {start} is past the sampled length {length}"
        n_new = int(min(end - length, budget))
        windows.append(Window(start=start, n_context=length - start, n_new=n_new))
        length += n_new
        budget -= n_new
    return windows


def windows_covering(windows: Sequence[Window], lo: int, hi: int) -> list[int]:
    """Indices of the ``windows`` whose new tokens intersect positions ``[lo, hi)``.

    These are the windows a consumer of those positions depends on: for a window's context, the
    earlier windows of its level; for an upsampler window's :meth:`Window.upper_span`, windows of
    the level above.
    """
    return [i for i, window in enumerate(windows) if window.new_start < hi and lo < window.end]


def tokens_for_length(total_length: int, raw_to_tokens: int) -> int:
    """Tokens of a level with ``raw_to_tokens`` audio samples per token in ``total_length`` samples."""
    check_int("total_length", total_length, 0)
    check_int("raw_to_tokens", raw_to_tokens, 1)
    return total_length // raw_to_tokens


def length_for_seconds(seconds: float, sampling_rate: int, top_raw_to_tokens: int) -> int:
    """Song length in audio samples for ``seconds``, rounded down to whole top-level tokens (as the original)."""
    check_int("sampling_rate", sampling_rate, 1)
    check_int("top_raw_to_tokens", top_raw_to_tokens, 1)
    if not is_number(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")
    return int(seconds * sampling_rate) // top_raw_to_tokens * top_raw_to_tokens


def raw_to_tokens_per_level(res_downs_t: Sequence[int], res_strides_t: Sequence[int]) -> list[int]:
    """Audio samples per token of each VQ-VAE level, finest first (e.g. ``[8, 32, 128]``)."""
    if len(res_downs_t) != len(res_strides_t):
        raise ValueError(f"res_downs_t={list(res_downs_t)} and res_strides_t={list(res_strides_t)} differ in length")
    hops, total = [], 1
    for down, stride in zip(res_downs_t, res_strides_t):
        total *= stride**down
        hops.append(total)
    return hops


@dataclass(frozen=True)
class LevelGeometry:
    """How one prior's level is cut into windows.

    Attributes:
        prior_index: index in ``JukeboxModel.priors`` (0 = top prior).
        level: VQ-VAE level (0 = finest); the ``level`` of ``window_seed``.
        n_ctx: tokens per window.
        raw_to_tokens: audio samples per token of this level.
        hop_length: tokens between window starts.
        upper_ratio: tokens of this level per token of the level above; None for the top prior.
    """

    prior_index: int
    level: int
    n_ctx: int
    raw_to_tokens: int
    hop_length: int
    upper_ratio: int | None

    def n_tokens(self, total_length: int) -> int:
        """Tokens of this level in a song of ``total_length`` audio samples."""
        return tokens_for_length(total_length, self.raw_to_tokens)

    def windows(self, total_length: int, n_existing: int = 0, max_new: int | None = None) -> list[Window]:
        """:func:`plan_windows` for a song of ``total_length`` audio samples.

        Raises ValueError if an upsampler window would start between two upper-level tokens (its
        conditioning would be misaligned; the original asserts the same).
        """
        windows = plan_windows(self.n_tokens(total_length), self.n_ctx, self.hop_length, n_existing, max_new)
        if self.upper_ratio is not None:
            misaligned = [w.start for w in windows if w.start % self.upper_ratio]
            if misaligned:
                raise ValueError(
                    f"prior {self.prior_index} (level {self.level}): windows would start at {misaligned}, not multiples "
                    f"of the {self.upper_ratio}x ratio to the level above (n_ctx={self.n_ctx}, "
                    f"hop_length={self.hop_length}, total_length={total_length} samples); use a song length that is a "
                    f"multiple of {self.raw_to_tokens * self.upper_ratio} samples and a hop_fraction giving a hop "
                    f"multiple of {self.upper_ratio}"
                )
        return windows

    def upper_span(self, window: Window) -> tuple[int, int]:
        """Upper-level positions conditioning ``window``; ValueError for the top prior."""
        if self.upper_ratio is None:
            raise ValueError(f"prior {self.prior_index} is the top prior: it has no upper level")
        return window.upper_span(self.upper_ratio)


def level_geometries(config: Any, hop_fraction: float | Sequence[float] | None = None) -> list[LevelGeometry]:
    """One :class:`LevelGeometry` per prior of a ``JukeboxConfig``, in prior order (top first).

    Args:
        config: a :class:`models.config.JukeboxConfig` (or anything with its ``prior_configs``,
            ``nb_priors`` and ``hop_fraction``).
        hop_fraction: one fraction for every prior, one per prior (prior order), or None for
            ``config.hop_fraction``.
    """
    n_priors = config.nb_priors
    fractions = config.hop_fraction if hop_fraction is None else hop_fraction
    if is_number(fractions):
        fractions = [fractions] * n_priors
    fractions = list(fractions)
    if len(fractions) != n_priors:
        raise ValueError(f"hop_fraction needs one value per prior ({n_priors}), got {fractions}")
    geometries = []
    for index, prior in enumerate(config.prior_configs):
        level = n_priors - 1 - index
        raw = raw_to_tokens_per_level(prior.res_downs_t, prior.res_strides_t)[level]
        ratio = None
        if index > 0:
            upper = config.prior_configs[index - 1]
            upper_raw = raw_to_tokens_per_level(upper.res_downs_t, upper.res_strides_t)[level + 1]
            if upper_raw % raw:
                raise ValueError(f"prior {index - 1} has {upper_raw} samples per token, not a multiple of prior {index}'s {raw}")
            ratio = upper_raw // raw
        try:
            hop = hop_length(prior.n_ctx, fractions[index])
        except ValueError as err:
            raise ValueError(f"prior {index}: {err}") from err
        geometries.append(LevelGeometry(index, level, prior.n_ctx, raw, hop, ratio))
    return geometries
