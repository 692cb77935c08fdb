"""Float32 matrix products on the CPU through oneDNN, the library PyTorch's CPU convolutions already use.

PyTorch sends a float32 ``mm`` on the CPU to MKL, whose sgemm runs AMD CPUs on a narrower code path;
oneDNN's matmul runs the fc layer's products 2-2.5x faster on this project's AMD machines, to the same
float32 rounding (docs/performance.md, "Matrix products"). Elsewhere (CUDA, other dtypes, CPU
autocast, oneDNN switched off or missing, under torch.compile) these are ``torch.mm`` and
``torch.nn.functional.linear``.

``matmul`` and ``linear`` are differentiable to any order (their backward is made of ``matmul``);
``product`` is for code that is already inside an ``autograd.Function``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def _onednn_linear():
    """oneDNN's ``linear`` (``x @ w.T + b``, strided inputs allowed), or None where this build lacks it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise.default
        probe = torch.arange(6.0).view(2, 3)
        if not torch.equal(op(probe, probe, None, "none", [], ""), probe @ probe.T):
            return None
        return op
    except Exception:  # a build without the op, or without a CPU kernel for it: torch's own products
        return None


_ONEDNN_LINEAR = _onednn_linear()


def _cpu_autocast_probe():
    try:
        torch.is_autocast_enabled("cpu")  # the device argument is newer than torch 2.4's floor
        return lambda: torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled


_cpu_autocast_on = _cpu_autocast_probe()


def onednn_available() -> bool:
    """Whether float32 CPU products here go through oneDNN."""
    return _ONEDNN_LINEAR is not None


@contextlib.contextmanager
def torch_products() -> Iterator[None]:
    """Within it every product is torch's own: for FLOP counters (they know only torch's ops) and for
    benchmarks that compare the two libraries. Not thread-safe; the same maths either way."""
    global _ONEDNN_LINEAR
    saved, _ONEDNN_LINEAR = _ONEDNN_LINEAR, None
    try:
        yield
    finally:
        _ONEDNN_LINEAR = saved


def _on_onednn(*tensors: torch.Tensor) -> bool:
    """Whether these 2-d operands go to oneDNN: float32 on the CPU, with oneDNN on and nothing that
    would expect torch's own op (torch.compile lowers this op only for frozen weights; autocast)."""
    return (not torch.compiler.is_compiling() and _ONEDNN_LINEAR is not None and torch.backends.mkldnn.enabled
            and not _cpu_autocast_on()
            and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 2 and t.numel() > 0
                    for t in tensors))


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-d ``a`` [M, K] and ``b`` [K, N], for code inside an ``autograd.Function`` (or
    without gradients); operands that need a gradient get torch's own, recorded product."""
    recorded = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if not recorded and a.shape[-1] == b.shape[0] and _on_onednn(a, b):
        return _ONEDNN_LINEAR(a, b.T, None, "none", [], "")
    return a @ b


class _Product(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return product(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad_a = matmul(grad, b.T) if ctx.needs_input_grad[0] else None
        grad_b = matmul(a.T, grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = matmul(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = matmul(grad.T, x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-d tensors, differentiable."""
    if a.shape[-1] == b.shape[0] and _on_onednn(a, b):
        return _Product.apply(a, b)
    return a @ b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for 2-d ``x``, differentiable."""
    plain_bias = bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu" and bias.dim() == 1
                                  and bias.shape[0] == weight.shape[0] and bias.is_contiguous())
    if plain_bias and x.shape[-1] == weight.shape[-1] and _on_onednn(x, weight):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
