"""Losses on the answer tokens of a vision-language model (notebooks 05 and 06).

A VLM answers "Real" or "Fake" with a few tokens; only those tokens are scored (every other
position carries the label ``-100``, see ``vlm.VLMCollator``). Method 1 uses plain
cross-entropy there; method 2 the focal loss of Lin et al. (2017),

    FL = -alpha_t * (1 - p_t) ** gamma * log(p_t),

where ``p_t`` is the probability the model gives the correct token, and ``alpha_t`` is
``alpha`` for the answer tokens of FAKE images and ``1 - alpha`` for those of REAL images (the
binary form of the paper, with FAKE as the positive class). ``gamma`` down-weights tokens the
model already gets right, so training concentrates on the hard images. With ``gamma = 0`` and
``alpha = 0.5`` it is half the cross-entropy.

Written by hand because torchvision's ``sigmoid_focal_loss`` is for independent sigmoid logits,
not for a softmax over a vocabulary.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

IGNORE_INDEX = -100


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal LM alignment: the logits at position t predict the token at t + 1."""
    return logits[:, :-1, :], labels[:, 1:]


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the unmasked (answer) tokens; ``logits`` (B, T, V), ``labels`` (B, T)."""
    lg, lb = shift_for_next_token(logits, labels)
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), lb.reshape(-1), ignore_index=IGNORE_INDEX)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, positive: torch.Tensor,
               alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss over rows of ``logits`` (N, V) whose ``targets`` (N,) are not -100.

    ``positive`` (N,) bool: the row belongs to a FAKE image (weight ``alpha``) or a REAL one
    (weight ``1 - alpha``).
    """
    keep = targets != IGNORE_INDEX
    if not keep.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits[keep].float(), dim=-1)
    logp_t = logp.gather(1, targets[keep].unsqueeze(1)).squeeze(1)
    p_t = logp_t.exp()
    alpha_t = torch.where(positive[keep], torch.tensor(alpha, device=logits.device),
                          torch.tensor(1.0 - alpha, device=logits.device))
    return (-alpha_t * (1.0 - p_t) ** gamma * logp_t).mean()


def answer_focal_loss(logits: torch.Tensor, labels: torch.Tensor, is_fake: torch.Tensor,
                      alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """:func:`focal_loss` over the answer tokens of a batch; ``is_fake`` (B,) per image."""
    lg, lb = shift_for_next_token(logits, labels)
    positive = is_fake.bool().unsqueeze(1).expand_as(lb)
    return focal_loss(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), positive.reshape(-1), alpha, gamma)
