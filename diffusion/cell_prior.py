"""A prior for the spatial layout that predicts the condition as tokens: one for the pooled image embedding and one
per grid cell, denoised together.

Issue 14 measured why the flat prior fails: one PriorTransformer token predicting all of `[pooled (D) | grid
(cells x G)]` averages the cells an unplaced object could occupy ("a red circle" anywhere), and the average of one
object over nine cells is an empty grid. Here every cell has its own token, attending to the others and to the
prompt, so a cell can commit to holding the object while its neighbours commit to not holding it.

Same call as diffusers' PriorTransformer (the PriorStage loop and the trainer drive either), saved and loaded with
diffusers' ModelMixin (config.json + safetensors):

    tokens = [text states (L) | text embedding | timestep | pooled (1) | cells (C)]     # (B, L + 3 + C, width)
    out    = [pooled head (D) | cell head (G) per cell] -> (B, D + C * G)
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.transformers.prior_transformer import PriorTransformerOutput
from torch import nn
from torch.nn import functional as F


class CellPriorTransformer(ModelMixin, ConfigMixin):
    """Denoises the spatial condition as 1 + `cells` tokens (x0-prediction, as the flat prior)."""

    @register_to_config
    def __init__(
        self,
        embedding_dim: int,
        embedding_proj_dim: int,
        text_width: int,
        cells: int,
        num_embeddings: int,
        num_layers: int = 4,
        num_attention_heads: int = 8,
        attention_head_dim: int = 32,
    ) -> None:
        """`embedding_dim`: the predicted vector's length, D + cells x G; `embedding_proj_dim`: D, the text (and
        pooled image) embedding width; `text_width`: the token states' width; `num_embeddings`: the text context."""
        super().__init__()
        channels, rest = divmod(embedding_dim - embedding_proj_dim, cells)
        if cells < 1 or channels < 1 or rest:
            raise ValueError(f"{embedding_dim} - {embedding_proj_dim} values do not split into {cells} equal cells")
        inner = num_attention_heads * attention_head_dim
        self.time_proj = Timesteps(inner, True, 0)
        self.time_embedding = TimestepEmbedding(inner, inner, out_dim=inner, act_fn="gelu")
        self.text_states_proj = nn.Linear(text_width, inner)
        self.text_embed_norm = nn.LayerNorm(embedding_proj_dim)
        self.text_embed_proj = nn.Linear(embedding_proj_dim, inner)
        self.pooled_in = nn.Linear(embedding_proj_dim, inner)
        self.cell_in = nn.Linear(channels, inner)
        self.positional_embedding = nn.Parameter(torch.zeros(1, num_embeddings + 3 + cells, inner))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                inner, num_attention_heads, 4 * inner, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(inner)
        self.pooled_out = nn.Linear(inner, embedding_proj_dim)
        self.cell_out = nn.Linear(inner, channels)
        # the standardisation of the predicted vector, as PriorTransformer keeps it (fitted by the trainer)
        self.clip_mean = nn.Parameter(torch.zeros(1, embedding_dim))
        self.clip_std = nn.Parameter(torch.zeros(1, embedding_dim))

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        proj_embedding: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
    ) -> PriorTransformerOutput | tuple[torch.Tensor]:
        """hidden_states (B, E) the noisy standardised condition; timestep () or (B,); proj_embedding (B, D) the
        text embedding; encoder_hidden_states (B, L, W) token states; attention_mask (B, L), True where a token is."""
        cfg = self.config
        batch, d = hidden_states.shape[0], cfg.embedding_proj_dim
        steps = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(batch)
        time = self.time_embedding(self.time_proj(steps).to(hidden_states.dtype))  # (B, inner)
        cells = hidden_states[:, d:].reshape(batch, cfg.cells, -1)  # (B, C, G)
        text = self.text_states_proj(encoder_hidden_states)  # (B, L, inner)
        length = text.shape[1]
        tokens = torch.cat(
            [
                text,
                self.text_embed_proj(self.text_embed_norm(proj_embedding))[:, None],
                time[:, None],
                self.pooled_in(hidden_states[:, :d])[:, None],
                self.cell_in(cells),
            ],
            dim=1,
        )  # (B, L + 3 + C, inner)
        positions = self.positional_embedding
        tokens = tokens + torch.cat([positions[:, :length], positions[:, cfg.num_embeddings :]], dim=1)
        ignore = None
        if attention_mask is not None:  # padding tokens of the text are never attended to
            ignore = torch.cat([~attention_mask.bool(), attention_mask.new_zeros(batch, 3 + cfg.cells).bool()], 1)
        for block in self.blocks:
            tokens = _encoder_layer(block, tokens, ignore)
        tokens = self.norm_out(tokens)
        pooled = self.pooled_out(tokens[:, length + 2])  # (B, D)
        grid = self.cell_out(tokens[:, length + 3 :]).flatten(1)  # (B, C * G)
        predicted = torch.cat([pooled, grid], dim=1)
        return PriorTransformerOutput(predicted_image_embedding=predicted) if return_dict else (predicted,)

    def post_process_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised (B, E) -> the condition's own scale."""
        return latents * self.clip_std + self.clip_mean


def _encoder_layer(block: nn.TransformerEncoderLayer, x: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """One pre-norm encoder layer, computed from its own weights as in training. Calling the layer in eval mode
    takes torch's fused fast path instead, whose results shift with the batch's padding masks and with module
    hooks (model offload): the same prompt and seed then drew different images alone, in a batch, and offloaded.
    x (B, T, inner); ignore (B, T), True where a token is padding."""
    attn, (batch, length, inner) = block.self_attn, x.shape
    heads = attn.num_heads
    q, k, v = F.linear(block.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # (B, T, inner) each
    q, k, v = (t.reshape(batch, length, heads, inner // heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
    keep = None if ignore is None else ~ignore[:, None, None, :]  # (B, 1, 1, T): True where attended to
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, T, d)
    x = x + attn.out_proj(attended.transpose(1, 2).reshape(batch, length, inner))
    return x + block.linear2(block.activation(block.linear1(block.norm2(x))))
