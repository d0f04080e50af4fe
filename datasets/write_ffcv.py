"""Write a dataset's train and test splits as FFCV files (train.beton, test.beton) for `--loader ffcv`.

    python datasets/write_ffcv.py --dataset cifar10 --data-dir data/cifar10                 # -> data/cifar10/ffcv/
    python datasets/write_ffcv.py --dataset tinyimagenet --data-dir data/tiny-imagenet-200
    python datasets/write_ffcv.py --dataset imagenet --data-dir /data/imagenet --out /fast/imagenet-ffcv --workers 16
    python datasets/write_ffcv.py --dataset mnist5k --out data/mnist5k-ffcv

The records are the images the project's readers return (undistill.datasets.load: every layout it accepts), in the same
order, never augmented: the loader checks a file against the dataset, and --subset selects the same images as with
the other loaders. Small-image datasets are written raw (exact pixels); ImageNet as JPEG (quality 90) at most 400
pixels on the longer side: FFCV's ResNet-18 setting, which keeps the shorter side of images up to 3:2 at 256 or
more, so evaluation's center crop (224/256 of the shorter side) is not upsampled (256 on the longer side would be).
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from undistill import UserError, datasets, distributed, loaders  # noqa: E402

IMAGENET_MAX_RESOLUTION = 400


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(datasets.DATASETS))
    p.add_argument("--data-dir", type=Path, help="dataset root, as for the training scripts (mnist5k: none)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR (needs network access)")
    p.add_argument("--out", type=Path, help="directory for train.beton and test.beton (default: <data-dir>/ffcv; "
                   "required for mnist5k)")
    p.add_argument("--write-mode", choices=["raw", "jpg", "smart"], help="raw pixels, JPEG, or smart: raw up to "
                   "256x256 pixels, JPEG above (default: raw, JPEG for ImageNet)")
    p.add_argument("--max-resolution", type=int, help="ImageNet: shrink images to at most this many pixels on the "
                   f"longer side (default {IMAGENET_MAX_RESOLUTION})")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="writer processes")
    p.add_argument("--overwrite", action="store_true", help="replace existing .beton files")
    return p.parse_args(argv)


def main(args):
    if args.out is None and args.data_dir is None:
        raise UserError(f"--dataset {args.dataset} has no --data-dir: pass --out DIR for the .beton files")
    imagenet = args.dataset == "imagenet"
    if args.max_resolution is not None and not imagenet:
        raise UserError(f"--max-resolution: {args.dataset}'s images all have one size, which the loader needs")
    info = datasets.load(args.dataset, args.data_dir, args.download, ffcv_dir=args.out)
    splits = [info.train, info.test]
    existing = [str(s.beton.path) for s in splits if s.beton.path.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{', '.join(existing)} already exist: add --overwrite to replace them")
    ffcv_io = loaders.import_ffcv()
    splits[0].beton.path.parent.mkdir(parents=True, exist_ok=True)
    for split in splits:
        print(f"writing {len(split)} images to {split.beton.path}")
        ffcv_io.write(split, split.beton.path, args.write_mode or ("jpg" if imagenet else "raw"),
                      args.max_resolution or (IMAGENET_MAX_RESOLUTION if imagenet else None), args.jpeg_quality,
                      args.workers)
    print(f"done: train it with --loader ffcv --ffcv-dir {splits[0].beton.path.parent}")


if __name__ == "__main__":
    distributed.run(main, parse_args())
