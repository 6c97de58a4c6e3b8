"""Each loss on small cases worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from isr.encoders.losses import AsymmetricLoss, DistillLoss, TripletLoss
from isr.errors import InvalidInput

# s[t, v]: text t against image v; pairs on the diagonal, so pos = [0.9, 0.3, 0.7].
S3 = torch.tensor(
    [
        [0.9, 0.5, 0.1],
        [0.8, 0.3, 0.2],
        [0.0, 0.4, 0.7],
    ]
)


def test_triplet_sum_of_negatives() -> None:
    # margin 0.2. Text anchors, hinge 0.2 - pos[t] + s[t, v]:
    #   t0: v1 -0.2 -> 0, v2 -0.6 -> 0        sum 0
    #   t1: v0 0.7, v2 0.1                    sum 0.8
    #   t2: v0 -0.5 -> 0, v1 -0.1 -> 0        sum 0
    # Image anchors, hinge 0.2 - pos[v] + s[t, v]:
    #   v0: t1 0.1, t2 -0.7 -> 0              sum 0.1
    #   v1: t0 0.4, t2 0.3                    sum 0.7
    #   v2: t0 -0.4 -> 0, t1 -0.3 -> 0        sum 0
    # Per anchor: 0.1, 1.5, 0 -> mean 1.6 / 3.
    loss = TripletLoss(margin=0.2, negatives="sum")(S3)
    assert loss.item() == pytest.approx(1.6 / 3, abs=1e-6)


def test_triplet_hardest_negative() -> None:
    # Same hinges, max per anchor: t: 0, 0.7, 0; v: 0.1, 0.4, 0 -> (0.1 + 1.1 + 0) / 3.
    loss = TripletLoss(margin=0.2, negatives="hardest")(S3)
    assert loss.item() == pytest.approx(1.2 / 3, abs=1e-6)


def test_triplet_zero_when_positives_win_by_the_margin() -> None:
    # margin 0.5: 0.5 - 1.0 + 0.3, 0.5 - 0.9 + 0.2, 0.5 - 1.0 + 0.2, 0.5 - 0.9 + 0.3 all < 0.
    s = torch.tensor([[1.0, 0.3], [0.2, 0.9]])
    assert TripletLoss(margin=0.5)(s).item() == 0.0
    # margin 0.8: text t0 vs v1: 0.8 - 1 + 0.3 = 0.1; image v0 vs t1: 0.8 - 1 + 0.2 = 0;
    # text t1 vs v0: 0.8 - 0.9 + 0.2 = 0.1; image v1 vs t0: 0.8 - 0.9 + 0.3 = 0.2.
    # Per anchor: 0.1 + 0 and 0.1 + 0.2 -> mean 0.2.
    assert TripletLoss(margin=0.8)(s).item() == pytest.approx(0.2, abs=1e-6)


def test_triplet_rejects_bad_input() -> None:
    with pytest.raises(InvalidInput, match="square"):
        TripletLoss(0.2)(torch.zeros(2, 3))
    with pytest.raises(InvalidInput, match="negatives"):
        TripletLoss(0.2, negatives="mean")  # type: ignore[arg-type]


def test_distill_cross_entropy_both_directions() -> None:
    # Teacher [[ln 3, 0], [0, 0]] (tau_t 1): row 0 -> [3/4, 1/4], row 1 -> [1/2, 1/2];
    # column 0 -> [3/4, 1/4], column 1 -> [1/2, 1/2].
    # Student [[ln 2, 0], [0, 0]] (tau_s 1): row 0 and column 0 -> [2/3, 1/3], the rest halves.
    # Row 0: CE0 = -(3/4 ln 2/3 + 1/4 ln 1/3); row 1: ln 2. Mean over rows (CE0 + ln 2) / 2;
    # columns give the same, so the total is CE0 + ln 2.
    teacher = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]])
    student = torch.tensor([[math.log(2), 0.0], [0.0, 0.0]])
    ce0 = -(0.75 * math.log(2 / 3) + 0.25 * math.log(1 / 3))
    want = ce0 + math.log(2)
    assert want == pytest.approx(1.271899, abs=1e-6)
    assert DistillLoss(1.0, 1.0)(student, teacher).item() == pytest.approx(want, abs=1e-5)


def test_distill_temperatures_multiply_the_scores() -> None:
    # Scores divided by the temperatures give the same logits as the case above.
    teacher = torch.tensor([[math.log(3) / 2, 0.0], [0.0, 0.0]])
    student = torch.tensor([[math.log(2) / 12, 0.0], [0.0, 0.0]])
    want = -(0.75 * math.log(2 / 3) + 0.25 * math.log(1 / 3)) + math.log(2)
    assert DistillLoss(tau_t=2.0, tau_s=12.0)(student, teacher).item() == pytest.approx(
        want, abs=1e-5
    )


def test_distill_gradient_reaches_only_the_student() -> None:
    teacher = torch.tensor([[0.9, 0.1], [0.2, 0.8]], requires_grad=True)
    student = torch.tensor([[0.1, 0.9], [0.8, 0.2]], requires_grad=True)
    DistillLoss(12.0, 12.0)(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    # The student's own softmax is closer to the targets after a step against the gradient.
    before = DistillLoss(12.0, 12.0)(student, teacher).item()
    after = DistillLoss(12.0, 12.0)(student - 0.01 * student.grad, teacher).item()
    assert after < before


def test_asl_positive_negative_and_clip() -> None:
    # Positive with logit 0: p = 1/2, gamma_pos 0 -> -ln(1/2) = 0.693147.
    # Negative with logit 2: p = sigmoid(2) = 0.880797, shifted p_m = 0.830797,
    #   -p_m^3 ln(1 - p_m) = 0.573438 * 1.776657 = 1.018799.
    # Negative with logit -4: p = 0.017986 < clip 0.05 -> p_m = 0 -> no loss at all.
    p = 1 / (1 + math.exp(-2.0))
    p_m = p - 0.05
    want = -math.log(0.5) - p_m**3 * math.log(1 - p_m)
    assert want == pytest.approx(0.693147 + 1.018799, abs=1e-5)
    logits = torch.tensor([[0.0, 2.0, -4.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    asl = AsymmetricLoss(gamma_pos=0.0, gamma_neg=3.0, clip=0.05)
    assert asl(logits, targets).item() == pytest.approx(want, abs=1e-5)
    only_easy_negative = asl(torch.tensor([[-4.0]]), torch.tensor([[0.0]]))
    assert only_easy_negative.item() == 0.0


def test_asl_averages_over_the_batch_and_checks_shapes() -> None:
    asl = AsymmetricLoss()
    one = asl(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
    two = asl(torch.tensor([[0.0, 2.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert two.item() == pytest.approx(one.item(), abs=1e-6)
    with pytest.raises(InvalidInput, match="targets"):
        asl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(InvalidInput, match="clip"):
        AsymmetricLoss(clip=1.5)
