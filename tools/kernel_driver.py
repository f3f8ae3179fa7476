"""Calls every kernel of the threshold-and-sample op on awkward inputs, for compute-sanitizer.

Every dtype; sizes around the kernels' vector widths and block boundaries; storage offsets that
break 16-byte alignment; transposed, strided and channels_last views; empty and 0-dim tensors;
slope and seed on the host and on the device. Where the native kernels run on both the CPU and
this device, each result is also compared bit for bit with the CPU kernel's.

Run under the sanitizer with the caching allocator off, so that an out-of-bounds access falls
outside any allocation::

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        python tools/kernel_driver.py
    python tools/kernel_driver.py --device cpu          # the same calls on the CPU
"""

from __future__ import annotations

import argparse
import itertools

import torch

import binary_neurons
from binary_neurons._kernel_list import KERNELS

threshold_sample = torch.ops.binary_neurons.threshold_sample.default
threshold_sample_backward = torch.ops.binary_neurons.threshold_sample_backward.default

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SIZES = (0, 1, 2, 3, 5, 7, 8, 9, 255, 257, 1023, 4097, 65_539)
QUICK_SIZES = (0, 1, 3, 9, 257)


def _views(size: int, dtype: torch.dtype, device: str):
    """(name, tensor) pairs of `size` elements (or about that many) in different layouts."""
    base = torch.randn(size + 3, dtype=torch.float64).mul_(4).to(dtype).to(device)
    yield "contiguous", base[:size]
    yield "offset 1", base[1 : size + 1]  # misaligned for 16-byte vector access
    yield "offset 3", base[3 : size + 3]
    yield "every 2nd", base[: size + 3 : 2]
    if size >= 4:
        rows = size // 4
        yield "transposed", base[: rows * 4].view(rows, 4).t()
        yield "channels_last", base[: rows * 4].view(1, 4, rows, 1).to(
            memory_format=torch.channels_last
        )
    yield "0-dim", base[0] if size else base.new_zeros(())


# The forward twice (sample, threshold), and every gradient kernel of the kernel list.
CALLS = [
    (kind, kernel, slope_on_device, seed_on_device)
    for kind, kernel in [("sample", "sigmoid"), ("threshold", "sigmoid"),
                         *(("backward", name) for name in KERNELS)]
    for slope_on_device, seed_on_device in itertools.product((False, True), repeat=2)
    if kind == "sample" or "uniform" in KERNELS[kernel].reads or not seed_on_device
]


def run(call, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """One call of the op on `a` (and `g`), slope and seed on a's device or on the host."""
    kind, kernel, slope_on_device, seed_on_device = call
    slope = torch.tensor(1.7, device=a.device if slope_on_device else "cpu")
    seed = torch.tensor(2**40 + 3, device=a.device if seed_on_device else "cpu")
    if kind == "backward":  # tau beside the slope, seed as the sample's
        tau = torch.tensor(0.6, device=slope.device)
        return threshold_sample_backward(g, a, slope, kernel, 0.9, seed, tau)
    return threshold_sample(a, slope, seed if kind == "sample" else None, kernel, 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer sizes (racecheck, initcheck)")
    args = parser.parse_args(argv)
    info = binary_neurons.backend_info()
    compare = args.device != "cpu" and set(info.devices.values()) == {"native"}
    print(info)
    torch.manual_seed(0)
    calls = mismatches = 0
    for dtype, size in itertools.product(DTYPES, QUICK_SIZES if args.quick else SIZES):
        for layout, a in _views(size, dtype, args.device):
            g = torch.randn(a.shape, dtype=torch.float64).to(dtype).to(args.device)
            for call in CALLS:
                out = run(call, a, g)
                calls += 1
                if compare and not _same_bits(out.cpu(), run(call, a.cpu(), g.cpu())):
                    mismatches += 1
                    print(f"MISMATCH {dtype}, {size} elements, {layout}: {call}")
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(f"kernel_driver: {calls} calls on {args.device}"
          + (f", {mismatches} differ from the CPU kernels" if compare else ""))
    return 1 if mismatches else 0


def _same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    nan = x.isnan()
    return (x.stride() == y.stride() and torch.equal(nan, y.isnan())
            and torch.equal(x[~nan], y[~nan]))


if __name__ == "__main__":
    raise SystemExit(main())
