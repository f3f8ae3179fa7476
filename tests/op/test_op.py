"""The custom op: opcheck, torch.compile, the backend switch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import binary_neurons as bn
from binary_neurons import _ops
from binary_neurons._kernel_list import KERNELS, READABLE, Kernel, header

OP = torch.ops.binary_neurons.threshold_sample.default
OP_BACKWARD = torch.ops.binary_neurons.threshold_sample_backward.default


def _samples(device):
    base = torch.randn(6, 5, dtype=torch.float32, device=device)
    seed = torch.tensor(123, dtype=torch.int64, device=device)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for estimator in ("identity", "sigmoid", "clipped"):
            for noise in (None, seed):
                a = base.to(dtype).requires_grad_()
                yield (a, torch.tensor(1.7, dtype=torch.float64), noise, estimator, 1.0)
        a = base.to(dtype).requires_grad_()
        yield (a, torch.tensor(1.7, dtype=torch.float64), seed, "gumbel", 1.0, torch.tensor(0.5))
    yield (base.t().requires_grad_(), torch.tensor(2.0), seed, "sigmoid", 1.0)
    yield (base.t().requires_grad_(), torch.tensor(2.0), seed, "gumbel", 0.0, torch.tensor(2.0))
    yield (torch.randn((), device=device), torch.tensor(2.0), seed, "sigmoid", 1.0)
    yield (torch.randn(0, 3, device=device), torch.tensor(2.0), None, "clipped", 0.5)


def test_opcheck_forward(device):
    for args in _samples(device):
        torch.library.opcheck(OP, args)


def test_opcheck_backward(device):
    a = torch.randn(6, 5, device=device)
    g = torch.randn(6, 5, device=device)
    for estimator in ("identity", "sigmoid", "clipped"):
        torch.library.opcheck(OP_BACKWARD, (g, a, torch.tensor(1.3), estimator, 0.7))
    seed = torch.tensor(5, device=device)
    torch.library.opcheck(
        OP_BACKWARD, (g, a, torch.tensor(1.3), "gumbel", 0.0, seed, torch.tensor(0.4))
    )


def test_schemas_match_the_python_definition():
    for name, schema in _ops.SCHEMAS.items():
        op = getattr(torch.ops.binary_neurons, name).default
        assert str(op._schema) == "binary_neurons::" + schema


def test_op_is_a_function_of_its_seed(device):
    a = torch.randn(1000, device=device)
    seed = torch.tensor(99, device=device)
    slope = torch.tensor(1.0)
    first = OP(a, slope, seed, "sigmoid", 1.0)
    assert torch.equal(first, OP(a, slope, seed, "sigmoid", 1.0))
    assert not torch.equal(first, OP(a, slope, torch.tensor(100, device=device), "sigmoid", 1.0))


def test_unknown_fused_estimator_in_backward():
    # Native and fallback kernels raise different exception types but the same message.
    message = (
        "threshold_sample_backward: unknown kernel 'ste'; expected 'identity', 'sigmoid', "
        "'clipped' or 'gumbel'"
    )
    with pytest.raises((RuntimeError, ValueError), match=message):
        OP_BACKWARD(torch.ones(2), torch.ones(2), torch.tensor(1.0), "ste", 1.0)


def test_backend_info():
    info = bn.backend_info()
    assert info.name in ("native", "python")
    assert set(info.devices) == {"cpu", "cuda"}
    assert set(info.reasons) == {"cpu", "cuda"} and all(info.reasons.values())
    assert str(info).startswith(f"binary_neurons backend: {info.name}")
    if info.name == "python":
        assert info.devices == {"cpu": "python", "cuda": "python"}


def _backend_in_subprocess(value: str) -> str:
    env = dict(os.environ, BINARY_NEURONS_BACKEND=value)
    code = "import binary_neurons; print(binary_neurons.backend_info().name)"
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        env=env, capture_output=True, text=True, check=True,
    )
    return result.stdout.strip() + "|" + result.stderr


def test_backend_switch_python():
    assert _backend_in_subprocess("python").startswith("python|")


def test_backend_switch_bad_value_warns_and_still_imports():
    out = _backend_in_subprocess("gpu")
    assert "BINARY_NEURONS_BACKEND='gpu' is not one of auto, native, python" in out
    assert out.split("|")[0] in ("native", "python")


class _Net(nn.Module):
    def __init__(self, neuron: nn.Module):
        super().__init__()
        self.hidden = nn.Linear(8, 16)
        self.neuron = neuron
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return self.out(self.neuron(self.hidden(x)))


def _step(model, x):
    model.zero_grad()
    y = model(x)
    y.sum().backward()
    return y.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.compile
@pytest.mark.parametrize(
    "neuron",
    [
        lambda: bn.DeterministicBinary(estimator="sigmoid", slope=2.0),
        lambda: bn.StochasticBinary(estimator="annealed"),
        lambda: bn.StochasticBinary(estimator="clipped"),
        lambda: bn.StochasticBinary(estimator=bn.GumbelStraightThrough(0.5)),
        lambda: bn.StochasticBinary(estimator="sigmoid", signed=True),
        lambda: bn.DeterministicBinary(estimator="clipped", signed=True),
    ],
    ids=["dbn-sigmoid", "sbn-annealed", "sbn-clipped", "sbn-gumbel", "sbn-signed", "dbn-signed"],
)
def test_compile_fullgraph_equals_eager(neuron, device):
    """Training mode, estimator active: outputs and gradients equal eager's.

    ``fallback_random`` makes Inductor draw the seed with the same generator as eager, so the
    stochastic neuron's samples match too.
    """
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Net(neuron()).to(device).train()
    x = torch.randn(32, 8, device=device)
    compiled = torch.compile(model, fullgraph=True)
    for _ in range(2):
        torch.manual_seed(1)
        eager_y, eager_grads = _step(model, x)
        torch.manual_seed(1)
        with inductor_config.patch(fallback_random=True):
            compiled_y, compiled_grads = _step(compiled, x)
        assert torch.equal(eager_y, compiled_y)
        for eager_grad, compiled_grad in zip(eager_grads, compiled_grads):
            torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.compile
@pytest.mark.parametrize(
    "estimator, settings, expected",
    [("annealed", {}, ("slopes", [1.331])),
     ("gumbel", {"temperature_factor": 0.5}, ("temperatures", [0.125]))],
    ids=["slope-anneals", "temperature-cools"],
)
def test_compile_no_recompile_when_annealing(estimator, settings, expected):
    torch._dynamo.reset()
    model = _Net(bn.StochasticBinary(estimator=estimator))
    annealer = bn.SlopeAnnealer(model, **settings)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(4, 8)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            compiled(x).sum().backward()
            annealer.step()
    name, values = expected
    assert getattr(annealer, name) == pytest.approx(values)


# ---------------------------------------------------------------------------------------------
# One list of kernels.

_CSRC = Path(bn.__file__).parent / "csrc"
_LIBRARY = Path(bn.__file__).parent


def test_kernel_names_are_written_once():
    # The kernel list (binary_neurons/_kernel_list.py) is the only place that names a kernel: the
    # C++ and CUDA dispatch, both backends' argument checks and the autograd formula read it.
    # Estimators name theirs in their class.
    for path in [*_CSRC.rglob("*.cpp"), *_CSRC.rglob("*.cu"), *_CSRC.rglob("*.h")]:
        text = path.read_text()
        for name in KERNELS:
            assert f'"{name}"' not in text, f'{path.name} names the kernel "{name}"'
    # In Python, the code (not the docs) outside the list and the estimators names none of the
    # kernels that are not also a layer's default ("sigmoid") or the forward-only "identity".
    allowed = {"_kernel_list.py", "estimators.py"}
    for path in _LIBRARY.glob("*.py"):
        if path.name in allowed:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }
        named = {
            node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and id(node) not in docstrings
            and node.value in ("clipped", "gumbel")
        }
        assert not named, f"{path.name} names the kernels {sorted(named)}"


def test_generated_header_follows_the_list():
    text = header()
    for kernel in KERNELS.values():
        assert f'static constexpr const char* kName = "{kernel.name}";' in text
        assert f"return {kernel.function}(g, a, args, u);" in text
        for what in READABLE:
            flag = str(what in kernel.reads).lower()
            assert f"kReads{what.title().replace('_', '')} = {flag};" in text
        assert f"T {kernel.function}(T g, T" in (_CSRC / "elementwise.h").read_text()
    assert "#define BN_FOR_EACH_KERNEL(X) " + " ".join(f"X(Kernel_{n})" for n in KERNELS) in text


def test_a_kernel_that_reads_nothing_must_be_the_identity():
    with pytest.raises(ValueError, match="reads nothing"):
        Kernel("half", "half_grad", frozenset(), lambda g, a, arguments: 0.5 * g)
    with pytest.raises(ValueError, match="reads unknown arguments"):
        Kernel("odd", "odd_grad", frozenset({"noise"}), lambda g, a, arguments: g)
