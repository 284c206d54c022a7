"""``jukebox-convert``: the original OpenAI Jukebox checkpoint files into a ``save_pretrained`` directory.

    jukebox-convert --dir jukebox/5b_lyrics --preset 5b_lyrics --out converted/5b_lyrics
    jukebox-convert --vqvae 5b/vqvae.pth.tar \\
        --priors 5b/prior_level_0.pth.tar 5b/prior_level_1.pth.tar 1b_lyrics/prior_level_2.pth.tar \\
        --preset 1b_lyrics --out converted/1b_lyrics --dtype float16

The output (``config.json``, ``model.safetensors`` or shards with ``model.safetensors.index.json``,
and with ``--preset`` the tokenizer's vocabulary and ``tokenizer_config.json``) loads with our
loaders and with transformers' ``JukeboxModel.from_pretrained``. Paths may be fsspec URLs.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch

from models.checkpoint import save_pretrained_state_dict
from models.config import JukeboxConfig
from models.openai_checkpoint import VQVAE_FILE, expected_layout, load_openai_checkpoint, openai_files
from models.presets import available_presets, load_preset, preset_tokenizer_settings
from models.tokenizer import JukeboxTokenizer

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jukebox-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("original files (either --dir, or --vqvae with --priors)")
    source.add_argument("--dir", help=f"directory holding {VQVAE_FILE} and prior_level_<k>.pth.tar")
    source.add_argument("--vqvae", help=f"path of {VQVAE_FILE}")
    source.add_argument("--priors", nargs="+", metavar="PATH",
                        help="prior files in original order: prior_level_0 (bottom upsampler) ... top prior")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--preset", help=f"model preset, one of {available_presets()} or a YAML path")
    model.add_argument("--config", help="config.json of a Jukebox model (ours or transformers')")
    parser.add_argument("--out", required=True, help="output directory (local or fsspec URL)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating-point weights (default: as stored)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest weight file before sharding (default 5GB)")
    return parser


def _paths(args: argparse.Namespace, config: JukeboxConfig, parser: argparse.ArgumentParser) -> dict[str, str]:
    """File name -> path of every original file the config needs."""
    files = openai_files(config.nb_priors)
    if args.dir is not None:
        if args.vqvae is not None or args.priors is not None:
            parser.error("give either --dir or --vqvae/--priors, not both")
        return {f.name: f"{args.dir.rstrip('/')}/{f.name}" for f in files}
    if args.vqvae is None or args.priors is None:
        parser.error("give --dir, or both --vqvae and --priors")
    prior_files = files[1:]
    if len(args.priors) != len(prior_files):
        parser.error(f"--priors needs {len(prior_files)} paths ({[f.name for f in prior_files]}), got {len(args.priors)}")
    for file, path in zip(prior_files, args.priors):
        stem = path.rstrip("/").rsplit("/", 1)[-1]
        if stem.startswith("prior_level_") and stem != file.name:
            parser.error(f"--priors are in original order ({[f.name for f in prior_files]}): {path!r} is given "
                         f"where {file.name} belongs")
    return {files[0].name: args.vqvae, **{f.name: p for f, p in zip(prior_files, args.priors)}}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conversion; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_preset(args.preset) if args.preset else JukeboxConfig.from_pretrained(args.config)
    state = load_openai_checkpoint(_paths(args, config, parser), config)
    if args.dtype:
        dtype = DTYPES[args.dtype]
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    # a tied output projection (merged_decoder=False) is written once, as transformers does
    _, tied = expected_layout(config)
    written = save_pretrained_state_dict(config, state, args.out, max_shard_size=args.max_shard_size, tied=tied)
    if args.preset:
        written += JukeboxTokenizer(**preset_tokenizer_settings(args.preset)).save_pretrained(args.out)
    n_params = sum(v.numel() for k, v in state.items() if k not in tied)
    print(f"converted {len(state)} tensors ({n_params / 1e6:.1f}M values) into {args.out}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
