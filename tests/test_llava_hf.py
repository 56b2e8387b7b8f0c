"""LLaVA-1.5 in transformers' llava-hf layout, converted on load onto the shared CLIP: parity with
LlavaForConditionalGeneration on tiny random models (logits, greedy captions, the processor's padding), the tower
check, the preset folder, and the app serving it offline."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.hf_models import LLAVA_CLIP_SIZE, make_llava_preset
from triptych import clip, vlm
from triptych.core.errors import InvalidTextError
from triptych.core.resolve import resolve
from triptych.vlm.vision import mean_colour, pad_to_square


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return make_llava_preset(tmp_path_factory.mktemp("llava-1.5-7b"))


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A random RGB image (not square: LLaVA pads it)."""
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy())


def reference_inputs(preset, image: Image.Image, question: str, captioner: vlm.Captioner) -> dict:
    """transformers' inputs for one turn, with our pixels (so the models are compared on the same tensor)."""
    processor = preset["processor"]
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(turn, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    inputs["pixel_values"] = captioner.encoder.pixels(pad_to_square(image, mean_colour(captioner.encoder))).float()
    return inputs


def test_the_preset_folder_shares_one_encoder_and_matches_transformers_logits(preset):
    """The tiny preset folder resolves to its CLIP and its LLaVA; the VLM reads the encoder's own tower (digest
    equal) and its logits equal LlavaForConditionalGeneration's to < 1e-4 (fp32)."""
    root = preset["clip_folder"].parent
    parts = resolve(str(root))
    assert parts.encoder == str(preset["clip_folder"]) and parts.vlm == preset["llava_folder"]
    encoder = clip.load(parts, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not shared" warning
        captioner = vlm.load(parts, encoder=encoder)
    assert captioner.encoder is encoder
    assert captioner.image_tokens == (LLAVA_CLIP_SIZE // 7) ** 2
    image, question = photo(0, (LLAVA_CLIP_SIZE, 20)), "what colour is the shape ?"
    inputs = reference_inputs(preset, image, question, captioner)
    with torch.no_grad():
        expected = preset["llava"](**inputs).logits  # (1, S, V)
        embeds, valid = captioner._prefixes([image], [question], max_new_tokens=4)
        got = captioner.vlm.decoder(inputs_embeds=embeds)  # causal by default
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


def test_greedy_answers_are_transformers_token_for_token_in_a_padded_batch(preset):
    """Two images of different shapes and two questions of different lengths in one left-padded batch (causal
    attention with padding): each answer equals transformers' greedy generate on that image alone."""
    captioner = vlm.load(str(preset["clip_folder"].parent), device="cpu")
    images = [photo(1, (LLAVA_CLIP_SIZE, 14)), photo(2, (18, LLAVA_CLIP_SIZE))]
    questions = ["how many objects are there ?", "what is in the image ?"]
    ours = captioner.ask(images, questions, max_new_tokens=12)
    tokenizer = preset["processor"].tokenizer
    for image, question, answer in zip(images, questions, ours, strict=True):
        inputs = reference_inputs(preset, image, question, captioner)
        with torch.no_grad():
            out = preset["llava"].generate(**inputs, max_new_tokens=12, do_sample=False)
        theirs = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer == theirs
    assert (
        captioner.caption(images[0], max_new_tokens=12)[0]
        == captioner.ask(images[0], "Provide a one-sentence caption for the provided image.", max_new_tokens=12)[0]
    )


def test_padding_to_square_is_the_llava_processors(preset):
    """Our pixels for a non-square image equal LlavaImageProcessor(do_pad=True)'s: padded with the mean colour,
    centred (its long side is the tower's size, so no resampling differs)."""
    captioner = vlm.load(str(preset["clip_folder"].parent), device="cpu")
    from triptych.vlm.vision import image_tokens

    for size in ((LLAVA_CLIP_SIZE, 15), (9, LLAVA_CLIP_SIZE)):
        image = photo(3, size)
        theirs = preset["processor"].image_processor(image, return_tensors="pt")["pixel_values"]
        ours = captioner.encoder.pixels(pad_to_square(image, mean_colour(captioner.encoder)))
        assert (ours - theirs).abs().max() < 1e-5
    tokens = image_tokens(captioner.encoder, [photo(3, (LLAVA_CLIP_SIZE, 15))], captioner.vlm.config)
    assert tokens.shape == (1, 16, 32)


def test_the_converted_encoder_embeds_images_as_clip_model(preset):
    encoder = clip.load(str(preset["clip_folder"]), device="cpu")
    images = [photo(4, (LLAVA_CLIP_SIZE, LLAVA_CLIP_SIZE)), photo(5, (LLAVA_CLIP_SIZE, LLAVA_CLIP_SIZE))]
    with torch.no_grad():
        model = preset["clip"]
        pooled = model.vision_model(pixel_values=encoder.pixels(images).float()).pooler_output
        expected = F.normalize(model.visual_projection(pooled), dim=-1)
    assert (encoder.encode_image(images) - expected).abs().max() < 1e-5


def test_a_different_tower_is_loaded_for_the_vlm_with_a_warning(tmp_path):
    """A checkpoint whose vision tower is not the encoder's: the VLM gets its own tower (and still matches
    transformers), the encoder keeps classifying, and the user is told the encoder is no longer shared."""
    other = make_llava_preset(tmp_path, seed=1, same_tower=False)
    encoder = clip.load(str(other["clip_folder"]), device="cpu")
    with pytest.warns(UserWarning, match="not the encoder's image tower.*no longer shared"):
        captioner = vlm.load(str(other["llava_folder"]), encoder=encoder)
    assert captioner.encoder is not encoder
    image = photo(6, (LLAVA_CLIP_SIZE, 21))
    inputs = reference_inputs(other, image, "what colour is the shape ?", captioner)
    with torch.no_grad():
        expected = other["llava"](**inputs).logits
        embeds, _ = captioner._prefixes([image], ["what colour is the shape ?"], max_new_tokens=4)
        assert (captioner.vlm.decoder(inputs_embeds=embeds) - expected).abs().max() < 1e-4
    alone = vlm.load(str(other["llava_folder"]), device="cpu")  # no encoder at all: its own tower, no warning
    assert alone.ask(image, "what colour is the shape ?", max_new_tokens=6) == captioner.ask(
        image, "what colour is the shape ?", max_new_tokens=6
    )


def test_a_prompt_cannot_place_images(preset):
    """User text is text: a prompt holding the image token would splice a second image slot (transformers fails
    on the count); it is refused by name."""
    captioner = vlm.load(str(preset["clip_folder"].parent), device="cpu")
    with pytest.raises(InvalidTextError, match="image token '<image>'"):
        captioner.ask(photo(7, (20, 20)), "what is <image> here ?")


def test_the_app_serves_the_preset_folder_offline(preset):
    """`triptych serve --model FOLDER` on the tiny preset: caption, ask and classify through gradio_client, one
    encoder for all."""
    import socket

    from gradio_client import Client, handle_file

    from triptych.apps.serve.app import build_app, launch
    from triptych.apps.serve.service import Service

    service = Service.load(str(preset["clip_folder"].parent), device="cpu")
    assert service.captioner is not None and service.captioner.encoder is service.encoder
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(service)
    launch(app, port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        path = preset["clip_folder"].parent / "upload.png"
        image = photo(8, (LLAVA_CLIP_SIZE, 17))
        image.save(path)
        expected = service.captioner.caption(image)[0]
        assert client.predict(handle_file(str(path)), api_name="/caption") == expected
        question = "how many objects are there ?"
        expected = service.captioner.ask(image, question)[0]
        assert client.predict(handle_file(str(path)), question, api_name="/ask") == expected
        result = client.predict(handle_file(str(path)), "a red circle, a blue star", "none", api_name="/classify")
        probs = service.encoder.classify(image, ["a red circle", "a blue star"])[0]
        assert result["label"] == ["a red circle", "a blue star"][int(probs.argmax())]
    finally:
        app.close()


def test_the_cli_captions_and_answers_with_the_preset(preset, capsys):
    """`triptych caption photo --model FOLDER` and `triptych ask ... --question` print what the Python API says."""
    import json

    from triptych.apps.cli.main import main

    root = preset["clip_folder"].parent
    path = root / "cli.png"
    image = photo(9, (LLAVA_CLIP_SIZE, 19))
    image.save(path)
    captioner = vlm.load(str(root), device="cpu")
    question = "what colour is the shape ?"
    assert main(["caption", str(path), "--model", str(root), "--format", "json", "--max-new-tokens", "8"]) == 0
    caption = json.loads(capsys.readouterr().out)
    assert main(["ask", str(path), "--question", question, "--model", str(root), "--format", "json",
                 "--max-new-tokens", "8"]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert caption[0]["text"] == captioner.caption(image, max_new_tokens=8)[0]
    assert answer[0]["text"] == captioner.ask(image, question, max_new_tokens=8)[0]


def test_bf16_on_cpu_follows_fp32(preset):
    """LLaVA in bf16 on a CPU (the CPU's half precision; fp16 is the GPU default): the bf16 encoder is still
    recognised as the checkpoint's tower, and the next token's logits stay close to fp32's."""
    root = str(preset["clip_folder"].parent)
    full = vlm.load(root, device="cpu")
    encoder = clip.load(root, device="cpu", dtype="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bf16 encoder is still the checkpoint's tower: shared
        half = vlm.load(root, encoder=encoder)
    assert (
        half.encoder is encoder
        and encoder.dtype == torch.bfloat16
        and next(half.vlm.parameters()).dtype == torch.bfloat16
    )
    image, question = photo(10, (LLAVA_CLIP_SIZE, 23)), "what colour is the shape ?"
    with torch.no_grad():
        logits = [
            c.vlm.decoder(inputs_embeds=c._prefixes([image], [question], 4)[0])[0, -1].float() for c in (full, half)
        ]
    assert F.cosine_similarity(logits[0], logits[1], dim=0) > 0.99


def test_the_hub_config_of_llava_1_5_7b_reads_with_the_family_defaults(tmp_path):
    """llava-hf/llava-1.5-7b-hf's config.json lists only what differs from transformers' defaults (its text_config
    names four keys): the converter fills the rest as transformers does, so the 7B shapes come out right."""
    import json

    from triptych.vlm.llava import read_config

    config = {  # as published on the hub
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": 32000,
        "model_type": "llava",
        "pad_token_id": 32001,
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5",
            "architectures": ["LlamaForCausalLM"],
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": 32064,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "vision_config": {
            "hidden_size": 1024,
            "image_size": 336,
            "intermediate_size": 4096,
            "model_type": "clip_vision_model",
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "patch_size": 14,
            "projection_dim": 768,
            "vocab_size": 32000,
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    cfg, vision = read_config(tmp_path)
    d = cfg.decoder
    assert (d.hidden_size, d.num_hidden_layers, d.num_attention_heads, d.num_key_value_heads) == (4096, 32, 32, 32)
    assert (d.intermediate_size, d.vocab_size, d.max_position_embeddings, d.rope_theta) == (11008, 32064, 4096, 1e4)
    assert cfg.vision_width == 1024 and cfg.vision_layer == -2 and vision["hidden_act"] == "quick_gelu"
