"Tests of the CIFAR ResNet family: parameter counts against the original study, ECA placement, Ghost ratios."
import pytest
import torch
from torch import nn

from cifar_study.models.layers import GhostModule
from cifar_study.models.registry import count_parameters, create_model, list_models, get_model_spec
from cifar_study.models.resnet import BasicBlock, InvertedBottleneckBlock, _cifar_resnet

RESNET_MODELS = [name for name in list_models() if get_model_spec(name).family == 'resnet']


@pytest.mark.parametrize('name, expected', [
    ('resnet_20', 278_324), ('eca_resnet_20', 278_351), ('ecanet20_fixed_k3', 278_351), ('ecanet20_adaptive', 278_351),
    ('eca_resnet_20_pos1', 278_351), ('eca_resnet_20_pos3', 278_351), ('ecanet20_k5', 278_369),
    ('ecanet20_k7', 278_387), ('ecanet20_k9', 278_405), ('improved_resnet20_convnext', 174_868)])
def test_exact_parameter_counts(name, expected):
    assert count_parameters(create_model(name)) == expected


@pytest.mark.parametrize('name, reference', [
    ('resnet_32', 472_800), ('resnet_56', 861_600), ('eca_resnet_32', 472_800),
    ('ghost_resnet_20', 149_060), ('ghost_resnet_20_r3', 108_980), ('ghost_resnet_20_r4', 83_760),
    ('ghost_resnet_32', 249_600)])
def test_parameter_counts_within_two_percent_of_the_study(name, reference):
    assert abs(count_parameters(create_model(name)) / reference - 1) < 0.02


@pytest.mark.parametrize('name, logged', [
    ('ghost_resnet_20', 149_060), ('ghost_resnet_20_r3', 108_980), ('ghost_resnet_20_r4', 83_760)])
def test_ghost_counts_round_to_the_logged_values(name, logged):
    "The study's logs round to 10 parameters: our Ghost design reproduces them exactly."
    assert round(count_parameters(create_model(name)), -1) == logged


def test_parameter_counts_follow_the_number_of_classes():
    assert count_parameters(create_model('resnet_20', num_classes=10)) == 278_324 - 90 * 65


def _record_block(block, x):
    "Run `block` on `x`; return the order in which its direct children ran and their inputs and outputs."
    order, inputs, outputs = [], {}, {}
    def hook(name):
        def record(module, args, output):
            order.append(name)
            inputs[name], outputs[name] = args[0], output
        return record
    handles = [child.register_forward_hook(hook(name)) for name, child in block.named_children()]
    try: block(x)
    finally:
        for handle in handles: handle.remove()
    return order, inputs, outputs


def _blocks_with_inputs(model, x):
    "Every BasicBlock of `model` with the input it receives for the batch `x`."
    block_inputs = {}
    handles = [module.register_forward_pre_hook(lambda module, args: block_inputs.__setitem__(module, args[0]))
               for module in model.modules() if isinstance(module, BasicBlock)]
    model(x)
    for handle in handles: handle.remove()
    return list(block_inputs.items())


@pytest.mark.parametrize('name, expected_order', [
    ('eca_resnet_20_pos1', ['conv1', 'bn1', 'attention', 'act1', 'conv2', 'bn2', 'drop_path', 'shortcut', 'act_out']),
    ('eca_resnet_20', ['conv1', 'bn1', 'act1', 'conv2', 'bn2', 'attention', 'drop_path', 'shortcut', 'act_out']),
    ('eca_resnet_20_pos3', ['conv1', 'bn1', 'act1', 'conv2', 'bn2', 'drop_path', 'shortcut', 'attention', 'act_out'])])
def test_eca_runs_where_the_name_says(name, expected_order):
    torch.manual_seed(0)
    model = create_model(name).eval()
    blocks = _blocks_with_inputs(model, torch.randn(2, 3, 32, 32))
    assert len(blocks) == 9
    for block, block_input in blocks:
        order, inputs, outputs = _record_block(block, block_input)
        assert order == expected_order
        attention_in, attention_out = inputs['attention'], outputs['attention']
        if name.endswith('pos1'):
            assert torch.equal(attention_in, outputs['bn1'])
            assert torch.equal(inputs['act1'], attention_out)
        elif name.endswith('pos3'):
            torch.testing.assert_close(attention_in, outputs['drop_path'] + outputs['shortcut'])
            assert torch.equal(inputs['act_out'], attention_out)
        else:
            assert torch.equal(attention_in, outputs['bn2'])
            assert torch.equal(inputs['drop_path'], attention_out)
            torch.testing.assert_close(inputs['act_out'], outputs['drop_path'] + outputs['shortcut'])
        assert not torch.equal(attention_in, attention_out)


def test_eca_positions_give_different_functions():
    "The same weights placed at positions 1, 2 and 3 compute three different functions."
    torch.manual_seed(0)
    reference = create_model('eca_resnet_20').eval()
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for name in ('eca_resnet_20_pos1', 'eca_resnet_20', 'eca_resnet_20_pos3'):
        model = create_model(name).eval()
        model.load_state_dict(reference.state_dict())
        outputs.append(model(x))
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])


def test_adaptive_eca_kernel_is_3_in_every_block():
    blocks = [m for m in create_model('ecanet20_adaptive').modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    assert [block.attention.conv.kernel_size[0] for block in blocks] == [3] * 9
    # The rule really adapts: 128 channels would get k=5.
    assert BasicBlock(128, 128, attention='eca', eca_kernel='adaptive').attention.conv.kernel_size[0] == 5


def test_three_eca_resnet_20_names_are_one_architecture():
    shapes = [{k: v.shape for k, v in create_model(name).state_dict().items()}
              for name in ('eca_resnet_20', 'ecanet20_fixed_k3', 'ecanet20_adaptive')]
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize('name, ratio', [('ghost_resnet_20', 2), ('ghost_resnet_20_r3', 3), ('ghost_resnet_20_r4', 4)])
def test_ghost_primary_conv_makes_one_ratio_th_of_the_channels(name, ratio):
    model = create_model(name).eval()
    modules = [m for m in model.modules() if isinstance(m, GhostModule)]
    assert len(modules) == 18  # both 3x3 convs of all 9 blocks; stem and shortcuts stay plain
    primary_shapes = []
    handles = [m.primary_conv.register_forward_hook(lambda module, args, out: primary_shapes.append(out.shape[1]))
               for m in modules]
    model(torch.randn(2, 3, 32, 32))
    for handle in handles: handle.remove()
    assert primary_shapes == [-(-m.out_channels // ratio) for m in modules]
    if ratio == 4: assert primary_shapes == [4] * 6 + [8] * 6 + [16] * 6


def test_ghost_block_keeps_bn_after_each_ghost_module_and_a_plain_stem():
    model = create_model('ghost_resnet_20')
    assert isinstance(model.stem[0], nn.Conv2d)
    block = model.stages[1][0]
    assert isinstance(block.conv1, GhostModule) and isinstance(block.bn1, nn.BatchNorm2d)
    assert block.conv1.primary_conv[0].stride == (2, 2)
    assert isinstance(block.shortcut[0], nn.Conv2d)


def test_improved_resnet_blocks():
    model = create_model('improved_resnet20_convnext')
    blocks = [m for m in model.modules() if isinstance(m, InvertedBottleneckBlock)]
    rates = [getattr(block.drop_path, 'p', 0.0) for block in blocks]
    assert rates == pytest.approx([0.05 * i / 8 for i in range(9)])
    first_of_stage_2 = model.stages[1][0]
    assert first_of_stage_2.expand[0].out_channels == 4 * 16
    assert first_of_stage_2.depthwise[0].stride == (2, 2) and first_of_stage_2.depthwise[0].kernel_size == (7, 7)
    assert first_of_stage_2.depthwise[0].groups == 64


def test_drop_path_drops_the_branch_only_in_training():
    "With rate 1 the branch is always dropped in training, so the block is ReLU(shortcut); never in evaluation."
    block = InvertedBottleneckBlock(16, 16, drop_path_rate=1.0)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block.train()(x), torch.relu(x))
    assert not torch.equal(block.eval()(x), torch.relu(x))


def test_create_model_arguments_replace_the_variants():
    assert create_model('eca_resnet_20', eca_position=3).stages[0][0].attention_position == 3
    assert count_parameters(create_model('ecanet20_k5', eca_kernel=3)) == 278_351
    blocks = [m for m in create_model('improved_resnet20_convnext', drop_path_rate=0.1).modules()
              if isinstance(m, InvertedBottleneckBlock)]
    assert blocks[-1].drop_path.p == pytest.approx(0.1)


@pytest.mark.parametrize('name', RESNET_MODELS)
def test_stage_maps_are_32_16_8(name):
    model = create_model(name).eval()
    features, sizes = model.stem(torch.randn(2, 3, 32, 32)), []
    for stage in model.stages:
        features = stage(features)
        sizes.append(tuple(features.shape[1:]))
    assert sizes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError, match='6n \\+ 2'): _cifar_resnet(21)
    with pytest.raises(ValueError, match='position'): create_model('eca_resnet_20', eca_position=4)
    with pytest.raises(ValueError, match='odd'): create_model('eca_resnet_20', eca_kernel=4)
    with pytest.raises(ValueError, match='at least 2'): create_model('ghost_resnet_20', ghost_ratio=1)
    with pytest.raises(ValueError, match='attention'): create_model('resnet_20', attention='se')
