"""KL estimators: values from their formulas, sign properties, gradient only through logp."""
import math

import pytest
import torch

from rlvr.algorithms import kl_penalty

LOGP = [-1.0, -2.0, -0.5]
REF = [-1.5, -1.0, -0.5]


@pytest.mark.parametrize("kind, formula", [
    ("k1", lambda lp, rf: lp - rf),
    ("k2", lambda lp, rf: 0.5 * (lp - rf) ** 2),
    ("k3", lambda lp, rf: math.exp(rf - lp) - (rf - lp) - 1),
])
def test_estimators_match_their_formula(kind, formula):
    got = kl_penalty(torch.tensor(LOGP, dtype=torch.float64), torch.tensor(REF, dtype=torch.float64), kind)
    assert got.tolist() == pytest.approx([formula(a, b) for a, b in zip(LOGP, REF)], abs=1e-12)


def test_k3_is_nonnegative_and_zero_at_equality():
    d = torch.linspace(-5, 5, 101)
    k3 = kl_penalty(torch.zeros(101), d, "k3")
    assert (k3 >= 0).all()
    assert k3[50].item() == 0.0


def test_gradient_flows_through_logp_only():
    logp = torch.tensor(LOGP, requires_grad=True)
    ref = torch.tensor(REF, requires_grad=True)
    kl_penalty(logp, ref, "k3").sum().backward()
    assert ref.grad is None
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = 1 - exp(ref - logp)
    expected = [1 - math.exp(r - l) for l, r in zip(LOGP, REF)]
    assert logp.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_unknown_kind_and_shape_mismatch_raise():
    with pytest.raises(ValueError, match="valid: k1, k2, k3"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="shape"):
        kl_penalty(torch.zeros(2), torch.zeros(3))
