"Checks every registered model must pass, and the registry and `cifar-study models` around them."
import json

import pytest
import torch

from cifar_study.cli import main
from cifar_study.models import (MODEL_REGISTRY, TECHNIQUE_GROUPS, UnknownModelError, create_model, list_models,
                                model_info)

ISSUE_MODELS = {  # every name the study's issues ask for
    'resnet_20', 'resnet_32', 'resnet_56', 'eca_resnet_20', 'eca_resnet_32', 'ecanet20_fixed_k3', 'ecanet20_adaptive',
    'ecanet20_k5', 'ecanet20_k7', 'ecanet20_k9', 'eca_resnet_20_pos1', 'eca_resnet_20_pos3', 'ghost_resnet_20_r4',
    'ghost_resnet_20', 'ghost_resnet_32', 'improved_resnet20_convnext', 'ghostnet_100',
    'convnext_tiny', 'segnext_mscan_tiny', 'lsknet_tiny', 'coatnet_0', 'coatnet_cifar_opt',
    'coatnet_cifar_opt_large_stem', 'cspresnet50', 'resnest50d', 'hornet_tiny', 'mlp_mixer_tiny', 'mlp_mixer_b16'}


def test_every_named_model_is_registered():
    assert ISSUE_MODELS <= set(list_models())
    assert {spec.group for spec in MODEL_REGISTRY.values()} == set(TECHNIQUE_GROUPS)
    assert {name for name, spec in MODEL_REGISTRY.items() if spec.original_design} == {
        'improved_resnet20_convnext', 'coatnet_cifar_opt', 'coatnet_cifar_opt_large_stem'}


REGISTRY_ENTRIES = {  # name: (family, technique group, recipe)
    'coatnet_0': ('coatnet', 'hybrid/advanced', 'hybrid_adamw'),
    'coatnet_0_cifar': ('coatnet', 'hybrid/advanced', 'hybrid_adamw'),
    'coatnet_cifar_opt': ('coatnet', 'hybrid/advanced', 'hybrid_adamw'),
    'coatnet_cifar_opt_large_stem': ('coatnet', 'hybrid/advanced', 'hybrid_adamw'),
    'convnext_tiny': ('convnext', 'modern conv', 'convnext_adamw'),
    'convnext_tiny_cifar': ('convnext', 'modern conv', 'convnext_adamw'),
    'cspresnet50': ('cspresnet', 'hybrid/advanced', 'hybrid_adamw'),
    'cspresnet50_cifar': ('cspresnet', 'hybrid/advanced', 'hybrid_adamw'),
    'eca_resnet_20': ('resnet', 'attention', 'resnet_sgd'),
    'eca_resnet_20_pos1': ('resnet', 'attention', 'resnet_sgd'),
    'eca_resnet_20_pos3': ('resnet', 'attention', 'resnet_sgd'),
    'eca_resnet_32': ('resnet', 'attention', 'resnet_sgd'),
    'ecanet20_adaptive': ('resnet', 'attention', 'resnet_sgd'),
    'ecanet20_fixed_k3': ('resnet', 'attention', 'resnet_sgd'),
    'ecanet20_k5': ('resnet', 'attention', 'resnet_sgd'),
    'ecanet20_k7': ('resnet', 'attention', 'resnet_sgd'),
    'ecanet20_k9': ('resnet', 'attention', 'resnet_sgd'),
    'ghost_resnet_20': ('resnet', 'lightweight', 'ghost_sgd'),
    'ghost_resnet_20_r3': ('resnet', 'lightweight', 'ghost_sgd'),
    'ghost_resnet_20_r4': ('resnet', 'lightweight', 'ghost_sgd'),
    'ghost_resnet_32': ('resnet', 'lightweight', 'ghost_sgd'),
    'ghostnet_100': ('ghostnet', 'lightweight', 'ghost_sgd'),
    'hornet_tiny': ('hornet', 'hybrid/advanced', 'light_adamw'),
    'hornet_tiny_cifar': ('hornet', 'hybrid/advanced', 'light_adamw'),
    'improved_resnet20_convnext': ('resnet', 'modern conv', 'improved_resnet_sgd'),
    'lsknet_tiny': ('lsknet', 'attention', 'light_adamw'),
    'lsknet_tiny_cifar': ('lsknet', 'attention', 'light_adamw'),
    'mlp_mixer_b16': ('mlp_mixer', 'MLP', 'light_adamw'),
    'mlp_mixer_tiny': ('mlp_mixer', 'MLP', 'light_adamw'),
    'resnest50d': ('resnest', 'hybrid/advanced', 'hybrid_adamw'),
    'resnest50d_cifar': ('resnest', 'hybrid/advanced', 'hybrid_adamw'),
    'resnet_20': ('resnet', 'basic ResNet', 'resnet_sgd'),
    'resnet_32': ('resnet', 'basic ResNet', 'resnet_sgd'),
    'resnet_56': ('resnet', 'basic ResNet', 'resnet_sgd'),
    'segnext_mscan_tiny': ('mscan', 'attention', 'light_adamw'),
    'segnext_mscan_tiny_cifar': ('mscan', 'attention', 'light_adamw'),
}


def test_registry_entries():
    assert {name: (spec.family, spec.group, spec.recipe) for name, spec in MODEL_REGISTRY.items()} == REGISTRY_ENTRIES
    assert all(spec.description for spec in MODEL_REGISTRY.values())


def create_with_drop_path(name, rate=0.1):
    "The model with stochastic depth on where its family has it, so that the drop-path branches run too."
    try: return create_model(name, drop_path_rate=rate)
    except TypeError: return create_model(name)


@pytest.mark.parametrize('name', list_models())
def test_forward_backward_train_and_eval(name):
    torch.manual_seed(0)
    model = create_with_drop_path(name)
    images = torch.randn(2, 3, 32, 32)
    logits = model.train()(images)
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]}"
    with torch.no_grad():
        evaluated = model.eval()(images)
    assert evaluated.shape == (2, 100) and torch.isfinite(evaluated).all()


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError, match='did you mean .*resnet_20'):
        create_model('resnet20')


def test_model_info_and_overrides():
    info = model_info('eca_resnet_20', flops=True)
    assert (info['family'], info['group'], info['recipe'], info['params']) == ('resnet', 'attention', 'resnet_sgd', 278_351)
    assert info['flops'] > 2 * info['params']
    assert create_model('resnet_20', num_classes=10)(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_models_command_lists_every_model_with_params_and_flops(capsys):
    main(['models', '--json'])
    rows = json.loads(capsys.readouterr().out)
    assert [row['name'] for row in rows] == list_models()
    assert all(row['params'] > 0 and row['flops'] > 0 for row in rows)
    main(['models', '--group', 'basic ResNet'])
    table = capsys.readouterr().out
    assert '2 per multiply-add' in table and 'resnet_56' in table and 'ghostnet_100' not in table
