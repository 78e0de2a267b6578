"""The training options of ``train``, ``cv`` and ``pretrain``, defined once.

Every option is a field of ``TrainConfig``: its default and (unless the CLI reads a text form)
its type are the field's, so the library and the three commands cannot disagree. What the CLI
adds is here, one row per option: the help line, the ``--help`` panel it is listed under, the
flag when it is not the field's name, and which commands take it. ``training_options(command)``
appends the rows to a command's signature (Typer builds its parameters from the signature)
and hands the command one ``TrainOptions`` holding their values, which builds the run's
``TrainConfig``. ``cli_message`` shows a ``BadOption`` (``lr=0.0: ...``) as its flag
(``--lr 0.0: ...``).

Importing this module imports neither torch nor the models (the CLI starts in a fraction of a
second); ``MODEL_NAMES`` is checked against the registry by the tests.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from streamvol.errors import BadOption, FolderNotEmpty
from streamvol.train.config import TrainConfig

MODEL_NAMES = ("resnet3d", "se_resnet3d", "simple_cnn", "unet3d", "vgg3d", "vit3d")
COMMANDS = ("train", "cv", "pretrain")
_FIELD = object()  # "the TrainConfig field's default"

MODEL = "Model"
TRAINING = "Optimisation and schedule"
LOSS = "Loss"
AUGMENT = "Augmentation"
TUNING = "Fine-tuning"
PRETRAIN = "Pretraining (autoencoder)"
DETECTION = "Detection (particle picking)"
DATA = "Data, devices and checkpoints"

AUGMENT_HELP = (
    "a preset: none, flips (flips and 90-degree turns: no margin), default (free rotation, "
    "flips, shift, zoom, gamma, contrast, noise), cryoet (rotation about z with a 10-degree "
    "tilt, flips, noise, contrast); or a TOML/YAML file"
)


@dataclass(frozen=True)
class Opt:
    """One training option: ``name`` is its ``TrainConfig`` field (or, for ``model_option``,
    ``width`` and ``depth``, a part of ``model_options``)."""

    name: str
    help: str
    panel: str
    flag: str | None = None  # default: --name-with-dashes
    type: Any = None  # default: the field's type
    default: Any = _FIELD
    commands: tuple[str, ...] = COMMANDS

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


OPTIONS: tuple[Opt, ...] = (
    # --- model
    Opt(
        "model",
        f"auto (by the task and the crop) or one of {', '.join(MODEL_NAMES)}; "
        "`streamvol models NAME` lists a model's options.",
        MODEL,
    ),
    Opt(
        "model_options",
        "A model option as KEY=VALUE, typed from the model's builder; repeat for more (e.g. "
        "--model-option variant=mc3_18 --model-option norm=group).",
        MODEL,
        flag="--model-option",
        type=list[str] | None,
        default=None,
    ),
    Opt(
        "width",
        "Shorthand for --model-option base_width=N (unet3d, vgg3d) or width=N (resnet3d).",
        MODEL,
        type=int | None,
        default=None,
    ),
    Opt(
        "depth",
        "Shorthand for --model-option depth=N (unet3d: downsamplings; vit3d: blocks).",
        MODEL,
        type=int | None,
        default=None,
    ),
    Opt(
        "task",
        "auto (the shard set's) | classification | segmentation | detection (picks).",
        MODEL,
        commands=("train", "cv"),
    ),
    Opt(
        "mask_labels",
        "Segmentation: auto (masks of 0 and 1) | binary (every label > 0 is foreground: "
        "instance masks) | classes (each label 0..N a class of its own).",
        MODEL,
        commands=("train", "cv"),
    ),
    # --- optimisation and schedule
    Opt("epochs", "Epochs to train (each fold's, for cv).", TRAINING),
    Opt("batch_size", "Samples per batch.", TRAINING),
    Opt("lr", "Peak learning rate.", TRAINING),
    Opt("weight_decay", "Weight decay.", TRAINING),
    Opt("optimizer", "adamw | sgd (Nesterov).", TRAINING),
    Opt("momentum", "SGD momentum.", TRAINING),
    Opt("schedule", "cosine | step | plateau | none, after the warmup.", TRAINING),
    Opt("warmup", "Warmup epochs (linear).", TRAINING),
    Opt("step_size", "Step schedule: epochs between decays.", TRAINING),
    Opt("gamma", "Step schedule: decay factor.", TRAINING),
    Opt("clip", "Gradient norm clip (0: off).", TRAINING),
    Opt("amp", "auto (bf16 on GPU, off on CPU) | off | bf16 | fp16.", TRAINING),
    Opt(
        "ema", "EMA decay of the weights, e.g. 0.999 (evaluated with the averaged ones).", TRAINING
    ),
    Opt("early_stopping", "Stop after N validations without gain.", TRAINING),
    Opt(
        "val_every",
        "Validate every N epochs and after the last (where validation is slow); best.pt, "
        "early stopping and the plateau schedule follow the validated epochs.",
        TRAINING,
    ),
    Opt(
        "metric",
        "Validation metric that picks best.pt (a tie: the lower val_loss): auto "
        "(balanced_accuracy, dice, czii, r2 by task).",
        TRAINING,
    ),
    Opt("max_steps_per_epoch", "At most N batches per epoch (quick trials).", TRAINING),
    Opt(
        "accumulate",
        "Sum the gradients of N batches into each update: the step of a batch N times "
        "--batch-size, where memory holds only --batch-size (batch-norm statistics stay "
        "per batch).",
        TRAINING,
    ),
    # --- loss
    Opt(
        "loss",
        "auto | ce | focal | dice | tversky (| mse for heatmaps) or a sum: ce+dice, "
        "ce+tversky+dice, ...; pretrain: mse | l1.",
        LOSS,
    ),
    Opt(
        "class_weights",
        "Weight classes by the manifest's counts.",
        LOSS,
        commands=("train", "cv"),
    ),
    Opt("focal_gamma", "Focal loss gamma.", LOSS, commands=("train", "cv")),
    Opt(
        "tversky_alpha", "Tversky loss: weight of false positives.", LOSS, commands=("train", "cv")
    ),
    Opt("tversky_beta", "Tversky loss: weight of false negatives.", LOSS, commands=("train", "cv")),
    Opt(
        "sweep_threshold",
        "Binary tasks: choose the threshold that maximises balanced accuracy on validation.",
        LOSS,
        commands=("train", "cv"),
    ),
    # --- augmentation
    Opt("augment", f"Augmentation: {AUGMENT_HELP}.", AUGMENT),
    Opt("augment_device", "cpu (loader workers) | gpu (on the batch, on the device).", AUGMENT),
    Opt("mixup", "MixUp Beta alpha (0: the spec's, off).", AUGMENT, commands=("train", "cv")),
    Opt("cutmix", "3D CutMix Beta alpha (0: the spec's, off).", AUGMENT, commands=("train", "cv")),
    # --- fine-tuning
    Opt(
        "pretrained",
        "Start from these weights (a checkpoint of train or pretrain: every tensor of the same "
        "name and shape loads; the output layer is new).",
        TUNING,
    ),
    Opt(
        "freeze_features",
        "Train only what follows the feature levels (head, classifier, decoder).",
        TUNING,
        commands=("train", "cv"),
    ),
    Opt(
        "unfreeze_every",
        "Unfreeze one feature level every N epochs, deepest first.",
        TUNING,
        commands=("train", "cv"),
    ),
    # --- pretraining
    Opt(
        "noise",
        "Denoising: std of the Gaussian noise added to the input (normalised intensities).",
        PRETRAIN,
        commands=("pretrain",),
    ),
    Opt(
        "mask_ratio",
        "Inpainting: fraction of the input's blocks blanked.",
        PRETRAIN,
        commands=("pretrain",),
    ),
    Opt("mask_block", "Inpainting: block side, voxels.", PRETRAIN, commands=("pretrain",)),
    # --- detection
    Opt(
        "target",
        "Targets: sphere (class map) | heatmap (Gaussians).",
        DETECTION,
        commands=("train", "cv"),
    ),
    Opt(
        "target_radius",
        "Sphere target: ball radius as a fraction of the particle's.",
        DETECTION,
        commands=("train", "cv"),
    ),
    Opt(
        "target_sigma",
        "Heatmap target: sigma as a fraction of the particle radius.",
        DETECTION,
        commands=("train", "cv"),
    ),
    Opt(
        "pos_weight",
        "Weight of particle voxels in ce/mse (1st place: 256).",
        DETECTION,
        commands=("train", "cv"),
    ),
    Opt(
        "predict_patch",
        "Sliding-window size for whole tomograms: N or z,y,x (default: the crop).",
        DETECTION,
        type=str | None,
        default=None,
        commands=("train", "cv"),
    ),
    Opt(
        "predict_tta",
        "TTA on whole tomograms: none | flips | rot90z | all.",
        DETECTION,
        type=str,
        default="none",
        commands=("train", "cv"),
    ),
    Opt(
        "peak_method",
        "nms (local maxima) | cc (component centroids).",
        DETECTION,
        flag="--peaks",
        commands=("train", "cv"),
    ),
    Opt(
        "peak_distance",
        "NMS distance as a fraction of the particle radius.",
        DETECTION,
        commands=("train", "cv"),
    ),
    # --- data, devices and checkpoints
    Opt("train_split", "Training split.", DATA, commands=("train", "pretrain")),
    Opt(
        "val_split",
        "Validation split ('' for none).",
        DATA,
        type=str,
        default="val",
        commands=("train", "pretrain"),
    ),
    Opt("device", "auto | cpu | cuda.", DATA),
    Opt("workers", "Loader worker processes.", DATA),
    Opt("seed", "Seed of weights, order and augmentation.", DATA),
    Opt("compile", "torch.compile the model.", DATA),
    Opt("channels_last", "channels_last_3d memory format.", DATA),
    Opt("checkpoint_every", "Also write last.pt every N steps (0: at epoch ends only).", DATA),
    Opt(
        "loader_timeout",
        "Seconds without a batch before the loader gives up (0: never).",
        DATA,
        flag="--timeout",
    ),
    Opt(
        "storage_options",
        'fsspec options for URL shard sets as JSON, e.g. \'{"client_kwargs": {"endpoint_url": '
        '"http://127.0.0.1:9000"}}\'.',
        DATA,
        type=str | None,
        default=None,
    ),
)

# Fields a command sets itself, never from a flag: the shard set, and cv's folds.
NOT_FLAGS = ("shards", "train_folds", "val_folds")
# Where a library name differs from its flag outside OPTIONS.
_EXTRA_FLAGS = {"tta": "--tta", "folds": "--folds"}
FLAGS = {o.name: o.option for o in OPTIONS} | _EXTRA_FLAGS


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _defaults() -> dict[str, Any]:
    fields = dataclasses.fields(TrainConfig)
    return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


def parameters(command: str) -> list[inspect.Parameter]:
    """The keyword-only parameters, Typer-annotated, of ``command``'s training options."""
    types, defaults = _field_types(), _defaults()
    out = []
    for opt in OPTIONS:
        if command not in opt.commands:
            continue
        kind = opt.type if opt.type is not None else types[opt.name]
        default = defaults[opt.name] if opt.default is _FIELD else opt.default
        decls = (opt.flag,) if opt.flag else ()  # else Typer's own: --name, --name/--no-name
        info = typer.Option(*decls, help=opt.help, rich_help_panel=opt.panel)
        out.append(
            inspect.Parameter(
                opt.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[kind, info],
            )
        )
    return out


class TrainOptions:
    """The values of a command's training options, as typed on the command line."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def config(self, shards: str, **fixed: Any) -> TrainConfig:
        """The run's ``TrainConfig``: the options converted from their command-line form
        (model options typed by the model, patch and TTA parsed, JSON read), ``fixed`` over
        them (what the command decides: the task of pretrain, ...)."""
        v = dict(self.values)
        v.update(fixed)
        model_options = _model_options(
            v.get("model", "auto"),
            v.pop("model_options", None),
            v.pop("width", None),
            v.pop("depth", None),
        )
        if model_options:
            v["model_options"] = model_options
        if "clip" in v:
            v["clip"] = v["clip"] or None
        if "val_split" in v:
            v["val_split"] = v["val_split"] or None
        if v.get("predict_patch"):
            from streamvol.shard.plan import as_zyx

            v["predict_patch"] = as_zyx(v["predict_patch"])
        if "predict_tta" in v:
            v["predict_tta"] = _window_tta(v["predict_tta"])
        v["storage_options"] = storage(v.get("storage_options"))
        return TrainConfig(shards=shards, **v)


def _model_options(
    model: str, items: list[str] | None, width: int | None, depth: int | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if width is not None:
        out["width" if model == "resnet3d" else "base_width"] = width
    if depth is not None:
        out["depth"] = depth
    if items:
        if model == "auto":
            raise BadOption(
                "model_options", items[0], "name the model (--model NAME) whose option it sets"
            )
        from streamvol.models import parse_options

        out.update(parse_options(model, items))
    return out


def _window_tta(text: str) -> tuple[str, ...]:
    from streamvol.predict._window import parse_tta

    return parse_tta(text)


def storage(text: str | None) -> dict[str, Any] | None:
    """``--storage-options``: a JSON object of fsspec options (credentials, endpoint)."""
    if not text:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadOption("storage_options", text, f"expected a JSON object: {exc}") from None
    if not isinstance(options, dict):
        raise BadOption("storage_options", text, "expected a JSON object")
    return options


def training_options(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``command``'s training options after its own parameters; the function gets
    them as ``options: TrainOptions`` (its own ``options`` parameter, left out of the CLI)."""
    if command not in COMMANDS:
        raise ValueError(f"command {command!r}: expected one of {', '.join(COMMANDS)}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(func).parameters.values() if p.name != "options"]
        extra = parameters(command)
        names = [p.name for p in extra]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            return func(**kwargs, options=TrainOptions(values))

        wrapper.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def command_flags(command: Any) -> dict[str, str]:
    """How ``command``'s line writes each of its parameters, by the parameter's name: an option
    as its long flag (``peak_distance`` -> ``--peak-distance``), an argument as its metavar
    (``kind`` -> ``KIND``). Hidden options are left out: a user never typed them. ``command``
    is the click command Typer made (Typer carries its own click, so kinds go by name)."""
    out = {}
    for param in command.params:
        if param.name is None or getattr(param, "hidden", False):
            continue
        if param.param_type_name == "option":
            long = [o for o in param.opts if o.startswith("--")]
            out[param.name] = (long or param.opts)[0]
        elif param.param_type_name == "argument":
            out[param.name] = param.metavar or param.name.upper()
    return out


def cli_message(exc: BaseException, flags: dict[str, str] | None = None) -> str:
    """An error as the command line says it: a ``BadOption`` as the flag that set it
    (``lr=0.0: expected ...`` -> ``--lr 0.0: expected ...``), a ``FolderNotEmpty`` with the flag
    that replaces the folder; else the error's text. ``flags`` maps the running command's
    parameter names to its flags (``command_flags``), ``FLAGS`` (the training options') when no
    command is known. The one place library names become flags."""
    flags = FLAGS if flags is None else flags
    if isinstance(exc, BadOption) and exc.name in flags:
        value = exc.value
        if isinstance(value, tuple | list):
            value = ",".join(map(str, value))
        shown = "" if value is True else f" {value}"
        return f"{flags[exc.name]}{shown}: {exc.expected}"
    if isinstance(exc, FolderNotEmpty) and exc.option in flags:
        return f"{exc.path}: folder is not empty; use {flags[exc.option]} to replace it"
    return str(exc)
