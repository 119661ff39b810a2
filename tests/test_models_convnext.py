"Tests for ConvNeXt-T and the ConvNeXt macro design (cifar_study.models.convnext)."
import pytest
import torch
from torch import nn
from torchvision.models import convnext_tiny as torchvision_convnext_tiny
from torchvision.models.convnext import CNBlock

from cifar_study.models.convnext import ConvNeXt, convnext_tiny, convnext_tiny_cifar
from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes


@pytest.fixture(scope='module')
def tiny(): return convnext_tiny()


def test_parameter_count_matches_original_study_and_torchvision(tiny):
    params = count_parameters(tiny)
    assert abs(params / 1e6 - 27.90) / 27.90 < 0.02
    assert params == count_parameters(torchvision_convnext_tiny(num_classes=100))


def test_cifar_variant_only_shrinks_the_stem(tiny):
    # 4x4 -> 2x2 patchify kernel over 3 input channels and 96 outputs; nothing else changes.
    assert count_parameters(tiny) - count_parameters(convnext_tiny_cifar()) == (16 - 4) * 3 * 96
    assert convnext_tiny_cifar().stem[0].stride == (2, 2)


@pytest.mark.parametrize('builder, sizes', [(convnext_tiny, [8, 4, 2, 1]), (convnext_tiny_cifar, [16, 8, 4, 2])])
def test_stage_spatial_sizes_on_32px(builder, sizes):
    assert [side for _, _, side in stage_output_shapes(builder())] == sizes


def test_stage_widths_and_depths(tiny):
    assert [len(stage.blocks) for stage in tiny.stages] == [3, 3, 9, 3]
    assert [stage.blocks[0].layer_scale.numel() for stage in tiny.stages] == [96, 192, 384, 768]
    assert isinstance(tiny.stages[0].downsample, nn.Identity)
    for stage in tiny.stages[1:]:
        conv = stage.downsample[1]
        assert conv.kernel_size == (2, 2) and conv.stride == (2, 2)


def test_layer_scale_starts_at_1e_6(tiny):
    scales = torch.cat([m.layer_scale.flatten() for m in tiny.modules() if isinstance(m, CNBlock)])
    assert len(scales) == 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768
    torch.testing.assert_close(scales, torch.full_like(scales, 1e-6), rtol=0, atol=1e-12)
    other = convnext_tiny(layer_scale_init=0.1)
    assert other.stages[2].blocks[4].layer_scale.flatten()[0].item() == pytest.approx(0.1)


def test_blocks_start_close_to_identity(tiny):
    block = tiny.stages[1].blocks[0].eval()
    x = torch.randn(2, 192, 4, 4)
    torch.testing.assert_close(block(x), x, rtol=0, atol=1e-4)


def test_drop_path_rates_rise_linearly():
    rates = [m.stochastic_depth.p for m in convnext_tiny(drop_path_rate=0.2).modules() if isinstance(m, CNBlock)]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 18).tolist())
    assert {m.stochastic_depth.p for m in convnext_tiny().modules() if isinstance(m, CNBlock)} == {0.0}


def test_other_class_counts():
    assert create_model('convnext_tiny', num_classes=10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_stage_arguments_must_agree():
    with pytest.raises(ValueError, match='one depth, width and block per stage'):
        ConvNeXt(depths=(1, 1), widths=(8, 16, 32))
