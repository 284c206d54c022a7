"""Typed configurations of the Jukebox VQ-VAE, priors and full model.

Attribute names and defaults follow the documented Hugging Face API (transformers 4.40.2), so a
``config.json`` written by ``save_pretrained`` there loads here and the other way round. Unlike the
reference, every config is a dataclass validated on construction: an impossible config is refused
with a message that names the field.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, TypeVar

import fsspec

from models.checks import is_int
from models.windows import raw_to_tokens_per_level

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_fast", "gelu_python", "quick_gelu", "swish", "silu", "elu", "tanh", "sigmoid")


class AttentionKind(str, Enum):
    """What one transformer layer attends to (the layer kinds of the Sparse Transformer)."""

    DENSE = "dense_attn"
    BLOCK = "block_attn"
    TRANSPOSE_BLOCK = "transpose_block_attn"
    PREV_BLOCK = "prev_block_attn"
    SUMMARY = "summary_attn"
    SUMMARY_SPREAD = "summary_spread_attn"
    PRIME = "prime_attn"
    CROSS = "cross_attention"


class AttentionPattern(str, Enum):
    """How layer kinds alternate through a prior's layer stack (the released models' patterns)."""

    FULL_DENSE = "full_dense_attention"
    RAW_COLUMN_PREVIOUS_ROW = "raw_column_previous_row_attention"
    LARGE_SEPARATED_ENC_DEC_W_LYRICS = "large_separated_enc_dec_w_lyrics"
    ENC_DEC_WITH_LYRICS = "enc_dec_with_lyrics"


_ROW_COLUMN_PREVIOUS = (AttentionKind.BLOCK, AttentionKind.TRANSPOSE_BLOCK, AttentionKind.PREV_BLOCK)
_PRIME_PRIME_DENSE = (AttentionKind.PRIME, AttentionKind.PRIME, AttentionKind.DENSE)
# 5b_lyrics repeats a period of 79 layers: row/column/previous-row attention, with a cross-attention
# layer to the lyrics encoder at positions 18, 28, ..., 78 that does not advance the 3-cycle.
_SEPARATED_PERIOD = 79


def _separated_enc_dec_period() -> tuple[AttentionKind, ...]:
    kinds, n_sparse = [], 0
    for position in range(_SEPARATED_PERIOD):
        if position >= 18 and position % 10 == 8:
            kinds.append(AttentionKind.CROSS)
        else:
            kinds.append(_ROW_COLUMN_PREVIOUS[n_sparse % 3])
            n_sparse += 1
    return tuple(kinds)


_SEPARATED_KINDS = _separated_enc_dec_period()
_BLOCK_STRUCTURED = {AttentionKind.BLOCK, AttentionKind.TRANSPOSE_BLOCK, AttentionKind.PREV_BLOCK,
                     AttentionKind.SUMMARY, AttentionKind.SUMMARY_SPREAD}


def attention_kind(pattern: AttentionPattern | str, layer_idx: int) -> AttentionKind:
    """The attention kind of layer ``layer_idx`` in a stack using ``pattern``."""
    pattern = AttentionPattern(pattern)
    if pattern is AttentionPattern.FULL_DENSE:
        return AttentionKind.DENSE
    if pattern is AttentionPattern.RAW_COLUMN_PREVIOUS_ROW:
        return _ROW_COLUMN_PREVIOUS[layer_idx % 3]
    if pattern is AttentionPattern.LARGE_SEPARATED_ENC_DEC_W_LYRICS:
        return _SEPARATED_KINDS[layer_idx % _SEPARATED_PERIOD]
    if layer_idx % 16 == 15:
        return _PRIME_PRIME_DENSE[layer_idx % 3]
    return _ROW_COLUMN_PREVIOUS[layer_idx % 3]


C = TypeVar("C", bound="_ConfigBase")


def _fail(cls_name: str, name: str, value: Any, expected: str) -> None:
    raise ValueError(f"{cls_name}.{name} = {value!r} is invalid: expected {expected}")


class _ConfigBase:
    """Dict/JSON round trips shared by the three configs."""

    model_type: ClassVar[str] = ""
    _nested: ClassVar[dict[str, Any]] = {}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with ``model_type``, in the layout transformers writes."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = getattr(self, name)
            if isinstance(value, _ConfigBase):
                value = value.to_dict()
            elif isinstance(value, (list, tuple)):
                value = [v.to_dict() if isinstance(v, _ConfigBase) else v for v in value]
            out[name] = value
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], **overrides: Any) -> C:
        """Build from a dict such as transformers' ``to_dict()``; its bookkeeping keys are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        merged = {**data, **overrides}
        kwargs = {name: merged[name] for name in cls.field_names() if name in merged}
        return cls(**kwargs)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str) -> str:
        """Write ``config.json`` under ``save_directory`` (local path or fsspec URL); returns its path."""
        fs, root = fsspec.core.url_to_fs(str(save_directory))
        fs.makedirs(root, exist_ok=True)
        path = posixpath.join(root, CONFIG_NAME) if "://" in str(save_directory) else f"{root.rstrip('/')}/{CONFIG_NAME}"
        with fs.open(path, "w") as handle:
            handle.write(self.to_json_string())
        return path

    @classmethod
    def _select(cls, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return data

    @classmethod
    def from_pretrained(cls: type[C], path: str, **kwargs: Any) -> C:
        """Read ``config.json`` from a directory (or the file itself), local or fsspec URL."""
        data = read_config_dict(path)
        return cls.from_dict(cls._select(data, **kwargs))


def read_config_dict(path: str) -> dict[str, Any]:
    """The parsed ``config.json`` at ``path`` (a directory or the file), local or any fsspec URL."""
    fs, root = fsspec.core.url_to_fs(str(path))
    target = root if root.endswith(".json") else f"{root.rstrip('/')}/{CONFIG_NAME}"
    if not fs.exists(target):
        raise FileNotFoundError(f"no {CONFIG_NAME} at {path!r} (looked for {target!r})")
    with fs.open(target, "r") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{target!r} is not valid JSON: {err}") from err


@dataclass
class JukeboxVQVAEConfig(_ConfigBase):
    """Hierarchical VQ-VAE: ``levels`` encoders/decoders; level ``i`` downsamples audio by
    ``prod(res_strides_t[j] ** res_downs_t[j] for j <= i)`` (8, 32, 128 for the released model)."""

    model_type: ClassVar[str] = "jukebox_vqvae"

    act_fn: str = "relu"
    nb_discrete_codes: int = 2048
    commit: float = 0.02
    conv_input_shape: int = 1
    conv_res_scale: bool = False
    embed_dim: int = 64
    hop_fraction: list[float] = field(default_factory=lambda: [0.125, 0.5, 0.5])
    levels: int = 3
    lmu: float = 0.99
    multipliers: list[int] = field(default_factory=lambda: [2, 1, 1])
    res_conv_depth: int = 4
    res_conv_width: int = 32
    res_convolution_multiplier: int = 1
    res_dilation_cycle: int | None = None
    res_dilation_growth_rate: int = 3
    res_downs_t: list[int] = field(default_factory=lambda: [3, 2, 2])
    res_strides_t: list[int] = field(default_factory=lambda: [2, 2, 2])
    sample_length: int = 1058304
    init_scale: float = 0.2
    zero_out: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        for attr in ("nb_discrete_codes", "conv_input_shape", "embed_dim", "levels", "res_conv_depth",
                     "res_conv_width", "res_convolution_multiplier", "res_dilation_growth_rate", "sample_length"):
            value = getattr(self, attr)
            if not is_int(value) or value <= 0:
                _fail(name, attr, value, "a positive integer")
            setattr(self, attr, int(value))  # a numpy integer would not serialize
        if self.act_fn not in ACTIVATIONS:
            _fail(name, "act_fn", self.act_fn, f"one of {ACTIVATIONS}")
        if self.multipliers is None:  # transformers accepts None for "no per-level scaling"
            self.multipliers = [1] * self.levels
        for attr in ("hop_fraction", "multipliers", "res_downs_t", "res_strides_t"):
            value = getattr(self, attr)
            if not isinstance(value, (list, tuple)):
                _fail(name, attr, value, f"a list of one entry per level (levels={self.levels})")
            value = list(value)
            setattr(self, attr, value)
            if len(value) != self.levels:
                _fail(name, attr, value, f"a list of one entry per level (levels={self.levels})")
        if any(not 0 < h <= 1 for h in self.hop_fraction):
            _fail(name, "hop_fraction", self.hop_fraction, "fractions in (0, 1]")
        if any(m <= 0 for m in self.multipliers):
            _fail(name, "multipliers", self.multipliers, "positive multipliers")
        if any(d < 0 for d in self.res_downs_t):
            _fail(name, "res_downs_t", self.res_downs_t, "non-negative downsampling depths")
        if any(s < 1 for s in self.res_strides_t):
            _fail(name, "res_strides_t", self.res_strides_t, "strides >= 1")
        if self.res_dilation_cycle is not None and self.res_dilation_cycle <= 0:
            _fail(name, "res_dilation_cycle", self.res_dilation_cycle, "None or a positive integer")
        if not 0.0 < self.lmu < 1.0:
            _fail(name, "lmu", self.lmu, "an EMA coefficient in (0, 1)")
        if self.commit < 0:
            _fail(name, "commit", self.commit, "a non-negative loss weight")

    @property
    def hop_lengths(self) -> list[int]:
        """Audio samples per token at each level, finest first (e.g. [8, 32, 128])."""
        return raw_to_tokens_per_level(self.res_downs_t, self.res_strides_t)

    @classmethod
    def _select(cls, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return data["vqvae_config"] if data.get("model_type") == "jukebox" else data


@dataclass
class JukeboxPriorConfig(_ConfigBase):
    """One prior: a (sparse) transformer over music tokens with its conditioners."""

    model_type: ClassVar[str] = "jukebox_prior"

    act_fn: str = "quick_gelu"
    level: int = 0
    alignment_head: int = 2
    alignment_layer: int = 68
    attention_multiplier: float = 0.25
    attention_pattern: str = "enc_dec_with_lyrics"
    attn_dropout: float = 0
    attn_res_scale: bool = False
    blocks: int = 64
    conv_res_scale: bool | None = None
    num_layers: int = 72
    emb_dropout: float = 0
    encoder_config: JukeboxPriorConfig | None = None
    encoder_loss_fraction: float = 0.4
    hidden_size: int = 2048
    init_scale: float = 0.2
    is_encoder_decoder: bool = True
    lyric_vocab_size: int = 80
    mask: bool = False
    max_duration: float = 600
    max_nb_genres: int = 1
    merged_decoder: bool = True
    metadata_conditioning: bool = True
    metadata_dims: list[int] = field(default_factory=lambda: [604, 7898])
    min_duration: float = 0
    mlp_multiplier: float = 1.0
    music_vocab_size: int = 2048
    n_ctx: int = 6144
    n_heads: int = 2
    nb_relevant_lyric_tokens: int = 384
    res_conv_depth: int = 3
    res_conv_width: int = 128
    res_convolution_multiplier: int = 1
    res_dilation_cycle: int | None = None
    res_dilation_growth_rate: int = 1
    res_downs_t: list[int] = field(default_factory=lambda: [3, 2, 2])
    res_strides_t: list[int] = field(default_factory=lambda: [2, 2, 2])
    resid_dropout: float = 0
    sampling_rate: int = 44100
    spread: int | None = None
    timing_dims: int = 64
    zero_out: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        if isinstance(self.encoder_config, dict):
            self.encoder_config = JukeboxPriorConfig.from_dict(self.encoder_config)
        for attr in ("hidden_size", "num_layers", "n_ctx", "n_heads", "blocks", "music_vocab_size",
                     "timing_dims", "sampling_rate", "res_conv_depth", "res_conv_width"):
            value = getattr(self, attr)
            if not is_int(value) or value <= 0:
                _fail(name, attr, value, "a positive integer")
            setattr(self, attr, int(value))  # a numpy integer would not serialize
        # transformers saves lyric_vocab_size 0 for priors without lyrics: the field is unused there
        if not is_int(self.lyric_vocab_size) or self.lyric_vocab_size < 0:
            _fail(name, "lyric_vocab_size", self.lyric_vocab_size, "an integer >= 0")
        self.lyric_vocab_size = int(self.lyric_vocab_size)
        try:
            self.attention_pattern = AttentionPattern(self.attention_pattern).value
        except ValueError:
            _fail(name, "attention_pattern", self.attention_pattern, f"one of {[p.value for p in AttentionPattern]}")
        if self.act_fn not in ACTIVATIONS:
            _fail(name, "act_fn", self.act_fn, f"one of {ACTIVATIONS}")
        if self.level < 0:
            _fail(name, "level", self.level, "a prior index >= 0 (0 is the top prior)")
        attn_width = int(self.hidden_size * self.attention_multiplier)
        if attn_width <= 0 or attn_width % self.n_heads:
            _fail(name, "n_heads", self.n_heads,
                  f"a divisor of the attention width hidden_size*attention_multiplier={attn_width}")
        if int(self.hidden_size * self.mlp_multiplier) <= 0:
            _fail(name, "mlp_multiplier", self.mlp_multiplier, "a positive width multiplier")
        if self.nb_relevant_lyric_tokens < 0:
            _fail(name, "nb_relevant_lyric_tokens", self.nb_relevant_lyric_tokens, "an integer >= 0")
        if self.nb_relevant_lyric_tokens > 0 and self.lyric_vocab_size == 0:
            _fail(name, "lyric_vocab_size", 0, f"a lyric vocabulary for nb_relevant_lyric_tokens={self.nb_relevant_lyric_tokens}")
        kinds = {attention_kind(self.attention_pattern, i) for i in range(self.num_layers)}
        if kinds & _BLOCK_STRUCTURED:
            # a merged lyrics/music prior attends over [lyrics, music]; blocks factor that sequence
            length = self.n_ctx + (self.nb_relevant_lyric_tokens if self.is_encoder_decoder else 0)
            if length % self.blocks:
                _fail(name, "blocks", self.blocks,
                      f"a divisor of the attended sequence length {length} (blocks factor the context of "
                      f"{sorted(k.value for k in kinds & _BLOCK_STRUCTURED)} layers)")
        self.metadata_dims = list(self.metadata_dims)
        if len(self.metadata_dims) != 2 or any(d <= 0 for d in self.metadata_dims):
            _fail(name, "metadata_dims", self.metadata_dims, "[number of genres, number of artists], both positive")
        self.res_downs_t, self.res_strides_t = list(self.res_downs_t), list(self.res_strides_t)
        if len(self.res_downs_t) != len(self.res_strides_t):
            _fail(name, "res_strides_t", self.res_strides_t,
                  f"one stride per entry of res_downs_t={self.res_downs_t}")
        if self.max_nb_genres <= 0:
            _fail(name, "max_nb_genres", self.max_nb_genres, "a positive integer")
        if self.min_duration < 0 or self.max_duration <= self.min_duration:
            _fail(name, "max_duration", self.max_duration, f"a duration above min_duration={self.min_duration}")
        for attr in ("attn_dropout", "emb_dropout", "resid_dropout"):
            value = getattr(self, attr)
            if not 0 <= value < 1:
                _fail(name, attr, value, "a dropout probability in [0, 1)")
        uses_lyric_encoder = self.nb_relevant_lyric_tokens > 0 and not self.is_encoder_decoder
        if uses_lyric_encoder and self.encoder_config is None:
            _fail(name, "encoder_config", None,
                  "a lyrics encoder config when nb_relevant_lyric_tokens > 0 and is_encoder_decoder is False")
        if AttentionKind.SUMMARY_SPREAD in kinds and not self.spread:
            _fail(name, "spread", self.spread, "a positive spread for summary_spread attention")

    @classmethod
    def _select(cls, data: dict[str, Any], level: int = 0, **kwargs: Any) -> dict[str, Any]:
        if data.get("model_type") != "jukebox":
            return data
        priors = data.get("prior_config_list") or [data[f"prior_{i}"] for i in range(data.get("nb_priors", 3))]
        if not 0 <= level < len(priors):
            raise ValueError(f"level={level} is out of range: this model has {len(priors)} priors")
        return priors[level]

    @classmethod
    def from_pretrained(cls, path: str, level: int = 0, **kwargs: Any) -> JukeboxPriorConfig:  # type: ignore[override]
        """Prior config from a prior's ``config.json`` or the ``level``-th prior of a Jukebox one."""
        return cls.from_dict(cls._select(read_config_dict(path), level=level))


@dataclass
class JukeboxConfig(_ConfigBase):
    """The whole model: one VQ-VAE and ``nb_priors`` priors, top prior first (as transformers).

    As transformers' ``JukeboxModel`` builds its priors, the model-wide ``sampling_rate``,
    ``timing_dims``, ``min_duration``, ``max_duration``, ``max_nb_genres`` and
    ``metadata_conditioning`` replace those of every prior config (:meth:`shared_prior_config`).
    ``per_prior_max_nb_genres=True`` keeps each prior's own ``max_nb_genres`` instead: the
    released models label the 1b_lyrics top prior with one genre slot (v3 labels) and the
    upsamplers with five (v2 labels). transformers ignores the key, so a directory written with it
    still loads there (with the model-wide value everywhere).
    """

    model_type: ClassVar[str] = "jukebox"

    vqvae_config: JukeboxVQVAEConfig = field(default_factory=JukeboxVQVAEConfig)
    prior_configs: list[JukeboxPriorConfig] = field(default_factory=list)
    nb_priors: int = 3
    sampling_rate: int = 44100
    timing_dims: int = 64
    min_duration: float = 0
    max_duration: float = 600.0
    max_nb_genres: int = 5
    metadata_conditioning: bool = True
    per_prior_max_nb_genres: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        if isinstance(self.vqvae_config, dict):
            self.vqvae_config = JukeboxVQVAEConfig.from_dict(self.vqvae_config)
        if not self.prior_configs:
            self.prior_configs = [JukeboxPriorConfig(level=i) for i in range(self.nb_priors)]
        self.prior_configs = [JukeboxPriorConfig.from_dict(p) if isinstance(p, dict) else p for p in self.prior_configs]
        if len(self.prior_configs) != self.nb_priors:
            _fail(name, "prior_configs", f"<{len(self.prior_configs)} priors>", f"nb_priors={self.nb_priors} prior configs")
        if self.nb_priors != self.vqvae_config.levels:
            _fail(name, "nb_priors", self.nb_priors, f"one prior per VQ-VAE level (levels={self.vqvae_config.levels})")
        if self.min_duration < 0 or self.max_duration <= self.min_duration:
            _fail(name, "max_duration", self.max_duration, f"a duration above min_duration={self.min_duration}")
        hops = self.vqvae_config.hop_lengths
        for index, prior in enumerate(self.prior_configs):
            # the top prior (index 0) conditions on nothing musical; prior i on the level above it
            vq_level = self.nb_priors - 1 - index
            if prior.music_vocab_size != self.vqvae_config.nb_discrete_codes:
                _fail(name, f"prior_configs[{index}].music_vocab_size", prior.music_vocab_size,
                      f"the VQ-VAE codebook size nb_discrete_codes={self.vqvae_config.nb_discrete_codes}")
            if index > 0:
                ratio = hops[vq_level + 1] // hops[vq_level]
                if len(prior.res_downs_t) <= index:
                    _fail(name, f"prior_configs[{index}].res_downs_t", prior.res_downs_t,
                          f"an entry for prior index {index} (its music-token conditioner upsamples by it)")
                # as in the released checkpoints, prior i's conditioner reads entry i of its lists
                cond_ratio = prior.res_strides_t[index] ** prior.res_downs_t[index]
                if cond_ratio != ratio:
                    _fail(name, f"prior_configs[{index}].res_downs_t", prior.res_downs_t,
                          f"an upsampling of {ratio}x (VQ-VAE level {vq_level + 1} to {vq_level}), got {cond_ratio}x")
                if prior.n_ctx % ratio:
                    _fail(name, f"prior_configs[{index}].n_ctx", prior.n_ctx,
                          f"a multiple of the {ratio}x ratio to the level above")

    def shared_prior_config(self, level: int) -> JukeboxPriorConfig:
        """A copy of prior ``level``'s config with the model-wide sampling rate, timing and metadata
        settings applied, as ``JukeboxModel`` builds it (the stored prior configs stay as written);
        its own ``max_nb_genres`` is kept when ``per_prior_max_nb_genres``."""
        return dataclasses.replace(
            self.prior_configs[level],
            sampling_rate=self.sampling_rate,
            timing_dims=self.timing_dims,
            min_duration=self.min_duration,
            max_duration=self.max_duration,
            max_nb_genres=self.prior_configs[level].max_nb_genres if self.per_prior_max_nb_genres else self.max_nb_genres,
            metadata_conditioning=self.metadata_conditioning,
        )

    @property
    def hop_fraction(self) -> list[float]:
        return self.vqvae_config.hop_fraction

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["prior_config_list"] = out.pop("prior_configs")
        out["hop_fraction"] = list(self.hop_fraction)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> JukeboxConfig:  # type: ignore[override]
        if not isinstance(data, dict):
            raise ValueError(f"JukeboxConfig.from_dict expects a dict, got {type(data).__name__}")
        data = {**data, **overrides}
        if "prior_config_list" in data and "prior_configs" not in data:
            data["prior_configs"] = data["prior_config_list"]
        elif "prior_configs" not in data:
            found = [data[f"prior_{i}"] for i in range(data.get("nb_priors", 3)) if f"prior_{i}" in data]
            if found:
                data["prior_configs"] = found
        kwargs = {name: data[name] for name in cls.field_names() if name in data}
        return cls(**kwargs)
