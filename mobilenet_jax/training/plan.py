"""A `train` invocation resolved before anything trains: the Plan.

From the flags given and what the workdir holds, once: whether the run is new, resumed or
fine-tuned from another run's checkpoint; the config as it will be trained (the data's
facts, class names and normalisation); the splits; the steps per epoch. It reads the
workdir's `config.json` and an `--init-from` checkpoint's config once each, and every
refusal (a changed architecture flag on resume, other class names, a batch larger than the
split) is a ValueError here, before a state exists.
"""
import dataclasses
import pathlib
from typing import Optional

from mobilenet_jax.config import Config, load_json
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.data import arrays, sources
from mobilenet_jax.data.streaming import StreamedSplit

ARCHITECTURE = ("width_multiplier", "block", "stem_stride")  # what a fine-tune must keep


@dataclasses.dataclass(frozen=True)
class Source:
    """The checkpoint a fine-tune starts from, and its run's config."""
    step_dir: pathlib.Path
    config: Config


@dataclasses.dataclass(frozen=True)
class Plan:
    config: Config  # as it will be trained and stored
    source: Optional[Source]  # a new run started from another run's checkpoint
    train_split: arrays.Split | StreamedSplit
    val_split: Optional[arrays.Split | StreamedSplit]
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch


def resolve(given: dict, num_classes_from_data: bool = False,
            started: Optional[tuple] = None) -> Plan:
    """The Plan of the flags `given` (name -> value, the flags passed). With
    `num_classes_from_data`, a new run takes its number of classes from the dataset.
    `started`: `run_config(given)` where the caller already has it."""
    config, resuming, source = started or run_config(given)
    # a run trained on crops of the full images needs them again
    train_split = sources.load_split(
        config.replace(input="stream") if config.random_resized_crops else config, config.split)
    config = with_class_names(config, train_split.class_names,
                              num_classes_from_data and not resuming)
    train_split, val_split = arrays.split_validation(train_split, config.val_fraction, config.seed)
    if not resuming:  # what this and later commands need to feed the network, read once
        mean, std = train_split.channel_statistics()
        config = config.replace(image_size=train_split.side, mean=mean, std=std,
                                random_resized_crops=config.augment and isinstance(
                                    train_split, StreamedSplit) and not train_split.fixed_size)
    steps_per_epoch = len(train_split) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_split)} examples, fewer than one "
                         f"batch of {config.batch_size}; lower --batch-size")
    return Plan(config, source, train_split, val_split, steps_per_epoch)


def run_config(given: dict) -> tuple[Config, bool, Optional[Source]]:
    """(config, resuming, source). Where the workdir holds a run: that run's config (resume)
    with this invocation's run-control flags (defaults where not passed) and locations;
    refused if another flag differs. Otherwise the flags, with the architecture flags not
    given taken from an --init-from checkpoint."""
    config = Config().replace(**given)
    workdir = pathlib.Path(config.workdir)
    if (workdir / "config.json").exists() and (workdir / "checkpoints" / ckpt_lib.LATEST).exists():
        saved = load_json(workdir / "config.json")
        may_differ = Config.RUN_CONTROL + Config.LOCATIONS
        for name, value in given.items():
            if name not in may_differ and getattr(saved, name) != value:
                raise ValueError(f"{workdir} holds a run with {name}={getattr(saved, name)!r} "
                                 f"but {name}={value!r} was passed; drop the flag to resume "
                                 "that run or pass another --workdir for a new one")
        control = {name: given.get(name, getattr(Config(), name)) for name in Config.RUN_CONTROL}
        locations = {name: value for name, value in given.items() if name in Config.LOCATIONS}
        return saved.replace(**control, **locations), True, None
    if not config.init_from:
        return config, False, None
    step_dir = ckpt_lib.resolve(config.init_from)
    source = Source(step_dir, ckpt_lib.read_config(step_dir))
    config = Config().replace(**{**{name: getattr(source.config, name) for name in ARCHITECTURE},
                                 **given})
    differ = [f"{name}={getattr(source.config, name)!r} (this run: {getattr(config, name)!r})"
              for name in ARCHITECTURE if getattr(source.config, name) != getattr(config, name)]
    if differ:
        raise ValueError(f"cannot fine-tune from {step_dir}: it is a network with "
                         f"{', '.join(differ)}; pass the same --alpha, --block and "
                         "--stem-stride, or start from another checkpoint")
    return config, False, source


def with_class_names(config: Config, names: tuple, count_from_data: bool = False) -> Config:
    """The config with the dataset's class names, which later commands (predict, export) show;
    with `count_from_data`, also their number as num_classes."""
    if not names or config.class_names == names:
        return config
    if config.class_names:
        raise ValueError(f"{config.workdir} holds a run trained on classes "
                         f"{list(config.class_names)[:5]}..., but {config.dataset!r} has "
                         f"{list(names)[:5]}...; pass another --workdir for a new run")
    return config.replace(class_names=names,
                          **({"num_classes": len(names)} if count_from_data else {}))
