"""Shared plumbing beneath the three model packages: errors, devices and placement, image loading, number and
text checks, weights-file and config checks, checkpoints, the training loop the trainers share (learning-rate
schedule included), word-level tokenizers, captioned-folder datasets, the preset registry and manifests."""
