"""The run configuration: one frozen dataclass of a few groups, the single source of truth.

Each group is the part of a run that one reader needs: the network, how it is computed, the
data, the recipe, how the run starts, where the data is, and where and how this invocation
runs. What may change when a run is resumed follows from the group
(`Group.on_resume`). The command lines are
generated from the groups (cli.py), one flat flag per field; the config is written to
`<workdir>/config.json` and into every checkpoint, so a run can be reproduced and a model
rebuilt without flags.
"""
import dataclasses
import json
import math
from typing import ClassVar, Optional

from mobilenet_jax.models.spec import (BLOCK_TYPES, KERNEL_CHOICES, check_model_args,
                                       resolve_kernels)

# Per-channel mean and standard deviation of the CIFAR-100 training images, pixels in [0, 1].
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "step", "exponential", "constant")
INPUTS = ("auto", "memory", "stream")
REFERENCE_BATCH_SIZE = 128  # `lr` is the learning rate at this global batch size


def field(default, help, choices=None, flags=None, from_data=False, minimum=None):
    """A config field; `from_data` ones are read from the dataset when training starts, not
    taken as flags; `minimum` is the least value it takes."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "flags": flags, "from_data": from_data,
        "minimum": minimum})


class Group:
    """A group of fields: each checked against its choices, its minimum and for finiteness.
    `on_resume` says what a resumed run does with them: "fixed" (as the run was; a flag that
    differs is refused), "invocation" (this invocation's flags, else the defaults) or "kept"
    (as the run was, unless passed again)."""
    on_resume: ClassVar[str] = "fixed"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] and value not in meta["choices"]:
                raise ValueError(f"{f.name} must be one of {meta['choices']}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if meta["minimum"] is not None and value is not None and value < meta["minimum"]:
                raise ValueError(f"{f.name} must be >= {meta['minimum']}, got {value!r}")
        self.check()

    def check(self):
        """What a group's fields must satisfy together."""


@dataclasses.dataclass(frozen=True)
class Network(Group):
    """What the network is (`MobileNetV1`'s arguments): the paper's width multiplier, its
    classes and block. A fine-tune starts from its checkpoint's; an evaluated checkpoint's
    must match what is asked for."""
    width_multiplier: float = field(1.0, "width multiplier alpha: every channel count c becomes "
                                    "max(1, round(alpha*c))", flags=("--alpha", "--width-multiplier"))
    num_classes: int = field(100, "number of output classes")
    block: str = field("paper", "'paper': depthwise + one pointwise conv; 'seed': the Julia seed "
                       "project's block with two pointwise convs", BLOCK_TYPES)
    stem_stride: int = field(2, "stride of the first 3x3 conv (2 as in the paper; 1 is the usual "
                             "CIFAR variant, 4x the compute)", (1, 2))
    dropout: float = field(0.0, "dropout rate before the classifier")

    def check(self):
        check_model_args(self.width_multiplier, self.num_classes, self.block, self.stem_stride)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


@dataclasses.dataclass(frozen=True)
class Compute(Group):
    """How the network is computed: the same weights either way, so it may change on resume
    and when a checkpoint is evaluated."""
    on_resume: ClassVar[str] = "invocation"
    dtype: str = field("float32", "computation dtype of activations, convs and matmuls; params, "
                       "BatchNorm statistics, loss and optimizer state stay float32", DTYPES)
    kernels: str = field("auto", "how the convs are computed (same parameters and results for "
                         "all): 'reference' (nn.Conv for every conv, depthwise through "
                         "feature_group_count), 'cpu' (hand-written forms XLA:CPU runs faster: "
                         "sliced stem and depthwise convs, 1x1 convs as matmuls, BatchNorm's "
                         "gradient by hand), 'auto' (cpu "
                         "on a CPU, reference elsewhere)", KERNEL_CHOICES)


@dataclasses.dataclass(frozen=True)
class Data(Group):
    """What the run trains on, and how its images become the network's input."""
    dataset: str = field("cifar100", "tensorflow-datasets name of an image classification "
                         "dataset (features: an image and a class label)")
    split: str = field("train", "TFDS split expression to train on")
    val_fraction: float = field(0.1, "fraction of the training split held out for validation "
                                "(fixed by the seed); 0 disables validation")
    resolution: int = field(32, "input resolution NxN (the paper's resolution multiplier is N/32)",
                            minimum=1)
    augment: bool = field(True, "random crop (4-pixel padding) and horizontal flip in training; "
                          "streamed images of varied sizes: random-resized crops instead")
    class_names: tuple = field((), "the dataset's class names, by label", from_data=True)
    random_resized_crops: bool = field(False, "training crops are Inception-style random-"
                                       "resized crops of the full images, taken as they are "
                                       "streamed", from_data=True)
    image_size: int = field(32, "side of the stored training images (images of other sizes "
                            "are centre-cropped and resized to it)", from_data=True, minimum=1)
    mean: tuple = field(CIFAR100_MEAN, "per-channel mean of the training images (pixels in "
                        "[0, 1]) that inputs are standardised with", from_data=True)
    std: tuple = field(CIFAR100_STD, "per-channel standard deviation of the training images",
                       from_data=True)

    def check(self):
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 channels and std > 0, got {self.mean}, "
                             f"{self.std}")


@dataclasses.dataclass(frozen=True)
class Recipe(Group):
    """How the network is trained (defaults chosen on validation accuracy: experiments/recipe/)."""
    epochs: int = field(200, "number of training epochs", minimum=1)
    batch_size: int = field(64, "global batch size, over all devices and hosts", minimum=1)
    optimizer: str = field("sgd", "sgd (Nesterov momentum), rmsprop (the paper's) or adamw",
                           OPTIMIZERS)
    lr: float = field(0.1, f"peak learning rate at batch size {REFERENCE_BATCH_SIZE}; the rate "
                      f"used is lr * batch_size / {REFERENCE_BATCH_SIZE} (linear scaling rule)",
                      minimum=0)
    schedule: str = field("cosine", "cosine: linear warm-up then cosine decay to 0; step: x0.1 at "
                          "50%% and 75%% of training; exponential: x--lr-decay-factor every "
                          "--lr-decay-epochs epochs; constant", SCHEDULES)
    lr_decay_factor: float = field(0.94, "the exponential schedule's factor")
    lr_decay_epochs: float = field(2.5, "epochs between the exponential schedule's decays",
                                   minimum=0)
    warmup_epochs: float = field(5.0, "linear warm-up length in epochs", minimum=0)
    momentum: float = field(0.9, "momentum (sgd, rmsprop) or beta1 (adamw)", minimum=0)
    weight_decay: float = field(5e-4, "weight decay on conv and dense kernels (BatchNorm "
                                "parameters and biases are not decayed)", minimum=0)
    decay_depthwise: bool = field(True, "weight decay on the depthwise kernels too")
    rmsprop_eps: float = field(1e-3, "rmsprop's epsilon (inside the square root, as "
                               "TensorFlow's)", minimum=0)
    label_smoothing: float = field(0.1, "label smoothing of the cross-entropy loss")
    ema_decay: float = field(0.999, "decay of a moving average of the weights and BatchNorm "
                             "statistics that validation, evaluate, predict and export use "
                             "(0: off); step t uses min(decay, (1+t)/(10+t))")
    precise_bn_batches: int = field(20, "before each validation and checkpoint, recompute "
                                    "BatchNorm's statistics with the evaluated weights over "
                                    "this many augmented training batches, for validation, "
                                    "evaluate, predict and export (0: the running statistics)",
                                    minimum=0)
    mixup_alpha: float = field(0.0, "mixup: each training image blended with another of the "
                               "batch, weight ~ Beta(a, a), targets alike (0: off)", minimum=0)
    cutmix_alpha: float = field(0.0, "CutMix: a box of another image of the batch pasted in, "
                                "1 - lam of the area with lam ~ Beta(a, a), targets by area (0: "
                                "off; with mixup, one of the two per batch)", minimum=0)
    # fine-tuning
    freeze_backbone: bool = field(False, "train the classifier only: the backbone's weights "
                                  "and BatchNorm statistics stay as they are (with --init-from)")
    backbone_lr_scale: float = field(1.0, "the backbone's learning rate as a fraction of the "
                                     "classifier's (e.g. 0.1 when fine-tuning)", minimum=0)
    qat: bool = field(False, "quantization-aware training: the forward pass rounds weights "
                      "and layer inputs to an int8 model's grids (a few epochs with --init-from "
                      "a trained checkpoint, then export --int8); on the CIFAR-100 subset it "
                      "made no better int8 model than post-training quantization "
                      "(experiments/int8_qat)")

    def check(self):
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ValueError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / REFERENCE_BATCH_SIZE


@dataclasses.dataclass(frozen=True)
class Start(Group):
    """Where the run starts: the seed its random keys are made from (the steps are given keys,
    not the seed) and the checkpoint its weights come from."""
    seed: int = field(0, "seed of initialisation, data order, augmentation and dropout")
    init_from: Optional[str] = field(None, "start a new run from this checkpoint's parameters "
                                     "and BatchNorm statistics (a new classifier when the "
                                     "number of classes differs)")


@dataclasses.dataclass(frozen=True)
class Places(Group):
    """Where the data is: a resumed run keeps these unless they are passed again (the data may
    have moved)."""
    on_resume: ClassVar[str] = "kept"
    image_folder: Optional[str] = field(None, "train on a folder of images instead: "
                                        "PATH/train/<class>/*.png|jpg and PATH/test/<class>/*")
    data_dir: Optional[str] = field(None, "TFDS data dir (default: $TFDS_DATA_DIR or "
                                    "~/tensorflow_datasets)")
    offline: bool = field(False, "never try to download the dataset")


@dataclasses.dataclass(frozen=True)
class Run(Group):
    """Where and how this invocation runs, not what it computes: each invocation's own (the
    default where not passed), a resumed one's too."""
    on_resume: ClassVar[str] = "invocation"
    workdir: str = field(".", "run directory: config.json, metrics.jsonl, TensorBoard events and "
                         "checkpoints/ go here; rerunning in it resumes")
    input: str = field("auto", "memory: read the data into memory (fastest, for what fits); "
                       "stream: read it image by image as batches need it (TFDS datasets "
                       "prepared as ArrayRecord, image folders); auto: memory unless the data "
                       "would take more than half of it", INPUTS)
    data_workers: int = field(0, "processes that make streamed training batches (0: threads "
                              "of the training process)", minimum=0)
    checkpoint_every: int = field(1, "save a checkpoint every N epochs (and always at the end)",
                                  minimum=1)
    keep: int = field(3, "keep the last N checkpoints (plus the best by validation accuracy)",
                      minimum=1)
    max_steps: Optional[int] = field(None, "stop (and checkpoint) after this many total steps; "
                                     "the schedule still follows --epochs", minimum=1)
    progress: bool = field(True, "show a progress bar")
    distributed: bool = field(False, "call jax.distributed.initialize() (multi-host; also done "
                              "when a cluster environment such as SLURM is detected)")


@dataclasses.dataclass(frozen=True, init=False)
class Config:
    """A run's configuration: its groups. Made from flat field names, as the flags are
    (`Config(width_multiplier=0.25, lr=0.05)`), or from groups (`Config(network=...)`);
    read by group (`config.network.width_multiplier`)."""
    network: Network
    compute: Compute
    data: Data
    recipe: Recipe
    start: Start
    places: Places
    run: Run

    def __init__(self, **values):
        unknown = sorted(set(values) - set(GROUPS) - set(GROUP_OF))
        if unknown:
            raise TypeError(f"unknown configuration fields {unknown}")
        for name, group in GROUPS.items():
            changes = {k: v for k, v in values.items() if GROUP_OF.get(k) == name}
            base = values.get(name) or group()
            object.__setattr__(self, name, dataclasses.replace(base, **changes))
        if self.data.class_names and len(self.data.class_names) != self.network.num_classes:
            raise ValueError(f"the dataset has {len(self.data.class_names)} classes but "
                             f"num_classes is {self.network.num_classes}; drop --num-classes or "
                             f"pass --num-classes {len(self.data.class_names)}")
        if self.recipe.freeze_backbone and self.network.dropout > 0:
            raise ValueError("--freeze-backbone runs the backbone in inference mode, where "
                             "dropout does not apply; drop --dropout")

    def replace(self, **changes) -> "Config":
        """This config with fields (flat names) or whole groups changed."""
        return Config(**{**{name: getattr(self, name) for name in GROUPS}, **changes})

    def flat(self) -> dict:
        """Every field by its flat name, as the flags name them."""
        return {name: getattr(getattr(self, group), name) for name, group in GROUP_OF.items()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """The config of `to_dict`'s form, or of the flat form written before the groups. A
        field it lacks (added later) takes its default (docs/training.md)."""
        flat = flatten(d)
        unknown = sorted(set(flat) - set(GROUP_OF))
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()})

    def model_kwargs(self, backend: Optional[str] = None) -> dict:
        """Keyword arguments of `MobileNetV1` for this run: the network's fields and how it is
        computed."""
        return {**dataclasses.asdict(self.network), "dtype": self.compute.dtype,
                "kernels": resolve_kernels(self.compute.kernels, backend)}

    def label_names(self) -> tuple:
        """The class names, or the label numbers where the dataset named none."""
        return self.data.class_names or tuple(str(c) for c in range(self.network.num_classes))


GROUPS = {f.name: f.type for f in dataclasses.fields(Config)}  # name -> its dataclass
GROUP_OF = {f.name: name for name, group in GROUPS.items() for f in dataclasses.fields(group)}
assert len(GROUP_OF) == sum(len(dataclasses.fields(g)) for g in GROUPS.values()), \
    "a field name appears in two groups: the flags are flat"


def flatten(stored: dict) -> dict:
    """A stored config (`to_dict`'s form, or the flat one written before the groups) by the
    fields' flat names."""
    flat = {}
    for key, value in stored.items():
        flat.update(value if key in GROUPS and isinstance(value, dict) else {key: value})
    return flat


def fields(groups=None):
    """(group name, field) of every config field, or of those in `groups`."""
    return [(name, f) for name, group in GROUPS.items() if groups is None or name in groups
            for f in dataclasses.fields(group)]


# Named sets of flag values (`train --preset NAME`; flags given beside it win). "imagenet" is
# the reference MobileNet v1 ImageNet training; experiments/imagenet/README.md cites each value.
PRESETS = {
    "imagenet": dict(
        dataset="imagenet2012", num_classes=1000, resolution=224, input="stream",
        optimizer="rmsprop", momentum=0.9, rmsprop_eps=1.0,
        lr=0.09, batch_size=64,  # 0.045 at batch 64
        schedule="exponential", lr_decay_factor=0.94, lr_decay_epochs=2.5, warmup_epochs=0.0,
        weight_decay=4e-5, decay_depthwise=False, label_smoothing=0.0, dropout=0.001,
        ema_decay=0.0, epochs=100, val_fraction=0.01),
}


def save_json(config: Config, path) -> None:
    with open(path, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
        f.write("\n")


def load_json(path) -> Config:
    with open(path) as f:
        return Config.from_dict(json.load(f))
