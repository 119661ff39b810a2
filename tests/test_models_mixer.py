"Tests for MLP-Mixer (cifar_study.models.mixer)."
import pytest
import torch
from torch import nn

from cifar_study.models.mixer import MixerBlock, MlpMixer, mlp_mixer_b16, mlp_mixer_tiny
from cifar_study.models.registry import count_parameters, create_model, get_model_spec


def test_tiny_is_the_model_the_study_trained():
    model = mlp_mixer_tiny()
    assert count_parameters(model) == 1_341_924
    assert abs(count_parameters(model) / 1.34e6 - 1) < 0.02
    assert len(model.blocks) == 8 and model.patch_embedding.kernel_size == (4, 4)
    assert model.blocks[0].token_mlp[0].in_features == 64       # 8x8 grid of 4x4 patches
    assert model.blocks[0].token_mlp[0].out_features == 256
    assert model.blocks[0].channel_mlp[0].out_features == 512


def test_b16_within_5_percent_of_the_table():
    parameters = count_parameters(mlp_mixer_b16())
    assert parameters == 57_417_316
    assert abs(parameters / 59.19e6 - 1) < 0.05


def test_study_mixer_is_the_model_the_study_trained_as_mlp_mixer_b16():
    model = create_model('mlp_mixer_study')
    assert count_parameters(model) == 17_948_772          # the study's log: 17.95 M
    assert len(model.blocks) == 8 and model.patch_embedding.kernel_size == (4, 4) and model.head.in_features == 512
    assert model.blocks[0].token_mlp[0].out_features == 1024
    assert model.blocks[0].channel_mlp[0].out_features == 2048
    assert get_model_spec('mlp_mixer_study').original_rows == ('mlp_mixer_b16',)
    assert get_model_spec('mlp_mixer_b16').original_rows == ()


def test_layer_norms_use_timm_eps():
    # timm's MlpMixer builds every LayerNorm with eps 1e-6 (PyTorch's default is 1e-5).
    norms = [m for m in mlp_mixer_tiny().modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 8 + 1 and {norm.eps for norm in norms} == {1e-6}


def test_table_value_is_the_224_pixel_mixer_b16():
    assert count_parameters(mlp_mixer_b16(patch_size=16, image_size=224)) == 59_188_372


def test_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match='multiple of patch_size'):
        MlpMixer(patch_size=5, width=8, depth=1, token_hidden=8, channel_hidden=8)


def block_and_tokens(seed=0):
    torch.manual_seed(seed)
    return MixerBlock(num_tokens=16, width=12, token_hidden=20, channel_hidden=24).eval(), torch.randn(2, 16, 12)


def test_token_mixing_mixes_across_tokens():
    block, tokens = block_and_tokens()
    changed = tokens.clone()
    changed[:, 3] = torch.randn(2, 12)
    with torch.no_grad():
        difference = (block(tokens) - block(changed)).abs().amax(-1)
    assert (difference > 1e-5).all()      # every token's output moved, not only token 3's


def test_channel_mixing_is_per_token_and_shared():
    block, tokens = block_and_tokens()
    channel_sublayer = lambda t: block.channel_mlp(block.channel_norm(t))
    changed = tokens.clone()
    changed[:, 3] = torch.randn(2, 12)
    with torch.no_grad():
        difference = (channel_sublayer(tokens) - channel_sublayer(changed)).abs().amax(-1)
        assert (difference[:, 3] > 1e-5).all()
        assert (difference[:, torch.arange(16) != 3] == 0).all()
        # The same MLP for every token: permuting the tokens permutes the output.
        order = torch.randperm(16)
        torch.testing.assert_close(channel_sublayer(tokens[:, order]), channel_sublayer(tokens)[:, order])


def test_token_mixing_is_shared_across_channels():
    block, tokens = block_and_tokens()
    token_sublayer = lambda t: block.token_mlp(block.token_norm(t).transpose(1, 2)).transpose(1, 2)
    order = torch.randperm(12)
    with torch.no_grad():
        torch.testing.assert_close(token_sublayer(tokens[..., order]), token_sublayer(tokens)[..., order])


def test_drop_path_rates_grow_linearly():
    model = mlp_mixer_tiny(drop_path_rate=0.1)
    assert model.blocks[-1].drop_path.p == pytest.approx(0.1)
    assert isinstance(model.blocks[0].drop_path, torch.nn.Identity)
