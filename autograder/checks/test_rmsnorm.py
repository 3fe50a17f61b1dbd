"""rmsnorm: TODO 1, numerics and gradients against the reference over shapes, eps and scales."""

import pytest
import torch

from .. import rubric
from ..verdict import Verdict, fail
from ..worker.gradients import inner_product
from . import compare, diagnoses, margin
from .adapters import run_rmsnorm

TOLERANCE = rubric.TOLERANCES.rmsnorm

# (input shape, eps, input magnitude): a small magnitude with a large eps tells eps inside the
# square root from eps outside it, and the eps passed from one fixed in the code; mean(x^2) near
# 1e-6 (the last case) tells the usual fixed values (1e-5, 1e-6, float32's 1.2e-7, 1e-8) and
# no eps apart, which the other cases cannot (their mean(x^2) >= 3e-3 hides eps <= 1e-8).
CASES = [((4, 16), 1e-6, 1.0), ((2, 5, 32), 1e-6, 3.0), ((3, 2, 7, 8), 1e-2, 0.05), ((1, 64), 0.1, 0.2),
         ((2, 3, 16), 1e-4, 1e-3)]
# The zero input's two failures and what each one shows. A NaN output is 0 / 0: nothing was
# added to the root mean square before dividing. A finite output with a NaN gradient comes from
# sqrt's slope, infinite at 0: the root was taken of mean(x^2) alone and eps added after it (or
# the root clamped), which the forward pass cannot show.
ZERO_DIVIDED = "dividing by the root mean square of a zero input, which is 0 (no eps in the denominator)"
SQRT_OF_ZERO = ("the square root taken of mean(x^2) without eps inside it: its slope at 0 is "
                "infinite, so the gradient is NaN although the output is finite")


def _inputs(shape, magnitude, generator):
    dim = shape[-1]
    x = torch.randn(shape, generator=generator) * magnitude + 0.5 * magnitude  # non-zero mean
    scale = 1.0 + 0.5 * torch.randn(dim, generator=generator)
    grad_out = torch.randn(shape, generator=generator)
    return x, scale, grad_out


def _expected(reference, x, scale, eps, grad_out):
    norm = reference.RMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.scale.copy_(scale)
    x = x.clone().requires_grad_(True)
    out = norm(x)
    inner_product(out, grad_out).backward()
    return out.detach(), x.grad, norm.scale.grad


@pytest.mark.parametrize("shape, eps, magnitude", CASES, ids=[str(c[0]) for c in CASES])
def test_forward_matches_reference(submission, reference, generator, extra, shape, eps, magnitude):
    x, scale, grad_out = _inputs(shape, magnitude, generator)
    got = run_rmsnorm(submission, dim=shape[-1], eps=eps, scale=scale, x=x, grad_out=grad_out)
    expected, _, _ = _expected(reference, x, scale, eps, grad_out)
    if not compare.close(got.out, expected, TOLERANCE):
        # several variants can fit one case (no eps and eps fixed at 1e-8 on inputs of size 0.05):
        # the evidence names them all
        found = list(diagnoses.matches(got.out, diagnoses.RMSNORM_VARIANTS, x, scale, eps, tolerance=TOLERANCE))
        if len(found) > 1:
            explanation = dict(cause="one of (this case cannot tell them apart): "
                               + "; or ".join(map(str, found)))
        else:
            explanation = diagnoses.explained(
                found[0] if found else None,
                otherwise="Expected x / sqrt(mean(x^2 over the last dim) + eps) * scale.")
        fail(compare.mismatch(f"RMSNorm(dim={shape[-1]}, eps={eps:g}) on input {tuple(shape)}",
                              got.out, expected, TOLERANCE, against="reference", **explanation))
    submission.note(f"RMSNorm(dim={shape[-1]}, eps={eps:g}) on input {tuple(shape)}: max abs error "
                    f"{compare.max_error(got.out, expected)[0]:.2g}, within the tolerance")
    margin.record(extra, margin.allclose(got.out, expected, TOLERANCE))


def test_gradients_match_reference(submission, reference, generator, extra):
    shape, eps = (3, 6, 24), 1e-5
    x, scale, grad_out = _inputs(shape, 1.0, generator)
    got = run_rmsnorm(submission, dim=shape[-1], eps=eps, scale=scale, x=x, grad_out=grad_out)
    if not got.scale_is_parameter or got.scale_shape != [shape[-1]]:
        fail(Verdict(measured="RMSNorm.scale", kind="property",
                     found=f"shape {tuple(got.scale_shape)}, parameter: {got.scale_is_parameter}",
                     expected=f"an nn.Parameter of shape ({shape[-1]},) registered on the module",
                     hint="RMSNorm.scale must be an nn.Parameter, so that the optimizer trains it: "
                          "self.scale = nn.Parameter(torch.ones(dim))."))
    _, grad_x, grad_scale = _expected(reference, x, scale, eps, grad_out)
    for name, actual, expected in (("input", got.grad_x, grad_x), ("scale", got.grad_scale, grad_scale)):
        if actual is None:
            fail(Verdict(measured=f"gradient of RMSNorm w.r.t. its {name}", found="none reached it",
                         hint="Is the output computed from it with differentiable torch operations?",
                         kind="property"))
        if not compare.close(actual, expected, TOLERANCE):
            fail(compare.mismatch(f"gradient of RMSNorm w.r.t. its {name}", actual, expected, TOLERANCE,
                                  against="reference"))
        margin.record(extra, margin.allclose(actual, expected, TOLERANCE))


def test_zero_input_is_finite(submission):
    dim = 16
    x = torch.zeros(2, 3, dim)
    got = run_rmsnorm(submission, dim=dim, eps=1e-6, scale=torch.ones(dim), x=x, grad_out=torch.ones_like(x))
    out, grad_x = got.out, got.grad_x
    if not torch.isfinite(out).all():
        fail(Verdict(measured="RMSNorm of an all-zero input", found="NaN or inf in the output",
                     expected="zeros", kind="property", cause=ZERO_DIVIDED,
                     hint="Add eps inside the square root: sqrt(mean(x^2) + eps) is never 0."))
    if grad_x is not None and not torch.isfinite(grad_x).all():
        fail(Verdict(measured="the gradient of RMSNorm w.r.t. an all-zero input",
                     found="NaN or inf (the output itself is finite)", expected="finite values",
                     kind="property", cause=SQRT_OF_ZERO,
                     hint="Add eps inside the square root, sqrt(mean(x^2) + eps): eps added after "
                          "it keeps the output finite but not the gradient."))
    if out.abs().max() != 0:
        fail(Verdict(measured="RMSNorm of an all-zero input", found=f"max |output| {float(out.abs().max()):.3g}",
                     expected="zeros", kind="property"))
