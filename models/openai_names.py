"""Parameter names of the original OpenAI Jukebox checkpoints translated to ours and back.

Names are translated by a table of rules, each a pair of templates over a dotted key local to
one file (ours without its ``vqvae.`` / ``priors.{i}.`` prefix)::

    literal      level_blocks
    <j>          an index; <2j+1> on the other side is an affine function of it: our flat
                 ModuleLists interleave what the original nested as Sequential pairs
    (a|b)        one of several names; the n-th choice group of one side matches the n-th of the
                 other, so (w|b) <-> (weight|bias) renames the original Conv1D's parameters

One rule matches each name, in both directions, so :func:`openai_to_ours` and
:func:`ours_to_openai` are exact inverses on the names the original modules produce. Reading and
writing the files themselves is :mod:`models.openai_checkpoint`'s job.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


# --------------------------------------------------------------------------- name templates
_SLOT = re.compile(r"<(\d*)([a-z])([+-]\d+)?>|\(([^()]+)\)")
_INDEX = r"(0|[1-9]\d*)"  # canonical decimal only, so a name renders back to itself


@dataclass(frozen=True)
class _Slot:
    """An index slot (``var`` with ``scale * var + shift``) or a choice slot (``choices``)."""

    var: str | None = None
    scale: int = 1
    shift: int = 0
    choices: tuple[str, ...] = ()


class _Template:
    """A dotted key pattern; see the module docstring for its syntax."""

    def __init__(self, text: str) -> None:
        self.text = text
        pieces: list[str | _Slot] = []
        regex, position = [], 0
        for match in _SLOT.finditer(text):
            literal = text[position:match.start()]
            pieces.append(literal)
            regex.append(re.escape(literal))
            if match.group(2):
                pieces.append(_Slot(var=match.group(2), scale=int(match.group(1) or 1), shift=int(match.group(3) or 0)))
                regex.append(_INDEX)
            else:
                choices = tuple(match.group(4).split("|"))
                pieces.append(_Slot(choices=choices))
                regex.append("(" + "|".join(map(re.escape, choices)) + ")")
            position = match.end()
        pieces.append(text[position:])
        regex.append(re.escape(text[position:]))
        self.pieces = tuple(pieces)
        self.slots = tuple(p for p in pieces if isinstance(p, _Slot))
        self.regex = re.compile("".join(regex))

    def match(self, key: str) -> tuple[dict[str, int], tuple[int, ...]] | None:
        """The index values and choice positions of ``key``, or None if it does not fit."""
        found = self.regex.fullmatch(key)
        if found is None:
            return None
        values: dict[str, int] = {}
        picks: list[int] = []
        for slot, text in zip(self.slots, found.groups()):
            if slot.var is None:
                picks.append(slot.choices.index(text))
                continue
            offset = int(text) - slot.shift
            if offset < 0 or offset % slot.scale:
                return None
            if values.setdefault(slot.var, offset // slot.scale) != offset // slot.scale:
                return None
        return values, tuple(picks)

    def render(self, values: Mapping[str, int], picks: Sequence[int]) -> str | None:
        """The key for these index values and choices; None where an index would be negative."""
        out, next_pick = [], iter(picks)
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            elif piece.var is None:
                out.append(piece.choices[next(next_pick)])
            else:
                index = piece.scale * values[piece.var] + piece.shift
                if index < 0:
                    return None
                out.append(str(index))
        return "".join(out)


class _Rule:
    """One original name pattern and ours.

    ``upsampler_file``: None when the original name is the same in every file; True/False when
    this form is the one written in upsampler files / in other files.
    ``depth_index``: ``(index, level)`` when the original index ``index`` is absent from our name
    and equals ``res_downs_t[level]`` (the encoder's output projection follows its downsampling
    steps in one Sequential).
    """

    def __init__(self, openai: str, ours: str, *, upsampler_file: bool | None = None,
                 depth_index: tuple[str, str] | None = None) -> None:
        self.openai, self.ours = _Template(openai), _Template(ours)
        self.upsampler_file = upsampler_file
        self.depth_index = depth_index
        groups = [len(s.choices) for s in self.openai.slots if s.var is None]
        if groups != [len(s.choices) for s in self.ours.slots if s.var is None]:
            raise AssertionError(f"choice groups of {openai!r} and {ours!r} do not pair up")


_WB = "(weight|bias)"
_CONV1D = "(w|b)"  # the original transformer's Conv1D names its parameters w and b
_RES_CONV = "(1|3)"  # ResConv1DBlock.model = Sequential(ReLU, Conv1d k=3, ReLU, Conv1d k=1)
_OUR_RES_CONV = "(conv1d_1|conv1d_2)"


def _encoder_block(o: str, u: str) -> tuple[_Rule, ...]:
    """EncoderConvBlock.model = [Sequential(strided Conv1d, Resnet1D)] * down_t + [Conv1d]."""
    return (
        _Rule(f"{o}.model.<j>.0.{_WB}", f"{u}.downsample_block.<2j>.{_WB}"),
        _Rule(f"{o}.model.<j>.1.model.<r>.model.{_RES_CONV}.{_WB}",
              f"{u}.downsample_block.<2j+1>.resnet_block.<r>.{_OUR_RES_CONV}.{_WB}"),
        _Rule(f"{o}.model.<n>.{_WB}", f"{u}.proj_out.{_WB}", depth_index=("n", "b")),
    )


def _decoder_block(o: str, u: str, resnet_forms: Sequence[tuple[str, bool | None]]) -> tuple[_Rule, ...]:
    """DecoderConvBock.model = [Conv1d] + [Sequential(Resnet1D, ConvTranspose1d)] * down_t.

    ``resnet_forms``: (attribute, upsampler_file) pairs: a Resnet1D keeps its blocks in ``model``,
    or in ``blocks`` when built with checkpointed residuals (the released upsamplers' conditioners).
    """
    resnets = tuple(
        _Rule(f"{o}.model.<j>.0.{word}.<r>.model.{_RES_CONV}.{_WB}",
              f"{u}.upsample_block.<2j-2>.resnet_block.<r>.{_OUR_RES_CONV}.{_WB}", upsampler_file=form)
        for word, form in resnet_forms
    )
    return (
        _Rule(f"{o}.model.0.{_WB}", f"{u}.proj_in.{_WB}"),
        *resnets,
        _Rule(f"{o}.model.<j>.1.{_WB}", f"{u}.upsample_block.<2j-1>.{_WB}"),
    )


def _transformer(o: str, u: str) -> tuple[_Rule, ...]:
    """ConditionalAutoregressive2D: token embedding, learned positions, the attention layers."""
    layer_o, layer_u = f"{o}.transformer._attn_mods.<i>", f"{u}.transformer._attn_mods.<i>"
    return (
        _Rule(f"{o}.x_emb.weight", f"{u}.embed_tokens.weight"),
        _Rule(f"{o}.pos_emb.pos_emb", f"{u}.pos_emb.pos_emb"),
        _Rule(f"{o}.start_token", f"{u}.start_token"),
        _Rule(f"{layer_o}.(ln_0|ln_1).{_WB}", f"{layer_u}.(layer_norm_0|layer_norm_1).{_WB}"),
        _Rule(f"{layer_o}.attn.(c_attn|c_enc_kv|c_proj).{_CONV1D}", f"{layer_u}.attn.(c_attn|c_enc_kv|c_proj).{_WB}"),
        _Rule(f"{layer_o}.mlp.(c_fc|c_proj).{_CONV1D}", f"{layer_u}.mlp.(c_fc|c_proj).{_WB}"),
    )


_ENCODER_LEVEL = "encoders.<e>.level_blocks.<b>"
_DECODER_LEVEL = "decoders.<e>.level_blocks.<b>"
_TIMING = "(total_length_emb|absolute_pos_emb|relative_pos_emb)"

_RULES: tuple[_Rule, ...] = (
    # vqvae.pth.tar: one encoder and decoder per level, each with level_blocks 0..level
    *_encoder_block(_ENCODER_LEVEL, _ENCODER_LEVEL),
    *_decoder_block(_DECODER_LEVEL, _DECODER_LEVEL, [("model", None)]),
    _Rule(f"decoders.<e>.out.{_WB}", f"decoders.<e>.out.{_WB}"),
    _Rule("bottleneck.level_blocks.<l>.k", "bottleneck.level_blocks.<l>.codebook"),
    # prior_level_k.pth.tar: label conditioner (SimpleEmbedding / RangeEmbedding wrap .emb)
    _Rule("y_emb.(bow_genre_emb|artist_emb).emb.weight", "metadata_embedding.(bow_genre_emb|artist_emb).weight"),
    _Rule(f"y_emb.{_TIMING}.emb.weight", f"metadata_embedding.{_TIMING}.emb.weight"),
    # the music transformer
    *_transformer("prior", "prior"),
    _Rule("prior.x_out.weight", "prior.fc_proj_out.weight"),
    # 5b_lyrics: the separate lyrics encoder and its projection into the music transformer
    *_transformer("prime_prior", "encoder"),
    _Rule(f"prime_state_proj.{_CONV1D}", f"encoder.proj_in.{_WB}"),
    _Rule(f"prime_state_ln.{_WB}", f"encoder.final_layer_norm.{_WB}"),
    _Rule("prime_x_out.weight", "encoder.lm_head.weight"),
    # upsamplers: the music-token conditioner on the level above
    _Rule("conditioner_blocks.0.x_emb.weight", "conditioner_blocks.embed_tokens.weight"),
    _Rule(f"conditioner_blocks.0.ln.{_WB}", f"conditioner_blocks.layer_norm.{_WB}"),
    *_decoder_block("conditioner_blocks.0.cond", "conditioner_blocks.upsampler", [("blocks", True), ("model", False)]),
)


def _only(found: list[tuple[_Rule, Any]], key: str) -> tuple[_Rule, Any] | None:
    if len(found) > 1:
        raise AssertionError(f"{key!r} fits {len(found)} rules: {[rule.openai.text for rule, _ in found]}")
    return found[0] if found else None


def openai_to_ours(key: str) -> str:
    """Our name of a parameter of an original file, both local to that file.

    E.g. ``"encoders.0.level_blocks.0.model.1.0.weight"`` -> ``"encoders.0.level_blocks.0.downsample_block.2.weight"``.
    Raises ValueError for a name no original Jukebox module produces.
    """
    found = _only([(r, m) for r in _RULES if (m := r.openai.match(key)) is not None], key)
    ours = None if found is None else found[0].ours.render(*found[1])
    if ours is None:
        raise ValueError(f"{key!r} is not a parameter name of an original Jukebox VQ-VAE or prior")
    return ours


def ours_to_openai(key: str, *, upsampler_file: bool, res_downs_t: Sequence[int] | None = None) -> str:
    """The original name of one of our parameters, both local to the file (no ``priors.{i}.`` prefix).

    Args:
        key: e.g. ``"conditioner_blocks.upsampler.upsample_block.0.resnet_block.1.conv1d_2.bias"``.
        upsampler_file: whether the name goes into an upsampler's file (``prior_level_k`` with
            k below the top), whose conditioner stored its residual blocks as ``blocks``.
        res_downs_t: the VQ-VAE's ``res_downs_t``; needed only for an encoder's ``proj_out``,
            whose original index is the number of downsampling steps before it.
    """
    candidates = [r for r in _RULES if r.upsampler_file in (None, upsampler_file)]
    found = _only([(r, m) for r in candidates if (m := r.ours.match(key)) is not None], key)
    if found is None:
        raise ValueError(f"{key!r} is not a parameter name of our Jukebox VQ-VAE or priors")
    rule, (values, picks) = found
    if rule.depth_index is not None:
        index, level = rule.depth_index
        if res_downs_t is None or not 0 <= values[level] < len(res_downs_t):
            raise ValueError(f"the original name of {key!r} needs res_downs_t with an entry for level "
                             f"{values[level]} (the steps before the projection), got {res_downs_t!r}")
        values = {**values, index: int(res_downs_t[values[level]])}
    original = rule.openai.render(values, picks)
    if original is None:
        raise ValueError(f"{key!r} has no original name (an index falls below 0)")
    return original
