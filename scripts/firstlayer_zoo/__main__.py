"""`python -m firstlayer_zoo inspect FILE`: one checkpoint's fit, printed, and its profile against the fit, drawn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_UNUSABLE = 2


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m firstlayer_zoo", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="profile one checkpoint file's stem and fit the analytic profile")
    inspect.add_argument("file", type=Path, help="a .safetensors, .pt/.pth/.bin/.ckpt, .onnx, .h5 or .keras file")
    inspect.add_argument("--dataset", default="photos",
                         help="photos (the colour photos inside scikit-image, the default) or a folder of images")
    inspect.add_argument("--stem-key", help="the stem's weight in a state dict (default: its first 4-D weight)")
    inspect.add_argument("--resize", type=int, help="shorter side before the crop, as the model was trained")
    inspect.add_argument("--crop", type=int, help="centre crop, as the model was trained")
    inspect.add_argument("--mean", type=float, nargs="+", help="per-channel mean (default: ImageNet's)")
    inspect.add_argument("--std", type=float, nargs="+", help="per-channel std (default: ImageNet's)")
    inspect.add_argument("--out", type=Path, default=Path("."), help="folder for <file name>.png (default: here)")
    return main


def inspect(arguments: argparse.Namespace) -> int:
    from .notebook import analyse
    from .plots import plot_fit_examples

    preprocessing = {key: getattr(arguments, key) for key in ("resize", "crop", "mean", "std")
                     if getattr(arguments, key)}
    try:
        result = analyse(arguments.file, dataset=arguments.dataset, preprocessing=preprocessing,
                         stem_key=arguments.stem_key)
    except ValueError as error:  # a StemError, or preprocessing options that do not fit together
        print(f"cannot inspect: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    checkpoint, fit = result.checkpoint.iloc[0], result.fit.iloc[0]
    print(f"{arguments.file}: stem {checkpoint['first_conv']} ({checkpoint['out_channels']} filters, "
          f"{checkpoint['in_chans']}x{checkpoint['kernel_size']}x{checkpoint['kernel_size']}, "
          f"stride {checkpoint['stride'] if checkpoint['stride'] is not None else 'unknown'}) "
          f"in the {arguments.dataset} basis")
    for column in ("tau", "tau_s1", "fit_r", "frac_whitened", "input_spread", "output_spread", "colour_energy"):
        print(f"{column:>14} {fit[column]:.4g}")
    path = arguments.out / f"{arguments.file.name}.png"
    arguments.out.mkdir(parents=True, exist_ok=True)
    plot_fit_examples(result.checkpoint, result.profile, result.fit, 1, path)
    print(f"profile and fit drawn in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    return inspect(arguments)


if __name__ == "__main__":
    sys.exit(main())
