"Tests for CoAtNet-0 and the original study's CIFAR CoAtNets (cifar_study.models.coatnet)."
import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from cifar_study.models.coatnet import (MBConv, RelativeSelfAttention, TransformerBlock, coatnet_0, coatnet_0_cifar,
                                        coatnet_cifar_opt, coatnet_cifar_opt_large_stem, relative_position_index)
from cifar_study.models.layers import ECA
from cifar_study.models.registry import count_parameters, stage_output_shapes

ALL_BUILDERS = [coatnet_0, coatnet_0_cifar, coatnet_cifar_opt, coatnet_cifar_opt_large_stem]


# --- relative-position bias ---------------------------------------------------------------------------------

def test_relative_bias_depends_only_on_the_offset():
    attention = RelativeSelfAttention(32, 32, num_heads=2, map_size=(4, 4))
    with torch.no_grad(): attention.relative_bias_table.normal_()
    bias = attention.relative_bias()
    assert bias.shape == (2, 16, 16)
    position = lambda row, col: row * 4 + col
    for i, j, k, l in [(i, j, k, l) for i in range(4) for j in range(4) for k in range(4) for l in range(4)]:
        if i + 1 < 4 and k + 1 < 4:
            assert torch.equal(bias[:, position(i, j), position(k, l)], bias[:, position(i + 1, j), position(k + 1, l)])
        if j + 1 < 4 and l + 1 < 4:
            assert torch.equal(bias[:, position(i, j), position(k, l)], bias[:, position(i, j + 1), position(k, l + 1)])


@pytest.mark.parametrize('height, width', [(4, 4), (3, 5), (1, 1)])
def test_table_has_one_row_per_offset_and_head(height, width):
    attention = RelativeSelfAttention(16, 16, num_heads=4, map_size=(height, width))
    assert attention.relative_bias_table.shape == ((2 * height - 1) * (2 * width - 1), 4)
    index = relative_position_index(height, width)
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    offsets = torch.stack([rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]], -1).flatten(0, 1)
    # the index is a bijection between offsets and table rows: equal index <=> equal offset, every row used
    same_index = index.flatten()[:, None] == index.flatten()[None, :]
    same_offset = (offsets[:, None] == offsets[None, :]).all(-1)
    assert torch.equal(same_index, same_offset)
    assert index.unique().numel() == attention.relative_bias_table.shape[0]


def test_bias_steers_attention_towards_the_given_offset():
    # With q = k = 0 only the bias decides; a large bias for "key one row below the query" makes every
    # position (except the last row) copy the value of the position below it.
    channels, size = 8, 4
    attention = RelativeSelfAttention(channels, channels, num_heads=1, map_size=(size, size))
    with torch.no_grad():
        attention.qkv.weight.zero_(); attention.qkv.bias.zero_()
        attention.qkv.weight[2 * channels:].copy_(torch.eye(channels))
        attention.proj.weight.copy_(torch.eye(channels)); attention.proj.bias.zero_()
        attention.relative_bias_table.zero_()
        below = (-1 + size - 1) * (2 * size - 1) + (0 + size - 1)  # row offset query - key = -1, column offset 0
        attention.relative_bias_table[below] = 100.
    x = torch.randn(2, channels, size, size)
    out = attention(x)
    torch.testing.assert_close(out[:, :, :-1], x[:, :, 1:], atol=1e-4, rtol=0)


def test_attention_refuses_a_map_of_another_size():
    with pytest.raises(ValueError, match='image_size'):
        coatnet_0()(torch.zeros(1, 3, 64, 64))
    assert coatnet_0(image_size=64)(torch.zeros(1, 3, 64, 64)).shape == (1, 100)


# --- parameter counts ------------------------------------------------------------------------------------------

def test_coatnet_0_parameter_count():
    assert count_parameters(coatnet_0()) == 23_658_352
    # only the S3/S4 bias tables grow with the stride-1 stem: 12 heads x (49 - 9) x 5 blocks + 24 x (9 - 1) x 2
    assert count_parameters(coatnet_0_cifar()) - count_parameters(coatnet_0()) == 12 * 40 * 5 + 24 * 8 * 2


def test_coatnet_0_imagenet_count_matches_the_paper_without_its_prelogits():
    imagenet = count_parameters(coatnet_0(num_classes=1000, image_size=224))
    assert imagenet == 24_401_716
    # the paper's 25 M includes a 768-wide pre-logits layer (LayerNorm + Linear) that the study's heads omit
    assert abs(imagenet + 768 * 768 + 768 + 2 * 768 - 25e6) / 25e6 < 0.005


@pytest.mark.parametrize('builder', [coatnet_cifar_opt, coatnet_cifar_opt_large_stem])
def test_original_designs_within_two_percent_of_27_01_M(builder):
    assert abs(count_parameters(builder()) - 27.01e6) / 27.01e6 < 0.02


def test_large_stem_adds_what_the_original_logs_show():
    # logged: 27.010534 M (large stem) - 27.008486 M (plain stem)
    assert count_parameters(coatnet_cifar_opt_large_stem()) - count_parameters(coatnet_cifar_opt()) == 2048


# --- spatial sizes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('builder, sizes', [
    (coatnet_0, [16, 8, 4, 2, 1]),                       # stem (S0), S1-S4
    (coatnet_0_cifar, [32, 16, 8, 4, 2]),
    (coatnet_cifar_opt, [16, 16, 8, 4, 2, 1]),           # stem, S0 blocks, S1-S4
    (coatnet_cifar_opt_large_stem, [16, 16, 8, 4, 2, 1])])
def test_stage_map_sizes_on_32px(builder, sizes):
    model = builder().eval()
    assert model.stage_map_sizes == sizes
    with torch.no_grad(): stem_side = model.stem(torch.zeros(1, 3, 32, 32)).shape[-1]
    assert [stem_side] + [side for _, _, side in stage_output_shapes(model)] == sizes


# --- architecture: where SE, ECA and the heads are ------------------------------------------------------------

def test_coatnet_0_layout_se_and_no_eca():
    model = coatnet_0()
    assert [len(stage) for stage in model.stages] == [2, 3, 5, 2]
    assert [type(stage[0]) for stage in model.stages] == [MBConv, MBConv, TransformerBlock, TransformerBlock]
    assert not any(isinstance(module, ECA) for module in model.modules())
    se_blocks = [block.residual[3] for stage in model.stages[:2] for block in stage]
    assert all(isinstance(se, SqueezeExcitation) for se in se_blocks)
    # SE squeezes to a quarter of the block's input channels
    assert [se.fc1.out_channels for se in se_blocks] == [16, 24, 24, 48, 48]
    heads = [block.attention_branch[2].num_heads for stage in model.stages[2:] for block in stage]
    assert heads == [12] * 5 + [24] * 2  # head dimension 32


@pytest.mark.parametrize('builder', [coatnet_cifar_opt, coatnet_cifar_opt_large_stem])
def test_original_design_layout_and_eca_positions(builder):
    model = builder()
    mbconv_stages, transformer_stages = model.stages[:3], model.stages[3:]
    assert [len(stage) for stage in mbconv_stages] == [2, 2, 6]
    assert [stage[0].residual[-1].out_channels for stage in mbconv_stages] == [64, 96, 192]
    # ECA (k=3) replaces SE in every MBConv block
    assert not any(isinstance(module, SqueezeExcitation) for module in model.modules())
    for block in (block for stage in mbconv_stages for block in stage):
        assert isinstance(block.residual[3], ECA) and block.residual[3].conv.kernel_size == (3,)
    # 2x2 stride-2 convolutions to 384 and 512, then 10 and 2 Transformer blocks with 8 heads and ECA on the output
    for stage, width, depth in zip(transformer_stages, (384, 512), (10, 2)):
        downsample, blocks = stage[0], list(stage)[1:]
        assert isinstance(downsample, nn.Conv2d) and downsample.out_channels == width
        assert downsample.kernel_size == (2, 2) and downsample.stride == (2, 2)
        assert len(blocks) == depth and all(isinstance(block, TransformerBlock) for block in blocks)
        assert all(isinstance(block.output_eca, ECA) for block in blocks)
        assert all(block.attention_branch[2].num_heads == 8 for block in blocks)
    assert sum(isinstance(module, ECA) for module in model.modules()) == 10 + 12


def test_large_stem_is_conv_depthwise5x5_pointwise():
    stem = coatnet_cifar_opt_large_stem().stem
    first, depthwise, pointwise = stem
    assert first[0].in_channels == 3 and first[0].out_channels == 32 and first[0].stride == (1, 1)
    assert depthwise.kernel_size == (5, 5) and depthwise.stride == (2, 2) and depthwise.groups == 32
    assert pointwise[0].kernel_size == (1, 1) and pointwise[0].out_channels == 64
    assert isinstance(pointwise[1], nn.BatchNorm2d) and isinstance(pointwise[2], nn.ReLU)


def test_transformer_block_output_eca_rescales_channels():
    block = TransformerBlock(16, 16, num_heads=2, map_size=(2, 2), output_eca=True).eval()
    plain = TransformerBlock(16, 16, num_heads=2, map_size=(2, 2)).eval()
    plain.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith('output_eca')})
    with torch.no_grad(): block.output_eca.conv.weight.zero_()  # ECA gate = sigmoid(0) = 0.5
    x = torch.randn(2, 16, 2, 2)
    torch.testing.assert_close(block(x), plain(x) * 0.5)


def test_norms_and_se_activation_match_timm():
    # timm's CoAtNet (maxxvit.py): LayerNorm eps 1e-6 in the Transformer blocks, SiLU inside the MBConv's SE.
    model = coatnet_0()
    layer_norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(layer_norms) == 2 * (5 + 2) and {m.eps for m in layer_norms} == {1e-6}
    squeeze_excitations = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert len(squeeze_excitations) == 2 + 3
    assert all(type(se.activation) is nn.SiLU for se in squeeze_excitations)


# --- registry and training readiness ---------------------------------------------------------------------------

@pytest.mark.parametrize('builder', ALL_BUILDERS)
def test_forward_backward_reaches_every_parameter(builder):
    torch.manual_seed(0)
    model = builder().train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
