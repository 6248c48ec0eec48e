"""The embedding envelope: named tensors as zstd-compressed little-endian bytes, checksummed (DESIGN.md).

`pack` turns tensors into the JSON envelope; `unpack` checks everything it can *before* decompressing (the
family, the declared shapes against the denoiser, the claimed size against the cap), then decompresses no
more than the claimed size and checks the length and the CRC32. Tensors are concatenated in the order of the
envelope's `tensors` object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import sys
import zlib
from collections.abc import Mapping
from typing import Any, Literal

import torch
import zstandard

from worker.errors import InvalidRequest
from worker.pipelines import prompts
from worker.pipelines.prompts import EmbeddingSpec

EnvelopeDType = Literal["f32", "f16", "bf16"]
TORCH_DTYPES: dict[str, torch.dtype] = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
NAMES: dict[torch.dtype, EnvelopeDType] = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
ZSTD_LEVEL = 3
FIELD = "prompt_embeds"

if sys.byteorder != "little":  # pragma: no cover - every supported device is little-endian
    raise ImportError("the embedding envelope needs a little-endian machine")


def envelope_dtype(dtype: torch.dtype) -> EnvelopeDType:
    """The envelope name of a torch dtype (fp32 → f32, …)."""
    return NAMES[dtype]


def pack(tensors: Mapping[str, torch.Tensor], model_type: str, dtype: EnvelopeDType) -> dict[str, Any]:
    """The envelope of `tensors` (cast to `dtype`), for the family `model_type`."""
    target = TORCH_DTYPES[dtype]
    specs: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    for name, tensor in tensors.items():
        value = tensor.detach().to("cpu", target).contiguous()
        specs[name] = {"shape": list(value.shape), "dtype": dtype}
        chunks.append(value.view(torch.uint8).numpy().tobytes())
    raw = b"".join(chunks)
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)
    return {
        "embedding_id": hashlib.blake2b(raw + repr(specs).encode(), digest_size=16).hexdigest(),
        "model_type": model_type,
        "tensors": specs,
        "data": base64.b64encode(compressed).decode("ascii"),
        "uncompressed_size": len(raw),
        "checksum": zlib.crc32(raw),
    }


def unpack(envelope: Mapping[str, Any], model_type: str, spec: EmbeddingSpec, max_bytes: int) -> prompts.Tensors:
    """The tensors of a (schema-valid) envelope, or InvalidRequest saying what is wrong with it."""
    if envelope["model_type"] != model_type:
        raise InvalidRequest(
            f"the embeddings were made for {envelope['model_type']!r}; this worker serves {model_type!r}",
            field=f"{FIELD}.model_type",
        )
    sizes: dict[str, tuple[tuple[int, ...], torch.dtype, int]] = {}
    for name, declared in envelope["tensors"].items():
        shape = tuple(declared["shape"])
        spec.check_shape(name, shape, f"{FIELD}.tensors.{name}.shape")
        dtype = TORCH_DTYPES[declared["dtype"]]
        sizes[name] = (shape, dtype, math.prod(shape) * dtype.itemsize)
    total = sum(size for _, _, size in sizes.values())
    claimed = envelope["uncompressed_size"]
    if claimed != total:
        raise InvalidRequest(
            f"uncompressed_size is {claimed} but the declared tensors take {total} bytes",
            field=f"{FIELD}.uncompressed_size",
        )
    if total > max_bytes:
        raise InvalidRequest(
            f"the embeddings take {total} bytes uncompressed; the limit is {max_bytes}",
            field=f"{FIELD}.uncompressed_size",
        )
    raw = _decompress(envelope["data"], total)
    if zlib.crc32(raw) != envelope["checksum"]:
        raise InvalidRequest(
            "checksum does not match the data (CRC32 of the uncompressed bytes)", field=f"{FIELD}.checksum"
        )
    tensors: prompts.Tensors = {}
    offset = 0
    for name, (shape, dtype, size) in sizes.items():
        chunk = bytearray(raw[offset : offset + size])
        tensors[name] = torch.frombuffer(chunk, dtype=dtype).reshape(shape) if size else torch.empty(shape, dtype=dtype)
        offset += size
    return tensors


def _decompress(data: str, size: int) -> bytes:
    """Base64 → zstd → at most `size` bytes; anything shorter, longer or unreadable is refused."""
    where = f"{FIELD}.data"
    try:
        compressed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("data is not valid base64", field=where) from None
    try:
        raw = bytearray()
        with zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True) as reader:
            while len(raw) <= size:  # never more than one byte past the claim: no zstd bomb
                chunk = reader.read(size + 1 - len(raw))
                if not chunk:
                    break
                raw += chunk
    except zstandard.ZstdError as exc:
        raise InvalidRequest(f"data is not valid zstd ({exc})", field=where) from None
    if len(raw) != size:
        raise InvalidRequest(
            f"data decompresses to {'more than ' if len(raw) > size else ''}{min(len(raw), size)} bytes; "
            f"uncompressed_size says {size} (truncated or corrupt)",
            field=where,
        )
    return bytes(raw)
