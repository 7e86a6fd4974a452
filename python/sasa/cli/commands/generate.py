"""``sasa generate``: guarded generation for one prompt (standard library only at module level)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable

from sasa.cli.errors import CLIError
from sasa.cli.loading import check_device, check_model_dir, load_model, load_probe


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa generate`` (the contract of :data:`sasa.cli.app.COMMAND_MODULES`)."""
    p = subparsers.add_parser("generate", help="guarded generation for one prompt",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_flags(p, batching=False, raw_prompt=False)
    p.add_argument("--probe", required=True, metavar="DIR", help="directory written by 'sasa calibrate'")
    p.add_argument("--prompt", required=True, help="the user's request")
    p.add_argument("--image", metavar="FILE", help="an image for a vision-language model")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from sasa.data.manifest import Example, check_image, check_images_supported, encode_batch
    from sasa.guard.apply import apply_sasa

    image = None
    if args.image:
        image = Path(args.image).resolve()
        if not image.is_file():
            raise CLIError(f"--image: {image} not found")
        try:
            check_image(image)  # a decompression bomb is refused before the model loads
        except ValueError as err:
            raise CLIError(f"--image: {err}") from None
    check_model_dir(args.model)
    check_device(args.device)
    load_probe(args.probe)
    model, processor = load_model(args.model, args.device, args.dtype)
    example = Example(args.prompt, -1, image)
    check_images_supported(processor, [example])
    probe = load_probe(args.probe, model)
    with apply_sasa(model, probe=probe, tokenizer=processor) as guard:
        inputs = encode_batch(processor, [example], prompt_format=guard.prompt_format, device=model.device)
        out = guard.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    tokenizer = getattr(processor, "tokenizer", processor)
    scores = out.scores[0].tolist()
    if bool(out.flagged[0]):
        fired = [(c, s) for c, s, t in zip(probe.categories, scores, probe.threshold.tolist()) if math.isnan(s) or s >= t]
        names = ", ".join(f"{c} {s:.3f}" for c, s in fired) or "score unavailable"
        print(f"[REFUSED; {names}] {out.refusal_text}")
    else:
        text = tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        top = max(range(len(scores)), key=lambda i: scores[i] - float(probe.threshold[i]))
        print(f"[passed; highest {probe.categories[top]} {scores[top]:.3f} < {float(probe.threshold[top]):.3f}] {text}")
    return 0
