"Tests for LSKNet (cifar_study.models.lsknet)."
import pytest
import torch

from cifar_study.models.lsknet import LargeSelectiveKernel, lsknet_tiny, lsknet_tiny_cifar
from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes

LSKNET_NAMES = ['lsknet_tiny', 'lsknet_tiny_cifar']


@pytest.mark.parametrize('name', LSKNET_NAMES)
def test_parameter_count(name):
    model = create_model(name)
    assert count_parameters(model) == 4_015_378
    assert count_parameters(model.stages) == 3_989_678


def test_imagenet_head_matches_paper_size():
    # The paper's LSKNet-T is 4.3 M; with the 1000-class ImageNet head ours is 4.25 M.
    assert count_parameters(lsknet_tiny(num_classes=1000)) == 4_246_678


def test_stage_maps():
    assert stage_output_shapes(lsknet_tiny()) == [(32, 8, 8), (64, 4, 4), (160, 2, 2), (256, 1, 1)]
    assert stage_output_shapes(lsknet_tiny_cifar()) == [(32, 32, 32), (64, 16, 16), (160, 8, 8), (256, 4, 4)]


def test_stems():
    assert lsknet_tiny().stages[0][0][0].kernel_size == (7, 7) and lsknet_tiny().stages[0][0][0].stride == (4, 4)
    assert lsknet_tiny_cifar().stages[0][0][0].stride == (1, 1)


def test_every_block_has_the_paper_kernels():
    gates = [m for m in lsknet_tiny().modules() if isinstance(m, LargeSelectiveKernel)]
    assert len(gates) == 3 + 3 + 5 + 2
    for gate in gates:
        dim = gate.small_kernel.in_channels
        assert (gate.small_kernel.kernel_size, gate.small_kernel.groups) == ((5, 5), dim)
        large = gate.large_kernel
        assert (large.kernel_size, large.dilation, large.groups) == ((7, 7), (3, 3), dim)
        assert gate.reduce_small.out_channels == gate.reduce_large.out_channels == dim // 2
        assert (gate.selection.in_channels, gate.selection.out_channels, gate.selection.kernel_size) == (2, 2, (7, 7))


def test_selection_maps_are_sigmoids_of_pooled_features():
    "The paper's spatial selection: per kernel, sigmoid(conv7x7([mean_c; max_c])), each map in (0, 1), not a softmax."
    torch.manual_seed(0)
    gate = LargeSelectiveKernel(8)
    captured = {}
    for name in ('reduce_small', 'reduce_large', 'selection', 'expand'):
        getattr(gate, name).register_forward_hook(
            lambda module, inputs, output, name=name: captured.update({name: (inputs[0], output)}))
    x = torch.randn(2, 8, 16, 16)
    output = gate(x)

    small, large = captured['reduce_small'][1], captured['reduce_large'][1]
    features = torch.cat([small, large], dim=1)
    pooled = torch.cat([features.mean(1, keepdim=True), features.amax(1, keepdim=True)], dim=1)
    torch.testing.assert_close(captured['selection'][0], pooled)

    weights = captured['selection'][1].sigmoid()
    assert weights.shape == (2, 2, 16, 16)
    assert ((weights > 0) & (weights < 1)).all()
    # Independent sigmoids: the two kernels' maps do not sum to one (a softmax over kernels would).
    assert (weights.sum(1) - 1).abs().max() > 0.05
    torch.testing.assert_close(captured['expand'][0], small * weights[:, :1] + large * weights[:, 1:])
    torch.testing.assert_close(output, x * captured['expand'][1])
    torch.testing.assert_close(gate.selection_weights(features), weights)


def test_selection_maps_depend_on_the_input():
    torch.manual_seed(0)
    gate = LargeSelectiveKernel(8)
    first, second = torch.randn(2, 8, 8, 8).unbind(0)
    assert not torch.allclose(gate.selection_weights(first[None]), gate.selection_weights(second[None]))


def test_stage_layer_norms_use_lsknet_eps():
    # LSKNet's backbone builds its stage norms with partial(nn.LayerNorm, eps=1e-6), unlike MSCAN's (same skeleton).
    assert {stage[-1].eps for stage in lsknet_tiny().stages} == {1e-6}
