"""ReActNet's distributional loss (KL(p_teacher || p_student), batch mean) against its formula."""
import math

import pytest
import torch

from binarynet.losses import DistillationError, distribution_loss


def by_hand(student, teacher, temperature=1.0):
    total = 0.0
    for zs, zt in zip(student.tolist(), teacher.tolist()):
        es = [math.exp(v / temperature) for v in zs]
        et = [math.exp(v / temperature) for v in zt]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        total += sum(t * (math.log(t) - math.log(s)) for s, t in zip(ps, pt))
    return total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distribution_loss_equals_its_formula(temperature):
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(5, 4, generator=g), 3 * torch.randn(5, 4, generator=g)
    got = distribution_loss(student, teacher, temperature)
    assert got.item() == pytest.approx(by_hand(student, teacher, temperature), rel=1e-5)
    assert distribution_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_distribution_loss_gradient_reaches_the_student_only():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    distribution_loss(student, teacher).backward()
    # d/dz_S of KL = (p_S - p_T) / N
    want = (student.softmax(1) - teacher.softmax(1)).detach() / 3
    assert torch.allclose(student.grad, want, atol=1e-6)
    assert teacher.grad is None


def test_class_count_mismatch_is_a_clear_error():
    with pytest.raises(DistillationError, match="teacher outputs 5 classes, the student 4"):
        distribution_loss(torch.zeros(2, 4), torch.zeros(2, 5))
