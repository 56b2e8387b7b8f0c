"""The three generator models, built from a recipe's config sections with diffusers classes.

Layouts follow Kandinsky 2.2 scaled down: a VQModel (MoVQ) VAE, a PriorTransformer (or, in the spatial layout,
the cell prior of cell_prior.py) over the encoder's text,
and a UNet2DConditionModel conditioned on the image embedding twice over (added to the time embedding and as
cross-attention tokens), which predicts noise and (unused here) variance, as Kandinsky's decoder does. The
spatial layout (diffusion/grid.py) adds the patch-token grid: predicted by the prior beside the embedding, read
by the UNet as extra input channels.
"""

from __future__ import annotations

import torch
from diffusers import PriorTransformer, UNet2DConditionModel, VQModel

from triptych import clip

from .cell_prior import CellPriorTransformer


def build_vae(config: dict) -> VQModel:
    """A VQModel; len(block_out_channels) - 1 halvings (3 blocks: 4x downsampling)."""
    blocks = len(config["block_out_channels"])
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        **config,
    )


def build_prior(config: dict, encoder: clip.Encoder, grid_dim: int = 0) -> PriorTransformer | CellPriorTransformer:
    """A PriorTransformer reading the encoder's text (its embedding width and context length) and predicting the
    decoder's condition: the pooled image embedding, followed by `grid_dim` grid values for the spatial layout.

    diffusers projects token states with the width of the predicted vector; when that is wider than the text
    (the spatial layout), the states enter unprojected if the transformer is as wide as the text, and otherwise
    zero-padded to the predicted width and projected (prior.pad_states): a spatial prior may be wider (or
    narrower) than its text, so a 128-wide token need not carry the 128 + 144 values it predicts.

    `"type": "cells"` in the config builds the spatial layout's cell prior instead (diffusion/cell_prior.py)."""
    context = int(encoder.tokenize("a").shape[1])
    width = encoder.text_states("a").states.shape[-1]
    if config.get("type") == "cells":
        if not grid_dim:
            raise ValueError('a "cells" prior predicts the spatial grid: the decoder needs grid_channels')
        options = {k: v for k, v in config.items() if k != "type"}
        cells = encoder.zero_image_tokens().shape[1]
        return CellPriorTransformer(encoder.embed_dim + grid_dim, encoder.embed_dim, width, cells, context, **options)
    if width != encoder.embed_dim:
        raise ValueError(
            f"PriorTransformer projects token states and embeddings with one width; this encoder has text width "
            f"{width} and embedding width {encoder.embed_dim}"
        )
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    return PriorTransformer(
        embedding_dim=encoder.embed_dim + grid_dim,
        embedding_proj_dim=encoder.embed_dim,
        num_embeddings=context,
        additional_embeddings=4,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None if grid_dim and inner == width else "linear",
        added_emb_type="prd",
        **config,
    )


def build_unet(
    config: dict, embed_dim: int, latent_channels: int, sample_size: int, grid_channels: int = 0
) -> UNet2DConditionModel:
    """Kandinsky 2.2's decoder layout: the first level plain ResNet blocks, deeper levels with cross-attention
    over image-embedding tokens; noise + variance out. `grid_channels`: the spatial layout's grid map, read as
    extra input channels beside the latents."""
    levels = len(config["block_out_channels"])
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels + grid_channels,
        out_channels=2 * latent_channels,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("SimpleCrossAttnUpBlock2D",) * (levels - 1) + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        encoder_hid_dim=embed_dim,
        encoder_hid_dim_type="image_proj",
        addition_embed_type="image",
        resnet_time_scale_shift="scale_shift",
        **config,
    )


@torch.no_grad()
def standardize_latents(vae: VQModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold per-channel latent mean and std into the VAE's 1x1 quant convs, so `encode` gives zero-mean,
    unit-variance latents and `decode` reads them back exactly as before (Kandinsky's pipelines apply no
    latent scaling, so the scale has to live in the weights). Returns the (mean, std) folded in."""
    latents = vae.encode(pixels).latents  # (N, C, h, w)
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3)).clamp(min=1e-6)  # (C,)
    q, post = vae.quant_conv, vae.post_quant_conv
    q.weight.div_(std[:, None, None, None])
    q.bias.sub_(mean).div_(std)
    post.bias.add_(post.weight[:, :, 0, 0] @ mean)
    post.weight.mul_(std[None, :, None, None])
    return mean, std


@torch.no_grad()
def vae_psnr(vae: VQModel, pixels: torch.Tensor) -> float:
    """Mean PSNR (dB) of the VAE's reconstructions of (N, 3, H, W) pixels in [-1, 1], both quantised to 8 bits
    as a user would see them."""
    pixels = pixels.to(vae.dtype)
    recon = vae.decode(vae.encode(pixels).latents, force_not_quantize=True).sample.float()
    a = ((pixels.float() * 0.5 + 0.5).clamp(0, 1) * 255).round() / 255
    b = ((recon * 0.5 + 0.5).clamp(0, 1) * 255).round() / 255
    mse = (a - b).square().mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()
