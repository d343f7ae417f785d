"""Parameter and mult-add counts against the paper (Howard et al. 2017, Tables 6 and 7) and the
seed project's own figures."""
import pytest

from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.summary import summarize, totals
from helpers import REPO, run


def counts(**kwargs):
    resolution = kwargs.pop("resolution")
    return totals(summarize(MobileNetV1(**kwargs), resolution))


@pytest.mark.parametrize("alpha,params_m,mult_adds_m", [
    (1.0, 4.2, 569), (0.75, 2.6, 325), (0.5, 1.3, 149), (0.25, 0.5, 41)])
def test_table6_width_multiplier(alpha, params_m, mult_adds_m):
    t = counts(width_multiplier=alpha, num_classes=1000, resolution=224)
    assert round(t["params"] / 1e6, 1) == params_m
    assert abs(t["mult_adds"] / 1e6 - mult_adds_m) < 1  # the paper prints whole millions


@pytest.mark.parametrize("resolution,mult_adds_m", [(224, 569), (192, 418), (160, 290),
                                                    (128, 186)])
def test_table7_resolution(resolution, mult_adds_m):
    t = counts(width_multiplier=1.0, num_classes=1000, resolution=resolution)
    assert abs(t["mult_adds"] / 1e6 - mult_adds_m) < 1
    assert round(t["params"] / 1e6, 1) == 4.2  # resolution does not change the parameters


@pytest.mark.parametrize("block,params,mult_adds", [("seed", 73_797, 272_144),
                                                    ("paper", 46_052, 175_471)])
def test_reference_configuration_exact(block, params, mult_adds):
    t = counts(width_multiplier=0.1, num_classes=100, block=block, resolution=32)
    assert (t["params"], t["mult_adds"]) == (params, mult_adds)


def test_batchnorm_parameters_are_their_own_column():
    # alpha=0.1 paper block: 2 * (3 + sum over blocks of (in + out)) = 2184
    rows = summarize(MobileNetV1(num_classes=100, width_multiplier=0.1), 32)
    assert totals(rows)["bn_params"] == 2 * (3 + 3 + 6 + 6 + 13 + 13 + 13 + 13 + 26 + 26 + 26
                                             + 26 + 51 + 51 * 5 * 2 + 51 + 102 + 102 + 102)
    assert [r.name for r in rows][:3] == ["stem", "block1/depthwise", "block1/pointwise"]
    assert rows[-1].name == "classifier"


def test_cli_prints_table_and_rejects_bad_values():
    ok = run(["mobilenet_jax.summary", "--alpha", "0.1", "--resolution", "32",
              "--num-classes", "100", "--block", "seed"], REPO)
    assert ok.returncode == 0, ok.stderr
    assert "73,797" in ok.stdout and "272,144" in ok.stdout
    bad = run(["mobilenet_jax.summary", "--alpha", "-2"], REPO)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "-2" in bad.stderr
    assert "Traceback" not in bad.stderr
