"""The persistent compilation cache: on by default for every command, shared by the processes
that compile the same steps, and never a reason to fail."""
import os

import jax
import pytest

from helpers import assert_one_line_error, run, xla_flags
from mobilenet_jax import process

HIT = "Persistent compilation cache hit for 'jit_eval_step'"


def evaluate(folder_run, cache, *flags, **env):
    """evaluate in a new process whose only compilation cache is what `flags` and `env` say,
    logging its compiles (and so its cache hits)."""
    clean = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    result = run(["mobilenet_jax.evaluate", "--ckpt", str(folder_run), *flags], folder_run,
                  env={**clean, "JAX_LOG_COMPILES": "1", **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return result, sorted(cache.glob("*-cache")) if cache.exists() else []


@pytest.fixture
def cache_settings():
    """This process's cache settings, restored after the test."""
    saved = jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_enable_compilation_cache", saved[0])
    jax.config.update("jax_compilation_cache_dir", saved[1])


@pytest.fixture
def other_jaxlib(tmp_path):
    """A sitecustomize that makes a process's jaxlib report another version to JAX's cache
    keys (as a cache written by another jaxlib looks to this one)."""
    (tmp_path / "other_jaxlib").mkdir()
    (tmp_path / "other_jaxlib" / "sitecustomize.py").write_text(
        "import jax._src.cache_key as cache_key\n"
        "assert hasattr(cache_key, 'jaxlib_version_str')\n"
        "cache_key.jaxlib_version_str = '0.0.1-another'\n")
    return tmp_path / "other_jaxlib"


def test_the_default_is_a_per_user_directory_and_off_writes_nothing(folder_run, tmp_path):
    home = tmp_path / "xdg"
    _, entries = evaluate(folder_run, home / "mobilenet_jax" / "jax", XDG_CACHE_HOME=str(home))
    assert entries
    off = tmp_path / "off"
    _, entries = evaluate(folder_run, off, "--compile-cache", "off",
                          JAX_COMPILATION_CACHE_DIR=str(off))
    assert entries == []


def test_an_unusable_directory_is_one_line_or_turns_the_default_off(
        folder_run, tmp_path, monkeypatch, capsys, cache_settings):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result = run(["mobilenet_jax.evaluate", "--ckpt", str(folder_run),
                  "--compile-cache", str(not_a_directory / "cache")], tmp_path)
    assert_one_line_error(result, "--compile-cache", "pass a writable directory or off")

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_directory))
    assert process.use_compile_cache(None) is None
    assert not jax.config.jax_enable_compilation_cache
    assert "compilation cache off" in capsys.readouterr().err


def test_the_next_process_loads_its_own_compiled_steps_and_compiles_damaged_ones_again(
        folder_run, tmp_path, other_jaxlib):
    """A second process loads the steps the first compiled; one with 8 devices or another
    jaxlib loads none of them; entries damaged on disk are compiled again without a word."""
    cache = tmp_path / "cache"
    first, entries = evaluate(folder_run, cache, "--compile-cache", str(cache))
    assert any(e.name.startswith("jit_eval_step-") for e in entries), entries
    assert HIT not in first.stderr
    second, _ = evaluate(folder_run, cache, "--compile-cache", str(cache))
    assert HIT in second.stderr
    assert second.stdout == first.stdout
    eight_devices, _ = evaluate(folder_run, cache, "--compile-cache", str(cache),
                                **xla_flags("--xla_force_host_platform_device_count=8"))
    assert HIT not in eight_devices.stderr
    other_version, _ = evaluate(folder_run, cache, "--compile-cache", str(cache),
                                PYTHONPATH=str(other_jaxlib))
    assert HIT not in other_version.stderr and other_version.stdout == first.stdout
    for entry in entries:
        entry.write_bytes(b"not a compiled program")
    damaged, _ = evaluate(folder_run, cache, "--compile-cache", str(cache))
    assert damaged.stdout == first.stdout
    assert HIT not in damaged.stderr
    assert "persistent compilation cache" not in damaged.stderr.lower()
