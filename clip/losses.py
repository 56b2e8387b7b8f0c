"""open_clip's CLIP and SigLIP losses with multi-positive targets.

A world prompt such as `a triangle` or `two objects` is true of many images in a batch; the stock losses
would push all but one of them away. Since the world decides exactly which image satisfies which text, the
targets here are the true match matrix: soft targets for the softmax (CLIP) loss, +1/-1 labels for SigLIP.
Across processes, only the local block is known; other processes' pairs count as negatives, as in the stock loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss


class MultiPositiveClipLoss(ClipLoss):
    """ClipLoss whose target for each image (text) spreads evenly over every text (image) it matches.

    A batch may hold more texts than images (NegCLIP's hard negatives: minimal edits that match no image, or only
    some): every text competes in each image's softmax, and the text-to-image term counts the texts that match
    at least one image (an edit true of nothing has no target there, as in NegCLIP)."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, match: torch.Tensor
    ) -> torch.Tensor:
        """match: (B, T) bool, match[i, j] = image i satisfies text j (local batch; text i describes image i for
        i < B, so each image has a positive). T is the same on every process."""
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        b, t = match.shape
        full = torch.zeros(b, logits_per_image.shape[1], device=match.device)  # (B, T * world)
        full[:, self.rank * t : (self.rank + 1) * t] = match.float()
        full_t = torch.zeros(t, logits_per_text.shape[1], device=match.device)  # (T, B * world)
        full_t[:, self.rank * b : (self.rank + 1) * b] = match.T.float()
        loss_i = F.cross_entropy(logits_per_image, full / full.sum(1, keepdim=True))
        matched = full_t.sum(1) > 0  # (T,)
        loss_t = F.cross_entropy(logits_per_text[matched], full_t[matched] / full_t[matched].sum(1, keepdim=True))
        return (loss_i + loss_t) / 2


class MultiPositiveSigLipLoss(SigLipLoss):
    """SigLipLoss with +1 for every matching pair of the local batch (not only the diagonal)."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank=rank, world_size=world_size)
        self._match: torch.Tensor | None = None

    def get_ground_truth(self, device, dtype, num_logits, negative_only=False) -> torch.Tensor:
        if negative_only or self._match is None:
            return super().get_ground_truth(device, dtype, num_logits, negative_only)
        return 2 * self._match.to(device=device, dtype=dtype) - 1  # (B, B) in {-1, +1}

    def forward(self, image_features, text_features, logit_scale, logit_bias, match: torch.Tensor):
        self._match = match
        try:
            return super().forward(image_features, text_features, logit_scale, logit_bias)
        finally:
            self._match = None
