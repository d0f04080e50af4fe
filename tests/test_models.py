"""Shape and parameter-count checks for the CIFAR model zoo (CPU, small batches)."""

import pytest
import torch

from undistill import UserError, models
from undistill.models.cifar import CIFAR_MODELS

# name -> (params for K=10, params for K=100). The K=100 figure is the K=10 one plus
# 90 * (in_features + 1) for the final linear layer, worked out by hand.
PARAM_COUNTS = {
    "resnet18": (11_173_962, 11_173_962 + 90 * 513),  # 11_220_132
    "resnet34": (21_282_122, 21_282_122 + 90 * 513),  # 21_328_292
    "resnet50": (23_520_842, 23_520_842 + 90 * 2049),  # 23_705_252
    "resnetc20": (272_282, 272_282 + 90 * 65),  # 278_132
    "resnetc32": (466_714, 466_714 + 90 * 65),  # 472_564
    "cnn": (357_514, 357_514 + 90 * 129),  # 369_124
    "mobilenetv2": (2_254_090, 2_254_090 + 90 * 1281),  # 2_369_380
    "shufflenetv2": (1_268_646, 1_268_646 + 90 * 1025),  # 1_360_896
    "resnext29": (34_426_698, 34_426_698 + 90 * 1025),  # 34_518_948
}
WITH_FEATURES = {"resnet18", "resnet34", "resnet50", "resnetc20", "resnetc32", "mobilenetv2", "shufflenetv2"}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_param_count(name, num_classes):
    # Every model --arch offers matches the papers' code: a model added without its count fails here.
    expected = PARAM_COUNTS[name][0 if num_classes == 10 else 1]
    assert n_params(models.build(name, num_classes)) == expected


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
@torch.no_grad()
def test_forward_shape(name):
    torch.manual_seed(0)
    model = CIFAR_MODELS[name](10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if name != "cnn":  # the CNN's flatten size needs 32x32 inputs
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(WITH_FEATURES))
@torch.no_grad()
def test_features(name):
    model = CIFAR_MODELS[name](10).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = model.features(x)
    assert len(maps) == 4
    assert all(m.dim() == 4 and m.shape[0] == 2 for m in maps)
    # forward is the pooled last map through the classifier
    pooled = maps[-1].mean(dim=(2, 3))
    torch.testing.assert_close(model(x), model.fc(pooled))



def test_an_architecture_that_cannot_take_the_images_is_refused():
    with pytest.raises(UserError, match=r"--arch cnn cannot take the dataset's 64x64 images"):
        models.build("cnn", 200, image_size=64)
    assert models.build("resnetc20", 200, heads="skeptical", image_size=64)(torch.zeros(2, 3, 64, 64)).shape == (
        4, 2, 200)
