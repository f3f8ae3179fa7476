"""The fused gradient kernels of the threshold-and-sample op: the one list of them.

Each :class:`Kernel` names a per-element function of ``csrc/elementwise.h``, says which of the
op's arguments it reads, and carries its pure-PyTorch reference. Everything else reads this list:

- the native build generates the C++ and CUDA dispatch from it (:func:`header`, written into the
  build as ``kernel_list.h``);
- the pure-PyTorch backend runs the references (``_fallback.py``);
- both backends' argument checks accept exactly these names (``_arguments.py`` and, through the
  generated header, ``csrc/op_arguments.h``);
- the op's autograd formula saves what a kernel reads and nothing else (``_ops.py``);
- an :class:`~binary_neurons.Estimator` runs in the fused backward by naming a kernel here
  (its ``kernel`` attribute).

So a new fused estimator is a per-element function in ``csrc/elementwise.h``, with the signature
``T f(T g, T a, const KernelArgs<T>& args, T u)``, and one entry below. The docs page "Writing an
estimator" walks through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = [
    "KERNELS", "Kernel", "KernelArguments", "get_kernel", "header", "rounded_clip_value",
    "sigmoid_derivative",
]

# What a kernel may read besides the incoming gradient.
READABLE = ("input", "slope", "clip_value", "tau", "uniform")


class KernelArguments(NamedTuple):
    """What a reference receives besides ``g`` and ``a`` (both in the opmath type)."""

    slope: Tensor  # 0-dim, opmath type
    clip_value: float  # rounded to the input's dtype, as the native kernels round it
    tau: Optional[Tensor]  # 0-dim, opmath type, for kernels that read it
    uniform: Optional[Tensor]  # the forward's uniforms, for kernels that read them


@dataclass(frozen=True)
class Kernel:
    """One fused gradient kernel.

    Attributes:
        name: what an estimator's ``kernel`` attribute and the op's ``kernel`` argument say.
        function: the per-element function in ``csrc/elementwise.h``.
        reads: which of :data:`READABLE` it reads. ``"uniform"`` means the forward's uniforms,
            drawn again from the seed (so it needs a stochastic neuron); ``"tau"`` a temperature
            passed to the op. What a kernel does not read it receives as 0 on every backend.
            Reading nothing means being the identity: autograd and the native backward then
            pass ``g`` through without running the kernel.
        reference: ``reference(g, a, arguments) -> gradient``, the same function in PyTorch, in
            the opmath type; the pure-PyTorch backend runs it, and tests compare the native
            kernels with it bit for bit.
    """

    name: str
    function: str
    reads: frozenset
    reference: Callable[[Tensor, Tensor, KernelArguments], Tensor]

    def __post_init__(self) -> None:
        unknown = set(self.reads) - set(READABLE)
        if unknown:
            raise ValueError(f"kernel {self.name!r} reads unknown arguments {sorted(unknown)}")
        # Autograd and the native backward pass g straight through for a kernel that reads
        # nothing, without running it: only the identity may.
        if not self.reads and self.function != "identity_grad":
            raise ValueError(
                f"kernel {self.name!r} reads nothing, so it is taken to be the identity; a "
                "kernel that computes something from g alone must read 'input' too"
            )


def sigmoid_derivative(input: Tensor, slope: Tensor | float) -> Tensor:
    """``s * sigmoid(s a) * (1 - sigmoid(s a))``, in the dtype of ``input``.

    As ``s e / (1 + e)^2`` with ``e = exp(-|s a|)``: no cancellation near p = 1, and the tail
    far from 0 stays a (subnormal) positive number until the true value underflows.
    """
    e = torch.exp(-(input * slope).abs())
    return slope * (e / (1 + e).square())


def rounded_clip_value(clip_value: float, dtype: torch.dtype) -> float:
    """The clip value as the kernels compare with it: rounded to the input's dtype."""
    return float(torch.tensor(clip_value, dtype=torch.float64).to(dtype))


def _identity(g: Tensor, a: Tensor, arguments: KernelArguments) -> Tensor:
    return g


def _sigmoid(g: Tensor, a: Tensor, arguments: KernelArguments) -> Tensor:
    return g * sigmoid_derivative(a, arguments.slope)


def _clipped(g: Tensor, a: Tensor, arguments: KernelArguments) -> Tensor:
    return torch.where(a.abs() <= arguments.clip_value, g, 0)


def _gumbel(g: Tensor, a: Tensor, arguments: KernelArguments) -> Tensor:
    slope, tau = arguments.slope, arguments.tau
    z = (a * slope - torch.logit(arguments.uniform)) / tau
    return g * ((slope / tau) * sigmoid_derivative(z, 1.0))


#: The fused kernels by name.
KERNELS: dict[str, Kernel] = {
    kernel.name: kernel
    for kernel in (
        # g: the straight-through estimator.
        Kernel("identity", "identity_grad", frozenset(), _identity),
        # g s sigmoid(s a) (1 - sigmoid(s a)): sigmoid-adjusted (and slope-annealed).
        Kernel("sigmoid", "sigmoid_grad", frozenset({"input", "slope"}), _sigmoid),
        # g 1[|a| <= clip_value]: clipped straight-through.
        Kernel("clipped", "clipped_grad", frozenset({"input", "clip_value"}), _clipped),
        # g (s / tau) q (1 - q), q = sigmoid((s a - logit u) / tau): binary Gumbel.
        Kernel(
            "gumbel", "gumbel_grad", frozenset({"input", "slope", "tau", "uniform"}), _gumbel
        ),
    )
}


def names() -> str:
    """The kernel names as the op's error messages list them: ``'a', 'b' or 'c'``."""
    quoted = [f"'{name}'" for name in KERNELS]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def get_kernel(op: str, name: str) -> Kernel:
    """The kernel called ``name``, or the op's ``ValueError`` (worded as the native one)."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"{op}: unknown kernel '{name}'; expected {names()}") from None


def header() -> str:
    """The C++ form of :data:`KERNELS` (``kernel_list.h``), which the native build generates:
    one struct per kernel, and ``BN_FOR_EACH_KERNEL(X)`` calling ``X`` with each of them."""
    lines = [
        "// Generated by binary_neurons._build from the kernel list in",
        "// binary_neurons/_kernel_list.py; do not edit. Included after elementwise.h, whose",
        "// functions it names.",
        "#pragma once",
        "",
        "namespace binary_neurons {",
        "",
    ]
    for kernel in KERNELS.values():
        flags = "\n".join(
            f"  static constexpr bool kReads{_camel(what)} = {str(what in kernel.reads).lower()};"
            for what in READABLE
        )
        lines += [
            f"struct Kernel_{kernel.name} {{",
            f'  static constexpr const char* kName = "{kernel.name}";',
            f"  static constexpr bool kIdentity = {str(not kernel.reads).lower()};",
            flags,
            "  template <typename T>",
            "  BN_INLINE static T gradient(T g, T a, const KernelArgs<T>& args, T u) {",
            f"    return {kernel.function}(g, a, args, u);",
            "  }",
            "};",
            "",
        ]
    each = " ".join(f"X(Kernel_{name})" for name in KERNELS)
    lines += [
        f"#define BN_FOR_EACH_KERNEL(X) {each}",
        f'#define BN_KERNEL_NAMES "{names()}"',
        "",
        "}  // namespace binary_neurons",
        "",
    ]
    return "\n".join(lines)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
