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

import jax
import jax.numpy as jnp

from mobilenet_jax.config import GROUP_OF, GROUPS, Config, load_json
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.data import arrays, sources
from mobilenet_jax.data.streaming import StreamedSplit
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.spec import HEAD


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
        return self.config.recipe.epochs * self.steps_per_epoch


def resolve(given: dict, num_classes_from_data: bool = False,
            started: Optional[tuple] = None) -> Plan:
    """The Plan of the flags `given` (name -> value, the flags passed). With
    `num_classes_from_data`, a new run takes its number of classes from the dataset.
    `started`: `run_config(given)` where the caller already has it."""
    config, resuming, source = started or run_config(given)
    # a run trained on crops of the full images needs them again
    train_split = sources.load_split(
        config.replace(input="stream") if config.data.random_resized_crops else config,
        config.data.split)
    config = with_class_names(config, train_split.class_names,
                              num_classes_from_data and not resuming)
    train_split, val_split = arrays.split_validation(train_split, config.data.val_fraction,
                                                     config.start.seed)
    if not resuming:  # what this and later commands need to feed the network, read once
        mean, std = train_split.channel_statistics()
        config = config.replace(image_size=train_split.side, mean=mean, std=std,
                                random_resized_crops=config.data.augment and isinstance(
                                    train_split, StreamedSplit) and not train_split.fixed_size)
    steps_per_epoch = len(train_split) // config.recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_split)} examples, fewer than one "
                         f"batch of {config.recipe.batch_size}; lower --batch-size")
    return Plan(config, source, train_split, val_split, steps_per_epoch)


def run_config(given: dict) -> tuple[Config, bool, Optional[Source]]:
    """(config, resuming, source). Where the workdir holds a run: that run's config (resume),
    each group as its `on_resume` says; refused if a flag of a fixed group differs. Otherwise
    the flags, the network's not given taken from an --init-from checkpoint."""
    config = Config().replace(**given)
    workdir = pathlib.Path(config.run.workdir)
    if (workdir / "config.json").exists() and (workdir / "checkpoints" / ckpt_lib.LATEST).exists():
        saved = load_json(workdir / "config.json")
        on_resume = {name: GROUPS[group].on_resume for name, group in GROUP_OF.items()}
        saved_flat = saved.flat()
        for name, value in given.items():
            if on_resume[name] == "fixed" and saved_flat[name] != value:
                raise ValueError(f"{workdir} holds a run with {name}={saved_flat[name]!r} "
                                 f"but {name}={value!r} was passed; drop the flag to resume "
                                 "that run or pass another --workdir for a new one")
        resumed = {name: value for name, value in config.flat().items()
                   if on_resume[name] == "invocation" or name in given}
        return saved.replace(**resumed), True, None
    if not config.start.init_from:
        return config, False, None
    step_dir = ckpt_lib.resolve(config.start.init_from)
    source = Source(step_dir, ckpt_lib.read_config(step_dir))
    config = Config(network=source.config.network).replace(**given)
    if backbone_shapes(config) != backbone_shapes(source.config):
        ours = config.flat()
        differ = [f"{name}={value!r} (this run: {ours[name]!r})"
                  for name, value in source.config.flat().items()
                  if GROUP_OF[name] == "network" and value != ours[name]]
        raise ValueError(f"cannot fine-tune from {step_dir}: its backbone is a network with "
                         f"{', '.join(differ)}; pass the same --alpha, --block and "
                         "--stem-stride, or start from another checkpoint")
    return config, False, source


def backbone_shapes(config: Config) -> dict:
    """The shapes of the backbone's parameters (all but the classifier's), nothing computed."""
    model = MobileNetV1(**config.model_kwargs(backend="cpu"))
    image = jax.ShapeDtypeStruct((1, config.data.resolution, config.data.resolution, 3),
                                 jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), image)["params"]
    return jax.tree.map(lambda leaf: leaf.shape,
                        {name: tree for name, tree in params.items() if name != HEAD})


def with_class_names(config: Config, names: tuple, count_from_data: bool = False) -> Config:
    """The config with the dataset's class names, which later commands (predict, export) show;
    with `count_from_data`, also their number as num_classes."""
    if not names or config.data.class_names == names:
        return config
    if config.data.class_names:
        raise ValueError(f"{config.run.workdir} holds a run trained on classes "
                         f"{list(config.data.class_names)[:5]}..., but {config.data.dataset!r} has "
                         f"{list(names)[:5]}...; pass another --workdir for a new run")
    return config.replace(class_names=names,
                          **({"num_classes": len(names)} if count_from_data else {}))
