"Tests for SegNeXt's MSCAN encoder as a classifier (cifar_study.models.mscan)."
import pytest
import torch
from torch import nn

from cifar_study.models.mscan import MultiScaleConvAttention, segnext_mscan_tiny, segnext_mscan_tiny_cifar
from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes

MSCAN_NAMES = ['segnext_mscan_tiny', 'segnext_mscan_tiny_cifar']


@pytest.mark.parametrize('name', MSCAN_NAMES)
def test_parameter_count(name):
    # MSCAN-T encoder 3,903,056 + Linear(256, 100); the stem's strides change no parameter.
    model = create_model(name)
    assert count_parameters(model) == 3_928_756
    assert count_parameters(model.stages) == 3_903_056


def test_imagenet_head_matches_paper_size():
    # With the 1000-class head of its ImageNet pretraining MSCAN-T has 4.16 M parameters (the paper quotes about 4.3 M).
    assert count_parameters(segnext_mscan_tiny(num_classes=1000)) == 4_160_056


def test_stage_maps():
    assert stage_output_shapes(segnext_mscan_tiny()) == [(32, 8, 8), (64, 4, 4), (160, 2, 2), (256, 1, 1)]
    assert stage_output_shapes(segnext_mscan_tiny_cifar()) == [(32, 32, 32), (64, 16, 16), (160, 8, 8), (256, 4, 4)]


def test_every_block_uses_strip_branches_7_11_21():
    model = segnext_mscan_tiny()
    gates = [m for m in model.modules() if isinstance(m, MultiScaleConvAttention)]
    assert len(gates) == 3 + 3 + 5 + 2
    for gate in gates:
        dim = gate.local.in_channels
        assert gate.local.kernel_size == (5, 5) and gate.local.groups == dim
        assert [(s[0].kernel_size, s[1].kernel_size) for s in gate.strips] == [((1, k), (k, 1)) for k in (7, 11, 21)]
        assert all(conv.groups == dim for strip in gate.strips for conv in strip)


def test_strip_kernels_are_an_argument():
    model = create_model('segnext_mscan_tiny', strip_kernel_sizes=(3, 5))
    gate = next(m for m in model.modules() if isinstance(m, MultiScaleConvAttention))
    assert [s[0].kernel_size for s in gate.strips] == [(1, 3), (1, 5)]


def test_attention_multiplies_the_input():
    torch.manual_seed(0)
    gate = MultiScaleConvAttention(6)
    x = torch.randn(2, 6, 24, 24)
    local = gate.local(x)
    expected_attention = gate.channel_mix(local + sum(strip[1](strip[0](local)) for strip in gate.strips))
    torch.testing.assert_close(gate(x), expected_attention * x)
    # Wherever the input is zero the output is zero, although the attention map there is not.
    x[:, :, 5, 7] = 0
    output = gate(x)
    assert output[:, :, 5, 7].abs().max() == 0
    assert output.abs().mean() > 0


def test_longest_strip_sets_the_reach():
    # 5x5 local conv then 1x21 and 21x1 strips: an impulse reaches 2 + 10 = 12 px in every direction, and no further.
    gate = MultiScaleConvAttention(1)
    for conv in gate.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.constant_(conv.weight, 1.0)
            nn.init.zeros_(conv.bias)
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1
    with torch.no_grad():
        local = gate.local(impulse)
        attention = gate.channel_mix(local + sum(strip(local) for strip in gate.strips))[0, 0]
    reached = (attention > 0).nonzero()
    assert reached.min().item() == 15 - 12 and reached.max().item() == 15 + 12
    assert attention[15 + 12, 15 - 12] > 0


def test_drop_path_rates_grow_linearly():
    model = create_model('segnext_mscan_tiny_cifar', drop_path_rate=0.2)
    blocks = [block for stage in model.stages for block in stage if hasattr(block, 'drop_path')]
    assert len(blocks) == 13
    assert isinstance(blocks[0].drop_path, nn.Identity)
    assert blocks[-1].drop_path.p == pytest.approx(0.2)


def test_stage_layer_norms_use_segnext_eps():
    # SegNeXt's mscan.py ends every stage with nn.LayerNorm(dim): PyTorch's default eps, 1e-5.
    norms = [stage[-1] for stage in segnext_mscan_tiny().stages]
    assert all(isinstance(norm, nn.LayerNorm) for norm in norms) and {norm.eps for norm in norms} == {1e-5}
