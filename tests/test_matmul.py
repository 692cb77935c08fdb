"""camal_rl.matmul: oneDNN's products equal torch's, in value and gradients to the second order, for any
shape and memory layout; where oneDNN is not used they are torch's own ops."""

import platform

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from camal_rl import matmul

X86 = platform.machine().lower() in {"x86_64", "amd64"}
FLOAT32_ATOL = 2e-5  # a float32 sum of up to ~100 products of values ~1


def operand(rows: int, cols: int, transposed: bool, seed: int) -> torch.Tensor:
    """A [rows, cols] float32 tensor, stored transposed (a strided view) when asked."""
    generator = torch.Generator().manual_seed(seed)
    if transposed:
        return torch.randn(cols, rows, generator=generator).T
    return torch.randn(rows, cols, generator=generator)


def test_x86_builds_take_the_onednn_path():
    if not X86:
        pytest.skip(f"oneDNN's product is only required on x86-64; this machine is {platform.machine()}")
    assert matmul.onednn_available(), "this x86-64 torch build should have mkldnn._linear_pointwise"
    a = torch.randn(3, 4, requires_grad=True)
    assert type(matmul.matmul(a, torch.randn(4, 2)).grad_fn).__name__ == "_ProductBackward"


shapes = st.tuples(st.integers(1, 70), st.integers(1, 70), st.integers(1, 70), st.booleans(), st.booleans(),
                   st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_product_and_matmul_equal_torch_in_value_and_gradients(case):
    m, k, n, a_transposed, b_transposed, seed = case
    a = operand(m, k, a_transposed, seed).requires_grad_()
    b = operand(k, n, b_transposed, seed + 1).requires_grad_()
    reference_a, reference_b = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    reference = reference_a @ reference_b
    torch.testing.assert_close(matmul.product(a.detach(), b.detach()).double(), reference.detach(),
                               atol=FLOAT32_ATOL, rtol=1e-5)
    got = matmul.matmul(a, b)
    torch.testing.assert_close(got.double(), reference, atol=FLOAT32_ATOL, rtol=1e-5)

    # second order: a loss on the first gradients, as the attention's loss is on d V / d features
    weights = torch.randn(m, n, generator=torch.Generator().manual_seed(seed + 2))
    grad_a, grad_b = torch.autograd.grad((got * weights).sum(), (a, b), create_graph=True)
    ref_grad_a, ref_grad_b = torch.autograd.grad((reference * weights.double()).sum(), (reference_a, reference_b),
                                                 create_graph=True)
    torch.testing.assert_close(grad_a.double(), ref_grad_a, atol=FLOAT32_ATOL, rtol=1e-5)
    torch.testing.assert_close(grad_b.double(), ref_grad_b, atol=FLOAT32_ATOL, rtol=1e-5)
    second = torch.autograd.grad((grad_a ** 2).sum() + (grad_b ** 2).sum(), (a, b))
    ref_second = torch.autograd.grad((ref_grad_a ** 2).sum() + (ref_grad_b ** 2).sum(), (reference_a, reference_b))
    for value, wanted in zip(second, ref_second, strict=True):
        torch.testing.assert_close(value.double(), wanted, atol=1e-3, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(shapes, st.booleans())
def test_linear_equals_torch_linear_in_value_and_gradients(case, with_bias):
    batch, inputs, outputs, x_transposed, weight_transposed, seed = case
    x = operand(batch, inputs, x_transposed, seed).requires_grad_()
    weight = operand(outputs, inputs, weight_transposed, seed + 1).requires_grad_()
    bias = torch.randn(outputs, generator=torch.Generator().manual_seed(seed + 2)).requires_grad_() \
        if with_bias else None
    leaves = [t for t in (x, weight, bias) if t is not None]
    references = [t.detach().double().requires_grad_() for t in leaves]
    got = matmul.linear(x, weight, bias)
    reference = F.linear(references[0], references[1], references[2] if with_bias else None)
    torch.testing.assert_close(got.double(), reference, atol=FLOAT32_ATOL, rtol=1e-5)
    weights = torch.randn(batch, outputs, generator=torch.Generator().manual_seed(seed + 3))
    firsts = torch.autograd.grad((got * weights).sum(), leaves, create_graph=True)
    wanted_firsts = torch.autograd.grad((reference * weights.double()).sum(), references, create_graph=True)
    for value, wanted in zip(firsts, wanted_firsts, strict=True):
        torch.testing.assert_close(value.double(), wanted, atol=FLOAT32_ATOL, rtol=1e-5)
    # second order through x and the weight (a bias's gradient is linear in nothing)
    seconds = torch.autograd.grad(sum((first ** 2).sum() for first in firsts[:2]), leaves[:2])
    wanted_seconds = torch.autograd.grad(sum((first ** 2).sum() for first in wanted_firsts[:2]), references[:2])
    for value, wanted in zip(seconds, wanted_seconds, strict=True):
        torch.testing.assert_close(value.double(), wanted, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("bias", [torch.randn(14)[::2], torch.tensor(1.5), torch.tensor(2.0).expand(7),
                                  torch.randn(1, 7), torch.randn(5, 7)],
                         ids=["strided", "0-d", "expanded", "row", "per-sample"])
def test_linear_takes_any_bias_torch_takes(bias):
    x, weight = torch.randn(5, 10), torch.randn(7, 10)
    torch.testing.assert_close(matmul.linear(x, weight, bias), F.linear(x, weight, bias))


def test_a_product_of_operands_that_need_gradients_keeps_them():
    a = torch.randn(5, 10, requires_grad=True)
    matmul.product(a, torch.ones(10, 3)).sum().backward()
    torch.testing.assert_close(a.grad, torch.full((5, 10), 3.0))


def test_operands_that_do_not_fit_get_torchs_error():
    for multiply in (matmul.product, matmul.matmul):
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            multiply(torch.randn(5, 10), torch.randn(9, 7))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        matmul.linear(torch.randn(5, 10), torch.randn(7, 9))


def test_onednn_switched_off_in_torch_is_respected(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    a = torch.randn(5, 10, requires_grad=True)
    assert type(matmul.matmul(a, torch.randn(10, 3)).grad_fn).__name__ == "MmBackward0"


def test_cpu_autocast_gets_torchs_own_linear():
    x, weight = torch.randn(5, 10), torch.randn(7, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert matmul.linear(x, weight).dtype == F.linear(x, weight).dtype == torch.bfloat16


def test_within_torch_products_the_ops_are_torchs_own():
    available = matmul.onednn_available()
    a, b = torch.randn(5, 7, requires_grad=True), torch.randn(7, 3)
    with matmul.torch_products():
        assert not matmul.onednn_available()
        assert torch.equal(matmul.product(a.detach(), b), a.detach() @ b)
        assert type(matmul.matmul(a, b).grad_fn).__name__ == "MmBackward0"
        assert type(matmul.linear(a, b.T.contiguous()).grad_fn).__name__ in {"MmBackward0", "AddmmBackward0"}
    assert matmul.onednn_available() == available


def test_other_dtypes_and_empty_operands_use_torch():
    a64, b64 = torch.randn(4, 5, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(matmul.product(a64, b64), a64 @ b64)
    empty = matmul.matmul(torch.randn(0, 5), torch.randn(5, 2))
    assert empty.shape == (0, 2)
