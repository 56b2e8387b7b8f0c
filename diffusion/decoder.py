"""The decoder: CLIP image condition -> VAE latents (UNet denoising) -> pixels.

The loops are KandinskyV22Pipeline's and KandinskyV22Img2ImgPipeline's, step for step, so a Kandinsky-format
decoder folder (`unet/`, `movq/`, `scheduler/`) gives the same image here as in diffusers. Conditional and
unconditional halves run as one batch. A folder with a `grid/` projection is the spatial layout (diffusion/grid.py):
its condition carries the patch-token grid too, handed to the UNet as extra input channels beside the latents.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tqdm.auto import tqdm

from .grid import FOLDER as GRID_FOLDER
from .grid import GridProjection

# (step index, timestep, latents) after each step; latents it returns replace the loop's (diffusers' callback)
StepCallback = Callable[[int, int, torch.Tensor], torch.Tensor | None]


class DecoderStage:
    """UNet2DConditionModel (image-embedding conditioned) + VQModel (MoVQ layout) + a scheduler, and for the
    spatial layout the grid projection whose map the UNet reads beside its latents."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        movq: VQModel,
        scheduler: SchedulerMixin,
        device: torch.device | None = None,
        grid: GridProjection | None = None,
    ) -> None:
        """`device`: where denoising runs (default: the UNet's; differs from it only under model offload)."""
        self.unet, self.movq, self.scheduler, self.grid = unet.eval(), movq.eval(), scheduler, grid
        self.device = torch.device(device) if device is not None else unet.device
        grid_channels = grid.channels if grid is not None else 0
        if not isinstance(unet.config.encoder_hid_dim, int):
            raise ValueError("the UNet has no image projection (encoder_hid_dim): not an image-conditioned decoder")
        self.latent_channels = unet.config.in_channels - grid_channels
        if self.latent_channels != movq.config.latent_channels:
            raise ValueError(
                f"the UNet reads {unet.config.in_channels} channels: the VAE's {movq.config.latent_channels} latent "
                f"channels and {grid_channels} grid channels should add up to that"
            )

    @property
    def embed_dim(self) -> int:
        """D, the pooled image embedding's width (the UNet's image projection input)."""
        return int(self.unet.config.encoder_hid_dim)

    @property
    def condition_dim(self) -> int:
        """Width of the condition vector: D, plus cells x G for the spatial layout."""
        return self.embed_dim + (self.grid.dim if self.grid is not None else 0)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> DecoderStage:
        """A Kandinsky-2.2-format decoder folder: `unet/`, `movq/`, `scheduler/` (safetensors only), and `grid/`
        for the spatial layout."""
        folder = Path(folder)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True, torch_dtype=dtype)
        movq = VQModel.from_pretrained(folder / "movq", use_safetensors=True, torch_dtype=dtype)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        grid = GridProjection.from_pretrained(folder / GRID_FOLDER)
        return cls(unet.to(device), movq.to(device), scheduler, grid=grid)

    @property
    def scale_factor(self) -> int:
        """Pixels per latent along a side (MoVQ downsamples once per block after the first)."""
        return 2 ** (len(self.movq.config.block_out_channels) - 1)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Kandinsky's rounding: up to a multiple of scale_factor**2 pixels, then divided by scale_factor."""
        f = self.scale_factor
        return -(-height // f**2) * f, -(-width // f**2) * f

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels in [-1, 1] -> (N, C, H/f, W/f) latents (unquantised, as img2img uses them)."""
        return self.movq.encode(pixels.to(self.movq.dtype)).latents

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, h*f, w*f) pixels in [0, 1]."""
        pixels = self.movq.decode(latents.to(self.movq.dtype), force_not_quantize=True).sample
        return (pixels * 0.5 + 0.5).clamp(0, 1)

    @torch.inference_mode()
    def __call__(
        self,
        image_embeds: torch.Tensor,
        negative_image_embeds: torch.Tensor,
        *,
        height: int = 64,
        width: int = 64,
        steps: int = 50,
        guidance: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,  # a list: one per row
        init_latents: torch.Tensor | None = None,
        strength: float = 1.0,
        callback: StepCallback | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """(N, condition_dim) image conditions -> (N, C, h, w) denoised latents.

        With `init_latents` (img2img) the schedule starts part-way, at `strength` of the way from the image to
        noise; otherwise from pure noise.
        """
        device, dtype = self.device, self.unet.dtype
        guided = guidance > 1
        embeds = image_embeds.to(device, dtype)
        if guided:
            embeds = torch.cat([negative_image_embeds.to(device, dtype), embeds])  # (2N, D): uncond, cond
        embeds, grid_map = self.split(embeds, self.latent_size(height, width))  # (B, D), (B, G, h, w) or None
        self.scheduler.set_timesteps(steps, device=device)
        timesteps = self.scheduler.timesteps
        channels = self.latent_channels
        if init_latents is None:
            shape = (len(image_embeds), channels, *self.latent_size(height, width))
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            latents = latents * self.scheduler.init_noise_sigma
        else:
            first = min(int(steps * strength), steps)
            timesteps = timesteps[max(steps - first, 0) :]
            latents = init_latents.to(device, dtype)
            if len(timesteps):  # strength too small for even one step: the image comes back as it was
                noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
                latents = self.scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(latents)))
        learned_variance = getattr(self.scheduler.config, "variance_type", None) in ("learned", "learned_range")
        for i, t in enumerate(tqdm(timesteps, desc="decoder", disable=not progress, leave=False)):
            model_input = torch.cat([latents] * 2) if guided else latents
            if grid_map is not None:
                model_input = torch.cat([model_input, grid_map], dim=1)  # (B, C + G, h, w)
            out = self.unet(
                sample=model_input,
                timestep=t,
                encoder_hidden_states=None,
                added_cond_kwargs={"image_embeds": embeds},
                return_dict=False,
            )[0]  # (B, 2C, h, w): noise and variance
            if guided:
                noise_pred, variance_pred = out.split(channels, dim=1)
                uncond, cond = noise_pred.chunk(2)
                out = torch.cat([uncond + guidance * (cond - uncond), variance_pred.chunk(2)[1]], dim=1)
            if not learned_variance:
                out = out[:, :channels]
            latents = self.scheduler.step(out, t, latents, generator=generator)[0]
            if callback is not None:
                replaced = callback(i, int(t), latents)
                if isinstance(replaced, torch.Tensor):
                    latents = replaced.to(device, dtype)
        return latents

    def split(self, conditions: torch.Tensor, latent_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, condition_dim) -> the pooled embeddings (B, D) and, for the spatial layout, the grid as a
        (B, G, h, w) map at the latents' size (else None)."""
        if conditions.shape[1] != self.condition_dim:
            raise ValueError(f"the decoder takes ({self.condition_dim},) conditions, got {tuple(conditions.shape)}")
        if self.grid is None:
            return conditions, None
        pooled, flat = conditions.split([self.embed_dim, conditions.shape[1] - self.embed_dim], dim=1)
        return pooled, self.grid.to_map(flat.float(), latent_size).to(conditions.dtype)


def to_pixels(images: list[Image.Image], device: torch.device | str = "cpu") -> torch.Tensor:
    """PIL images -> (N, 3, H, W) float pixels in [-1, 1], the VAE's range, computed as diffusers'
    VaeImageProcessor does to the last bit and left in its channels-last memory layout (the layout picks the
    convolution kernels, and so the rounding)."""
    arr = np.stack([np.asarray(im.convert("RGB")).astype(np.float32) / 255.0 for im in images])  # (N, H, W, 3)
    return (2.0 * torch.from_numpy(arr) - 1.0).permute(0, 3, 1, 2).to(device)
