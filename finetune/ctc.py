"""CTC loss that cannot go infinite silently, and the sEMG paper's logit distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .charset import BLANK


def frames_needed(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Fewest output frames CTC needs per target `(B,)`: one per label plus one blank between repeats."""
    valid = torch.arange(targets.shape[1], device=targets.device)[None] < target_lengths[:, None]
    repeats = (targets[:, 1:] == targets[:, :-1]) & valid[:, 1:]
    return target_lengths + repeats.sum(dim=1)


def ctc_loss(
    log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Mean CTC loss per target label over the batch, and how many samples were infeasible.

    log_probs `(B, T, K)`, lengths `(B,)`, targets `(B, L)` padded with -1 past target_lengths.
    Infeasible samples (more labels than frames allow) contribute zero instead of inf; the caller
    counts and reports them."""
    infeasible = frames_needed(targets, target_lengths) > lengths
    flat = targets[targets >= 0]  # row-major: the targets concatenated, padding dropped
    loss = F.ctc_loss(
        log_probs.transpose(0, 1).float(),
        flat,
        lengths,
        target_lengths,
        blank=BLANK,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / target_lengths.sum().clamp(min=1), int(infeasible.sum())


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened per-frame distributions, x T^2, mean per frame.

    Both `(B, T, K)` on the same frame grid."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher emits {tuple(teacher_logits.shape)} but the student {tuple(student_logits.shape)}: "
            "distillation needs the same frame rate and window"
        )
    t = temperature
    student = (student_logits.float() / t).log_softmax(dim=-1)
    teacher = (teacher_logits.float() / t).log_softmax(dim=-1)
    kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=-1)
    return kl.mean() * t * t
