"""binarynet.losses.squared_hinge (docs/paper.md §2.6)."""
import pytest
import torch

from binarynet.losses import squared_hinge


def test_squared_hinge_hand_computed():
    scores = torch.tensor([[0.5, -2.0, 1.5], [-0.5, 0.0, 3.0]])
    target = torch.tensor([0, 2])
    # t = [[1, -1, -1], [-1, -1, 1]]; 1 - t*y = [[0.5, -1, 2.5], [0.5, 1, -2]]
    # max(0, .)^2 = [[0.25, 0, 6.25], [0.25, 1, 0]]; mean over 6 = 7.75 / 6.
    assert squared_hinge(scores, target).item() == pytest.approx(7.75 / 6, abs=1e-7)
    pm1 = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
    assert squared_hinge(scores, pm1).item() == pytest.approx(7.75 / 6, abs=1e-7)


def test_squared_hinge_gradient():
    scores = torch.tensor([[0.5, -2.0, 1.5], [-0.5, 0.0, 3.0]], requires_grad=True)
    squared_hinge(scores, torch.tensor([0, 2])).backward()
    # dL/dy = -2 t max(0, 1 - t y) / 6
    expected = torch.tensor([[-2 * 0.5, 0.0, 2 * 2.5], [2 * 0.5, 2 * 1.0, 0.0]]) / 6
    torch.testing.assert_close(scores.grad, expected)


def test_squared_hinge_zero_when_margin_met():
    scores = torch.tensor([[1.0, -1.0], [-3.0, 2.0]])
    assert squared_hinge(scores, torch.tensor([0, 1])).item() == 0.0


def test_squared_hinge_errors():
    scores = torch.zeros(4, 10)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        squared_hinge(scores, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape of scores \(4, 10\)"):
        squared_hinge(scores, torch.zeros(4, 9))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        squared_hinge(scores, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        squared_hinge(torch.zeros(10), torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError):
        squared_hinge(torch.zeros(4, 10, dtype=torch.long), torch.zeros(4, dtype=torch.long))
