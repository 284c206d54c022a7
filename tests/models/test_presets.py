"""Every preset: a reference state dict fits our model tensor for tensor (checked on the meta device)."""
import pytest
import torch

from models.checkpoint import CheckpointError, assign_state_dict, check_state_dict
from models.jukebox import JukeboxModel
from models.loading import load_model, load_prior, load_vqvae
from models.presets import available_presets, load_preset

transformers = pytest.importorskip("transformers")


def _reference(config, device="meta"):
    data = config.to_dict()
    data.pop("model_type")
    with torch.device(device):
        return transformers.JukeboxModel(transformers.JukeboxConfig(**data))


@pytest.mark.parametrize("preset", available_presets())
def test_reference_state_dict_fits_ours_exactly(preset):
    config = load_preset(preset)
    reference = _reference(config).state_dict()
    with torch.device("meta"):
        ours = JukeboxModel(config)
    check_state_dict(ours, reference, f"reference {preset}")
    # every parameter and persistent buffer of ours is consumed from the checkpoint; the others
    # are recomputed by their owner after loading
    persistent = set(ours.state_dict())
    for name, _ in list(ours.named_parameters()) + list(ours.named_buffers()):
        if name not in persistent:
            owner = ours.get_submodule(name.rsplit(".", 1)[0])
            assert callable(getattr(owner, "reset_non_persistent_buffers", None)), name


def test_tiny_reference_weights_load_with_nothing_left_uninitialised():
    torch.manual_seed(0)
    reference = _reference(load_preset("tiny"), device="cpu")
    # the reference leaves some tensors uninitialised (torch.empty): give every tensor known values
    # (a tied output projection is one parameter, so it gets the values of its token embedding)
    with torch.no_grad():
        for tensor in list(reference.parameters()) + list(reference.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    state = reference.state_dict()
    with torch.device("meta"):
        ours = JukeboxModel(load_preset("tiny"))
    assign_state_dict(ours, state, "reference tiny")
    assert not any(t.is_meta for t in list(ours.parameters()) + list(ours.buffers()))
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    for prior in ours.priors:  # merged_decoder=False everywhere in tiny: the projection stays tied
        assert prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight
    # a checkpoint whose two names of one tied weight disagree is refused, naming both
    broken = dict(state)
    broken["priors.1.prior.fc_proj_out.weight"] = torch.randn_like(broken["priors.1.prior.fc_proj_out.weight"])
    with torch.device("meta"):
        again = JukeboxModel(load_preset("tiny"))
    with pytest.raises(CheckpointError, match=r"priors\.1\.prior\.fc_proj_out\.weight and priors\.1\.prior\.embed_tokens\.weight"):
        assign_state_dict(again, broken, "broken")


def test_preset_components_equal_the_whole_model():
    """Random weights from a seed: the same for a component alone as in the whole model."""
    whole = load_model("tiny", init_seed=3, weights="random").state_dict()
    vqvae = load_vqvae("tiny", init_seed=3, weights="random").state_dict()
    top = load_prior("tiny", 0, init_seed=3, weights="random").state_dict()
    assert all(torch.equal(whole[f"vqvae.{k}"], v) for k, v in vqvae.items())
    assert all(torch.equal(whole[f"priors.0.{k}"], v) for k, v in top.items())
    other = load_prior("tiny", 0, init_seed=4, weights="random").state_dict()
    assert not all(torch.equal(other[k], v) for k, v in top.items())


def test_save_and_load_pretrained_round_trip(tmp_path):
    model = load_model("tiny", init_seed=1)
    model.save_pretrained(str(tmp_path / "ckpt"), max_shard_size="200KB")
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").exists()
    back = JukeboxModel.from_pretrained(str(tmp_path / "ckpt"))
    for key, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key
    middle = load_prior(str(tmp_path / "ckpt"), 1)
    assert all(torch.equal(middle.state_dict()[k], v) for k, v in model.priors[1].state_dict().items())
    reference = transformers.JukeboxModel.from_pretrained(str(tmp_path / "ckpt"))
    for key, tensor in model.state_dict().items():
        assert torch.equal(reference.state_dict()[key], tensor), key


def test_unknown_preset_and_missing_checkpoint_are_clear(tmp_path):
    with pytest.raises(ValueError, match="neither a preset nor a checkpoint"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        load_preset("huge")
