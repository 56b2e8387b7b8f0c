"""triptych: one CLIP/SigLIP encoder, loaded once, for zero-shot classification, a VLM that captions and answers,
and an unCLIP text-to-image generator.

from triptych import clip, vlm, diffusion
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("triptych")
except PackageNotFoundError:  # run from a checkout that is not installed
    __version__ = "0+unknown"
