"""Raw content -> feature file.

    python -m recbole_mm.encoders text  --items FILE --output FEAT.npy [--fields title brand | --template T]
    python -m recbole_mm.encoders image --items FILE --output FEAT.npy [--image-column image --image-root DIR]
    python -m recbole_mm.encoders image --image-dir DIR --output FEAT.npy      (files named <item id>.<ext>)
    python -m recbole_mm.encoders mllm  --items FILE --output FEAT.npy --model NAME_OR_PATH [--pca 768]

FILE is a CSV, TSV or JSONL with an item id column and the content columns. Each command writes
FEAT.npy (one row per item that got a feature), FEAT.ids (the item id of each row: the dataset
loader's id file) and FEAT.json (model, pooling, dims, item count, failures, date). Items with no
text, or whose image is missing or does not decode, get no row and are listed: the dataset's
``missing_modality`` policy decides what they get. Runs are resumable (parts cached under
FEAT.cache/), outputs are written atomically and an existing FEAT.npy is only replaced with --force.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from recbole_mm.encoders.base import (
    EncoderInputError,
    FeatureCache,
    cache_dir_for,
    check_output,
    read_items,
    report_failures,
    resolve_device,
    run_batches,
    write_features,
)
from recbole_mm.encoders.text import DEFAULT_TEXT_MODEL, resolve_text_model

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def item_texts(frame: pd.DataFrame, fields, template, path: str) -> pd.Series:
    """One text per item: ``template`` filled from the row, or the non-empty ``fields`` joined by '. '."""
    if template:
        missing = [f for f in _template_fields(template) if f not in frame.columns]
        if missing:
            raise EncoderInputError(f"{path}: template field(s) {missing} are not columns ({list(frame.columns)})")
        rows = frame.fillna("").astype(str).to_dict("records")
        return pd.Series([template.format(**r).strip() for r in rows], index=frame.index)
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise EncoderInputError(f"{path}: field(s) {missing} are not columns ({list(frame.columns)})")
    parts = frame[fields].fillna("").astype(str).apply(lambda col: col.str.strip())
    return parts.apply(lambda row: ". ".join(v for v in row if v), axis=1)


def _template_fields(template: str):
    import string

    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _run(args, ids, payloads, encode_batch, settings: dict, what: str):
    cache = FeatureCache(cache_dir_for(args.output, args.cache_dir), settings, force=args.force)
    if cache.done_parts():
        print(f"resuming: {cache.done_parts()} part(s) already encoded in {cache.directory}", file=sys.stderr)
    result = run_batches(ids, payloads, encode_batch, batch_size=args.batch_size, cache=cache,
                         part_size=args.part_size, show_progress=not args.quiet, desc=f"{args.encoder} features")
    report_failures(result.failures, what)
    return result, cache


# -- text ------------------------------------------------------------------------------------------
def encode_text_file(args) -> str:
    from recbole_mm.encoders.text import load_text_model

    check_output(args.output, args.force)
    frame = read_items(args.items, args.id_column)
    texts = item_texts(frame, args.fields, args.template, args.items)
    has_text = (texts.str.strip() != "").to_numpy()
    ids = frame[args.id_column].astype(str).to_numpy()
    device = resolve_device(args.device)
    print(f"{int(has_text.sum()):,} of {len(frame):,} items have text; encoding with {args.model} on {device}",
          file=sys.stderr)
    model = load_text_model(args.model, device=device)

    def encode(batch):
        out = model.encode(list(batch), batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True)
        return out, {}

    settings = {"encoder": "text", "model": args.model, "fields": args.fields, "template": args.template,
                "items": os.path.abspath(args.items)}
    result, cache = _run(args, ids[has_text], texts[has_text].tolist(), encode, settings, "text")
    write_features(args.output, result.ids, result.features, {
        **settings, "resolved_model": resolve_text_model(args.model), "device": device,
        "items_without_text": int((~has_text).sum()), "source": os.path.abspath(args.items)}, result.failures)
    cache.remove()
    print(f"wrote {args.output} {result.features.shape} + .ids + .json", file=sys.stderr)
    return args.output


# -- image -----------------------------------------------------------------------------------------
def _image_root(args) -> str:
    """Folder that relative image paths (and downloaded URLs) are looked up in: --image-root, or the
    items file's folder."""
    return args.image_root or os.path.dirname(os.path.abspath(args.items))


def _image_items(args):
    """(ids, image paths) from --items + --image-column, or from the files of --image-dir."""
    from recbole_mm.encoders.image import resolve_image_path

    if args.items:
        frame = read_items(args.items, args.id_column)
        if args.image_column not in frame.columns:
            raise EncoderInputError(f"{args.items}: no image column '{args.image_column}' "
                                    f"(columns: {list(frame.columns)})")
        root = _image_root(args)
        cells = frame[args.image_column].fillna("").astype(str)
        # a cell may list several images (JSON list or whitespace-separated): the first is used
        cells = cells.str.strip().str.strip("[]").str.split(r"[\s,]+").str[0].str.strip("'\"")
        return frame[args.id_column].astype(str).tolist(), [resolve_image_path(c, root) for c in cells]
    if not args.image_dir or not os.path.isdir(args.image_dir):
        raise EncoderInputError(f"--image-dir {args.image_dir}: not a folder (or give --items)")
    files = sorted(f for f in os.listdir(args.image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    stems = [os.path.splitext(f)[0] for f in files]
    dup = pd.Series(stems).duplicated()
    if dup.any():
        raise EncoderInputError(f"{args.image_dir}: two images for item '{stems[int(np.flatnonzero(dup)[0])]}'")
    return stems, [os.path.join(args.image_dir, f) for f in files]


def encode_image_file(args) -> str:
    from recbole_mm.encoders.image import ImageEncoder

    check_output(args.output, args.force)
    ids, paths = _image_items(args)
    device = resolve_device(args.device)
    print(f"{len(ids):,} items; encoding images with {args.model} on {device}", file=sys.stderr)
    encoder = ImageEncoder(args.model, pooling=args.pooling, device=device)
    settings = {"encoder": "image", "model": args.model, "pooling": encoder.pooling,
                "source": os.path.abspath(args.items or args.image_dir), "image_column": args.image_column}
    result, cache = _run(args, ids, paths, encoder, settings, "an image")
    write_features(args.output, result.ids, result.features, {**settings, "device": device}, result.failures)
    cache.remove()
    print(f"wrote {args.output} {result.features.shape} + .ids + .json", file=sys.stderr)
    return args.output


# -- multimodal LLM --------------------------------------------------------------------------------
def encode_mllm_file(args) -> str:
    from recbole_mm.encoders.image import resolve_image_path
    from recbole_mm.encoders.mllm import DEFAULT_PROMPT, MLLMEncoder, fill_prompt, fit_pca

    check_output(args.output, args.force)
    frame = read_items(args.items, args.id_column)
    template = DEFAULT_PROMPT
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as fh:
            template = fh.read()
    if args.prompt:
        template = args.prompt
    rows = frame.fillna("").astype(str).to_dict("records")
    prompts = [fill_prompt(template, r) for r in rows]
    if args.image_column in frame.columns:
        root = _image_root(args)
        paths = [resolve_image_path(r[args.image_column], root) for r in rows]
    else:
        print(f"no '{args.image_column}' column: encoding the prompts without images", file=sys.stderr)
        paths = [""] * len(rows)
    device = resolve_device(args.device)
    print(f"{len(rows):,} items; {args.model} on {device}, hidden layer {args.layer}, {args.pooling} pooling",
          file=sys.stderr)
    encoder = MLLMEncoder(args.model, pooling=args.pooling, layer=args.layer, device=device,
                          require_image=args.require_image)
    settings = {"encoder": "mllm", "model": args.model, "pooling": args.pooling, "layer": args.layer,
                "prompt": template, "require_image": args.require_image, "source": os.path.abspath(args.items)}
    ids = frame[args.id_column].astype(str).tolist()
    result, cache = _run(args, ids, list(zip(prompts, paths)), encoder, settings, "an MLLM feature")
    features, extra = result.features, {}
    meta = {**settings, "device": device, "l2_normalised": True}
    if args.pca:
        features, state = fit_pca(result.features, args.pca)
        extra[".pca"] = state
        meta.update({"pca": args.pca, "pca_input_dims": int(result.features.shape[1]),
                     "pca_explained_variance_ratio": float(state["explained_variance_ratio"].sum())})
    write_features(args.output, result.ids, features, meta, result.failures, extra_files=extra)
    cache.remove()
    print(f"wrote {args.output} {features.shape} + .ids + .json", file=sys.stderr)
    return args.output


# -- CLI -------------------------------------------------------------------------------------------
def _common(p, default_batch):
    p.add_argument("--output", required=True, help="FEAT.npy to write (plus FEAT.ids and FEAT.json)")
    p.add_argument("--id-column", default="itemID", help="item id column of --items (default itemID)")
    p.add_argument("--batch-size", type=int, default=default_batch, help=f"items per forward pass "
                   f"(default {default_batch}); results do not depend on it")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, or auto (cuda when available)")
    p.add_argument("--cache-dir", default=None, help="resumable cache of finished parts (default FEAT.cache/)")
    p.add_argument("--part-size", type=int, default=None, help="items per cached part (default 16 batches)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output and discard a stale cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.encoders", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="encoder", required=True)

    text = sub.add_parser("text", help="sentence-transformers text features")
    text.add_argument("--items", required=True, help="CSV/TSV/JSONL with an item id column and text columns")
    text.add_argument("--model", default=DEFAULT_TEXT_MODEL,
                      help="local dir, packaged name or hub name (default all-MiniLM-L6-v2)")
    text.add_argument("--fields", nargs="+", default=["title"], help="text columns joined by '. ' (default title)")
    text.add_argument("--template", default=None, help='python format string over columns, e.g. "{title}. {brand}"')
    _common(text, 64)

    from recbole_mm.encoders.image import DEFAULT_IMAGE_MODEL, POOLINGS

    image = sub.add_parser("image", help="image features from a CLIP/SigLIP/ViT model (transformers)")
    image.add_argument("--items", default=None, help="CSV/TSV/JSONL with an item id column and an image column")
    image.add_argument("--image-column", default="image",
                       help="column with the image path (relative to --image-root) or a URL already downloaded "
                            "into --image-root (matched by file name); default 'image'")
    image.add_argument("--image-root", default=None, help="folder image paths are relative to "
                       "(default: the items file's folder)")
    image.add_argument("--image-dir", default=None, help="instead of --items: a folder of <item id>.<ext> images")
    image.add_argument("--model", default=DEFAULT_IMAGE_MODEL,
                       help=f"hub name or local dir of a CLIP/SigLIP/ViT model (default {DEFAULT_IMAGE_MODEL})")
    image.add_argument("--pooling", choices=POOLINGS, default=None,
                       help="projection (joint image-text embedding; default for CLIP/SigLIP), cls (pooled "
                            "CLS output; default for vision-only models) or mean (mean of patch tokens)")
    _common(image, 32)

    from recbole_mm.encoders.mllm import MLLM_POOLINGS

    mllm = sub.add_parser("mllm", help="text-guided fused features from a multimodal LLM (USERec)")
    mllm.add_argument("--items", required=True, help="CSV/TSV/JSONL: item id, text fields of the prompt, image")
    mllm.add_argument("--model", required=True, help="hub name or local dir of an AutoModelForImageTextToText "
                      "model (the paper: XiaomiMiMo/MiMo-VL-7B-RL; any Qwen2-VL/LLaVA-style model)")
    mllm.add_argument("--prompt", default=None, help="prompt template over item columns, e.g. '{title} ...' "
                      "(default: USERec's product-analysis prompt over title/brand/price/description)")
    mllm.add_argument("--prompt-file", default=None, help="read the prompt template from this file")
    mllm.add_argument("--image-column", default="image", help="image path/URL column (default 'image')")
    mllm.add_argument("--image-root", default=None, help="folder image paths are relative to")
    mllm.add_argument("--require-image", action="store_true",
                      help="items without a readable image get no row (default: encoded from the prompt alone)")
    mllm.add_argument("--layer", type=int, default=-2, help="hidden-state layer (default -2: second-to-last)")
    mllm.add_argument("--pooling", choices=MLLM_POOLINGS, default="mean",
                      help="mean over input tokens (default) or the last token")
    mllm.add_argument("--pca", type=int, default=None,
                      help="reduce to this many dims with PCA fit on all items (paper: 768); saved as FEAT.pca.npz")
    _common(mllm, 4)
    return parser


def main(argv=None) -> int:
    """Exit status 0, or 2 after one line ``error: ...`` on stderr for bad input (EncoderInputError & co.)."""
    from recbole_mm.cli import run_main

    def encode(argv):
        args = build_parser().parse_args(argv)
        {"text": encode_text_file, "image": encode_image_file, "mllm": encode_mllm_file}[args.encoder](args)

    return run_main(encode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
