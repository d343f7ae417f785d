"""The run configuration: JSON round trip, configs written before the kernel policies, and the
flags generated from it."""
import argparse
import dataclasses

import pytest

from mobilenet_jax import cli
from mobilenet_jax.config import Config, load_json, save_json


def test_json_round_trip(tmp_path):
    config = Config(width_multiplier=0.25, kernels="reference", max_steps=7, data_dir="d")
    save_json(config, tmp_path / "config.json")
    assert load_json(tmp_path / "config.json") == config


@pytest.mark.parametrize("depthwise,kernels", [("xla", "reference"), ("slices", "cpu"),
                                               ("vjp", "cpu"), ("auto", "auto")])
def test_configs_that_name_a_depthwise_implementation_load(depthwise, kernels):
    stored = {k: v for k, v in Config().to_dict().items() if k != "kernels"}
    assert Config.from_dict({**stored, "depthwise": depthwise}).kernels == kernels


def test_unknown_keys_and_values_are_refused():
    stored = {k: v for k, v in Config().to_dict().items() if k != "kernels"}
    with pytest.raises(ValueError, match="fft"):
        Config.from_dict({**stored, "depthwise": "fft"})
    with pytest.raises(ValueError, match="colour"):
        Config.from_dict({**Config().to_dict(), "colour": "red"})


def test_every_field_is_a_flag_and_given_flags_are_told_from_defaults():
    parser = argparse.ArgumentParser()
    cli.add_config_flags(parser, all_optional=True)
    args = parser.parse_args(["--alpha", "0.5", "--kernels", "cpu", "--no-augment"])
    assert cli.given_flags(args) == {"width_multiplier": 0.5, "kernels": "cpu",
                                     "augment": False}
    assert set(vars(args)) == {f.name for f in dataclasses.fields(Config)}
    assert cli.given_flags(args, names=("kernels",)) == {"kernels": "cpu"}
