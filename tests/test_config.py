"""The run configuration: JSON round trip, configs written before a field existed or before
the groups, and the flags generated from it."""
import argparse
import json

import pytest

from mobilenet_jax import cli
from mobilenet_jax.config import Config, load_json, save_json
from mobilenet_jax.config import fields as config_fields


def test_json_round_trip(tmp_path):
    config = Config(width_multiplier=0.25, kernels="reference", max_steps=7, data_dir="d")
    save_json(config, tmp_path / "config.json")
    assert load_json(tmp_path / "config.json") == config


def test_a_config_written_before_a_field_existed_loads_with_its_default():
    """The compatibility rule (docs/training.md): a field's default is what runs did before."""
    stored = Config(width_multiplier=0.5).to_dict()
    del stored["recipe"]["qat"]
    assert Config.from_dict(stored) == Config(width_multiplier=0.5, qat=False)


def test_a_flat_config_written_before_the_groups_loads_as_grouped():
    config = Config(width_multiplier=0.25, lr=0.05, keep=2, data_dir="d", class_names=("a", "b"),
                    num_classes=2)
    flat = json.loads(json.dumps(config.flat()))  # as a config.json stores it: tuples as lists
    assert set(flat) >= {"width_multiplier", "lr", "keep", "data_dir", "class_names"}
    assert Config.from_dict(flat) == config
    assert config.network.width_multiplier == 0.25 and config.recipe.lr == 0.05
    assert config.run.keep == 2 and config.places.data_dir == "d"


def test_unknown_keys_and_values_are_refused():
    with pytest.raises(ValueError, match="fft"):
        Config.from_dict({**Config().to_dict(), "kernels": "fft"})
    with pytest.raises(ValueError, match="colour"):
        Config.from_dict({**Config().to_dict(), "colour": "red"})


def test_every_field_is_a_flag_and_given_flags_are_told_from_defaults():
    parser = argparse.ArgumentParser()
    cli.add_config_flags(parser, all_optional=True)
    args = parser.parse_args(["--alpha", "0.5", "--kernels", "cpu", "--no-augment"])
    assert cli.given_flags(args) == {"width_multiplier": 0.5, "kernels": "cpu",
                                     "augment": False}
    assert set(vars(args)) == {f.name for _, f in config_fields() if not f.metadata["from_data"]}
    assert not {"class_names", "mean", "std"} & set(vars(args))  # read from the data
    assert cli.given_flags(args, names=("kernels",)) == {"kernels": "cpu"}
    assert cli.given_flags(args, groups=("network",)) == {"width_multiplier": 0.5}


def test_dataset_facts_round_trip_and_are_checked(tmp_path):
    names = tuple(f"c{i}" for i in range(3))
    config = Config(num_classes=3, class_names=names, mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    save_json(config, tmp_path / "config.json")
    loaded = load_json(tmp_path / "config.json")
    assert loaded == config and isinstance(loaded.data.class_names, tuple) and hash(loaded)
    assert loaded.label_names() == names and Config(num_classes=2).label_names() == ("0", "1")
    with pytest.raises(ValueError, match="--num-classes 3"):
        Config(num_classes=100, class_names=names)
    with pytest.raises(ValueError, match="std"):
        Config(std=(0.2, 0.0, 0.3))


def test_configs_written_before_dataset_facts_load_with_cifar100_normalisation():
    stored = Config().to_dict()
    stored["data"] = {k: v for k, v in stored["data"].items()
                      if k not in ("class_names", "mean", "std")}
    config = Config.from_dict(stored)
    assert config.data.class_names == () and config.data.mean == (0.5071, 0.4865, 0.4409)
    assert config.data.std == (0.2673, 0.2564, 0.2762)
