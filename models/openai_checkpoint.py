"""The original OpenAI Jukebox checkpoint files, read into (and written from) our state dicts.

A released model is four files: ``vqvae.pth.tar`` and ``prior_level_{0,1,2}.pth.tar``, each a
torch-saved dict whose ``"model"`` entry is the state dict of the original module. The original
numbers the priors bottom-first (``prior_level_2`` is the top prior) while ours, like
transformers, are top-first, so ``prior_level_k`` holds ``priors.{nb_priors - 1 - k}``.

Each file is written by the original as ``torch.save({"hps": ..., "model": state_dict, "opt": ...,
"step": ...})`` in torch's legacy (pre-zip) serialization. ``state_dict`` is the module's own: in a
prior built with ``merged_decoder=False`` the output projection is the token embedding, so
``prior.x_out.weight`` and ``prior.x_emb.weight`` are one storage in the pickle. Reading checks that
every such tie agrees with the config's ``merged_decoder`` (the tie is how the file says which it
was trained with); writing reproduces the format, ties and ``hps`` included.

Parameter names are translated by the rules of :mod:`models.openai_names`, whose
:func:`openai_to_ours` and :func:`ours_to_openai` are re-exported here.
"""
from __future__ import annotations

import logging
import pickle
import posixpath
import re
import types
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import torch

from models.checkpoint import CheckpointError, drop_tied, tied_aliases
from models.config import JukeboxConfig
from models.meta import empty_on_meta
from models.openai_hparams import original_hparams
from models.openai_names import openai_to_ours, ours_to_openai

__all__ = [
    "VQVAE_FILE", "OpenAIFile", "expected_layout", "expected_shapes", "load_openai_checkpoint", "openai_files", "openai_to_ours",
    "ours_to_openai", "read_original_state_dict", "save_openai_checkpoint", "to_openai_state_dicts",
]

logger = logging.getLogger(__name__)

VQVAE_FILE = "vqvae.pth.tar"
_MAX_LISTED = 20


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class OpenAIFile:
    """One original checkpoint file: its name, our key prefix, and whether it holds an upsampler."""

    name: str
    prefix: str
    upsampler: bool


def openai_files(nb_priors: int) -> tuple[OpenAIFile, ...]:
    """The VQ-VAE file, then ``prior_level_0`` (bottom upsampler) .. ``prior_level_{n-1}`` (top prior)."""
    priors = tuple(
        OpenAIFile(f"prior_level_{k}.pth.tar", f"priors.{nb_priors - 1 - k}.", upsampler=k != nb_priors - 1)
        for k in range(nb_priors)
    )
    return (OpenAIFile(VQVAE_FILE, "vqvae.", upsampler=False), *priors)


def _file_name(role: str) -> str:
    role = posixpath.basename(str(role).rstrip("/"))
    return role if role.endswith(".pth.tar") else f"{role}.pth.tar"


def _exists(path: str) -> bool:
    fs, local_path = fsspec.core.url_to_fs(path)
    return fs.exists(local_path)


def _resolve_paths(paths: Mapping[str, str] | Sequence[str], files: Sequence[OpenAIFile]) -> dict[str, str]:
    """File name -> path, from a {role: path} mapping or from paths named like the original files."""
    expected = [f.name for f in files]
    pairs = paths.items() if isinstance(paths, Mapping) else ((path, path) for path in paths)
    named: dict[str, str] = {}
    for role, path in pairs:
        name = _file_name(role)
        if name in named:
            raise ValueError(f"two paths are given for {name}: {named[name]!r} and {str(path)!r}")
        named[name] = str(path)
    unknown = sorted(set(named) - set(expected))
    if unknown:
        raise ValueError(f"unexpected checkpoint files {unknown} (from {sorted(named.values())}): expected files "
                         f"named {expected}; pass a dict {{'prior_level_2': path, ...}} for files named otherwise")
    missing = [name for name in expected if name not in named]
    if missing:
        raise ValueError(f"no path given for {missing}: this model needs {expected}")
    absent = [path for path in named.values() if not _exists(path)]
    if absent:
        raise FileNotFoundError(f"original Jukebox checkpoint files do not exist: {absent}")
    return named


# --------------------------------------------------------------------------- reading
class _Opaque:
    """Stands in for any object of a class the checkpoint names beside the weights (hparams,
    optimiser settings): built without running that class's code, and never used. Whatever the
    pickle does to fill it (state, items of a dict subclass such as the original's
    ``Hyperparams``, elements of a list subclass) is accepted and dropped."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
}


class _InertUnpickler(pickle.Unpickler):
    """Resolves only what rebuilds tensors (storages are resolved by torch before this); every
    other global becomes :class:`_Opaque`, so loading runs no code named by the file."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSOR_GLOBALS:
            return OrderedDict if module == "collections" else getattr(torch._utils, name)
        return _Opaque


_INERT_PICKLE = types.ModuleType("jukebox_inert_pickle")
_INERT_PICKLE.Unpickler = _InertUnpickler  # type: ignore[attr-defined]
_INERT_PICKLE.load = lambda handle, **kwargs: _InertUnpickler(handle, **kwargs).load()  # type: ignore[attr-defined]


def _torch_load(fs: fsspec.AbstractFileSystem, path: str, *, inert: bool) -> Any:
    options: dict[str, Any] = {"pickle_module": _INERT_PICKLE, "weights_only": False} if inert else {"weights_only": True}
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        with fs.open(path, "rb") as handle:  # remote: streamed through fsspec
            return torch.load(handle, map_location="cpu", **options)
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"  # the torch >= 1.6 zip format can be memory-mapped
    return torch.load(path, map_location="cpu", mmap=zipped, **options)


def read_original_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of one original checkpoint file (local or fsspec URL), keys as stored.

    Weights-only loading is tried first; a file whose other entries name classes it does not allow
    is read again with an unpickler that turns those entries into inert placeholders. Local
    zip-format files are memory-mapped; 2020-era legacy files are read whole.
    """
    fs, local_path = fsspec.core.url_to_fs(str(path))
    if not fs.exists(local_path):
        raise FileNotFoundError(f"original Jukebox checkpoint {path!r} does not exist")
    try:
        try:
            payload = _torch_load(fs, local_path, inert=False)
        except pickle.UnpicklingError as err:
            logger.info("%s: entries beside the weights name classes that weights-only loading refuses; "
                        "reading them as inert placeholders", path)
            logger.debug("weights-only load of %s: %s", path, err)
            payload = _torch_load(fs, local_path, inert=True)
    except Exception as err:  # every reader failure becomes one error naming the file
        raise CheckpointError(f"cannot read {path!r} as a PyTorch checkpoint: {type(err).__name__}: {err}") from err
    if not isinstance(payload, Mapping) or "model" not in payload:
        found = sorted(map(str, payload)) if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(f"{path!r} is not an original Jukebox checkpoint: expected a dict with a 'model' "
                              f"state dict, found {found}")
    state = payload["model"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"the 'model' entry of {path!r} is a {type(state).__name__}, expected a state dict")
    return dict(state)


def expected_layout(config: JukeboxConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(key -> shape, tied alias -> key) of the state dict of our ``JukeboxModel(config)``, built
    on the meta device; e.g. ``priors.2.prior.fc_proj_out.weight`` is an alias of
    ``priors.2.prior.embed_tokens.weight`` when that prior has ``merged_decoder=False``."""
    # imported here: reading and writing files needs no model code
    from models.jukebox import JukeboxModel

    with empty_on_meta():
        model = JukeboxModel(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}, tied_aliases(model)


def expected_shapes(config: JukeboxConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of our ``JukeboxModel(config)``, built on the meta device."""
    return expected_layout(config)[0]


_OUTPUT, _EMBEDDING = "prior.fc_proj_out.weight", "prior.embed_tokens.weight"


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.storage_offset() == b.storage_offset()


def _tie_problems(state: Mapping[str, torch.Tensor], tied: Mapping[str, str], origin: Mapping[str, str],
                  config: JukeboxConfig) -> list[str]:
    """Output projections whose tie to the token embedding disagrees with the config's merged_decoder."""
    problems = []
    for index in range(config.nb_priors):
        output, embedding = f"priors.{index}.{_OUTPUT}", f"priors.{index}.{_EMBEDDING}"
        if output not in state or embedding not in state:
            continue
        out_t, emb_t = state[output], state[embedding]
        if output in tied and not (_same_storage(out_t, emb_t) or torch.equal(out_t, emb_t)):
            problems.append(
                f"{origin[output]} differs from {origin[embedding]}, but prior {index} has merged_decoder=False, "
                "which ties them (the released upsamplers and 1b_lyrics top prior): this file was trained with "
                "merged_decoder=True; set it in the config"
            )
        elif output not in tied and _same_storage(out_t, emb_t):
            problems.append(
                f"{origin[output]} is stored as the same tensor as {origin[embedding]}: the file was saved by a prior "
                f"with merged_decoder=False (tied output projection), but the config gives prior {index} "
                "merged_decoder=True; set it to false (as the released upsamplers and 1b_lyrics top prior)"
            )
    return problems


def _listed(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED] + ([f"... {len(items) - _MAX_LISTED} more"] if len(items) > _MAX_LISTED else [])
    return f"{len(items)} {title}:\n  " + "\n  ".join(shown)


def load_openai_checkpoint(
    paths: Mapping[str, str] | Sequence[str],
    config: JukeboxConfig,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Read the original files of a Jukebox model into a state dict keyed as ours (``vqvae.*``, ``priors.{i}.*``).

    Args:
        paths: ``{"vqvae": path, "prior_level_0": path, ...}`` (roles with or without ``.pth.tar``),
            or a list of paths whose file names are the original ones. Local paths or fsspec URLs.
        config: the model the files hold (e.g. ``load_preset("5b_lyrics")``).
        shapes: expected key -> shape; default :func:`expected_shapes` of ``config``.

    Returns:
        The tensors as stored (dtype unchanged; memory-mapped where the file allows).

    Raises:
        FileNotFoundError naming a missing file; CheckpointError (a ValueError) naming a file that
        is not a checkpoint, or listing at once every missing key, unexpected key (with its original
        name and file) and shape that differs from what ``config`` describes.
    """
    files = openai_files(config.nb_priors)
    located = _resolve_paths(paths, files)
    layout, tied = expected_layout(config)
    wanted = {k: tuple(s) for k, s in (layout if shapes is None else shapes).items()}
    downs = config.vqvae_config.res_downs_t
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for file in files:
        path = located[file.name]
        logger.info("reading %s into %s*", path, file.prefix)
        for original, tensor in read_original_state_dict(path).items():
            try:
                local = openai_to_ours(original)
                # a Resnet1D stored its blocks as "model" or "blocks" depending on how it was
                # trained, not on what it computes: either form is read from any file
                forms = {ours_to_openai(local, upsampler_file=flag, res_downs_t=downs) for flag in (file.upsampler, not file.upsampler)}
            except ValueError as err:
                unexpected.append(f"{original!r} in {path}: {err}")
                continue
            key = file.prefix + local
            if original not in forms:
                canonical = ours_to_openai(local, upsampler_file=file.upsampler, res_downs_t=downs)
                unexpected.append(f"{original!r} in {path}: would be {key}, which this config stores as {canonical!r}")
            elif key in state:
                unexpected.append(f"{original!r} in {path}: a second copy of {key}, already read from {origin[key]}")
            elif key not in wanted:
                unexpected.append(f"{original!r} in {path}: maps to {key}, which this config does not have")
            elif not isinstance(tensor, torch.Tensor):
                unexpected.append(f"{original!r} in {path}: holds a {type(tensor).__name__}, not a tensor")
            else:
                state[key], origin[key] = tensor, f"{original!r} in {path}"
    missing = []
    for key in sorted(wanted.keys() - state.keys()):
        if key in tied and tied[key] in state:  # a tied weight stored under its other name only
            continue
        file = next(f for f in files if key.startswith(f.prefix))
        name = ours_to_openai(key[len(file.prefix):], upsampler_file=file.upsampler, res_downs_t=downs)
        missing.append(f"{key} (expected as {name!r} in {located[file.name]})")
    misshapen = [
        f"{key} from {origin[key]}: file has {tuple(state[key].shape)}, the config describes {wanted[key]}"
        for key in sorted(state) if tuple(state[key].shape) != wanted[key]
    ]
    ties = [] if misshapen else _tie_problems(state, tied, origin, config)
    problems = [_listed(title, items) for title, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshapen),
                 ("tied weights that contradict merged_decoder", ties)) if items]
    if problems:
        raise CheckpointError("the original Jukebox checkpoint does not fit the config:\n" + "\n".join(problems))
    for alias, key in tied.items():
        state.setdefault(alias, state[key])
    return state


# --------------------------------------------------------------------------- writing
_ENCODER_CONV = re.compile(r"vqvae\.encoders\.\d+\.level_blocks\.(\d+)\.downsample_block\.(\d+)\.weight")
_PRIOR_INDEX = re.compile(r"priors\.(\d+)\.")


def to_openai_state_dicts(state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split one of our state dicts into the original files' state dicts, keyed by file name."""
    steps: dict[int, set[int]] = {}
    for key in state_dict:
        if (conv := _ENCODER_CONV.fullmatch(key)) and int(conv.group(2)) % 2 == 0:
            steps.setdefault(int(conv.group(1)), set()).add(int(conv.group(2)))
    downs = [len(steps.get(level, ())) for level in range(max(steps, default=-1) + 1)]
    indices = {int(m.group(1)) for key in state_dict if (m := _PRIOR_INDEX.match(key))}
    files = openai_files(max(indices, default=-1) + 1)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        file = next((f for f in files if key.startswith(f.prefix)), None)
        if file is None:
            raise ValueError(f"{key!r} belongs to no original file: expected a 'vqvae.' or 'priors.<i>.' key")
        local = ours_to_openai(key[len(file.prefix):], upsampler_file=file.upsampler, res_downs_t=downs)
        out.setdefault(file.name, {})[local] = tensor
    return out


def save_openai_checkpoint(state_dict: Mapping[str, torch.Tensor], directory: str, config: JukeboxConfig) -> dict[str, str]:
    """Write our state dict of the model ``config`` describes as the original files, under ``directory``.

    Each file is what the original's ``torch.save`` wrote: ``{"hps": ..., "model": ..., "opt": None,
    "step": 0}`` in the legacy serialization, a tied output projection (``merged_decoder=False``)
    stored as the same storage as its token embedding, tensors in their dtype. Returns file name ->
    path written. Local paths or fsspec URLs.
    """
    _, tied = expected_layout(config)
    state = {k: v.detach().cpu().contiguous() for k, v in drop_tied(state_dict, tied).items()}
    # one tensor object per tied pair: the pickle stores one storage for both names
    state.update({alias: state[key] for alias, key in tied.items()})
    fs, root = fsspec.core.url_to_fs(str(directory))
    fs.makedirs(root, exist_ok=True)
    written = {}
    prior_index = {f.name: (None if f.prefix == "vqvae." else int(f.prefix.split(".")[1])) for f in openai_files(config.nb_priors)}
    for name, tensors in to_openai_state_dicts(state).items():
        payload = {"hps": original_hparams(config, prior_index[name]), "model": tensors, "opt": None, "step": 0}
        with fs.open(f"{root.rstrip('/')}/{name}", "wb") as handle:
            torch.save(payload, handle, _use_new_zipfile_serialization=False)
        written[name] = f"{str(directory).rstrip('/')}/{name}"
    return written
