"""Binding: the compositional probes (true caption vs its minimal edit), the hard negatives of the encoder's
binding stage, the loss over more texts than images, and the stage itself (both towers, or the text tower alone)."""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_recipe
from triptych.clip.losses import MultiPositiveClipLoss
from triptych.clip.train import WorldBatches, train
from triptych.world import (
    HELD_OUT_PAIRS,
    TRAIN_PAIRS,
    Scene,
    SceneObject,
    parse_image,
    random_prompt_spec,
    render,
    sample_scene,
)
from triptych.world.edits import EDIT_KINDS, edited_scenes, probe, with_hard_negative
from triptych.world.text import groups_phrase


@pytest.mark.parametrize("kind", EDIT_KINDS)
@pytest.mark.parametrize(("held_out", "say_sizes"), [(False, False), (True, False), (False, True)])
def test_probes_pair_a_true_caption_with_its_minimal_edit(kind, held_out, say_sizes):
    rng = random.Random(f"probes/{kind}/{held_out}/{say_sizes}")
    for _ in range(50):
        p = probe(kind, rng, held_out=held_out, say_sizes=say_sizes)
        sizes_said = [w for w in p.true.split() + p.edit.split() if w in ("small", "large")]
        if say_sizes:  # every object's size named (a counted group has one), in the true text and the edit alike
            assert all(f"{o.size} {o.color}" in p.true for o in p.scene.objects), p.true
            assert len(sizes_said) == 4
        else:
            assert not sizes_said  # world.md's probe texts
        assert parse_image(render(p.scene)).keys() == p.scene.keys()  # a clean scene: the judge reads it back
        assert p.true != p.edit
        pairs = {(o.color, o.shape) for o in p.scene.objects}
        assert len({c for c, _ in pairs}) == len({s for _, s in pairs}) == 2  # distinct colours and shapes
        assert bool(pairs & HELD_OUT_PAIRS) == held_out
        if kind == "attribute_swap":  # the same words, two colours exchanged
            assert sorted(p.true.split()) == sorted(p.edit.split())
        if kind == "relation_inversion":
            a, b = p.scene.objects
            assert a.row == b.row or a.col == b.col
        assert p.true_spec.satisfied_by(p.scene) and not p.edit_spec.satisfied_by(p.scene)  # meanings agree
        if not held_out:  # no text a probe shows names a held-out pair
            text = f" {p.true} | {p.edit} "
            assert not any(f" {c} {s}" in text for c, s in HELD_OUT_PAIRS), (p.true, p.edit)


def test_groups_phrase_counts_alike_objects():
    objs = (
        SceneObject("small", "red", "circle", 0),
        SceneObject("large", "blue", "cross", 4),
        SceneObject("large", "red", "circle", 8),
    )
    scene = Scene(objs)
    assert groups_phrase(scene, color=True)[0] == "two red circles and a blue cross"
    text, spec = groups_phrase(scene, color=False)
    assert text == "two circles and a cross" and spec.satisfied_by(scene)
    fewer = Scene(objs[:2])
    assert not spec.satisfied_by(fewer) and not groups_phrase(fewer, color=True)[1].satisfied_by(scene)


def test_hard_negatives_are_false_minimal_and_never_name_held_out_pairs():
    rng = random.Random(0)
    found = same_form = 0
    for _ in range(300):
        scene = sample_scene(rng)
        start = rng.getstate()
        (text, spec), negative = with_hard_negative(scene, random_prompt_spec, rng)
        rng.setstate(start)
        assert random_prompt_spec(scene, rng)[0] == text  # the positive is the plain prompt of the same draw
        assert spec.satisfied_by(scene)
        if negative is None:
            continue
        found += 1
        neg_text, neg_spec = negative
        assert not neg_spec.satisfied_by(scene) and neg_text != text
        same_form += len(neg_text.split()) == len(text.split())
    assert found >= 250
    assert same_form >= 0.8 * found  # mostly the same words in another order (a count's form may change)
    for scene in (sample_scene(s) for s in range(100)):
        for edited in edited_scenes(scene, random.Random(0)):
            assert all((o.color, o.shape) in set(TRAIN_PAIRS) for o in edited.objects)


def test_batches_with_hard_negatives_hold_twice_the_texts():
    data = WorldBatches(seed=3, batch_size=16, hard_negatives=1.0, probe_scenes=0.5)
    pixels, texts, match = data(2)
    assert pixels.shape[0] == 16 and len(texts) == 32 and match.shape == (16, 32)
    assert match[:, :16].diagonal().all()  # each image satisfies its own prompt
    own_negative = match[torch.arange(16), torch.arange(16) + 16]
    assert (~own_negative).sum() >= 12  # mostly a true hard negative of its own image
    assert not own_negative[8:].any()  # the probes' exact edits: false of their own image
    assert texts[8:16] != texts[24:] and all(len(a.split()) == len(b.split()) for a, b in zip(texts[8:16], texts[24:]))
    again = data(2)
    assert again[1] == texts and torch.equal(again[2], match)
    sized = WorldBatches(seed=3, batch_size=16, hard_negatives=1.0, probe_scenes=0.5, probe_sizes=1.0)(2)[1]
    assert all({"small", "large"} & set(text.split()) for text in sized[8:16] + sized[24:])  # probes say sizes


def test_loss_over_extra_texts():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    match = torch.zeros(4, 6, dtype=torch.bool)
    match[torch.arange(4), torch.arange(4)] = True  # texts 4 and 5: negatives that match no image
    loss = MultiPositiveClipLoss()
    square = loss(img, txt[:4], scale, match[:, :4])
    with_negatives = loss(img, txt, scale, match)
    assert with_negatives > square  # the negatives compete in each image's softmax
    closer = txt.clone()
    closer[4] = img[0]  # a negative that looks like image 0 costs more
    assert loss(img, closer, scale, match) > with_negatives


def test_binding_stage_trains_both_towers_unless_one_is_frozen(tmp_path):
    recipe = tiny_recipe(steps=2, binding_steps=2)
    train(tiny_recipe(steps=2), tmp_path / "first", tmp_path / "work_first", workers=0)
    before = load_file(tmp_path / "first/open_clip_model.safetensors")
    visual = [k for k in before if k.startswith("visual.")]
    text = [k for k in before if k.startswith("transformer.")]
    info = train(recipe, tmp_path / "bound", tmp_path / "work", workers=0, init=tmp_path / "first")
    assert info["stages"]["binding"]["step"] == info["stages"]["binding_mix"]["step"] == 2  # probes, then mixed
    after = load_file(tmp_path / "bound/open_clip_model.safetensors")
    for keys in (visual, text):  # the recipe's binding stage teaches the image side too (relations live there)
        assert any(not torch.equal(before[k], after[k]) for k in keys)
    for stage in ("binding", "binding_mix"):
        recipe[stage]["freeze"] = ["visual"]
    train(recipe, tmp_path / "text_only", tmp_path / "work_text", workers=0, init=tmp_path / "first")
    after = load_file(tmp_path / "text_only/open_clip_model.safetensors")
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)
    assert any(not torch.equal(before[k], after[k]) for k in text)
    whole = train(recipe, tmp_path / "whole", tmp_path / "work_whole", workers=0)  # every stage in one call
    assert whole["steps"] == 6 and set(whole["stages"]) == {"train", "binding", "binding_mix"}
    recipe["binding"]["steps"] = 3  # binding resumes to step 3; the mixed stage's checkpoint came after step 2
    with pytest.raises(
        ValueError, match=r"binding_mix run started from binding run (\w+) at step 2, not from binding run \1 at"
    ):
        train(recipe, tmp_path / "other", tmp_path / "work_whole", workers=0)
    recipe["binding"]["steps"] = 2
    shutil.rmtree(tmp_path / "work_whole" / "binding")  # a fresh binding run: the mixing checkpoint is not its
    with pytest.raises(ValueError, match=r"binding_mix run started from binding run \w+ at step 2, not from binding"):
        train(recipe, tmp_path / "other", tmp_path / "work_whole", workers=0)


def test_relation_prompts_get_their_inversion_and_every_edit_kind_leads():
    rng = random.Random(1)
    inverted = relations = 0
    for _ in range(400):
        scene = probe("relation_inversion", rng).scene
        (text, spec), negative = with_hard_negative(scene, random_prompt_spec, rng)
        if spec.kind != "relation" or negative is None:
            continue
        relations += 1
        words, neg_words = text.split(), negative[0].split()
        inverted += len(words) == len(neg_words) and sum(a != b for a, b in zip(words, neg_words)) == 1
    assert relations >= 40 and inverted >= 0.4 * relations  # the relation word alone changed, about half the time
    leads = {"attribute": 0, "position": 0, "count": 0}
    for seed in range(300):  # two objects with distinct colours and shapes: every kind of edit applies
        scene = probe("attribute_swap", seed).scene
        first = edited_scenes(scene, random.Random(seed))[0]
        identities = sorted((o.size, o.color, o.shape) for o in scene.objects)
        if sorted((o.size, o.color, o.shape) for o in first.objects) == identities:
            leads["position"] += 1  # the same objects elsewhere
        elif len({(o.color, o.shape) for o in first.objects}) < len(first.objects):
            leads["count"] += 1  # two alike now
        else:
            leads["attribute"] += 1
    assert all(n >= 60 for n in leads.values()), leads  # each kind leads about a third of the time
