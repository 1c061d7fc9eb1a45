"""Hugging Face Hub ids -> a local snapshot folder (the hub's own cache), never pickle weights."""

from __future__ import annotations

from pathlib import Path

from grasp_lora.models.registry import first_line, model_missing

# Configs, safetensors and tokenizer files only -- never pickle checkpoints.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def looks_like_path(name: str) -> bool:
    # Hub ids are `name` or `org/name`; anything else was meant as a file or folder.
    return (name.startswith(("/", ".", "~")) or name.lower().endswith(".gguf")
            or name.count("/") > 1 or "\\" in name)


def hub_snapshot(name: str, trust_remote_code: bool) -> Path:
    """The downloaded (or already cached) snapshot of hub id `name`; code files only when trusted."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    patterns = HUB_PATTERNS + (["*.py"] if trust_remote_code else [])
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise model_missing(name, "not a local file or folder, not in the Hugging Face cache, "
                                  "and the Hub is unreachable (offline?)") from None
    except GatedRepoError:
        raise model_missing(name, "gated on the Hugging Face Hub (accept its licence and log in)") from None
    except RepositoryNotFoundError:
        raise model_missing(name, "not a local file or folder and no such model on the Hugging Face Hub") from None
    except HFValidationError:
        raise model_missing(name, "not a builtin name, an existing file or folder, or a valid hub id") from None
    except OSError as e:
        raise model_missing(name, f"download from the Hugging Face Hub failed ({first_line(e)})") from None
