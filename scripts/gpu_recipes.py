"""Helper of scripts/gpu_train.sh: the GPU (and tiny) recipes derived from the CPU ones, the VAE seed, the
sizing of each training part to its time budget (the VLM's staged recipe included), and the run's summary.
Standard library only, so it runs before (and without) the packages the script installs.

    python scripts/gpu_recipes.py recipes --mode gpu --dir OUT/recipes --encoder OUT/bundle/clip
    python scripts/gpu_recipes.py seed --workdir OUT/work/diffusion
    python scripts/gpu_recipes.py size --recipe R --stage decoder --checkpoint C --wall 40 --left 150
    python scripts/gpu_recipes.py size --recipe OUT/recipes/vlm.json --stage vlm --checkpoint C --wall 40 --left 90
    python scripts/gpu_recipes.py finalize --recipe R --stage decoder --checkpoint C
    python scripts/gpu_recipes.py use-encoder --recipe R --encoder weights/shapes/clip
    python scripts/gpu_recipes.py merge --prior P --decoder D --out R
    python scripts/gpu_recipes.py summary --out OUT --mode gpu --wall 480 --budget 540
    python scripts/gpu_recipes.py slim-wheel .whl/gradio-*.whl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "weights" / "recipes"
BUNDLED = ROOT / "weights" / "shapes"

# ---------------------------------------------------------------------- the GPU recipe
# Overrides of weights/recipes/shapes_clip.json ("binding"), shapes_diffusion_grid.json ("prior", "decoder") and
# shapes_vlm.json (VLM_GPU) for one H200. Nobody has timed these trainers on a GPU yet; what follows comes from this
# repository's 2-core CPU (busy), where one core renders a 64 px world scene in ~0.7 ms, the encoder's PIL
# preprocessing takes ~0.4 ms an image, and a binding batch with hard negatives costs ~1.0 s at 256 scenes
# (rendering plus the 256 x 512 satisfaction matrix: quadratic, 0.37 s at 128, 1.9 s at 384). The models are tiny
# (a 4-block ViT on 9 tokens, a 48-96-96 UNet on 16 x 16 latents, a 2-layer 256-wide decoder LM), so on an H200 the
# GPU's share of a step is a few milliseconds and every step is CPU-bound:
#   binding (both towers now; it runs alone, beside the CUDA tests): batches made by --workers processes (12 of 16
#     cores): ~8-10 steps/s at 256 -> ~400 steps in its 100 s;
#   prior, decoder, VLM (side by side on the new encoder, each with 3 workers): the main process preprocesses each
#     batch (the generator's twice: pooled embedding, patch-token grid; the VLM's once, for the patch tokens):
#     ~0.8 ms an image -> ~0.2 s a step at 256 -> ~500 prior and ~500 decoder steps in their 160 s; ~0.4 ms an
#     image -> ~0.15 s a step -> ~700 VLM steps in its 160 s
#   (each part's budget less two start-ups of 10-20 s, the first chunk's and the rest's, and a finalize reserve).
# `steps` below is a ceiling (samples: 0.8 times the CPU recipe's binding stage, under a third of its cell prior's
# 6500 x 128 (its count/relation `focus` kept), two thirds of its decoder's 9000 x 64, twice the bundled VLM's 2400 x
# 64), not a plan: gpu_train.sh times a short first chunk of each part (the VLM's: its projector stage) and lowers the
# step count to what its budget allows (`size`; the VLM's stages shrink in proportion), so the schedule still anneals;
# a part cut off by its timeout is exported from its last checkpoint (`finalize`). The learning rates grow with the
# square root of the batch (the decoder's by less: 1.2e-3, not 1.6e-3, untried on this UNet; the VLM's by 1.5x, not
# 2x, untried too; the binding stage's 5e-4 at 128 becomes 7e-4 at 256); the EMA decays are shortened to the runs'
# lengths (~1000 steps, not the CPU runs' 2400-6000).
GPU = {
    "binding": {"batch_size": 256, "lr": 7e-4, "steps": 800, "warmup_steps": 50, "save_every": 100},
    # the mixing stage after it is short and not sized (`size` paces the binding stage): a fixed 150 steps
    "binding_mix": {"batch_size": 256, "lr": 3e-4, "steps": 150, "warmup_steps": 10, "save_every": 50},
    "prior": {"batch_size": 256, "lr": 1.4e-3, "steps": 1000, "warmup_steps": 50, "ema": 0.995, "save_every": 100},
    "decoder": {
        "batch_size": 256,
        "lr": 1.2e-3,
        "steps": 1500,
        "warmup_steps": 100,
        "ema": 0.995,
        "save_every": 150,
        "sample_every": 500,
        "lr_horizons": [],
    },
}
# shapes_vlm.json's layout differs (top-level keys, a "stages" list): its overrides replace top-level keys, update
# the "decoder" dict, and update each stage by name.
VLM_GPU = {
    "batch_size": 256,
    "save_every": 100,
    "stages": {
        "projector": {"steps": 100, "lr": {"projector": 3e-3}, "warmup_steps": 10},
        "full": {"steps": 1100, "lr": {"projector": 1.5e-3, "decoder": 1.5e-3}, "warmup_steps": 50},
    },
}
# The same script at test size, on a CPU: the binding stage of the bundled encoder (its architecture is fixed by
# --init), a one-layer prior, a decoder scaled down as tests/tiny_diffusion.py scales it, and a one-layer 64-wide
# VLM decoder; a few steps each.
TINY = {
    "binding": {"batch_size": 8, "steps": 4, "warmup_steps": 1, "save_every": 2},
    "binding_mix": {"batch_size": 8, "steps": 2, "warmup_steps": 1, "save_every": 2},
    "prior": {
        "model": {"num_layers": 1},  # heads x head dim and the type (the cell prior) stay the recipe's
        "batch_size": 4,
        "steps": 4,
        "warmup_steps": 1,
        "save_every": 2,
        "sample_every": 4,
        "sample_steps": 2,
        "stats_samples": 16,
    },
    "decoder": {
        "model": {
            "block_out_channels": [16, 32],
            "attention_head_dim": 8,
            "cross_attention_dim": 16,
            "norm_num_groups": 8,
        },
        "batch_size": 4,
        "steps": 4,
        "warmup_steps": 1,
        "save_every": 2,
        "sample_every": 4,
        "sample_steps": 2,
        "grid_samples": 16,
        "lr_horizons": [],
    },
}
VLM_TINY = {
    "decoder": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "batch_size": 4,
    "save_every": 2,
    "stages": {"projector": {"steps": 2, "warmup_steps": 1}, "full": {"steps": 2, "warmup_steps": 1}},
}
STAGED = "vlm"  # `--stage` for the VLM's recipe: its "stages" list, sized as one run (its "vlm" key is model config)


def derived(base: dict, overrides: dict) -> dict:
    """`base` with each stage's keys replaced by `overrides` (a stage's "model" dict is updated, not replaced)."""
    recipe = copy.deepcopy(base)
    for stage, keys in overrides.items():
        if stage not in recipe:
            continue
        for key, value in keys.items():
            if key == "model":
                recipe[stage]["model"].update(value)
            else:
                recipe[stage][key] = value
    return recipe


def derived_vlm(base: dict, overrides: dict) -> dict:
    """shapes_vlm.json with `overrides`: top-level keys replaced, "decoder" updated, each of "stages" (a dict by
    stage name) updated in the stage of that name (a stage's "lr" dict is replaced: it names the trained modules)."""
    recipe = copy.deepcopy(base)
    for key, value in overrides.items():
        if key == "decoder":
            recipe["decoder"].update(value)
        elif key == "stages":
            by_name = {stage["name"]: stage for stage in recipe["stages"]}
            if set(value) - set(by_name):
                sys.exit(f"shapes_vlm.json has no stage {sorted(set(value) - set(by_name))}")
            for name, keys in value.items():
                by_name[name].update(keys)
        else:
            recipe[key] = value
    return recipe


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def cmd_recipes(args: argparse.Namespace) -> None:
    """clip.json (binding stage), and prior.json, decoder.json and vlm.json, all three on the new encoder, in
    --dir. The binding stage trains both towers, so nothing that reads the encoder can train beside it."""
    gpu = args.mode == "gpu"
    overrides = GPU if gpu else TINY
    clip_recipe = derived(json.loads((RECIPES / "shapes_clip.json").read_text()), overrides)
    if "binding" not in clip_recipe:
        sys.exit("shapes_clip.json has no binding stage: nothing for --init to train")
    diffusion = derived(json.loads((RECIPES / "shapes_diffusion_grid.json").read_text()), overrides)
    vlm = derived_vlm(json.loads((RECIPES / "shapes_vlm.json").read_text()), VLM_GPU if gpu else VLM_TINY)
    encoder = str(Path(args.encoder).resolve())
    folder = Path(args.dir)
    write_json(folder / "clip.json", clip_recipe)
    write_json(folder / "prior.json", {**diffusion, "encoder": encoder})
    write_json(folder / "decoder.json", {**diffusion, "encoder": encoder})
    write_json(folder / "vlm.json", {**vlm, "encoder": encoder})
    for stage, recipe in (("binding", clip_recipe), ("prior", diffusion), ("decoder", diffusion)):
        cfg = recipe[stage]
        print(f"{stage}: at most {cfg['steps']} steps of {cfg['batch_size']}, lr {cfg['lr']}")
    stages = ", ".join(f"{s['name']} {s['steps']} (lr {s['lr']})" for s in vlm["stages"])
    print(f"vlm: at most {total_steps(vlm, STAGED)} steps of {vlm['batch_size']}: {stages}")


def cmd_seed(args: argparse.Namespace) -> None:
    """The bundled VAE as the workdir's finished part: finished/movq and finished/vae.json (its training record),
    the layout diffusion/train.py's finish_part writes, so the trainer loads it instead of training one."""
    generator = Path(args.generator)
    finished = Path(args.workdir) / "finished"
    finished.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(finished / "movq", ignore_errors=True)
    shutil.copytree(generator / "movq", finished / "movq")
    record = json.loads((generator / "training.json").read_text())["parts"]["vae"]
    write_json(finished / "vae.json", record)
    print(f"seeded {finished} with {generator / 'movq'} (VAE PSNR {record.get('psnr_db')} dB)")


def checkpoint_state(folder: Path) -> dict | None:
    """The `state` of a trainer's checkpoint (core/checkpoint.py: the folder, else the `.previous` one a crash
    between two renames left), or None when there is none."""
    for candidate in (folder, folder.with_name(folder.name + ".previous")):
        path = candidate / "state.json"
        if path.is_file():
            return json.loads(path.read_text())["state"]
    return None


def total_steps(recipe: dict, stage: str) -> int:
    """A part's step count: its section's "steps", or for the VLM (STAGED) the sum over its stages."""
    if stage == STAGED:
        return sum(s["steps"] for s in recipe["stages"])
    return recipe[stage]["steps"]


def fit_stages(stages: list[dict], done: int, total: int) -> list[dict]:
    """The VLM's stages refitted to `total` steps, `done` of them trained: the stages finished before `done` stay
    as they are; the rest share what is left in proportion to their lengths, the stage in progress keeping at
    least the steps it has done (at `total` <= `done`, the stages are cut at `total`, later ones dropped)."""
    first, current = 0, len(stages)  # the first step and index of the stage `done` falls in
    for i, stage in enumerate(stages):
        if done < first + stage["steps"]:
            current = i
            break
        first += stage["steps"]
    if total <= done or current == len(stages):
        cut, start = [], 0
        for stage in stages:
            if total - start <= 0:
                break
            cut.append({**stage, "steps": min(stage["steps"], total - start)})
            start += cut[-1]["steps"]
        return cut
    rest, left = stages[current:], total - first  # left > done - first >= 0
    length = sum(s["steps"] for s in rest)
    new = [math.floor(left * s["steps"] / length) for s in rest]
    new[0] = max(new[0], done - first, 1)
    new[-1] += left - sum(new)  # the rounding's remainder, or (< 0) what the stage in progress kept
    for i in range(len(new) - 1, 0, -1):  # a later stage left below one step gives its deficit to the one before
        if new[i] < 1:
            new[i - 1] += new[i]
            new[i] = 0
    return stages[:current] + [{**s, "steps": n} for s, n in zip(rest, new, strict=True) if n > 0]


def set_steps(recipe_path: Path, stage: str, steps: int, done: int = 0) -> int:
    """Set a part's step count (for the VLM, refit its stages, `done` steps trained); returns the old count."""
    recipe = json.loads(recipe_path.read_text())
    old = total_steps(recipe, stage)
    if stage == STAGED:
        recipe["stages"] = fit_stages(recipe["stages"], done, steps)
    else:
        recipe[stage]["steps"] = steps
    write_json(recipe_path, recipe)
    return old


def describe(recipe_path: Path, stage: str) -> str:
    """', stages projector 100 + full 400' for the VLM's recipe, else nothing."""
    if stage != STAGED:
        return ""
    stages = json.loads(recipe_path.read_text())["stages"]
    return ", stages " + " + ".join(f"{s['name']} {s['steps']}" for s in stages)


def cmd_size(args: argparse.Namespace) -> None:
    """Lower a part's step count to what `--left` seconds allow, from the first chunk's pace (its checkpoint's
    step and elapsed_s) and start-up (the chunk's wall time less elapsed_s): 85% of the time left after one more
    start-up goes to steps. Never raises the recipe's count, never below the steps already done. `--stage vlm`
    sizes the VLM's staged recipe as one run (its step and elapsed_s count over all stages)."""
    state = checkpoint_state(Path(args.checkpoint))
    if not state or not state.get("step"):
        print("no checkpoint to size from: the recipe's step count stands")
        return
    done, elapsed = state["step"], state["elapsed_s"]
    per_step = elapsed / done
    startup = max(0.0, args.wall - elapsed)
    more = math.floor(0.85 * max(0.0, args.left - startup) / per_step)
    recipe = json.loads(Path(args.recipe).read_text())
    ceiling = total_steps(recipe, args.stage)
    steps = max(done, min(ceiling, done + more))
    set_steps(Path(args.recipe), args.stage, steps, done)
    print(
        f"{args.stage}: {done} steps in {elapsed:.1f} s ({per_step * 1000:.0f} ms a step, start-up {startup:.0f} s);"
        f" {args.left:.0f} s left -> {steps} steps (ceiling {ceiling}){describe(Path(args.recipe), args.stage)}"
    )


def cmd_finalize(args: argparse.Namespace) -> None:
    """Set a part's step count to its last checkpoint's, so the trainer resumes, finds nothing left to do, and
    exports what it has (a run cut off by its timeout still leaves a usable model)."""
    state = checkpoint_state(Path(args.checkpoint))
    if not state or not state.get("step"):
        sys.exit(f"no checkpoint in {args.checkpoint}: nothing to finalize")
    old = set_steps(Path(args.recipe), args.stage, state["step"], state["step"])
    print(
        f"{args.stage}: finalizing at step {state['step']} (of {old} planned){describe(Path(args.recipe), args.stage)}"
    )


def cmd_use_encoder(args: argparse.Namespace) -> None:
    """Point a generator (or VLM) recipe at another encoder: the new one once exported, else the bundled one."""
    recipe = json.loads(Path(args.recipe).read_text())
    recipe["encoder"] = str(Path(args.encoder).resolve())
    write_json(Path(args.recipe), recipe)


def cmd_merge(args: argparse.Namespace) -> None:
    """The export's recipe: the prior's (on the new encoder) with the decoder's section as it was trained."""
    recipe = json.loads(Path(args.prior).read_text())
    recipe["decoder"] = json.loads(Path(args.decoder).read_text())["decoder"]
    write_json(Path(args.out), recipe)


# ---------------------------------------------------------------------- the summary
def read_steps(path: Path) -> list[dict]:
    """steps.tsv as gpu_train.sh writes it: name, status, rc ('-' when skipped), seconds, budget, note."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else ():
        name, status, rc, seconds, budget, note = (line.split("\t") + [""] * 6)[:6]
        rows.append(
            {
                "step": name,
                "status": status,
                "rc": None if rc == "-" else int(rc),
                "seconds": float(seconds),
                "budget_s": int(budget),
                "note": note,
            }
        )
    return rows


def trained_steps(out: Path) -> dict:
    """Each part's steps and train seconds, from the exported folders' training.json."""
    parts = {}
    clip_info = out / "bundle" / "clip" / "training.json"
    if clip_info.is_file():
        binding = json.loads(clip_info.read_text()).get("stages", {}).get("binding") or {}
        parts["binding"] = {"steps": binding.get("step"), "seconds": binding.get("elapsed_s")}
    generator_info = out / "bundle" / "diffusion" / "training.json"
    if generator_info.is_file():
        for part, record in json.loads(generator_info.read_text()).get("parts", {}).items():
            if part != "vae":
                parts[part] = {"steps": record.get("step"), "seconds": record.get("elapsed_s")}
    vlm_info = out / "bundle" / "vlm" / "training.json"
    if vlm_info.is_file():
        record = json.loads(vlm_info.read_text())
        parts["vlm"] = {"steps": record.get("steps"), "seconds": record.get("train_seconds")}
    for info in parts.values():
        if isinstance(info["seconds"], float):
            info["seconds"] = round(info["seconds"], 1)
    return parts


def cmd_summary(args: argparse.Namespace) -> None:
    """summary.json and summary.md in --out: every step with its status, exit code, wall time and budget."""
    out = Path(args.out)
    rows = read_steps(out / "steps.tsv")
    summary = {
        "mode": args.mode,
        "wall_s": args.wall,
        "budget_s": args.budget,
        "failed": [r["step"] for r in rows if r["status"] not in ("ok", "skipped")],
        "steps": rows,
        "trained": trained_steps(out),
    }
    write_json(out / "summary.json", summary)
    lines = [
        f"# gpu_train.sh ({args.mode}): {args.wall:.0f} s of {args.budget} s",
        "",
        "| step | status | exit code | seconds | budget s | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rc = "–" if r["rc"] is None else str(r["rc"])
        lines.append(f"| {r['step']} | {r['status']} | {rc} | {r['seconds']:.1f} | {r['budget_s']} | {r['note']} |")
    if summary["trained"]:
        lines += ["", "| part | steps | train s |", "|---|---|---|"]
        lines += [f"| {p} | {i['steps']} | {i['seconds']} |" for p, i in summary["trained"].items()]
    lines.append("")
    lines.append("failed: " + (", ".join(summary["failed"]) or "none"))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ---------------------------------------------------------------------- the wheelhouse
SLIM_DROP = ("gradio/templates/frontend/", "gradio/templates/node/", "gradio/media_assets/")


def cmd_slim_wheel(args: argparse.Namespace) -> None:
    """Rewrite gradio's wheel without its web front end, its Node server and its demo media (~30 of 31 MB):
    the device builds the app (the memory benchmark) but never serves a page. RECORD loses the dropped files."""
    path = Path(args.wheel)
    tmp = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename.startswith(SLIM_DROP):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines() if not line.startswith(SLIM_DROP)]
                data = ("\n".join(kept) + "\n").encode()
            dst.writestr(item, data)
    before = path.stat().st_size
    tmp.replace(path)
    print(f"slimmed {path.name}: {before / 2**20:.1f} -> {path.stat().st_size / 2**20:.1f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("recipes", help="write the GPU or tiny recipes")
    p.add_argument("--mode", choices=("gpu", "tiny"), required=True)
    p.add_argument("--dir", required=True, help="folder for clip.json, prior.json, decoder.json, vlm.json")
    p.add_argument("--encoder", required=True, help="where the new encoder will be exported (the others' encoder)")
    p.set_defaults(func=cmd_recipes)
    p = sub.add_parser("seed", help="the bundled VAE as the diffusion workdir's finished part")
    p.add_argument("--workdir", required=True)
    p.add_argument("--generator", default=str(BUNDLED / "diffusion"))
    p.set_defaults(func=cmd_seed)
    for name, func in (("size", cmd_size), ("finalize", cmd_finalize)):
        p = sub.add_parser(name, help=(func.__doc__ or "").split("\n")[0])
        p.add_argument("--recipe", required=True)
        p.add_argument(
            "--stage", required=True, help="the recipe's section: binding, prior or decoder; vlm: the VLM's stages"
        )
        p.add_argument("--checkpoint", required=True, help="the part's checkpoint folder")
        if name == "size":
            p.add_argument("--wall", type=float, required=True, help="wall seconds of the first chunk")
            p.add_argument("--left", type=float, required=True, help="seconds left for the rest of the part")
        p.set_defaults(func=func)
    p = sub.add_parser("use-encoder", help="point a generator or VLM recipe at another encoder")
    p.add_argument("--recipe", required=True)
    p.add_argument("--encoder", required=True)
    p.set_defaults(func=cmd_use_encoder)
    p = sub.add_parser("merge", help="the export's recipe from the prior's and the decoder's")
    p.add_argument("--prior", required=True)
    p.add_argument("--decoder", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("summary", help="summary.json and summary.md from steps.tsv")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--wall", type=float, required=True)
    p.add_argument("--budget", type=int, required=True)
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("slim-wheel", help="gradio's wheel without the web front end")
    p.add_argument("wheel")
    p.set_defaults(func=cmd_slim_wheel)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
