"""The run configuration: one frozen dataclass, the single source of truth.

The command lines are generated from it (cli.py), it is written to `<workdir>/config.json` and
into every checkpoint, so a run can be reproduced and a model rebuilt without flags.
"""
import dataclasses
import json
import math
from typing import Optional

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


def field(default, help, choices=None, flags=None, from_data=False):
    """A Config field; `from_data` ones are read from the dataset when training starts, not
    taken as flags."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "flags": flags, "from_data": from_data})


@dataclasses.dataclass(frozen=True)
class Config:
    # --- model -------------------------------------------------------------------------------
    width_multiplier: float = field(1.0, "width multiplier alpha: every channel count c becomes "
                                    "max(1, round(alpha*c))", flags=("--alpha", "--width-multiplier"))
    num_classes: int = field(100, "number of output classes")
    block: str = field("paper", "'paper': depthwise + one pointwise conv; 'seed': the Julia seed "
                       "project's block with two pointwise convs", BLOCK_TYPES)
    stem_stride: int = field(2, "stride of the first 3x3 conv (2 as in the paper; 1 is the usual "
                             "CIFAR variant, 4x the compute)", (1, 2))
    dropout: float = field(0.0, "dropout rate before the classifier")
    dtype: str = field("float32", "computation dtype of activations, convs and matmuls; params, "
                       "BatchNorm statistics, loss and optimizer state stay float32", DTYPES)
    kernels: str = field("auto", "how the convs are computed (same parameters and results for "
                         "all): 'reference' (nn.Conv for every conv, depthwise through "
                         "feature_group_count), 'cpu' (hand-written forms XLA:CPU runs faster: "
                         "sliced stem and depthwise convs, 1x1 convs as matmuls), 'auto' (cpu "
                         "on a CPU, reference elsewhere)", KERNEL_CHOICES)
    # --- data --------------------------------------------------------------------------------
    dataset: str = field("cifar100", "tensorflow-datasets name of an image classification "
                         "dataset (features: an image and a class label)")
    image_folder: Optional[str] = field(None, "train on a folder of images instead: "
                                        "PATH/train/<class>/*.png|jpg and PATH/test/<class>/*")
    data_dir: Optional[str] = field(None, "TFDS data dir (default: $TFDS_DATA_DIR or "
                                    "~/tensorflow_datasets)")
    offline: bool = field(False, "never try to download the dataset")
    split: str = field("train", "TFDS split expression to train on")
    val_fraction: float = field(0.1, "fraction of the training split held out for validation "
                                "(fixed by the seed); 0 disables validation")
    resolution: int = field(32, "input resolution NxN (the paper's resolution multiplier is N/32)")
    input: str = field("auto", "memory: read the data into memory (fastest, for what fits); "
                       "stream: read it image by image as batches need it (TFDS datasets "
                       "prepared as ArrayRecord, image folders); auto: memory unless the data "
                       "would take more than half of it", INPUTS)
    data_workers: int = field(0, "processes that make streamed training batches (0: threads "
                              "of the training process)")
    augment: bool = field(True, "random crop (4-pixel padding) and horizontal flip in training; "
                          "streamed images of varied sizes: random-resized crops instead")
    class_names: tuple = field((), "the dataset's class names, by label", from_data=True)
    random_resized_crops: bool = field(False, "training crops are Inception-style random-"
                                       "resized crops of the full images, taken as they are "
                                       "streamed", from_data=True)
    image_size: int = field(32, "side of the stored training images (images of other sizes "
                            "are centre-cropped and resized to it)", from_data=True)
    mean: tuple = field(CIFAR100_MEAN, "per-channel mean of the training images (pixels in "
                        "[0, 1]) that inputs are standardised with", from_data=True)
    std: tuple = field(CIFAR100_STD, "per-channel standard deviation of the training images",
                       from_data=True)
    # --- optimisation (defaults chosen on validation accuracy: experiments/recipe/) ----------
    epochs: int = field(200, "number of training epochs")
    batch_size: int = field(64, "global batch size, over all devices and hosts")
    optimizer: str = field("sgd", "sgd (Nesterov momentum), rmsprop (the paper's) or adamw",
                           OPTIMIZERS)
    lr: float = field(0.1, f"peak learning rate at batch size {REFERENCE_BATCH_SIZE}; the rate "
                      f"used is lr * batch_size / {REFERENCE_BATCH_SIZE} (linear scaling rule)")
    schedule: str = field("cosine", "cosine: linear warm-up then cosine decay to 0; step: x0.1 at "
                          "50%% and 75%% of training; exponential: x--lr-decay-factor every "
                          "--lr-decay-epochs epochs; constant", SCHEDULES)
    lr_decay_factor: float = field(0.94, "the exponential schedule's factor")
    lr_decay_epochs: float = field(2.5, "epochs between the exponential schedule's decays")
    warmup_epochs: float = field(5.0, "linear warm-up length in epochs")
    momentum: float = field(0.9, "momentum (sgd, rmsprop) or beta1 (adamw)")
    weight_decay: float = field(5e-4, "weight decay on conv and dense kernels (BatchNorm "
                                "parameters and biases are not decayed)")
    decay_depthwise: bool = field(True, "weight decay on the depthwise kernels too")
    rmsprop_eps: float = field(1e-3, "rmsprop's epsilon (inside the square root, as "
                               "TensorFlow's)")
    label_smoothing: float = field(0.1, "label smoothing of the cross-entropy loss")
    ema_decay: float = field(0.999, "decay of a moving average of the weights and BatchNorm "
                             "statistics that validation, evaluate, predict and export use "
                             "(0: off); step t uses min(decay, (1+t)/(10+t))")
    precise_bn_batches: int = field(20, "before each validation and checkpoint, recompute "
                                    "BatchNorm's statistics with the evaluated weights over "
                                    "this many augmented training batches, for validation, "
                                    "evaluate, predict and export (0: the running statistics)")
    mixup_alpha: float = field(0.0, "mixup: each training image blended with another of the "
                               "batch, weight ~ Beta(a, a), targets alike (0: off)")
    cutmix_alpha: float = field(0.0, "CutMix: a box of another image of the batch pasted in, "
                                "1 - lam of the area with lam ~ Beta(a, a), targets by area (0: "
                                "off; with mixup, one of the two per batch)")
    seed: int = field(0, "seed of initialisation, data order, augmentation and dropout")
    # --- fine-tuning -------------------------------------------------------------------------
    init_from: Optional[str] = field(None, "start a new run from this checkpoint's parameters "
                                     "and BatchNorm statistics (a new classifier when the "
                                     "number of classes differs)")
    freeze_backbone: bool = field(False, "train the classifier only: the backbone's weights "
                                  "and BatchNorm statistics stay as they are (with --init-from)")
    backbone_lr_scale: float = field(1.0, "the backbone's learning rate as a fraction of the "
                                     "classifier's (e.g. 0.1 when fine-tuning)")
    qat: bool = field(False, "quantization-aware training: the forward pass rounds weights "
                      "and layer inputs to an int8 model's grids (a few epochs with --init-from "
                      "a trained checkpoint, then export --int8); on the CIFAR-100 subset it "
                      "made no better int8 model than post-training quantization "
                      "(experiments/int8_qat)")
    # --- run control -------------------------------------------------------------------------
    workdir: str = field(".", "run directory: config.json, metrics.jsonl, TensorBoard events and "
                         "checkpoints/ go here; rerunning in it resumes")
    checkpoint_every: int = field(1, "save a checkpoint every N epochs (and always at the end)")
    keep: int = field(3, "keep the last N checkpoints (plus the best by validation accuracy)")
    max_steps: Optional[int] = field(None, "stop (and checkpoint) after this many total steps; "
                                     "the schedule still follows --epochs")
    progress: bool = field(True, "show a progress bar")
    distributed: bool = field(False, "call jax.distributed.initialize() (multi-host; also done "
                              "when a cluster environment such as SLURM is detected)")

    def __post_init__(self):
        check_model_args(self.width_multiplier, self.num_classes, self.block, self.stem_stride)
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata["choices"]
            if choices and value not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        positive = ("resolution", "image_size", "epochs", "batch_size", "checkpoint_every", "keep")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.freeze_backbone and self.dropout > 0:
            raise ValueError("--freeze-backbone runs the backbone in inference mode, where "
                             "dropout does not apply; drop --dropout")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"the dataset has {len(self.class_names)} classes but num_classes "
                             f"is {self.num_classes}; drop --num-classes or pass "
                             f"--num-classes {len(self.class_names)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 channels and std > 0, got {self.mean}, "
                             f"{self.std}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ValueError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("lr", "warmup_epochs", "momentum", "weight_decay", "backbone_lr_scale",
                     "mixup_alpha", "cutmix_alpha", "precise_bn_batches", "data_workers",
                     "lr_decay_epochs", "rmsprop_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    # Fields that may differ when a run is resumed: they steer the run, not what it computes.
    # Run control applies to the invocation that passes it (else the default); where the
    # run and its data live is kept from the stored config unless passed again.
    RUN_CONTROL = ("checkpoint_every", "keep", "max_steps", "progress", "distributed", "kernels",
                   "input", "data_workers")
    LOCATIONS = ("workdir", "data_dir", "offline", "image_folder")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = dict(d)  # a field it lacks (added later) takes its default (docs/training.md)
        names = {f.name for f in dataclasses.fields(cls)}
        for name in ("class_names", "mean", "std"):  # JSON stores tuples as lists
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**d)

    def model_kwargs(self, backend: Optional[str] = None) -> dict:
        """Keyword arguments of `MobileNetV1` for this run."""
        return dict(num_classes=self.num_classes, width_multiplier=self.width_multiplier,
                    block=self.block, stem_stride=self.stem_stride, dropout=self.dropout,
                    dtype=self.dtype, kernels=resolve_kernels(self.kernels, backend))

    def label_names(self) -> tuple:
        """The class names, or the label numbers where the dataset named none."""
        return self.class_names or tuple(str(c) for c in range(self.num_classes))

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / REFERENCE_BATCH_SIZE


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
