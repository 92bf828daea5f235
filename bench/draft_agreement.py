"""Does decoding a large JPEG at a reduced DCT scale change the answer? Top-1 agreement, draft against full decode.

The worker decodes a large JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that keeps `DRAFT_SCALE` source pixels
per model input pixel across the part of the image its transform resizes (`Transform.draft_size`). This bench
measures, for each built-in exact model and each candidate scale, on how many images the top-1 class of a draft
decode is that of a full decode. The images: the photos shipped with scikit-image (the set the calibration
photos come from), whole and as seeded random crops (30–100% of the shorter side, aspect 1:2 to 2:1, some
mirrored), each resized so that its shorter side is 500–3000 px (but enlarged at most 3×) and saved as a JPEG
of quality 80–95, the way a camera or phone photo arrives. Agreement is over the whole set; an image too small
for a draft at some scale is decoded in full there, and agrees.

    python bench/draft_agreement.py [--crops 400] [--scales 1,2,2.5,3]

It prints one line per model and scale, and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from visionq.imaging.decode import decode_image
from visionq.imaging.transforms import stack
from visionq.inference.catalog import BUILTIN_SPECS
from visionq.inference.export import ensure_onnx
from visionq.inference.onnx_backend import OnnxClassifier
from visionq.inference.spec import Precision, Runtime
from visionq.settings import Settings

#: scikit-image's photos of real scenes (its textures, charts and micrographs say little about ImageNet classes).
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
)
MAX_PIXELS = 40_000_000
BATCH = 16


def photos() -> list[Image.Image]:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return [Image.open(folder / name).convert("RGB") for name in PHOTOS]


def jpegs(count: int, seed: int) -> list[bytes]:
    """The shipped photos whole, then `count` seeded crops of them, each as a large JPEG."""
    rng = np.random.default_rng(seed)
    sources = photos()
    images = list(sources)
    for i in range(count):
        photo = sources[i % len(sources)]
        short = min(photo.size) * rng.uniform(0.3, 1.0)
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        width = min(photo.width, int(short * max(1.0, aspect)))
        height = min(photo.height, int(short * max(1.0, 1 / aspect)))
        left, top = int(rng.integers(0, photo.width - width + 1)), int(rng.integers(0, photo.height - height + 1))
        crop = photo.crop((left, top, left + width, top + height))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        images.append(crop)
    encoded = []
    for image in images:
        # A camera's large photo has detail at its own resolution: enlarge at most 3×, never a thumbnail 30×.
        target = min(int(rng.uniform(500, 3000)), 3 * min(image.size))
        factor = target / min(image.size)
        large = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        large.save(buffer, "JPEG", quality=int(rng.integers(80, 96)))
        encoded.append(buffer.getvalue())
    return encoded


def top1(classifier: OnnxClassifier, images: list[bytes], draft: int | None) -> np.ndarray:
    transform = classifier.spec.transform
    labels = []
    for start in range(0, len(images), BATCH):
        batch = stack(
            [
                transform.apply(decode_image(data, max_pixels=MAX_PIXELS, draft=draft).image)
                for data in images[start : start + BATCH]
            ]
        )
        labels.append(classifier.predict(batch).argmax(axis=1))
    return np.concatenate(labels)


def drafted(data: bytes, draft: int) -> bool:
    """Whether a draft decode of `data` at `draft` px really decodes fewer pixels."""
    full = Image.open(io.BytesIO(data))
    reduced = Image.open(io.BytesIO(data))
    reduced.draft("RGB", (draft, draft))
    return reduced.size != full.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=400)
    parser.add_argument("--scales", default="1,2,2.5,3")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    images = jpegs(args.crops, args.seed)
    cache = Settings().model_cache
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for spec in (s for s in BUILTIN_SPECS if s.precision is Precision.FP32):
        path, _ = ensure_onnx(spec, cache, threads=1)
        classifier = OnnxClassifier(spec.model_copy(update={"runtime": Runtime.ONNX, "weights": str(path)}), threads=1)
        classifier.setup("cpu")
        full = top1(classifier, images, None)
        summary[spec.name] = {}
        for scale in scales:
            draft = spec.transform.draft_size(scale)
            reduced = [i for i, data in enumerate(images) if drafted(data, draft)]
            got = top1(classifier, [images[i] for i in reduced], draft)
            changed = int(np.sum(got != full[reduced]))
            agreement = 1.0 - changed / len(images)
            summary[spec.name][str(scale)] = {"agreement": agreement, "drafted": len(reduced), "changed": changed}
            print(  # noqa: T201 (a bench's report)
                f"{spec.name} scale {scale}: {agreement:.1%} of {len(images)} images keep their top-1 "
                f"({len(reduced)} decoded as drafts, {changed} of them changed)",
                flush=True,
            )
    print(json.dumps(summary))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
