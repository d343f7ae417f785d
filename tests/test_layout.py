"""The layout's rules: the commands call the library and never each other; the library never
imports a command, the flag module or the process settings; no import cycle; the Config
without Flax or TensorFlow; library calls leave the process as they found it."""
import ast
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys

import jax

from mobilenet_jax import Config
from mobilenet_jax.core import checkpoint, steps
from mobilenet_jax.core.parallel import Devices
from helpers import REPO

PACKAGE = REPO / "mobilenet_jax"
COMMANDS = {"train", "evaluate", "predict", "export", "benchmark", "plot", "summary"}
EDGES = {"cli", "process"}  # what only the commands may import


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: pathlib.Path) -> set:
    """The package's modules that `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("mobilenet_jax."):
                name = name[len("mobilenet_jax."):]
                if name in MODULES:
                    found.add(name)
    return found


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def test_commands_and_edges_are_imported_only_where_they_may_be():
    for name, targets in GRAPH.items():
        if name in COMMANDS:
            assert not targets & COMMANDS, (name, targets & COMMANDS)
        elif name not in EDGES:
            assert not targets & (COMMANDS | EDGES), (name, targets & (COMMANDS | EDGES))


def test_no_import_cycle():
    done, path = set(), []

    def visit(name):
        assert name not in path, " -> ".join(path + [name])
        if name in done:
            return
        path.append(name)
        for target in GRAPH[name]:
            visit(target)
        path.pop()
        done.add(name)

    for name in GRAPH:
        visit(name)


def test_the_config_imports_neither_flax_nor_tensorflow():
    probe = ("import sys, mobilenet_jax.config\n"
             "print(sorted(m for m in ('flax', 'tensorflow', 'tensorflow_datasets')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


def process_state():
    from absl import logging as absl_logging
    return (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
            sys.unraisablehook, sys.excepthook, os.fstat(2).st_ino,
            logging.getLogger("asyncio").level, absl_logging.get_verbosity(),
            os.environ.get("TF_CPP_MIN_LOG_LEVEL"), os.environ.get("TF_ENABLE_ONEDNN_OPTS"))


def test_library_calls_leave_the_process_as_they_found_it(tmp_path):
    """Saving, restoring and failing to restore a checkpoint (where orbax's noise once made
    the library redirect stderr and replace hooks) change no handler, hook, descriptor or
    log setting."""
    before = process_state()
    config = Config(width_multiplier=0.05, num_classes=3)
    training = steps.build(config)
    devices = Devices(1)
    state = training.new_state(jax.random.key(0), devices)
    saved = checkpoint.Checkpoints(tmp_path / "checkpoints", keep=1, keep_best=False)
    saved.save(state, config, {"step": 0, "rng": [0, 0]})
    saved.close()
    checkpoint.restore_step(tmp_path / "checkpoints" / "0", training.abstract_state(devices))
    for f in (tmp_path / "checkpoints" / "0" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0garbage")
    try:
        checkpoint.restore_step(tmp_path / "checkpoints" / "0", training.abstract_state(devices))
    except checkpoint.CheckpointError:
        pass
    assert process_state() == before


def test_the_readme_layout_names_every_module_and_no_other():
    readme = (REPO / "README.md").read_text()
    tree = readme.split("## Layout", 1)[1].split("```")[1].split("\ntests/", 1)[0]
    named = set(re.findall(r"[\w]+\.py", tree))
    modules = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), "modules the README's layout does not name"
    assert named - modules == set(), "names in the README's layout that are no module"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(re.findall(r"^  (\w+)/", tree, re.M))


def test_the_readme_layout_names_test_modules_that_exist():
    tree = (REPO / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    tests_entry = tree.split("\ntests/", 1)[1].split("\nexperiments/", 1)[0]
    areas = re.search(r"\(([a-z,\s]+), \.\.\.\)", tests_entry).group(1).split(",")
    areas = [area.strip() for area in areas]
    named = {f"test_{area}.py" for area in areas} | set(re.findall(r"\w+\.py", tests_entry))
    missing = {name for name in named if not (REPO / "tests" / name).exists()}
    assert len(areas) >= 5 and not missing, missing
