"Tests for CSPResNet-50 and its CIFAR-resolution variant."
import pytest
import torch
from torch import nn

from cifar_study.models.cspresnet import CrossStagePartialStage, CSPResNet
from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes

TIMM_PARAMS_100_CLASSES = 20_693_668  # timm cspresnet50: 21,616,168 at 1000 classes minus 900 x 1025 head weights


@pytest.mark.parametrize('name', ['cspresnet50', 'cspresnet50_cifar'])
def test_parameter_count_matches_reference(name):
    params = count_parameters(create_model(name))
    assert abs(params / 20.69e6 - 1) < 0.02
    assert params == TIMM_PARAMS_100_CLASSES


def test_head_follows_num_classes():
    assert count_parameters(create_model('cspresnet50', num_classes=10)) == TIMM_PARAMS_100_CLASSES - 90 * 1025


@pytest.mark.parametrize('name, sizes', [('cspresnet50', (8, 4, 2, 1)), ('cspresnet50_cifar', (32, 16, 8, 4))])
def test_stage_spatial_sizes(name, sizes):
    shapes = stage_output_shapes(create_model(name))
    assert [c for c, _, _ in shapes] == [128, 256, 512, 1024]
    assert [(h, w) for _, h, w in shapes] == [(s, s) for s in sizes]


def test_cifar_variant_only_changes_stem():
    plain, cifar = create_model('cspresnet50'), create_model('cspresnet50_cifar')
    assert any(isinstance(m, nn.MaxPool2d) for m in plain.stem)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.stem)
    assert plain.stem[0][0].stride == (2, 2) and cifar.stem[0][0].stride == (1, 1)


def test_only_half_of_the_expansion_runs_through_the_blocks():
    stage = CrossStagePartialStage(16, 32, depth=2, stride=2).eval()
    seen = {}
    stage.expand.register_forward_hook(lambda m, i, out: seen.update(expanded=out))
    stage.blocks.register_forward_hook(lambda m, i, out: seen.update(blocks_input=i[0]))
    with torch.no_grad(): out = stage(torch.randn(2, 16, 8, 8))
    assert out.shape == (2, 32, 4, 4)
    assert seen['expanded'].shape == (2, 64, 4, 4)
    assert torch.equal(seen['blocks_input'], seen['expanded'][:, 32:])


def test_cross_half_bypasses_the_blocks():
    "With the blocks' path zeroed, the output still depends on the input through the cross half."
    stage = CrossStagePartialStage(8, 16, depth=1, stride=1).eval()
    for p in stage.blocks.parameters(): nn.init.zeros_(p)
    for p in stage.blocks_transition.parameters(): nn.init.zeros_(p)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    stage(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_residual_branches_start_at_zero():
    model = create_model('cspresnet50')
    last_norms = [block.last_norm.weight for stage in model.stages for block in stage.blocks]
    assert len(last_norms) == 3 + 3 + 5 + 2
    assert all(torch.all(w == 0) for w in last_norms)


def test_invalid_stem_stride_is_rejected():
    with pytest.raises(ValueError, match='stem_stride'): CSPResNet(stem_stride=3)
