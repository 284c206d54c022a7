"""The recipe of the default model: the ``tiny`` preset trained on the synthetic corpus, shipped
as ``models/weights/tiny.safetensors`` (float16). One command, about 30-45 minutes on 2 CPU cores::

    python scripts/make_default_model.py            # work files under outputs/default-model

It runs the product's own commands, one after the other:

1. ``python -m pipeline.corpus``: 24 training and 4 held-out songs of 6 s per style (4 styles);
2. ``python -m pipeline mode=train train.component=vqvae model.weights=random``: the VQ-VAE, from
   random weights, on random crops of the training songs (Ray Train);
3. ``python -m pipeline mode=encode``: the training songs into tokens, labels carried over;
4. ``python -m pipeline mode=train train.component=top|middle|bottom``: the three priors, each
   run starting from the model the previous one published;
5. the last model's weights rounded to float16 (what ships), measured on held-out songs by
   ``scripts/bench_quality.py`` and compared with the weights shipped so far, then written
   with their recipe and figures as the file's metadata (``--export``; ``--no-export`` keeps the
   shipped file as it is).

Training is seeded: a rerun gives the same figures up to floating-point differences between
machines. The last line is JSON: time per step, load averages, figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = {"seed": 0, "train_songs": 24, "heldout_songs": 4, "seconds": 6.0}
VQVAE = {"steps": 1000, "batch_size": 8, "crop_samples": 8192, "lr": 1e-3}
PRIORS = {"top": {"steps": 4000, "batch_size": 16, "lr": 1e-3},
          "middle": {"steps": 3000, "batch_size": 16, "lr": 1e-3},
          "bottom": {"steps": 3000, "batch_size": 16, "lr": 1e-3}}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _run(step: str, argv: list[str], log: list[dict]) -> None:
    """Run one command of the recipe (stops the recipe if it fails); record its time and load."""
    print(f"\n== {step}: {shlex.join(argv)}", flush=True)
    began, load = time.perf_counter(), _load()
    subprocess.run(argv, check=True, cwd=ROOT)
    log.append({"step": step, "command": shlex.join(argv), "wall_s": round(time.perf_counter() - began, 1),
                "load_before": load, "load_after": _load()})
    print(f"== {step}: {log[-1]['wall_s']} s (load {load} -> {log[-1]['load_after']})", flush=True)


def _train(component: str, settings: dict, source: list[str], data: str, out: Path, threads: int, scale: float) -> list[str]:
    steps = max(int(round(settings["steps"] * scale)), 1)
    return [sys.executable, "-m", "pipeline", "mode=train", f"train.component={component}", *source, data,
            f"train.steps={steps}", f"train.batch_size={settings['batch_size']}", f"train.optimizer.lr={settings['lr']}",
            f"train.checkpoint_every={steps}", f"train.log_every={max(steps // 10, 1)}", "train.progress_bar=false",
            f"train.torch_threads={threads}", f"output.url={out}"]


def _round_to_float16(checkpoint: Path, out: Path) -> None:
    """``checkpoint`` with every weight rounded through float16 (what the package ships), as a
    ``save_pretrained`` directory: the figures are measured on exactly the shipped values."""
    import torch

    from models.jukebox import JukeboxModel
    from models.tokenizer import JukeboxTokenizer

    model = JukeboxModel.from_pretrained(str(checkpoint))
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    model.save_pretrained(str(out))
    JukeboxTokenizer.from_pretrained(str(checkpoint)).save_pretrained(str(out))


def _export(model_dir: Path, path: Path, recipe: dict, metrics: dict) -> int:
    import torch

    from models.checkpoint import tied_aliases
    from models.jukebox import JukeboxModel
    from models.shipped import export_shipped_weights

    model = JukeboxModel.from_pretrained(str(model_dir))
    with torch.device("meta"):
        tied = tied_aliases(JukeboxModel(model.config))
    return export_shipped_weights(model.state_dict(), tied, str(path), preset="tiny", config=model.config.to_dict(),
                                  recipe=recipe, metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="outputs/default-model", help="work folder (corpus, runs, tokens)")
    parser.add_argument("--export", default=str(ROOT / "models" / "weights" / "tiny.safetensors"), help="shipped file to write")
    parser.add_argument("--no-export", action="store_true", help="measure and compare only; leave the shipped file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training worker")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every step count (trying the recipe quickly: needs --no-export)")
    args = parser.parse_args(argv)
    if args.steps_scale != 1.0 and not args.no_export:
        parser.error(f"--steps-scale={args.steps_scale} trains a different model than the recipe's: add --no-export")
    if not args.steps_scale > 0:
        parser.error(f"--steps-scale={args.steps_scale}: expected a positive factor")
    work = Path(args.work).resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"--work {work} is not empty: the recipe starts from nothing (remove it or give another)")
    began, load = time.perf_counter(), _load()
    print(f"load average before: {load}", flush=True)
    log: list[dict] = []
    corpus, runs, tokens = work / "corpus", work / "train", work / "tokens"
    _run("corpus", [sys.executable, "-m", "pipeline.corpus", f"--out={corpus}", f"--seed={CORPUS['seed']}",
                    f"--train-songs={CORPUS['train_songs']}", f"--heldout-songs={CORPUS['heldout_songs']}",
                    f"--seconds={CORPUS['seconds']}"], log)
    vqvae = _train("vqvae", VQVAE, ["model.preset=tiny", "model.weights=random"], f"train.audio_url={corpus / 'train'}",
                   runs, args.threads, args.steps_scale)
    _run("vqvae", [*vqvae, f"train.vqvae.crop_samples={VQVAE['crop_samples']}"], log)
    previous = runs / "train-vqvae" / "model"
    _run("encode", [sys.executable, "-m", "pipeline", "mode=encode", f"model.checkpoint={previous}",
                    f"encode.input_url={corpus / 'train'}", f"encode.labels_url={corpus / 'train_labels.csv'}",
                    f"output.url={tokens}"], log)
    for component, settings in PRIORS.items():
        _run(component, _train(component, settings, [f"model.checkpoint={previous}"], f"train.tokens_url={tokens}", runs,
                               args.threads, args.steps_scale), log)
        previous = runs / f"train-{component}" / "model"
    shipped = work / "shipped-float16"
    _round_to_float16(previous, shipped)
    quality = work / "quality.json"
    bench = [sys.executable, str(ROOT / "scripts" / "bench_quality.py"), f"--model={shipped}", f"--json-out={quality}",
             f"--corpus-seed={CORPUS['seed']}", f"--heldout={CORPUS['heldout_songs']}", f"--heldout-seconds={CORPUS['seconds']}"]
    if Path(args.export).is_file():
        bench.append(f"--compare-to={args.export}")
    _run("measure", bench, log)
    metrics = json.loads(quality.read_text())
    training_s = round(sum(entry["wall_s"] for entry in log if entry["step"] != "measure"), 1)
    recipe = {"trained_on": f"the synthetic corpus (python -m pipeline.corpus --seed {CORPUS['seed']})",
              "command": "python scripts/make_default_model.py", "corpus_seed": CORPUS["seed"], "corpus": CORPUS,
              "vqvae": VQVAE, "priors": PRIORS, "runs": log, "training_s": training_s, "load_before": load,
              "load_after": _load()}
    summary = {"training_s": training_s, "total_s": round(time.perf_counter() - began, 1), "load_before": load,
               "load_after": _load(), "steps": {e["step"]: e["wall_s"] for e in log}, "compared": metrics.get("compared")}
    if not args.no_export:
        metrics = {k: v for k, v in metrics.items() if k not in ("compared", "model", "weights")}
        size = _export(shipped, Path(args.export), recipe, metrics)
        summary["exported"] = {"path": args.export, "bytes": size}
        print(f"\nwrote {args.export} ({size / 1e6:.2f} MB)")
    print(f"recipe: {training_s} s of training and encoding, {summary['total_s']} s in all; load {load} -> {summary['load_after']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
