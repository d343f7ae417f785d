"""plot: training curves of one run or several, from their metrics.jsonl and config.json."""
import json

from helpers import assert_one_line_error, run, tiny_config, train
from mobilenet_jax.training import curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_run(directory, epochs=3, seed=0, alpha=0.25, val=True):
    """A run directory as train leaves it: config.json and one metrics record per epoch."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(
        {"width_multiplier": alpha, "stem_stride": 1, "resolution": 32, "dataset": "cifar100",
         "image_folder": None, "seed": seed, "epochs": epochs}))
    with open(directory / "metrics.jsonl", "w") as f:
        for e in range(1, epochs + 1):
            record = {"step": 10 * e, "epoch": e, "train_loss": 2.0 / e, "train_top1": 0.2 * e,
                      "train_top5": 0.5}
            if val:
                record.update(val_loss=2.2 / e, val_top1=0.18 * e, val_top5=0.45)
            f.write(json.dumps(record) + "\n")
    return directory


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_one_run_two_panels_with_train_and_validation(tmp_path):
    config, epochs = curves.read_run(fake_run(tmp_path / "a"))
    fig = curves.figure([(config, epochs)])
    assert [ax.get_title() for ax in fig.axes] == ["cross-entropy loss", "top-1 accuracy"]
    for ax, key in zip(fig.axes, ("loss", "top1")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"train", "val"}
        assert list(lines["val"].get_ydata()) == [r[f"val_{key}"] for r in epochs]
        assert list(lines["train"].get_xdata()) == [1, 2, 3]
    assert "α=0.25" in fig.get_suptitle() and "data=cifar100" in fig.get_suptitle()
    curves.save(fig, tmp_path / "a.png")
    width, height = png_size(tmp_path / "a.png")
    assert width > 800 and height > 300


def test_several_runs_overlaid_with_legends_from_their_configs(tmp_path):
    runs = [fake_run(tmp_path / f"r{i}", seed=i, alpha=a, val=False)
            for i, a in enumerate((0.25, 1.0))]
    result = run(["mobilenet_jax.plot", *map(str, runs), "--out", "o.png", "--metric", "top5"],
                 tmp_path)
    assert result.returncode == 0, result.stderr
    assert png_size(tmp_path / "o.png")[0] > 400
    fig = curves.figure([curves.read_run(r) for r in runs], ("top5",))
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "α=0.25 seed=0 train", "α=1.0 seed=1 train"]


def test_the_last_record_of_an_epoch_wins_and_cut_lines_are_skipped(tmp_path):
    run_dir = fake_run(tmp_path / "a", epochs=2)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 0.1}) + "\n" + '{"epoch": 3, "tra')
    _, epochs = curves.read_run(run_dir)
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[1]["train_loss"] == 0.1


def test_plot_bad_input_is_one_line(tmp_path):
    (tmp_path / "nothing").mkdir()
    assert_one_line_error(run(["mobilenet_jax.plot", "nothing", "--out", "o.png"], tmp_path),
                          "nothing", "metrics.jsonl")
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_text("")
    assert_one_line_error(run(["mobilenet_jax.plot", "fresh", "--out", "o.png"], tmp_path),
                          "no finished epoch")
    fake_run(tmp_path / "a")
    (tmp_path / "file").write_text("")
    assert_one_line_error(run(["mobilenet_jax.plot", "a", "--out", "file/o.png"], tmp_path),
                          "--out")
    assert_one_line_error(run(["mobilenet_jax.plot", "a", "--out", "o.png", "--metric", "f1"],
                              tmp_path), "f1")


def test_train_draws_curves_after_each_epoch(subset_dir, tmp_path):
    train(tiny_config(subset_dir, tmp_path))
    assert png_size(tmp_path / "curves.png")[0] > 800
    assert not list(tmp_path.glob(".curves.png.tmp"))


def test_a_failing_redraw_does_not_stop_training(tmp_path):
    lines = []
    writer = curves.CurvesWriter(tmp_path / "missing", lines.append)
    writer.update()
    writer.close()
    assert len(lines) == 1 and "training goes on" in lines[0]
