"Tests for HorNet-T and its recursive gated convolution (cifar_study.models.hornet)."
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cifar_study.models.hornet import GnConv, HorNetBlock, hornet_tiny, hornet_tiny_cifar
from cifar_study.models.registry import count_parameters, create_model, stage_output_shapes


class RecordTensorProducts(TorchFunctionMode):
    "Records the operand shapes of every element-wise product of two tensors."
    products = (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__)

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.products and all(isinstance(a, torch.Tensor) for a in args[:2]):
            self.shapes.append((tuple(args[0].shape), tuple(args[1].shape)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('order', [1, 2, 3, 4, 5])
def test_gnconv_performs_order_gated_products(order):
    width = 32
    gnconv = GnConv(width, order)
    x = torch.randn(2, width, 6, 6)
    with RecordTensorProducts() as recorder: out = gnconv(x)
    assert out.shape == x.shape
    # One gating per order, at channel widths C/2^(n-1), ..., C/2, C, between same-shaped tensors.
    expected_widths = [width // 2 ** k for k in reversed(range(order))]
    assert recorder.shapes == [((2, c, 6, 6), (2, c, 6, 6)) for c in expected_widths]
    # n-1 pointwise projections between the gatings, each doubling the width.
    assert [(p.in_channels, p.out_channels) for p in gnconv.pointwise] == list(zip(expected_widths, expected_widths[1:]))
    assert gnconv.proj_in.out_channels == 2 * width and gnconv.depthwise.groups == sum(expected_widths)


@pytest.mark.parametrize('order', [1, 2, 3, 5])
def test_gnconv_is_a_polynomial_of_degree_order_plus_one(order):
    gnconv = GnConv(32, order).double()
    for conv in gnconv.modules():
        if isinstance(conv, nn.Conv2d): nn.init.zeros_(conv.bias)
    x = torch.randn(1, 32, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(gnconv(3 * x), 3 ** (order + 1) * gnconv(x))


def test_gnconv_rejects_indivisible_width():
    with pytest.raises(ValueError, match='divisible'): GnConv(24, order=5)


def expected_hornet_parameters(widths, depths, orders, num_classes, stem_patch_size=4, kernel_size=7):
    "Parameter count of a HorNet written out term by term from the paper's description."
    def block(c, n):
        gate_channels = sum(c // 2 ** k for k in range(n))
        pointwise = sum((c // 2 ** (k + 1)) * (c // 2 ** k) + c // 2 ** k for k in range(n - 1))
        gnconv = (c * 2 * c + 2 * c) + gate_channels * (kernel_size ** 2 + 1) + pointwise + (c * c + c)
        mlp = (c * 4 * c + 4 * c) + (4 * c * c + c)
        return 2 * c + gnconv + 2 * c + mlp + 2 * c  # two LayerNorms, two layer scales
    stem = 3 * stem_patch_size ** 2 * widths[0] + widths[0] + 2 * widths[0]
    downsampling = sum(2 * a + a * b * 4 + b for a, b in zip(widths, widths[1:]))
    blocks = sum(d * block(c, n) for c, d, n in zip(widths, depths, orders))
    head = 2 * widths[-1] + widths[-1] * num_classes + num_classes
    return stem + downsampling + blocks + head


def test_parameter_counts():
    tiny_config = dict(widths=(64, 128, 256, 512), depths=(2, 3, 18, 2), orders=(2, 3, 4, 5))
    imagenet_params = count_parameters(hornet_tiny(num_classes=1000))
    assert imagenet_params == expected_hornet_parameters(**tiny_config, num_classes=1000)
    assert abs(imagenet_params / 1e6 - 22) < 0.5  # the paper's "22M" for HorNet-T 7x7
    assert count_parameters(hornet_tiny()) == expected_hornet_parameters(**tiny_config, num_classes=100)
    assert count_parameters(hornet_tiny_cifar()) == expected_hornet_parameters(**tiny_config, num_classes=100,
                                                                                 stem_patch_size=2)


@pytest.mark.parametrize('builder, sizes', [(hornet_tiny, [8, 4, 2, 1]), (hornet_tiny_cifar, [16, 8, 4, 2])])
def test_stage_spatial_sizes_on_32px(builder, sizes):
    assert [side for _, _, side in stage_output_shapes(builder())] == sizes


def test_stage_layout():
    model = hornet_tiny()
    assert [len(stage.blocks) for stage in model.stages] == [2, 3, 18, 2]
    gnconvs = [[m for m in stage.modules() if isinstance(m, GnConv)] for stage in model.stages]
    assert [{g.order for g in stage} for stage in gnconvs] == [{2}, {3}, {4}, {5}]
    assert [stage[0].widths[-1] for stage in gnconvs] == [64, 128, 256, 512]
    assert all(g.depthwise.kernel_size == (7, 7) for stage in gnconvs for g in stage)


def test_layer_scale_starts_at_1e_6():
    model = hornet_tiny()
    blocks = [m for m in model.modules() if isinstance(m, HorNetBlock)]
    assert len(blocks) == 25
    scales = torch.cat([s.flatten() for b in blocks for s in (b.spatial_layer_scale, b.mlp_layer_scale)])
    torch.testing.assert_close(scales, torch.full_like(scales, 1e-6), rtol=0, atol=1e-12)


def test_block_starts_close_to_identity():
    block = HorNetBlock(64, 1e-6, 0.0, order=3).eval()
    x = torch.randn(2, 64, 4, 4)
    torch.testing.assert_close(block(x), x, rtol=0, atol=1e-4)


def test_drop_path_rates_rise_linearly():
    blocks = [m for m in hornet_tiny(drop_path_rate=0.1).modules() if isinstance(m, HorNetBlock)]
    assert isinstance(blocks[0].drop_path, nn.Identity)
    assert [b.drop_path.p for b in blocks[1:]] == pytest.approx(torch.linspace(0, 0.1, 25)[1:].tolist())


def test_other_class_counts():
    assert create_model('hornet_tiny_cifar', num_classes=10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
