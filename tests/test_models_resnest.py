"Tests for ResNeSt-50d, its split attention and its CIFAR-resolution variant."
import pytest
import torch
from torch import nn

from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes
from cifar_study.models.resnest import RadixSoftmax, ResNeSt, SplitAttention, SplitAttentionBottleneck

TIMM_PARAMS_100_CLASSES = 25_639_140  # timm resnest50d with num_classes=100


@pytest.mark.parametrize('name', ['resnest50d', 'resnest50d_cifar'])
def test_parameter_count_matches_reference(name):
    params = count_parameters(create_model(name))
    assert abs(params / 25.64e6 - 1) < 0.02
    assert params == TIMM_PARAMS_100_CLASSES


@pytest.mark.parametrize('name, sizes', [('resnest50d', (8, 4, 2, 1)), ('resnest50d_cifar', (32, 16, 8, 4))])
def test_stage_spatial_sizes(name, sizes):
    shapes = stage_output_shapes(create_model(name))
    assert [c for c, _, _ in shapes] == [256, 512, 1024, 2048]
    assert [(h, w) for _, h, w in shapes] == [(s, s) for s in sizes]


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_split_attention_weights_sum_to_one_over_the_radix(mode):
    model = create_model('resnest50d').train(mode == 'train')
    weights = []
    hooks = [m.register_forward_hook(lambda m, i, out: weights.append(out)) for m in model.modules()
             if isinstance(m, RadixSoftmax)]
    assert len(hooks) == 3 + 4 + 6 + 3
    with torch.no_grad(): model(torch.randn(2, 3, 32, 32))
    assert len(weights) == len(hooks)
    for w, width in zip(weights, [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3):
        assert w.shape == (2, 2, width)  # batch, radix, channels
        assert torch.all(w > 0) and torch.all(w < 1)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2, width))
    # The weights depend on the input: they are not the uniform 1/radix.
    assert any((w - 0.5).abs().max() > 1e-3 for w in weights)


@pytest.mark.parametrize('cardinality', [1, 2])
def test_split_attention_output_is_the_weighted_sum_of_its_splits(cardinality):
    attention = SplitAttention(16, 16, radix=2, cardinality=cardinality).eval()
    seen = {}
    attention.conv.register_forward_hook(lambda m, i, out: seen.update(splits=out))
    attention.radix_softmax.register_forward_hook(lambda m, i, out: seen.update(weights=out))
    with torch.no_grad(): out = attention(torch.randn(2, 16, 6, 6))
    splits, weights = seen['splits'].reshape(2, 2, 16, 6, 6), seen['weights']
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 16))
    torch.testing.assert_close(out, weights[:, 0, :, None, None] * splits[:, 0] + weights[:, 1, :, None, None] * splits[:, 1])


def test_radix_softmax_normalises_within_each_cardinal_group():
    # Logits ordered (cardinal group, split, channel): group 0 prefers split 0, group 1 prefers split 1.
    logits = torch.tensor([[5., 5., 0., 0., 0., 0., 5., 5.]])
    weights = RadixSoftmax(radix=2, cardinality=2)(logits)
    assert weights.shape == (1, 2, 4)
    assert torch.all(weights[0, 0, :2] > 0.99) and torch.all(weights[0, 1, 2:] > 0.99)


def test_radix_one_is_rejected():
    with pytest.raises(ValueError, match='radix'): SplitAttention(16, 16, radix=1)


def test_stride_two_blocks_use_avd_and_avg_down():
    model = create_model('resnest50d')
    for stage in model.stages[1:]:
        block = stage[0]
        attention = next(m for m in block.residual if isinstance(m, SplitAttention))
        assert attention.conv[0].stride == (1, 1)  # the stride moved to the average pool (avd)
        assert any(isinstance(m, nn.AvgPool2d) and m.stride == 2 for m in block.residual)
        assert isinstance(block.shortcut[0], nn.AvgPool2d)  # avg-down shortcut
    assert not any(isinstance(m, nn.AvgPool2d) for m in model.stages[0].modules())


def test_deep_stem():
    plain, cifar = create_model('resnest50d'), create_model('resnest50d_cifar')
    convs = [m for m in plain.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (3, 3), (2, 2)), (32, (3, 3), (1, 1)), (64, (3, 3), (1, 1))]
    assert isinstance(plain.stem[-1], nn.MaxPool2d)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.stem)
    assert cifar.stem[0][0].stride == (1, 1)


def test_residual_branches_start_at_zero():
    blocks = [m for m in create_model('resnest50d').modules() if isinstance(m, SplitAttentionBottleneck)]
    assert len(blocks) == 16
    assert all(torch.all(block.last_norm.weight == 0) for block in blocks)


def test_invalid_stem_stride_is_rejected():
    with pytest.raises(ValueError, match='stem_stride'): ResNeSt(stem_stride=8)
