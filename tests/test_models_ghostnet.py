"Tests of GhostNet: the paper's width-1.0 model and its 32x32 stem adaptation."
import pytest
import torch
from torch import nn

from cifar_study.models.ghostnet import GhostBottleneck, GhostNet, make_divisible
from cifar_study.models.layers import GhostModule, SqueezeExcitation
from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes


@pytest.mark.parametrize('stem_stride', [1, 2])
def test_parameter_count_is_the_papers(stem_stride):
    params = count_parameters(create_model('ghostnet_100', stem_stride=stem_stride))
    assert abs(params / 4.03e6 - 1) < 0.02
    assert params == 4_029_608


def test_imagenet_head_gives_the_papers_5_2_million():
    assert count_parameters(create_model('ghostnet_100', num_classes=1000)) == 5_182_508


def test_structure_follows_the_paper():
    model = create_model('ghostnet_100')
    bottlenecks = [m for m in model.modules() if isinstance(m, GhostBottleneck)]
    assert len(bottlenecks) == 16
    assert model.features_conv[0].out_channels == 960
    head_conv = model.head[1]
    assert (head_conv.in_channels, head_conv.out_channels, head_conv.bias is not None) == (960, 1280, True)
    assert model.head[-1].in_features == 1280 and model.head[-2].p == 0.2
    squeeze = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert [m.fc1.out_channels for m in squeeze] == [20, 32, 120, 168, 168, 240, 240]
    assert all(isinstance(m.scale_activation, nn.Hardsigmoid) for m in squeeze)
    # Ghost modules are 1x1 primary convs making half of the channels.
    ghost = bottlenecks[5].branch[0]
    assert isinstance(ghost, GhostModule) and ghost.primary_conv[0].kernel_size == (1, 1)
    assert ghost.primary_conv[0].out_channels == 240 // 2


def test_make_divisible():
    assert [make_divisible(v, 4) for v in (18.0, 30.0, 168.0, 3.0)] == [20, 32, 168, 4]
    assert make_divisible(10.0, 8) == 16  # rounding down to 8 would lose more than 10%


@pytest.mark.parametrize('stem_stride, stem_side, stage_sides', [(1, 32, [32, 16, 8, 4, 2]), (2, 16, [16, 8, 4, 2, 1])])
def test_spatial_maps_per_stage(stem_stride, stem_side, stage_sides):
    model = create_model('ghostnet_100', stem_stride=stem_stride).eval()
    with torch.no_grad(): assert model.stem(torch.zeros(1, 3, 32, 32)).shape[-1] == stem_side
    assert [side for _, _, side in stage_output_shapes(model)] == stage_sides


def test_stem_stride_is_a_constructor_argument():
    assert create_model('ghostnet_100').stem[0].stride == (1, 1)
    assert create_model('ghostnet_100', stem_stride=2).stem[0].stride == (2, 2)


def test_shortcut_is_identity_only_when_shape_is_kept():
    assert isinstance(GhostBottleneck(16, 48, 16).shortcut, nn.Identity)
    assert not isinstance(GhostBottleneck(16, 48, 24, stride=2).shortcut, nn.Identity)
    assert GhostBottleneck(16, 48, 24, stride=2)(torch.randn(2, 16, 8, 8)).shape == (2, 24, 4, 4)


def test_width_multiplier_scales_channels():
    model = GhostNet(width=0.5)
    assert model.stem[0].out_channels == 8 and model.features_conv[0].out_channels == 480
    assert count_parameters(model) < count_parameters(GhostNet())
