"""make_cifar_c's jpeg_compression: PIL's `save(format="JPEG", quality=c)` and reopen, on uint8 images.

Both codecs here are libjpeg-turbo with PIL's defaults (4:2:0 chroma, the standard tables scaled by the
quality, the slow integer DCT, fancy upsampling), so they give the same pixels; the tests compare each with
PIL's own save and open. torchvision's encoder and decoder take the batch in one call (half the time of
PIL's per-image Python); torchvision 0.29 deprecated them, so when a release drops them PIL does the work.
Always on the host: a GPU codec (nvJPEG) would give other pixels.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch


def _torchvision_codec():
    """torchvision's (encode_jpeg, decode_jpeg), or None where this torchvision has none."""
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:
        return None
    return encode_jpeg, decode_jpeg


def round_trip_torchvision(images: torch.Tensor, quality: int) -> torch.Tensor:
    encode_jpeg, decode_jpeg = _torchvision_codec()
    with warnings.catch_warnings():  # the deprecation notice is ours to act on (the PIL path), not the user's
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.stack(decode_jpeg(encode_jpeg(list(images), quality=quality)))


def round_trip_pil(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Image by image. The stream goes straight to libjpeg's decoder (`frombytes`, what Image.open's tile does):
    Image.open's marker parsing in Python took as long as the decoding. The images are cropped from one tall
    PIL image and the decoded bytes joined once: a PIL image and a numpy copy per image cost a tenth of the time."""
    from PIL import Image

    pixels = images.permute(0, 2, 3, 1).contiguous().numpy()
    n, h, w = pixels.shape[:3]
    strip = Image.fromarray(pixels.reshape(n * h, w, 3))
    decoded = []
    for k in range(n):
        buffer = io.BytesIO()
        strip.crop((0, k * h, w, (k + 1) * h)).save(buffer, "JPEG", quality=quality)
        decoded.append(Image.frombytes("RGB", (w, h), buffer.getvalue(), "jpeg", "RGB", "").tobytes())
    out = np.frombuffer(b"".join(decoded), dtype=np.uint8).reshape(n, h, w, 3)
    return torch.from_numpy(out.transpose(0, 3, 1, 2).copy())


def jpeg_round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) on the host -> the same images JPEG-compressed at `quality` and decoded."""
    if _torchvision_codec() is not None:
        return round_trip_torchvision(images, quality)
    return round_trip_pil(images, quality)
