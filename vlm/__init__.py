"""The VLM: patch tokens of the shared encoder -> projector -> Llama-style decoder, early fusion (PaliGemma
prefix-LM). `vlm.load(name, encoder=enc)` -> Captioner with caption / ask / stream."""

from .api import Captioner, load
from .config import DecoderConfig
from .decoder import Decoder
from .generate import GenerationConfig
from .model import VLM, VLMConfig

__all__ = ["VLM", "Captioner", "Decoder", "DecoderConfig", "GenerationConfig", "VLMConfig", "load"]
