"""Getting the native kernels: compiled on first import, cached, locked, refused, fallen back.

Each test imports the package in a fresh Python process with its own cache directory and
environment, so the outcome does not depend on the backend of the process running the tests.
Only ``fresh_build`` and the ahead-of-time wheel test compile (about 30 s each); the other tests
copy that build or hide the compiler.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from binary_neurons import _build, _cache

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]

# Imports the package and prints, as one JSON line on stdout, its backend_info, the warnings
# the import raised, and whether the op runs forward and backward.
_PROBE = """
import dataclasses, json, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import binary_neurons
from binary_neurons.functional import stochastic_binary
a = torch.randn(1000, requires_grad=True)
stochastic_binary(a).sum().backward()
print(json.dumps({
    "info": dataclasses.asdict(binary_neurons.backend_info()),
    "warnings": [str(w.message) for w in caught],
    "ran": bool(a.grad is not None and a.grad.abs().sum() > 0),
}))
"""


def _env(cache: Path, **extra: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BINARY_NEURONS_") and key not in ("CXX", "TORCH_CUDA_ARCH_LIST")
    }
    env[_cache.CACHE_ENV] = str(cache)
    env.update(extra)
    return env


def _start(cache: Path, code: str = _PROBE, cwd: Path = ROOT, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], env=_env(cache, **extra), cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _probe(cache: Path, code: str = _PROBE, cwd: Path = ROOT, **extra: str) -> dict:
    process = _start(cache, code, cwd, **extra)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    *printed, last = stdout.strip().splitlines()
    return {**json.loads(last), "printed": printed, "stderr": stderr}


def _hidden_compiler(tmp_path: Path) -> dict:
    """Environment in which no C++ compiler can be found: PATH holds one empty directory."""
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty)}


def _builds(cache: Path) -> list[Path]:
    return sorted(path for path in cache.iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two processes importing the package at once with an empty cache."""
    cache = tmp_path_factory.mktemp("cache")
    processes = [_start(cache) for _ in range(2)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
        results.append({**json.loads(stdout.strip().splitlines()[-1]), "stderr": stderr})
    return cache, results


def test_concurrent_first_imports_compile_once(fresh_build):
    cache, results = fresh_build
    for result in results:
        assert result["info"]["devices"]["cpu"] == "native"
        assert result["ran"] and result["warnings"] == []
    compiled = [r for r in results if "compiled now" in r["info"]["reasons"]["cpu"]]
    waited = [r for r in results if "loaded from the cache" in r["info"]["reasons"]["cpu"]]
    assert len(compiled) == 1 and len(waited) == 1
    # The compiling process says so in one line; the other says it waits, in one line.
    [line] = compiled[0]["stderr"].strip().splitlines()
    assert line.startswith("binary_neurons: compiling the native CPU kernels for torch ")
    [line] = waited[0]["stderr"].strip().splitlines()
    assert line.startswith("binary_neurons: waiting for another process to finish compiling")
    # One finished build and its lock file; no leftovers of the work.
    [build] = _builds(cache)
    assert sorted(path.name for path in cache.iterdir()) == [build.name, build.name + ".lock"]
    assert sorted(path.name for path in build.iterdir()) == sorted(
        [_build.LIBRARY_FILE, _build.RECORD, _build.LOG]
    )
    record = json.loads((build / _build.RECORD).read_text())
    assert record["fingerprint"] == _build.fingerprint(cuda=False)
    assert results[0]["info"]["library"] == str(build / _build.LIBRARY_FILE)
    assert compiled[0]["info"]["log"] == str(build / _build.LOG)


def test_warm_import_is_silent(fresh_build, tmp_path):
    cache, _ = fresh_build
    # Compiler hidden: a warm import must not need it.
    result = _probe(cache, **_hidden_compiler(tmp_path))
    assert result["stderr"] == "" and result["warnings"] == []
    assert result["info"]["reasons"]["cpu"].startswith("native kernels loaded from the cache")


def test_build_command_reports_where_and_how_long(fresh_build):
    cache, _ = fresh_build
    [build] = _builds(cache)
    out = subprocess.run(
        [sys.executable, "-m", "binary_neurons", "build"], env=_env(cache), cwd=ROOT,
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.startswith("binary_neurons: CPU kernels for torch ")
    assert " s on 20" in out and str(build) in out


def test_build_for_another_torch_is_not_loaded(fresh_build, tmp_path):
    source, _ = fresh_build
    [build] = _builds(source)
    cache = tmp_path / "cache"
    copied = cache / build.name
    shutil.copytree(build, copied)
    record = json.loads((copied / _build.RECORD).read_text())
    record["fingerprint"]["torch"] = "2.0.0"
    (copied / _build.RECORD).write_text(json.dumps(record))
    # Were it loaded, this would fail loudly.
    (copied / _build.LIBRARY_FILE).write_bytes(b"not a library")
    result = _probe(cache, **_hidden_compiler(tmp_path))
    assert result["info"]["devices"]["cpu"] == "python" and result["ran"]
    [warning] = result["warnings"]
    assert f"ignored {copied}: built for another torch (torch 2.0.0" in warning
    assert "loading" not in warning


def test_no_compiler_falls_back_with_one_warning_and_native_raises(tmp_path):
    cache = tmp_path / "cache"
    result = _probe(cache, **_hidden_compiler(tmp_path))
    assert result["info"]["devices"] == {"cpu": "python", "cuda": "python"}
    assert result["ran"]
    [warning] = result["warnings"]
    assert "no C++ compiler was found ('c++' on PATH)" in warning
    assert "BINARY_NEURONS_BACKEND=python" in warning  # how to silence it
    assert not cache.exists() or _builds(cache) == []

    strict = subprocess.run(
        [sys.executable, "-c", "import binary_neurons"], cwd=ROOT, capture_output=True, text=True,
        check=False,
        env=_env(cache, BINARY_NEURONS_BACKEND="native", **_hidden_compiler(tmp_path)),
    )
    assert strict.returncode != 0
    assert "BINARY_NEURONS_BACKEND=native, but the native kernels are not available" in (
        strict.stderr
    )
    assert "no C++ compiler was found" in strict.stderr


def test_python_backend_compiles_nothing(tmp_path):
    cache = tmp_path / "cache"
    result = _probe(cache, BINARY_NEURONS_BACKEND="python")
    assert result["warnings"] == [] and result["stderr"] == ""
    assert result["info"]["reasons"]["cpu"] == (
        "pure PyTorch: disabled by BINARY_NEURONS_BACKEND=python"
    )
    assert not cache.exists()


def test_failed_compile_warns_once_with_its_log_and_is_retried_on_request(tmp_path):
    calls = tmp_path / "calls"
    compiler = tmp_path / "broken-c++"
    # Answers version queries like the real compiler, and fails every compile.
    real = shutil.which("c++")
    compiler.write_text(
        f'#!/bin/sh\ncase "$1" in --version|-v|-dump*) exec {real} "$@";; esac\n'
        f"echo x >> {calls}\necho 'error: broken compiler' >&2\nexit 1\n"
    )
    compiler.chmod(0o755)
    cache = tmp_path / "cache"

    first = _probe(cache, CXX=str(compiler))
    assert first["info"]["devices"]["cpu"] == "python" and first["ran"]
    [warning] = first["warnings"]
    log = Path(first["info"]["log"])
    assert f"compiling the native kernels failed (exit status 1; log: {log})" in warning
    assert log.is_file() and "error: broken compiler" in log.read_text()
    tries = calls.read_text().count("x")

    second = _probe(cache, CXX=str(compiler))
    [warning] = second["warnings"]
    assert "failed before" in warning and "python -m binary_neurons build" in warning
    assert calls.read_text().count("x") == tries  # not compiled again

    retry = subprocess.run(
        [sys.executable, "-m", "binary_neurons", "build"], env=_env(cache, CXX=str(compiler)),
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert retry.returncode == 1
    assert "compiling the native kernels failed" in retry.stderr
    assert calls.read_text().count("x") > tries


# A process that believes it has one CUDA device of compute capability 9.0.
_FAKE_CUDA = """
import torch
torch.cuda.is_available = lambda: True
torch.cuda._is_compiled = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_capability = lambda device=None: (9, 0)
torch.version.cuda = "13.0"
"""


def test_cuda_without_nvcc_uses_native_cpu_and_warns_once(fresh_build, tmp_path):
    source, _ = fresh_build
    [build] = _builds(source)
    cache = tmp_path / "cache"
    shutil.copytree(build, cache / build.name)
    missing = tmp_path / "no-cuda"
    result = _probe(cache, _FAKE_CUDA + _PROBE, CUDA_HOME=str(missing))
    assert result["info"]["devices"] == {"cpu": "native", "cuda": "python"}
    [warning] = result["warnings"]
    assert f"cuda: nvcc was not found (looked for {missing}/bin/nvcc)" in warning
    assert "install a CUDA 13.0 toolkit" in warning
    assert result["info"]["reasons"]["cuda"].startswith("pure PyTorch: nvcc was not found")

    strict = subprocess.run(
        [sys.executable, "-c", _FAKE_CUDA + "import binary_neurons"], cwd=ROOT,
        env=_env(cache, CUDA_HOME=str(missing), BINARY_NEURONS_BACKEND="native"),
        capture_output=True, text=True, check=False,
    )
    assert strict.returncode != 0 and "nvcc was not found" in strict.stderr


# ---------------------------------------------------------------------------------------------
# In-process pieces: where builds are looked for, CUDA architectures.


def test_ahead_of_time_build_is_used_only_for_its_torch(fresh_build, tmp_path, monkeypatch):
    source, _ = fresh_build
    [build] = _builds(source)
    shutil.copytree(build, tmp_path / "aot" / build.name)
    monkeypatch.setattr(_cache, "AHEAD_OF_TIME_DIR", tmp_path / "aot")
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "empty-cache"))
    found = _cache.find(None)
    assert found is not None and found.ahead_of_time
    monkeypatch.setattr(torch, "__version__", "2.12.0")
    notes = []
    assert _cache.find(None, notes) is None


def test_cache_dir_falls_back_when_home_cannot_be_written(tmp_path, monkeypatch):
    not_a_directory = tmp_path / "home"
    not_a_directory.write_text("a file, so nothing can be created under it")
    monkeypatch.delenv(_cache.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(not_a_directory))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    dirs = _cache.cache_dirs()
    assert dirs[0] == not_a_directory / ".cache" / "binary_neurons"
    assert _cache.writable_cache_dir() == dirs[1]
    assert dirs[1].parent == tmp_path / "tmp"

    monkeypatch.setenv(_cache.CACHE_ENV, str(not_a_directory / "cache"))
    with pytest.raises(_build.BuildError, match="set BINARY_NEURONS_CACHE_DIR to a writable"):
        _cache.writable_cache_dir()


@pytest.mark.parametrize(
    "archs, capability, expected",
    [
        (("8.0",), (8, 6), True),  # same major, later minor
        (("8.6",), (8, 0), False),
        (("8.0",), (9, 0), False),  # machine code does not cross majors
        (("8.0+PTX",), (9, 0), True),  # PTX does
        (("9.0+PTX",), (8, 9), False),
        (("7.5", "9.0"), (9, 0), True),
    ],
)
def test_cuda_arch_coverage(archs, capability, expected):
    assert _build.covers(archs, capability) is expected


def test_cuda_archs_to_build(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert _build.cuda_archs_for(((8, 0), (9, 0))) == ("8.0", "9.0+PTX")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5;8.0+PTX")
    assert _build.cuda_archs_for(((9, 0),)) == ("7.5", "8.0+PTX", "9.0+PTX")
    assert _build.cuda_archs_for(()) == ("7.5", "8.0+PTX")
    # Architecture- and family-specific entries (as torch's CUDA images set) build plain code.
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a 10.0f")
    assert _build.cuda_archs_for(((9, 0),)) == ("9.0", "10.0+PTX")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "sm_90")
    with pytest.raises(_build.BuildError, match="expected the form 8.6, 9.0a or 9.0"):
        _build.cuda_archs_for(())
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    with pytest.raises(_build.BuildError, match="set TORCH_CUDA_ARCH_LIST"):
        _build.cuda_archs_for(())


# ---------------------------------------------------------------------------------------------
# What is shipped.


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    """An sdist and a wheel built from it, as `python -m build` does (no network: the build
    backend comes from this environment)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    return out


def _kernel_sources() -> set[str]:
    """The recipe's sources and every header they include, transitively."""
    wanted = set(_build.CPU_SOURCES + _build.CUDA_SOURCES + _build.HEADERS)
    pending = list(wanted)
    while pending:
        name = pending.pop()
        for line in (_build.CSRC / name).read_text().splitlines():
            if line.startswith('#include "'):
                if line.split('"')[1] == _build.GENERATED:  # written into each build
                    continue
                included = os.path.normpath(str(Path(name).parent / line.split('"')[1]))
                if included not in wanted:
                    wanted.add(included)
                    pending.append(included)
    return {f"binary_neurons/csrc/{name}" for name in wanted}


def test_sdist_and_wheel_ship_the_kernel_sources(dists):
    [sdist] = dists.glob("*.tar.gz")
    [wheel] = dists.glob("*.whl")
    with tarfile.open(sdist) as archive:
        prefix = archive.getnames()[0].split("/")[0] + "/"
        in_sdist = {name.removeprefix(prefix) for name in archive.getnames()}
    assert _kernel_sources() <= in_sdist
    assert {"LICENSE", "pyproject.toml", "setup.py"} <= in_sdist
    assert not any(name.endswith((".so", ".o")) for name in in_sdist)

    assert wheel.name.endswith("-py3-none-any.whl")  # pure Python: right for every torch
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        [metadata] = [name for name in in_wheel if name.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata).decode()
    assert _kernel_sources() <= in_wheel
    assert not any(name.endswith((".so", ".o")) for name in in_wheel)
    assert "License-Expression: MIT" in metadata
    assert "Requires-Dist: torch<2.14,>=2.11" in metadata
    assert "Home-page" not in metadata and "Project-URL" not in metadata


def test_unpacked_sdist_uses_the_build_of_this_tree(dists, fresh_build, tmp_path):
    """A build's name and record hash every kernel source, so the package unpacked from the
    sdist finding the build compiled from this tree shows that it holds the same sources."""
    [sdist] = dists.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    [unpacked] = (tmp_path / "unpacked").iterdir()
    source, _ = fresh_build
    [build] = _builds(source)
    shutil.copytree(build, tmp_path / "cache" / build.name)
    probe = "import binary_neurons; print(binary_neurons.__file__)\n" + _PROBE
    result = _probe(tmp_path / "cache", probe, cwd=unpacked, **_hidden_compiler(tmp_path))
    assert result["printed"] == [str(unpacked / "binary_neurons" / "__init__.py")]
    assert result["info"]["reasons"]["cpu"].startswith("native kernels loaded from the cache")
    assert result["warnings"] == [] and result["ran"]


@pytest.mark.slow
def test_ahead_of_time_wheel_loads_its_build_without_a_compiler(tmp_path):
    out = tmp_path / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
         "-w", str(out), str(ROOT)],
        env=_env(tmp_path / "unused-cache", BINARY_NEURONS_BUILD_EXT="1"),
        check=True, capture_output=True, text=True,
    )
    [wheel] = out.glob("*.whl")
    assert not wheel.name.endswith("-none-any.whl")  # it holds a compiled library now
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    [build] = (site / "binary_neurons" / "_kernels").iterdir()
    assert json.loads((build / _build.RECORD).read_text())["fingerprint"] == (
        _build.fingerprint(cuda=False)
    )
    result = _probe(tmp_path / "cache", cwd=site, **_hidden_compiler(tmp_path))
    assert result["warnings"] == [] and result["ran"]
    assert result["info"]["reasons"]["cpu"] == (
        f"native kernels loaded from the ahead-of-time build ({build / _build.LIBRARY_FILE})"
    )
