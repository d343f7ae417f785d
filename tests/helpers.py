"""What the tests share besides fixtures (those are in conftest.py): running a command in
this process or a fresh one, the loop tests' tiny config, a small image folder, one-line error
checks, XLA's optimisations switched on for a block."""
import contextlib
import dataclasses
import fcntl
import importlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import traceback

import numpy as np
from PIL import Image, ImageDraw

REPO = pathlib.Path(__file__).resolve().parents[1]


def xla_flags(*flags: str) -> dict:
    """The environment entry for a test process with these XLA flags added to the suite's."""
    return {"XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()}


# These flags (with the default recipe: 5 epochs are its warm-up), then evaluate on the test
# split, reached 49.3 %, 47.0 % and 48.2 % test top-1 on the 6 classes with seeds 0, 1, 2
# (experiments/suite_time/README.md). Chance is 1/6 = 16.7 %; 40 % fails a model that does
# not learn and leaves a margin for other machines' rounding.
# One checkpoint, at the end: what is trained does not depend on how often it is saved.
E2E_FLAGS = ["--alpha", "0.25", "--epochs", "5", "--batch-size", "64", "--val-fraction", "0",
             "--checkpoint-every", "5", "--offline", "--no-progress"]


MIN_TEST_TOP1 = 0.40


def tiny_config(data_dir, workdir, **kw):
    """The loop tests' run: equal configs share their compiled steps (in one process, and
    through the compilation cache across processes). 300 images of the subset: 30 for
    validation, 270 for training = 8 steps of 32 per epoch. 2 batches recompute the BatchNorm
    statistics: the mechanism at a tenth of the default's cost (what the default gives:
    test_own_data.test_a_short_run_evaluates_as_it_trained)."""
    from mobilenet_jax import Config
    return Config(**{**dict(width_multiplier=0.1, batch_size=32, split="train[:10%]",
                            val_fraction=0.1, epochs=2, data_dir=data_dir, offline=True,
                            progress=False, workdir=str(workdir), keep=2, precise_bn_batches=2),
                     **kw})


def flags_of(config) -> dict:
    """The flags that make `config`: its fields that differ from the defaults."""
    from mobilenet_jax import Config
    default = Config().flat()
    return {name: value for name, value in config.flat().items() if value != default[name]}


def train(config, num_classes_from_data=False, **kwargs) -> dict:
    """The run of `config` planned as `train` plans the flags that make it, then trained."""
    from mobilenet_jax.training import loop, plan
    return loop.train(plan.resolve(flags_of(config), num_classes_from_data), **kwargs)


def run(args, cwd, timeout=600, env=None, process=False):
    """`python -m <args>` in `cwd`: its exit code, stdout and stderr. In this process
    (`main(argv)`, SystemExit caught) unless `process` or `env` asks for a real one, for what
    only a process shows: its start-up, its environment, what its threads print up to its
    exit."""
    if process or env is not None:
        return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, env=env)
    out, err, code = io.StringIO(), io.StringIO(), 0
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                importlib.import_module(args[0]).main(list(args[1:]))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # noqa: BLE001 - as the interpreter would report it
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def start_in_one_process(commands, cwd, env):
    """Start one new process with the environment `env` (what only a fresh process has: a
    module that cannot be imported, another device count) that runs each `python -m <args>`
    of `commands` in turn, as `run` runs them; `finished` waits for it."""
    script = ("import json, sys\nsys.path.insert(0, sys.argv[1])\nfrom helpers import run\n"
              "results = [run(args, '.') for args in json.loads(sys.argv[2])]\n"
              "print(json.dumps([[r.returncode, r.stdout, r.stderr] for r in results]))")
    process = subprocess.Popen([sys.executable, "-c", script, str(REPO / "tests"),
                                json.dumps([list(map(str, args)) for args in commands])],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, commands


def finished(started, timeout=600, quiet=False) -> list:
    """A CompletedProcess for each command of a `start_in_one_process`. `quiet`: the process
    wrote nothing to its own stderr (what the commands' threads or the C++ libraries print
    outside a command, up to the exit)."""
    process, commands = started
    try:
        out, err = process.communicate(timeout=timeout)
    finally:  # whatever happened, leave no process behind
        process.kill()
        process.wait()
    assert process.returncode == 0, err[-3000:]
    assert not (quiet and err), err[-3000:]
    return [subprocess.CompletedProcess(args, *result) for args, result in
            zip(commands, json.loads(out.strip().splitlines()[-1]))]


def run_in_one_process(commands, cwd, env, timeout=600, quiet=False) -> list:
    return finished(start_in_one_process(commands, cwd, env), timeout, quiet)


@contextlib.contextmanager
def optimized():
    """XLA's optimisations on meanwhile, as outside the tests."""
    import jax
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("error:", "python -m")) and "error" in last
    for fragment in fragments:
        assert fragment in last, last


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """`build(directory)` once per pytest run, by whichever test process asks first; the
    others wait for it and share the directory (read it; write only files of their own)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's
    directory = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / ".built").exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            (directory / ".built").touch()
    return directory


CLASSES = ("circles", "squares", "stripes")


def shape_image(rng, kind: int) -> Image.Image:
    """A light shape on a dark background at a random odd size: a circle, a square or stripes."""
    w, h = (int(v) for v in rng.integers(19, 91, 2))
    image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 80, 3)))
    draw, s = ImageDraw.Draw(image), min(w, h) / 3
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    box = [w / 2 - s, h / 2 - s, w / 2 + s, h / 2 + s]
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    else:
        for x in range(0, w, 6):
            draw.line([x, 0, x, h], fill=colour, width=2)
    return image


def write_folder(root):
    """3 classes, 40 train / 12 test images each, odd sizes, PNG and JPEG, one grayscale."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 12)):
        for kind, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = shape_image(rng, kind)
                if split == "train" and kind == 2 and i == 0:
                    image = image.convert("L")
                image.save(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}")
