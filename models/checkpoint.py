"""Reading and writing ``save_pretrained`` directories (the layout transformers 4.40.2 writes).

A directory holds ``config.json`` and the weights as ``model.safetensors`` or ``pytorch_model.bin``,
or as shards listed by ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``. Paths
may be local or any fsspec URL. Local files are memory-mapped, so a model built on the meta device
and loaded with ``assign=True`` never holds two copies of its weights in RAM.

Tied weights (a prior with ``merged_decoder=False`` uses its token embedding as its output
projection: ``prior.fc_proj_out.weight`` *is* ``prior.embed_tokens.weight``) are stored once, under
the name that comes first in the state dict, as transformers does. A checkpoint may hold the other
name too (transformers' ``.bin`` files do, sharing one storage); it must then hold the same values.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import uuid
import zipfile
from collections.abc import Iterable, Mapping

import fsspec
import torch
from safetensors import safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from models.config import CONFIG_NAME, _ConfigBase

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model its config describes."""


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _weight_files(fs: fsspec.AbstractFileSystem, root: str, source: str) -> tuple[list[str], dict[str, str] | None]:
    """The weight files of a directory and, when sharded, its key -> file map."""
    for index_name in (SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME):
        index_path = _join(root, index_name)
        if fs.exists(index_path):
            try:
                with fs.open(index_path, "r") as handle:
                    weight_map = json.load(handle)["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise CheckpointError(f"cannot read shard index {index_path!r} of {source!r}: {err!r}") from err
            files = sorted(set(weight_map.values()))
            return [_join(root, name) for name in files], {k: _join(root, v) for k, v in weight_map.items()}
    for name in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME):
        if fs.exists(_join(root, name)):
            return [_join(root, name)], None
    raise CheckpointError(
        f"no weights in {source!r}: expected one of {SAFE_WEIGHTS_NAME}, {WEIGHTS_NAME}, "
        f"{SAFE_WEIGHTS_INDEX_NAME} or {WEIGHTS_INDEX_NAME}"
    )


def _read_file(fs: fsspec.AbstractFileSystem, path: str, keys: set[str] | None) -> dict[str, torch.Tensor]:
    """Tensors of one weight file (only ``keys`` when given); memory-mapped when local."""
    try:
        if path.endswith(".safetensors"):
            if _is_local(fs):
                out = {}
                with safe_open(path, framework="pt", device="cpu") as handle:
                    for key in handle.keys():
                        if keys is None or key in keys:
                            out[key] = handle.get_tensor(key)
                return out
            tensors = safetensors_load(fs.cat_file(path))
        else:
            if _is_local(fs):
                # memory-mapped where torch can (its zip format); a legacy (pre-zip) file is read whole
                tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
            else:
                tensors = torch.load(io.BytesIO(fs.cat_file(path)), map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure becomes one error naming the file
        raise CheckpointError(f"could not read weight file {path!r}: {type(err).__name__}: {err}") from err
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"weight file {path!r} does not hold a state dict (got {type(tensors).__name__})")
    return {k: v for k, v in tensors.items() if keys is None or k in keys}


def read_state_dict(source: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` directory whose names start with ``prefix``, prefix removed.

    Args:
        source: directory (local path or fsspec URL).
        prefix: e.g. ``"vqvae."`` or ``"priors.0."`` to read one component of a full model; only the
            shards holding that component are opened.
    """
    fs, root = fsspec.core.url_to_fs(str(source))
    files, weight_map = _weight_files(fs, root, source)
    if weight_map is not None:
        wanted = {k for k in weight_map if k.startswith(prefix)}
        files = sorted({weight_map[k] for k in wanted})
    else:
        wanted = None
    state: dict[str, torch.Tensor] = {}
    for path in files:
        for key, tensor in _read_file(fs, path, wanted).items():
            if key.startswith(prefix):
                state[key[len(prefix):]] = tensor
    return state


# Bytes per element of the safetensors dtypes (sub-byte and unknown dtypes skip the size check).
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors format's own limit


def _safetensors_shapes(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's header (8-byte little-endian length, JSON), checking
    that every tensor's bytes lie inside the file; no tensor data is read."""
    size = fs.size(path)
    with fs.open(path, "rb") as handle:
        head = handle.read(8)
        n_header = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n_header <= min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise CheckpointError(f"weight file {path!r} is not a whole safetensors file ({size} bytes; header length "
                                  f"{n_header}): truncated or damaged")
        try:
            header = json.loads(handle.read(n_header))
        except ValueError as err:
            raise CheckpointError(f"weight file {path!r} has a damaged safetensors header: {err}") from err
    data_bytes = size - 8 - n_header
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"weight file {path!r}: header entry {name!r} is malformed ({entry!r})") from err
        itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)
        count = 1
        for dim in shape:
            count *= dim
        if end > data_bytes or end < start or (itemsize is not None and end - start != count * itemsize):
            raise CheckpointError(
                f"weight file {path!r} is truncated or damaged: tensor {name!r} ({dtype} {list(shape)}) needs bytes "
                f"{start}..{end} of a data section of {data_bytes} bytes"
            )
        shapes[name] = shape
    return shapes


def _torch_file_shapes(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a ``torch.save`` file, loaded onto the meta device: only the archive's
    directory and pickle are read, never the tensor data (a truncated archive fails here)."""
    with fs.open(path, "rb") as handle:
        tensors = torch.load(handle, map_location="meta", weights_only=True)
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"weight file {path!r} does not hold a state dict (got {type(tensors).__name__})")
    return {k: tuple(v.shape) for k, v in tensors.items() if isinstance(v, torch.Tensor)}


def stored_shapes(source: str) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of a ``save_pretrained`` directory, from the weight
    files' headers alone (no tensor data is read, local or remote).

    Raises:
        CheckpointError: naming the directory or file when there are no weights, a file is missing,
            truncated or unreadable, or a shard index names a tensor its shard does not hold.
    """
    fs, root = fsspec.core.url_to_fs(str(source))
    files, weight_map = _weight_files(fs, root, source)
    shapes: dict[str, tuple[int, ...]] = {}
    by_file: dict[str, set[str]] = {}
    for path in files:
        if not fs.exists(path):
            raise CheckpointError(f"weight file {path!r} listed by the shard index of {source!r} does not exist")
        try:
            found = _safetensors_shapes(fs, path) if path.endswith(".safetensors") else _torch_file_shapes(fs, path)
        except CheckpointError:
            raise
        except Exception as err:  # any reader failure becomes one error naming the file
            raise CheckpointError(f"could not read weight file {path!r}: {type(err).__name__}: {err}") from err
        shapes.update(found)
        by_file[path] = set(found)
    if weight_map is not None:
        misplaced = sorted(k for k, path in weight_map.items() if k not in by_file[path])
        if misplaced:
            raise CheckpointError(f"the shard index of {source!r} names tensors their shard does not hold: {_listing(misplaced)}")
    return shapes


def check_checkpoint(model: nn.Module, source: str) -> None:
    """Check, without reading tensor data, that the weight files of ``source`` are whole and hold
    every tensor ``model`` needs at its shape (build ``model`` on the meta device: nothing is
    allocated). Raises :class:`CheckpointError` as :func:`check_state_dict` and
    :func:`stored_shapes` do."""
    shapes = stored_shapes(source)
    check_state_dict(model, {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}, source)


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: key}`` for every state-dict key whose tensor is the same Parameter (or buffer)
    as an earlier key's, e.g. ``{"prior.fc_proj_out.weight": "prior.embed_tokens.weight"}``."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            aliases[key] = first[id(tensor)]
        else:
            first[id(tensor)] = key
    return aliases


def _memory_of(tensor: torch.Tensor) -> tuple:
    """What identifies the elements a tensor views (two keys of one tied weight give the same)."""
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())


def drop_tied(state_dict: Mapping[str, torch.Tensor], tied: Mapping[str, str] | None = None) -> dict[str, torch.Tensor]:
    """``state_dict`` without the aliases of tied weights, each of which must equal its source.

    ``tied``: ``{alias: key}`` as :func:`tied_aliases` gives; None drops every tensor that is a view
    of the same memory as an earlier key's (how ``module.state_dict()`` shows a tie).
    """
    if tied is None:
        seen: dict[tuple, str] = {}
        tied = {}
        for key, tensor in state_dict.items():
            if tensor.is_meta or tensor.numel() == 0:
                continue
            memory = _memory_of(tensor)
            if memory in seen:
                tied[key] = seen[memory]
            else:
                seen[memory] = key
    out = {k: v for k, v in state_dict.items() if k not in tied}
    for alias, source in tied.items():
        if alias in state_dict and source in state_dict and not torch.equal(state_dict[alias], state_dict[source]):
            raise CheckpointError(f"{alias} and {source} are one tied weight but hold different values")
        if alias in state_dict and source not in state_dict:
            out[source] = state_dict[alias]
    return out


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size={size!r} is invalid: expected bytes or a size such as '5GB' or '500MiB'")
    units = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    return int(float(match.group(1)) * units[match.group(2) or "B"])


def _shards(state_dict: Mapping[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def _write_bytes(fs: fsspec.AbstractFileSystem, path: str, payload: bytes) -> None:
    """Write a file whole: to a temporary name then renamed on local disks, straight on object stores."""
    if _is_local(fs):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, payload)


def save_pretrained_state_dict(
    config: _ConfigBase,
    state_dict: Mapping[str, torch.Tensor],
    directory: str,
    *,
    safe_serialization: bool = True,
    max_shard_size: int | str = "5GB",
    tied: Mapping[str, str] | None = None,
) -> list[str]:
    """Write ``config.json`` and the weights under ``directory`` (local or fsspec URL).

    Files are written whole (temporary name then rename on local disks) and ``config.json`` last,
    so an interrupted save never leaves a directory that looks complete. Tied weights are written
    once (see :func:`drop_tied`; ``tied`` as :func:`tied_aliases` gives, None: tensors sharing
    memory). Returns the files written.
    """
    fs, root = fsspec.core.url_to_fs(str(directory))
    fs.makedirs(root, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in drop_tied(state_dict, tied).items()}
    meta = [k for k, v in tensors.items() if v.is_meta]
    if meta:
        raise CheckpointError(f"cannot save tensors still on the meta device: {meta[:_MAX_LISTED]}")
    shards = _shards(tensors, _parse_size(max_shard_size))
    stem, ext = ("model", "safetensors") if safe_serialization else ("pytorch_model", "bin")
    written: list[str] = []
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        name = f"{stem}.{ext}" if len(shards) == 1 else f"{stem}-{index:05d}-of-{len(shards):05d}.{ext}"
        if safe_serialization:
            payload = safetensors_save(shard, metadata={"format": "pt"})
        else:
            buffer = io.BytesIO()
            torch.save(shard, buffer)
            payload = buffer.getvalue()
        _write_bytes(fs, _join(root, name), payload)
        written.append(_join(root, name))
        weight_map.update({key: name for key in shard})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index_name = SAFE_WEIGHTS_INDEX_NAME if safe_serialization else WEIGHTS_INDEX_NAME
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_bytes(fs, _join(root, index_name), json.dumps(index, indent=2).encode())
        written.append(_join(root, index_name))
    _write_bytes(fs, _join(root, CONFIG_NAME), config.to_json_string().encode())
    written.append(_join(root, CONFIG_NAME))
    return written


def _listing(items: Iterable[str]) -> str:
    items = sorted(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one :class:`CheckpointError` listing every missing, unexpected or misshapen tensor
    (a tied weight needs only one of its names)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    aliases = tied_aliases(model)
    missing = {k for k in expected.keys() - state_dict.keys() if not (k in aliases and aliases[k] in state_dict)}
    missing -= {source_key for alias, source_key in aliases.items() if alias in state_dict}
    unexpected = state_dict.keys() - expected.keys()
    misshapen = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {expected[k]}"
        for k in sorted(expected.keys() & state_dict.keys())
        if tuple(state_dict[k].shape) != expected[k]
    ]
    if not (missing or unexpected or misshapen):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if misshapen:
        problems.append(f"{len(misshapen)} shape mismatches: {'; '.join(misshapen[:_MAX_LISTED])}")
    config = getattr(model, "config", None)
    hint = ""
    if config is not None:
        keys = ("hidden_size", "num_layers", "n_ctx", "n_heads", "music_vocab_size", "nb_discrete_codes",
                "embed_dim", "res_conv_width", "levels", "nb_priors")
        described = {k: getattr(config, k) for k in keys if hasattr(config, k)}
        hint = f" (the config describes {type(model).__name__} with {described})"
    raise CheckpointError(f"checkpoint {source!r} does not fit the model{hint}: " + " | ".join(problems))


def assign_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state_dict`` into a model built on the meta device, taking the tensors over (no copy).

    Each tied weight gets the one tensor the checkpoint holds for it (under either name)."""
    check_state_dict(model, state_dict, source)
    aliases = tied_aliases(model)
    try:
        state = drop_tied(state_dict, aliases)
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {source!r}: {err}") from err
    state.update({alias: state[key] for alias, key in aliases.items()})
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        # buffers that checkpoints do not store are recomputed by the module that owns them
        reset = getattr(module, "reset_non_persistent_buffers", None)
        if callable(reset):
            reset()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"after loading {source!r}, these tensors of {type(model).__name__} are uninitialised: {_listing(left)}")
    return model
