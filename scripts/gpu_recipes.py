"""Helper of scripts/gpu_train.sh: the GPU (and tiny) recipes derived from the CPU ones, the VAE seed, the
sizing of each training part to its time budget, and the run's summary. Standard library only, so it runs before
(and without) the packages the script installs.

    python scripts/gpu_recipes.py recipes --mode gpu --dir OUT/recipes --encoder OUT/bundle/clip
    python scripts/gpu_recipes.py seed --workdir OUT/work/diffusion
    python scripts/gpu_recipes.py size --recipe R --stage decoder --checkpoint C --wall 40 --left 150
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
# Overrides of weights/recipes/shapes_clip.json ("binding") and shapes_diffusion_grid.json ("prior", "decoder") for one
# H200. Nobody has timed these trainers on a GPU yet; what follows comes from this repository's 2-core CPU (busy),
# where one core renders a 64 px world scene in ~0.7 ms, the encoder's PIL preprocessing takes ~0.4 ms an image,
# and a binding batch with hard negatives costs ~1.0 s at 256 scenes (rendering plus the 256 x 512 satisfaction
# matrix: quadratic, 0.37 s at 128, 1.9 s at 384). The models are tiny (a 4-block ViT on 9 tokens, a 48-96-96 UNet
# on 16 x 16 latents), so on an H200 the GPU's share of a step is a few milliseconds and every step is CPU-bound:
#   binding: batches made by --workers processes (8 of 16 cores): ~8 steps/s at 256 -> ~400 steps in its 100 s;
#   prior, decoder: the main process preprocesses each batch twice (pooled embedding, patch-token grid): ~0.8 ms
#     an image -> ~0.2 s a step at 256 -> ~350 prior steps in its 150 s, ~850 decoder steps in its 250 s
#   (each part's budget less two start-ups of 10-20 s, the first chunk's and the rest's, and a finalize reserve).
# `steps` below is a ceiling (samples: twice the CPU recipe's binding stage, the CPU prior's, the bundled decoder's
# 6000 x 64), not a plan: gpu_train.sh times a short first chunk of each part and lowers the step count to what
# its budget allows (`size`), so the schedule still anneals; a part cut off by its timeout is exported from its
# last checkpoint (`finalize`). The learning rates grow with the square root of the batch (the decoder's by less:
# 1.2e-3, not 1.6e-3, untried on this UNet); the EMA decays are shortened to the runs' lengths (~1000 steps, not
# the CPU runs' 2400-6000).
GPU = {
    "binding": {"batch_size": 256, "lr": 3e-4, "steps": 800, "warmup_steps": 50, "save_every": 100},
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
# The same script at test size, on a CPU: the binding stage of the bundled encoder (its architecture is fixed by
# --init), a one-layer prior, and a decoder scaled down as tests/tiny_diffusion.py scales it; a few steps each.
TINY = {
    "binding": {"batch_size": 8, "steps": 4, "warmup_steps": 1, "save_every": 2},
    "prior": {
        "model": {"num_layers": 1},  # heads x head dim stay the encoder's text width (the grid prior needs it)
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


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def cmd_recipes(args: argparse.Namespace) -> None:
    """clip.json (binding stage), prior.json (on the new encoder) and decoder.json (on the bundled one) in --dir."""
    overrides = GPU if args.mode == "gpu" else TINY
    clip_recipe = derived(json.loads((RECIPES / "shapes_clip.json").read_text()), overrides)
    if "binding" not in clip_recipe:
        sys.exit("shapes_clip.json has no binding stage: nothing for --init to train")
    if "visual" not in clip_recipe["binding"].get("freeze", ()):
        # the decoder trains beside the encoder, on the bundled image tower: right only while binding freezes it
        sys.exit("the binding stage must freeze the image tower ('visual') for the decoder to train in parallel")
    diffusion = derived(json.loads((RECIPES / "shapes_diffusion_grid.json").read_text()), overrides)
    folder = Path(args.dir)
    write_json(folder / "clip.json", clip_recipe)
    write_json(folder / "prior.json", {**diffusion, "encoder": str(Path(args.encoder).resolve())})
    write_json(folder / "decoder.json", {**diffusion, "encoder": str((BUNDLED / "clip").resolve())})
    for stage, recipe in (("binding", clip_recipe), ("prior", diffusion), ("decoder", diffusion)):
        cfg = recipe[stage]
        print(f"{stage}: at most {cfg['steps']} steps of {cfg['batch_size']}, lr {cfg['lr']}")


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


def set_steps(recipe_path: Path, stage: str, steps: int) -> int:
    recipe = json.loads(recipe_path.read_text())
    old = recipe[stage]["steps"]
    recipe[stage]["steps"] = steps
    write_json(recipe_path, recipe)
    return old


def cmd_size(args: argparse.Namespace) -> None:
    """Lower a part's step count to what `--left` seconds allow, from the first chunk's pace (its checkpoint's
    step and elapsed_s) and start-up (the chunk's wall time less elapsed_s): 85% of the time left after one more
    start-up goes to steps. Never raises the recipe's count, never below the steps already done."""
    state = checkpoint_state(Path(args.checkpoint))
    if not state or not state.get("step"):
        print("no checkpoint to size from: the recipe's step count stands")
        return
    done, elapsed = state["step"], state["elapsed_s"]
    per_step = elapsed / done
    startup = max(0.0, args.wall - elapsed)
    more = math.floor(0.85 * max(0.0, args.left - startup) / per_step)
    recipe = json.loads(Path(args.recipe).read_text())
    ceiling = recipe[args.stage]["steps"]
    steps = max(done, min(ceiling, done + more))
    set_steps(Path(args.recipe), args.stage, steps)
    print(
        f"{args.stage}: {done} steps in {elapsed:.1f} s ({per_step * 1000:.0f} ms a step, start-up {startup:.0f} s);"
        f" {args.left:.0f} s left -> {steps} steps (ceiling {ceiling})"
    )


def cmd_finalize(args: argparse.Namespace) -> None:
    """Set a part's step count to its last checkpoint's, so the trainer resumes, finds nothing left to do, and
    exports what it has (a run cut off by its timeout still leaves a usable model)."""
    state = checkpoint_state(Path(args.checkpoint))
    if not state or not state.get("step"):
        sys.exit(f"no checkpoint in {args.checkpoint}: nothing to finalize")
    old = set_steps(Path(args.recipe), args.stage, state["step"])
    print(f"{args.stage}: finalizing at step {state['step']} (of {old} planned)")


def cmd_use_encoder(args: argparse.Namespace) -> None:
    """Point a generator recipe at another encoder (the bundled one, when the new one did not come out)."""
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
    p.add_argument("--dir", required=True, help="folder for clip.json, prior.json, decoder.json")
    p.add_argument("--encoder", required=True, help="where the new encoder will be exported (the prior's)")
    p.set_defaults(func=cmd_recipes)
    p = sub.add_parser("seed", help="the bundled VAE as the diffusion workdir's finished part")
    p.add_argument("--workdir", required=True)
    p.add_argument("--generator", default=str(BUNDLED / "diffusion"))
    p.set_defaults(func=cmd_seed)
    for name, func in (("size", cmd_size), ("finalize", cmd_finalize)):
        p = sub.add_parser(name, help=(func.__doc__ or "").split("\n")[0])
        p.add_argument("--recipe", required=True)
        p.add_argument("--stage", required=True, help="the recipe's section: binding, prior or decoder")
        p.add_argument("--checkpoint", required=True, help="the part's checkpoint folder")
        if name == "size":
            p.add_argument("--wall", type=float, required=True, help="wall seconds of the first chunk")
            p.add_argument("--left", type=float, required=True, help="seconds left for the rest of the part")
        p.set_defaults(func=func)
    p = sub.add_parser("use-encoder", help="point a generator recipe at another encoder")
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
