"""GGUF → cached safetensors: dequantize once with transformers, refuse any lost weight.

GGUF checkpoints (the embedded `gemma-3-270m`, `smollm2-135m`, any local `.gguf`) are dequantized
once by transformers' GGUF loader and cached as plain float32 safetensors under
`cache_root()/models/<label>-<sha256 prefix of the GGUF>/` (an atomic `models.cache` folder whose
`grasp_lora_cache.json` records where the GGUF came from).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from grasp_lora.models.cache import cache_folder, is_complete, materialise
from grasp_lora.models.registry import GgufSource, ModelLoadError, first_line, package_version

logger = logging.getLogger(__name__)

# The GGUF conversion (dequantisation, tensor name mapping, tokenizer) is transformers' and gguf's
# code, and the golden-token / no-fresh-weight tests ran against these release series only
# (transformers 5.23.0, gguf 0.19.0; patch releases assumed to keep the conversion).
GGUF_TESTED = {"transformers": "5.23", "gguf": "0.19"}


def _gguf_arch_and_tensors(gguf_path: Union[str, Path]) -> tuple[str, tuple[str, ...]]:
    """(architecture, tensor names) from the header only.

    transformers' reader skips the big vocabulary arrays: about 0.1 s against ~15 s for
    gguf.GGUFReader on Gemma's 262k-token vocabulary.
    """
    from transformers.integrations.gguf.reader import read_gguf_metadata

    metadata, names = read_gguf_metadata(str(gguf_path))
    return metadata["general.architecture"], names


def gguf_tensor_coverage(gguf_path: Union[str, Path], model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(GGUF tensors that map to no model weight, model weights that no GGUF tensor provides).

    transformers' GGUF loader silently skips tensors it cannot map, and weights it never receives
    keep their fresh random init; both lists must be empty for a faithful conversion. Weights
    sharing storage with a provided one (tied lm_head) count as provided.
    """
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    arch, names = _gguf_arch_and_tensors(gguf_path)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    mapping = get_gguf_hf_weights_map(model, processor)
    unmapped = [n for n in names if n not in mapping]
    provided = {mapping[n] for n in names if n in mapping}
    state = model.state_dict()
    provided_storage = {state[k].untyped_storage().data_ptr() for k in provided if k in state}
    uncovered = [k for k, v in state.items()
                 if k not in provided and v.untyped_storage().data_ptr() not in provided_storage]
    return unmapped, uncovered


def untested_gguf_stack() -> Optional[str]:
    """One line when the installed transformers / gguf are outside the release series whose GGUF
    conversion the tests cover (GGUF_TESTED), else None."""
    off = []
    for dist, series in GGUF_TESTED.items():
        version = package_version(dist)
        if version is None or not (version == series or version.startswith(series + ".")):
            off.append(f"{dist} {version or '(not installed)'}")
    if not off:
        return None
    tested = " and ".join(f"{d} {s}.x" for d, s in GGUF_TESTED.items())
    return (f"GGUF conversion with {', '.join(off)}: grasp-lora's tests cover {tested} only; the weights "
            f"are still checked for loss, but compare outputs or install those releases")


def _fresh_containers(value: Any) -> Any:
    """A copy of parsed GGUF metadata with new dicts and lists and the same immutable leaves (str,
    numbers): copy.deepcopy's memo costs seconds on a 262k-token vocabulary."""
    if isinstance(value, dict):
        return {k: _fresh_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh_containers(v) for v in value]
    if value is None or isinstance(value, (str, bytes, int, float, bool, tuple)):
        return value
    return copy.deepcopy(value)


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within one load, transformers reads the GGUF's header three times (the tokenizer's config, the
    model's config, the weights), each read ~10 s on Gemma's 262k-token vocabulary, and builds the
    same tensor-name map for every module: read each file once (gguf.GGUFReader is a read-only
    memmap, here slicing a plain view of it), reuse the metadata-only parse (fresh containers each
    time, so no caller sees another's edits) and build each name map once. The same values (the
    `slow` tier compares the result with transformers' own GGUF load); 48 -> 21 CPU s for Gemma."""
    import gguf
    import numpy as np
    import transformers.modeling_gguf_pytorch_utils as mgp

    real_reader, real_load, real_name_map = gguf.GGUFReader, mgp.load_gguf_checkpoint, gguf.get_tensor_name_map
    readers: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    name_maps: dict[Any, Any] = {}

    class PlainViewReader(real_reader):
        """gguf's reader slicing a plain ndarray view of its memmap (the same bytes): np.memmap's
        Python-level __getitem__ / __array_finalize__ cost ~90 % of reading the 786k vocabulary
        fields. Its _get as in gguf 0.19 otherwise."""

        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain_data")
            if plain is None:
                plain = self._plain_data = self.data.view(np.ndarray)
            count = int(count)
            end_offs = offset + int(np.dtype(dtype).itemsize) * count
            arr = plain[offset:end_offs].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    def reader(path, mode="r"):
        if mode != "r":
            return real_reader(path, mode)
        key = os.path.realpath(os.fspath(path))
        if key not in readers:
            readers[key] = PlainViewReader(path, mode)
        return readers[key]

    def load(path, return_tensors=False, *args, **kwargs):
        if return_tensors or args or kwargs:
            return real_load(path, return_tensors, *args, **kwargs)
        key = os.path.realpath(os.fspath(path))
        if key not in metadata:
            metadata[key] = real_load(path, False)
        return _fresh_containers(metadata[key])

    def name_map(arch, n_blocks):  # built once per module of the model otherwise (hundreds of times)
        if (arch, n_blocks) not in name_maps:
            name_maps[arch, n_blocks] = real_name_map(arch, n_blocks)
        return name_maps[arch, n_blocks]

    gguf.GGUFReader, mgp.load_gguf_checkpoint, gguf.get_tensor_name_map = reader, load, name_map
    try:
        yield
    finally:
        gguf.GGUFReader, mgp.load_gguf_checkpoint, gguf.get_tensor_name_map = real_reader, real_load, real_name_map


def load_gguf_model(gguf_path: Union[str, Path], name: Optional[str] = None) -> tuple[torch.nn.Module, Any]:
    """Dequantize a GGUF with transformers -> (fp32 model, tokenizer), refusing any lost weight."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path)
    name = name or str(path)
    warning = untested_gguf_stack()
    if warning is not None:
        logger.warning(warning)
    with _gguf_parsed_once():
        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model, info = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, ImportError) as e:
            raise ModelLoadError(f"model {name!r}: transformers cannot read the GGUF ({first_line(e)})") from None
        _check_gguf_weights(name, path, model, info)
    return model.eval(), tok


def _check_gguf_weights(name: str, path: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(f"model {name!r}: the GGUF lacks {len(missing)} weight(s), e.g. {missing[0]}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise ModelLoadError(f"model {name!r}: {len(unexpected)} GGUF tensor(s) fit no weight, e.g. {unexpected[0]}")
    packed = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise ModelLoadError(f"model {name!r}: weights stayed quantized after loading, e.g. {packed[0]}")
    from transformers.integrations.gguf.utils import is_gguf_arch_supported

    # Only the legacy loader's name map can be checked tensor by tensor; the newer packed path
    # reports lost tensors itself through missing/unexpected keys.
    if is_gguf_arch_supported(_gguf_arch_and_tensors(path)[0]):
        return
    unmapped, uncovered = gguf_tensor_coverage(path, model)
    if unmapped:
        raise ModelLoadError(f"model {name!r}: {len(unmapped)} GGUF tensor(s) map to no weight, e.g. {unmapped[0]}")
    if uncovered:
        raise ModelLoadError(f"model {name!r}: {len(uncovered)} weight(s) not in the GGUF, e.g. {uncovered[0]}")


def _plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in a model not marked quantized (transformers refuses to save those)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):  # no init work: every weight is replaced just below
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def _convert_gguf(src: GgufSource, out: Path, scratch: Path) -> dict[str, Any]:
    path = src.fetch(scratch)
    model, tok = load_gguf_model(path, src.label)
    _plain_copy(model).save_pretrained(out)
    tok.save_pretrained(out)
    return {"gguf_tensors": len(_gguf_arch_and_tensors(path)[1]),
            "transformers": package_version("transformers"), "gguf": package_version("gguf")}


def ensure_gguf(src: GgufSource, root: Path) -> Path:
    """The cached safetensors folder of a GGUF source, converting it first when it is not there."""
    final = cache_folder(root, src.label, src.sha256)
    if not is_complete(final):
        logger.info("model %s: dequantizing the GGUF once (a minute or so), cache: %s", src.label, final)
    return materialise(final, lambda out, scratch: _convert_gguf(src, out, scratch),
                       {"name": src.label, **src.record})
