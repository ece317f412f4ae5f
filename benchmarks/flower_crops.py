"""Side-by-side crops of flower.jpg: the original, an image model's reconstruction from its
codes file, and the Pillow JPEG (optimized Huffman tables, as in `evaluate`) whose file
size is closest to those codes.

    python benchmarks/flower_crops.py MODEL_DIR OUT.png
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from latentwire.runtime import load
from latentwire.runtime.codes import read_codes_file, write_codes_file
from latentwire.training.baselines import psnr
from latentwire.training.data import sample_photos

CROP = (slice(60, 380), slice(120, 520))


def main(model_dir: str, out: str) -> None:
    img = sample_photos("flower")[0]
    h, w = img.shape[:2]
    model = load(model_dir, providers="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flower.codes"
        batch = img.transpose(2, 0, 1)[None].astype(np.float32)
        write_codes_file(path, model.encode_codes(batch))
        nbytes = path.stat().st_size
        x_hat = model.decode_codes(read_codes_file(path))[0]
    ae = np.clip(np.rint(x_hat), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    best: tuple[int, bytes] | None = None
    for q in range(1, 96):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q, optimize=True)
        if best is None or abs(buf.tell() - nbytes) < abs(len(best[1]) - nbytes):
            best = (q, buf.getvalue())
    assert best is not None
    q, data = best
    jpeg = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    bpp = 8 / (h * w)
    panels = [
        (img, "flower.jpg (crop)"),
        (ae, f"latentwire codes file {nbytes * bpp:.3f} bpp, {psnr(img, ae, 255.0):.2f} dB"),
        (jpeg, f"JPEG q={q} file {len(data) * bpp:.3f} bpp, {psnr(img, jpeg, 255.0):.2f} dB"),
    ]
    cw = CROP[1].stop - CROP[1].start
    ch = CROP[0].stop - CROP[0].start
    sheet = Image.new("RGB", (3 * cw + 20, ch + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (a, title) in enumerate(panels):
        sheet.paste(Image.fromarray(np.ascontiguousarray(a[CROP])), (i * (cw + 10), 24))
        draw.text((i * (cw + 10) + 4, 5), title, fill="black")
    sheet.save(out, optimize=True)
    print(f"{out}: {panels[1][1]}; {panels[2][1]}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
