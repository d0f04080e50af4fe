"""--loader ffcv: the project's datasets as FFCV .beton files (written by datasets/write_ffcv.py) and FFCV's loader
over them. Imported only when used: FFCV is optional, and importing it takes seconds.

A .beton holds one whole split, an image and a label per record, in the order of undistill.datasets' readers, so the
loader can check a file against the dataset (size, labels) and read a --subset as FFCV `indices`.

Replay: FFCV draws its order from (seed, epoch), but its random augmentations from numba's per-thread generators,
which nothing seeds: two runs differ. Here each random operation first seeds numba's generator from the run's seed
and the batch's record indices, which (seed, epoch) fix, so a resumed run replays exactly.
"""
import atexit
import contextlib
import queue
import weakref

import numba
import numpy as np
import torch
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.decoders import (CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder,
                                  SimpleRGBImageDecoder)
from ffcv.fields.rgb_image import IMAGE_MODES, get_random_crop
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.reader import Reader
from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice, ToTensor, ToTorchImage
from ffcv.writer import DatasetWriter
from torch.utils.data import Subset

from . import UserError, datasets, runs

FIELDS = ["image", "label"]
SMART_THRESHOLD = 256 * 256 * 3  # write mode smart: raw pixels up to a 256x256 image, JPEG above
FNV_OFFSET, FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


class Pixels:
    """A split as FFCV's writer reads it: (HWC uint8 array, label) per record, never augmented: the decoded
    tensor's images, or ImageNet's files at full size (FFCV shrinks them to max_resolution)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if isinstance(self.dataset, datasets.TensorImages):
            image, label = self.dataset.images[i], self.dataset.labels[i]
        else:
            path, label = self.dataset.samples[i]
            image = datasets.decode_rgb(path)
        return np.ascontiguousarray(image.permute(1, 2, 0).numpy()), int(label)


def write(dataset, path, write_mode="raw", max_resolution=None, jpeg_quality=90, workers=1):
    """Write `dataset` (a whole split from datasets.load) as the .beton `path`, atomically (runs.atomic_write)."""
    image = RGBImageField(write_mode=write_mode, max_resolution=max_resolution, smart_threshold=SMART_THRESHOLD,
                          jpeg_quality=jpeg_quality)
    runs.atomic_write(path, lambda tmp: DatasetWriter(str(tmp), dict(zip(FIELDS, [image, IntField()])),
                                                      num_workers=workers).from_indexed_dataset(Pixels(dataset)))


@numba.njit(nogil=True)
def batch_seed(indices, seed, stream):
    """A 32-bit seed for numba's generator: an FNV-1a hash of the run's seed, the operation's stream and the
    batch's record indices."""
    h = FNV_OFFSET
    for value in [seed, stream]:
        h = (h ^ np.uint64(value)) * FNV_PRIME
    for i in indices:
        h = (h ^ np.uint64(i)) * FNV_PRIME
    return np.uint32(h >> np.uint64(32))


class Replayable(Operation):
    """A random FFCV operation (RandomTranslate, RandomHorizontalFlip) run after seeding numba's generator from
    batch_seed. Compiled serial: in a parallel loop each thread draws from its own generator, which the seed
    would not reach."""

    def __init__(self, op, seed, stream):
        super().__init__()
        self.op, self.seed, self.stream = op, seed, stream

    def declare_state_and_memory(self, previous_state):
        return self.op.declare_state_and_memory(previous_state)

    def generate_code(self):
        op, seed, stream = numba.njit(nogil=True, fastmath=True)(self.op.generate_code()), self.seed, self.stream

        def replayable(images, dst, indices):
            np.random.seed(batch_seed(indices, seed, stream))
            return op(images, dst)

        replayable.with_indices = True
        return replayable


class ReplayableRandomResizedCrop(RandomResizedCropRGBImageDecoder):
    """FFCV's RandomResizedCropRGBImageDecoder (its decoding loop, crop and resize) with each image's crop drawn
    after seeding numba's generator from batch_seed and the image's place in the batch: the loop stays parallel,
    each thread seeding its own generator."""

    def __init__(self, output_size, seed):
        super().__init__(output_size)
        self.seed = seed

    def generate_code(self):
        mem_read, my_range, jpg, seed = self.memory_read, Compiler.get_iterator(), IMAGE_MODES["jpg"], self.seed
        imdecode_c, resize_crop_c, crop_c = (Compiler.compile(f) for f in (imdecode, resize_crop, get_random_crop))
        scale, ratio = np.array(self.scale), np.array(self.ratio)

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            base = batch_seed(batch_indices, seed, 0)
            for dst_ix in my_range(len(batch_indices)):
                field = metadata[batch_indices[dst_ix]]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    image = temp_storage[dst_ix]
                    imdecode_c(image_data, image, height, width, height, width, 0, 0, 1, 1, False, False)
                    image = image.reshape(-1)[:3 * height * width].reshape(height, width, 3)
                else:
                    image = image_data.reshape(height, width, 3)
                np.random.seed(np.uint32((base + dst_ix) % 4294967296))
                i, j, h, w = crop_c(height, width, scale, ratio)
                resize_crop_c(image, i, i + h, j, j + w, destination[dst_ix])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


def check_beton(beton, labels):
    """The record positions of the dataset in its .beton, once the file is known to hold its split."""
    if beton.path is None:
        raise UserError(f"--loader ffcv: no --data-dir to hold the .beton files: pass --ffcv-dir, written by "
                        f"`{beton.write}`")
    if not beton.path.is_file():
        raise UserError(f"--loader ffcv: no {beton.path}: write it with `{beton.write}`")
    try:
        reader = Reader(str(beton.path))
    except Exception as e:  # FFCV reports a foreign or truncated file with assorted errors
        raise UserError(f"{beton.path} is not a readable .beton ({type(e).__name__}: {e})") from None
    positions = np.arange(beton.size) if beton.indices is None else beton.indices.numpy()
    if (reader.field_names != FIELDS or reader.num_samples != beton.size
            or not np.array_equal(reader.metadata["f1"][positions], labels.numpy())):
        raise UserError(f"{beton.path} ({reader.num_samples} records) does not hold this split ({beton.size} "
                        f"images, in order): it was written from another dataset or layout; rewrite it with "
                        f"`{beton.write} --overwrite`")
    return positions


@contextlib.contextmanager
def torch_threads_kept():
    """FFCV sets torch's thread count to its own number of threads: keep the training's."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FfcvLoader:
    """FFCV's Loader over the dataset's .beton, with the dataset's declared augmentation; batches are uint8 NCHW
    images (channels_last memory) and int64 labels on `device`, in FFCV's reused buffers: a batch is valid until the
    next one is drawn (clone it to keep it).

    As with the other loaders, the order depends only on (seed, epoch) (FFCV's RANDOM order; under torchrun its
    distributed mode, DistributedSampler's split, full batches only), and evaluation reads images rank,
    rank + world_size, ... in order, each exactly once. QUASI_RANDOM, which reads a dataset larger than RAM page
    by page, is not offered: FFCV implements it for one process only; the OS page cache holds the file instead.

    Training augmentation: CIFAR's and mnist5k's pad-and-crop is FFCV's RandomTranslate (a crop of the zero-padded
    image at a random offset is the image shifted by up to `pad` pixels, zero-filled) and their flip its
    RandomHorizontalFlip; Tiny-ImageNet's rotation, which FFCV lacks, makes the whole declared Augment run on the
    device after decoding, as in --loader gpu; ImageNet's random resized crop (224) is done while decoding, plus a
    flip, and its evaluation crops the center 224/256 of the shorter side, as Resize(256) + CenterCrop(224) does."""

    def __init__(self, dataset, batch_size, train, seed, workers, rank, world_size, pin_memory=False,
                 device=torch.device("cpu")):
        # pin_memory is unused: FFCV copies each batch to `device` from its own buffers.
        beton = datasets.beton_of(dataset)
        positions = check_beton(beton, datasets.labels_of(dataset))
        decoding, self.on_device = image_pipeline(dataset, train, seed)
        self.seed, self.rank = seed, rank
        with torch_threads_kept():
            self.loader = Loader(
                str(beton.path), batch_size, num_workers=min(max(workers, 1), numba.config.NUMBA_NUM_THREADS),
                order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL, distributed=train and world_size > 1,
                seed=seed, indices=positions if train else positions[rank::world_size], drop_last=train,
                pipelines={"image": [*decoding, ToTensor(), ToDevice(device), ToTorchImage()],
                           "label": [IntDecoder(), ToTensor(), Squeeze(1), ToDevice(device)]})

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch):
        self.loader.next_epoch = epoch  # FFCV draws the order of its next iteration from (seed, next_epoch)
        with torch_threads_kept():
            batches = iter(self.loader)
        RUNNING.add(batches)
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(1)[0]))
        try:
            for x, y in batches:
                if self.on_device is not None:
                    draws = self.on_device.draw(len(x), *x.shape[-2:], generator)
                    x = self.on_device.apply(x, {k: v.to(x.device) for k, v in draws.items()})
                yield x, y
        finally:
            stop(batches)


def image_pipeline(dataset, train, seed):
    """The FFCV decoder and operations for the dataset's images, and the Augment left to the device (or None)."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    if not isinstance(base, datasets.TensorImages):  # ImageNet's files, of any size
        size = (datasets.IMAGENET_CROP,) * 2
        if not train:
            return [CenterCropRGBImageDecoder(size, ratio=datasets.IMAGENET_CROP / datasets.IMAGENET_RESIZE)], None
        return [ReplayableRandomResizedCrop(size, seed), Replayable(RandomHorizontalFlip(), seed, 1)], None
    augment = base.transform if train else None
    if augment is None:
        return [SimpleRGBImageDecoder()], None
    if not isinstance(augment, datasets.Augment):
        raise UserError(f"--loader ffcv can apply only a datasets.Augment, not {type(augment).__name__}: "
                        "use --loader torchvision")
    if augment.degrees:
        return [SimpleRGBImageDecoder()], augment
    if augment.crop and augment.crop != base.images.shape[-1]:
        raise UserError(f"--loader ffcv shifts images (RandomTranslate) but cannot crop them to {augment.crop} "
                        "pixels: use --loader torchvision or gpu")
    ops = [SimpleRGBImageDecoder()]
    if augment.crop:
        ops.append(Replayable(RandomTranslate(augment.pad), seed, 1))
    if augment.flip:
        ops.append(Replayable(RandomHorizontalFlip(), seed, 2))
    return ops, None


RUNNING = weakref.WeakSet()  # the epochs' FFCV threads


@atexit.register
def stop_all():
    for batches in list(RUNNING):  # epochs left suspended, not yet garbage
        stop(batches)


def stop(batches):
    """End an epoch's FFCV thread, also when the epoch is left early: one still running at exit aborts Python."""
    RUNNING.discard(batches)
    batches.close()
    batches.join(1)
    while batches.is_alive():  # blocked on putting its end-of-epoch marker, a put without timeout
        with contextlib.suppress(queue.Empty):
            batches.output_queue.get(timeout=1)
        batches.join(1)
