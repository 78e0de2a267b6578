"""Models by name: ``build(name, *, in_channels=1, num_classes, **options)``.

Output convention, the same for every model: a classifier built with ``num_classes=2`` gives ONE
logit (binary, BCE-with-logits), ``num_classes=k > 2`` gives k logits (cross-entropy);
segmentation models (``unet3d``; every other model built with ``task="segment"``: the
classifiers' feature levels under a light FPN-style decoder, ``vit3d`` its patch decoder) give
``num_classes`` channels per voxel, at the input's size. Every model checks its input is
``(B, C, D, H, W)``, exposes its last layer as ``model.head`` (swap it with
``set_output_layer``) and its output count as ``model.num_outputs``; classifiers keep their
levels in ``model.features`` for ``freeze_features`` / ``unfreeze_schedule``. ``describe``
and ``parse_options`` type a model's options from its constructor (``streamvol models NAME``,
``--model-option KEY=VALUE``).
"""

from streamvol.models._common import (
    classifier_outputs,
    segmentation_outputs,
    set_output_layer,
)
from streamvol.models._registry import (
    Option,
    available,
    build,
    describe,
    options,
    parse_options,
    register,
    summary,
)
from streamvol.models._resnet import ResNet3D
from streamvol.models._se_resnet import SEResNet3D
from streamvol.models._simple_cnn import SimpleCNN
from streamvol.models._transfer import (
    LoadResult,
    feature_levels,
    freeze_features,
    load_weights,
    unfreeze_schedule,
)
from streamvol.models._unet import UNet3D
from streamvol.models._vgg import VGG3D
from streamvol.models._vit import ViT3D

__all__ = [
    "VGG3D",
    "LoadResult",
    "Option",
    "ResNet3D",
    "SEResNet3D",
    "SimpleCNN",
    "UNet3D",
    "ViT3D",
    "available",
    "build",
    "classifier_outputs",
    "describe",
    "feature_levels",
    "freeze_features",
    "load_weights",
    "options",
    "parse_options",
    "register",
    "segmentation_outputs",
    "set_output_layer",
    "summary",
    "unfreeze_schedule",
]
