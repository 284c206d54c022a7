"""save_pretrained directories: the files transformers writes are read tensor for tensor."""
import json

import pytest
import torch
from torch import nn

from models.checkpoint import (
    CheckpointError,
    assign_state_dict,
    check_checkpoint,
    check_state_dict,
    read_state_dict,
    save_pretrained_state_dict,
    stored_shapes,
)
from models.presets import load_preset

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reference_vqvae():
    torch.manual_seed(0)
    config = load_preset("tiny").vqvae_config.to_dict()
    config.pop("model_type")
    return transformers.JukeboxVQVAE(transformers.JukeboxVQVAEConfig(**config)).eval()


@pytest.mark.parametrize("safe", [True, False])
@pytest.mark.parametrize("shard", ["5GB", "20KB"])
def test_reads_what_transformers_writes(reference_vqvae, tmp_path, safe, shard):
    reference_vqvae.save_pretrained(str(tmp_path), safe_serialization=safe, max_shard_size=shard)
    if shard == "20KB":
        index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
        assert (tmp_path / index).exists()
    state = read_state_dict(str(tmp_path))
    expected = reference_vqvae.state_dict()
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_a_legacy_pytorch_model_bin_is_read_and_checked(reference_vqvae, tmp_path):
    """A ``pytorch_model.bin`` in torch's pre-zip format (``_use_new_zipfile_serialization=False``,
    as older tools wrote it) cannot be memory-mapped: read whole, the same tensors; its shapes
    check as the run's checks read them, before any actor."""
    reference_vqvae.save_pretrained(str(tmp_path), safe_serialization=True)
    (tmp_path / "model.safetensors").unlink()
    torch.save(reference_vqvae.state_dict(), tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    state = read_state_dict(str(tmp_path))
    for key, tensor in reference_vqvae.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert stored_shapes(str(tmp_path)) == {k: tuple(v.shape) for k, v in reference_vqvae.state_dict().items()}


def test_our_files_load_in_transformers(reference_vqvae, tmp_path):
    config = load_preset("tiny").vqvae_config
    written = save_pretrained_state_dict(config, reference_vqvae.state_dict(), str(tmp_path), max_shard_size="30KB")
    assert written[-1].endswith("config.json") and len(written) > 3
    assert not list(tmp_path.glob("*.tmp-*"))
    loaded = transformers.JukeboxVQVAE.from_pretrained(str(tmp_path))
    for key, tensor in reference_vqvae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_prefix_reads_one_component_from_only_its_shards(tmp_path):
    state = {f"vqvae.w{i}": torch.full((256,), float(i)) for i in range(4)}
    state.update({f"priors.1.w{i}": torch.full((256,), 10.0 + i) for i in range(4)})
    save_pretrained_state_dict(load_preset("tiny"), state, str(tmp_path), max_shard_size=1024)
    part = read_state_dict(str(tmp_path), prefix="priors.1.")
    assert sorted(part) == [f"w{i}" for i in range(4)]
    assert torch.equal(part["w2"], torch.full((256,), 12.0))


def test_memory_filesystem_round_trip():
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)}
    save_pretrained_state_dict(load_preset("tiny"), state, "memory://ckpt/x")
    back = read_state_dict("memory://ckpt/x")
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["b"], state["b"])


def test_missing_weights_and_corrupt_files_are_named(tmp_path):
    load_preset("tiny").save_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match="no weights"):
        read_state_dict(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_state_dict(str(tmp_path))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(3))


def test_mismatches_are_listed_in_one_error():
    state = {"proj.weight": torch.zeros(3, 5), "extra": torch.zeros(1), "scale": torch.ones(3)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict(_Toy(), state, "toy")
    message = str(info.value)
    assert "missing keys: proj.bias" in message
    assert "unexpected keys: extra" in message
    assert "proj.weight: checkpoint (3, 5) vs model (3, 4)" in message


def test_assign_takes_tensors_over_on_meta_device():
    with torch.device("meta"):
        toy = _Toy()
    state = {"proj.weight": torch.randn(3, 4), "proj.bias": torch.randn(3), "scale": torch.full((3,), 2.0)}
    assign_state_dict(toy, state, "toy")
    assert toy.proj.weight.data_ptr() == state["proj.weight"].data_ptr()
    assert not any(t.is_meta for t in toy.state_dict().values())


def _meta_vqvae(config=None):
    from models.vqvae import JukeboxVQVAE

    with torch.device("meta"):
        return JukeboxVQVAE(config if config is not None else load_preset("tiny").vqvae_config)


@pytest.mark.parametrize("safe", [True, False])
@pytest.mark.parametrize("shard", ["5GB", "20KB"])
def test_check_checkpoint_reads_the_shapes_transformers_writes(reference_vqvae, tmp_path, safe, shard):
    reference_vqvae.save_pretrained(str(tmp_path), safe_serialization=safe, max_shard_size=shard)
    shapes = stored_shapes(str(tmp_path))
    assert shapes == {k: tuple(v.shape) for k, v in reference_vqvae.state_dict().items()}
    check_checkpoint(_meta_vqvae(), str(tmp_path))


def test_check_checkpoint_reads_headers_through_fsspec(reference_vqvae):
    save_pretrained_state_dict(load_preset("tiny").vqvae_config, reference_vqvae.state_dict(), "memory://headers/x",
                               max_shard_size="30KB")
    check_checkpoint(_meta_vqvae(), "memory://headers/x")


@pytest.mark.parametrize("keep", ["8 bytes", "half the header", "half", "all but one byte"])
def test_a_truncated_safetensors_file_is_named(reference_vqvae, tmp_path, keep):
    reference_vqvae.save_pretrained(str(tmp_path))
    weights = tmp_path / "model.safetensors"
    size = weights.stat().st_size
    header = int.from_bytes(weights.read_bytes()[:8], "little")
    length = {"8 bytes": 8, "half the header": 8 + header // 2, "half": size // 2, "all but one byte": size - 1}[keep]
    with open(weights, "r+b") as handle:  # as `truncate -s` leaves it
        handle.truncate(length)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.* (truncated|damaged)"):
        check_checkpoint(_meta_vqvae(), str(tmp_path))


def test_damaged_or_incomplete_torch_files_and_shards_are_named(reference_vqvae, tmp_path):
    whole = tmp_path / "bin"
    reference_vqvae.save_pretrained(str(whole), safe_serialization=False)
    with open(whole / "pytorch_model.bin", "r+b") as handle:
        handle.truncate((whole / "pytorch_model.bin").stat().st_size - 100)
    with pytest.raises(CheckpointError, match=r"could not read weight file .*pytorch_model\.bin"):
        check_checkpoint(_meta_vqvae(), str(whole))
    sharded = tmp_path / "sharded"
    reference_vqvae.save_pretrained(str(sharded), max_shard_size="20KB")
    shards = sorted(sharded.glob("model-*.safetensors"))
    shards[1].unlink()
    with pytest.raises(CheckpointError, match=rf"weight file .*{shards[1].name}' listed by the shard index .* does not exist"):
        check_checkpoint(_meta_vqvae(), str(sharded))
    reference_vqvae.save_pretrained(str(sharded), max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    moved = next(iter(index["weight_map"]))
    index["weight_map"][moved] = next(name for name in index["weight_map"].values() if name != index["weight_map"][moved])
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"names tensors their shard does not hold: {moved}"):
        check_checkpoint(_meta_vqvae(), str(sharded))


def test_a_checkpoint_of_another_shape_is_listed_without_reading_tensors(reference_vqvae, tmp_path):
    reference_vqvae.save_pretrained(str(tmp_path))
    wider = load_preset("tiny").vqvae_config
    wider.embed_dim *= 2
    with pytest.raises(CheckpointError, match=r"does not fit the model.*shape mismatches"):
        check_checkpoint(_meta_vqvae(wider), str(tmp_path))
