"""The model bundle: one directory per version, written once, then only read.

    config.json          ModelConfig: architecture, vocabulary size, max history length
    vocab.json           external item ids; item row r (1-based) is vocab[r - 1], row 0 pads
    model.onnx           inference graph: history [B, L] int64 -> state [B, D], scores [B, N+1]
    item_embeddings.npy  float32 [N+1, D]; scores = state @ item_embeddings.T
    popularity.json      training-split counts per row, for the cold-start fallback
    weights.pt           torch state_dict, for fine-tuning
    metrics.json         evaluation results
    items.ivf, index.json  the approximate top-k index (large catalogues only)
    item_features.json   the property-token vocabulary (models with item properties only)
    item_encoder.onnx    property tokens [B, T] int64 -> item vectors [B, D] (the same)
    next_items.npz       each item's most frequent next items in training (SimilarItems)
    checksums.json       sha256 of every file above
    engines/             TensorRT engines, built on the machine that runs them, each
      checksums.json     recorded here with its sha256 when it is built

The server verifies checksums before loading; a bad bundle raises BundleError and the
previous model keeps serving. A file that checksums.json does not list is refused too
(an unlisted index, weights or metrics file would otherwise be read unchecked), as is
an engine that engines/checksums.json does not list or that fails its sha256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from shared.config import ModelArchitecture
from shared.model.item_features import ItemFeatures
from shared.model.next_items import NextItems
from shared.wire.errors import BundleError

CONFIG = "config.json"
VOCAB = "vocab.json"
ONNX = "model.onnx"
EMBEDDINGS = "item_embeddings.npy"
POPULARITY = "popularity.json"
WEIGHTS = "weights.pt"
METRICS = "metrics.json"
CHECKSUMS = "checksums.json"
FEATURES = "item_features.json"
ENCODER = "item_encoder.onnx"
NEXT_ITEMS = "next_items.npz"
EXTRA_TOKENS = "extra_tokens"
"""model.onnx's second input, for models with properties: int64 [E, T], the property
tokens of the items added after training (history rows N+1..N+E)."""
MAX_EXTRA_ITEMS = 65_536
"""The most items a served model takes on after training (the TensorRT profile's bound)."""
ENGINES = "engines"
REQUIRED = (CONFIG, VOCAB, ONNX, EMBEDDINGS, POPULARITY)


class ModelConfig(ModelArchitecture):
    """A trained model's architecture and catalogue size; saved with the weights as
    config.json."""

    architecture: Literal["sasrec"] = "sasrec"
    num_items: int = Field(ge=1)
    """Catalogue size N. Rows 1..N are items, row 0 is padding."""
    property_tokens: int = Field(0, ge=0)
    """Rows of the item-property token embedding (the vocabulary and padding); 0: the
    model knows items by id only (shared/model/item_features.py)."""


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def job_dir_name(job_id: int, attempt: int) -> str:
    """A training job attempt's bundle folder, relative to the models directory: keyed by
    job and attempt, so that a requeued job's new attempt and a stale one that resumes
    never write the same path."""
    return f"job-{job_id}-{attempt}"


def remove_job_output(models_dir: Path, job_id: int, attempt: int) -> None:
    """Deletes what a training job attempt that did not register a version left behind:
    its bundle folder and the temporary folder it is written in."""
    directory = models_dir / job_dir_name(job_id, attempt)
    for path in (directory, directory.with_name(directory.name + ".tmp")):
        shutil.rmtree(path, ignore_errors=True)


def size_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory`` (engines included)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def write_checksums(directory: Path) -> str:
    """Writes checksums.json over every file (engines excluded); returns the bundle checksum."""
    sums = {
        path.name: sha256_file(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != CHECKSUMS
    }
    text = json.dumps(sums, indent=2, sort_keys=True)
    (directory / CHECKSUMS).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def read_checksums(directory: Path) -> dict[str, str]:
    """checksums.json: file name -> sha256. Raises BundleError when it is missing or
    malformed, or names a file outside the bundle directory."""
    sums, _ = _read_checksums(directory)
    return sums


def _read_checksums(directory: Path) -> tuple[dict[str, str], str]:
    if not directory.is_dir():
        raise BundleError(f"bundle {directory} does not exist or is not a directory")
    sums_path = directory / CHECKSUMS
    if not sums_path.is_file():
        raise BundleError(f"bundle {directory} has no {CHECKSUMS}; it was never completed")
    text = sums_path.read_text()
    try:
        sums = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {directory}: {CHECKSUMS} is not valid JSON") from exc
    if not isinstance(sums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sums.items()
    ):
        raise BundleError(f"bundle {directory}: {CHECKSUMS} must map file names to sha256 hex")
    for name in sums:
        # Plain file names only: a bundle must not make the server read outside itself.
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise BundleError(
                f"bundle {directory}: {CHECKSUMS} names {name!r}; accepted: plain file names "
                "inside the bundle directory"
            )
    return sums, text


def verify(directory: Path) -> str:
    """Checks every file against checksums.json, and every engine against
    engines/checksums.json; returns the bundle checksum.

    Raises BundleError naming the first file that is missing, differs, or is not listed.
    """
    sums, text = _read_checksums(directory)
    for name in REQUIRED:
        if name not in sums:
            raise BundleError(f"bundle {directory} lacks required file {name}")
    for path in sorted(directory.iterdir()):
        if path.name == ENGINES and path.is_dir() and not path.is_symlink():
            verify_engines(path)
        elif path.name != CHECKSUMS and (path.name not in sums or not path.is_file()):
            raise BundleError(
                f"bundle {directory}: {path.name} is not listed in {CHECKSUMS}; a bundle "
                "holds only the files its checksums name"
            )
    for name, expected in sums.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"bundle {directory}: file {name} is missing")
        if sha256_file(path) != expected:
            raise BundleError(f"bundle {directory}: file {name} fails its sha256 checksum")
    return hashlib.sha256(text.encode()).hexdigest()


def _engine_sums(engines_dir: Path) -> dict[str, str]:
    path = engines_dir / CHECKSUMS
    if not path.exists():
        return {}
    try:
        sums = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON") from exc
    if not isinstance(sums, dict) or not all(
        isinstance(k, str) and Path(k).name == k and isinstance(v, str) for k, v in sums.items()
    ):
        raise BundleError(f"{path} must map engine file names to sha256 hex")
    return sums


def verify_engines(engines_dir: Path) -> None:
    """Every file of a bundle's engines/ is listed in its checksums.json with a matching
    sha256. Raises BundleError naming the first that is not."""
    sums = _engine_sums(engines_dir)
    for path in sorted(engines_dir.iterdir()):
        if path.name == CHECKSUMS:
            continue
        if path.name not in sums or not path.is_file() or path.is_symlink():
            raise BundleError(
                f"engine {path} is not listed in {engines_dir / CHECKSUMS}: engines are "
                "recorded when they are built"
            )
        verify_engine(path, sums[path.name])


def verify_engine(path: Path, expected: str | None = None) -> None:
    """One engine file against its recorded sha256 (read from engines/checksums.json
    unless given). Raises BundleError."""
    if expected is None:
        expected = _engine_sums(path.parent).get(path.name)
        if expected is None:
            raise BundleError(f"engine {path} is not listed in {path.parent / CHECKSUMS}")
    if sha256_file(path) != expected:
        raise BundleError(f"engine {path} fails its sha256 checksum")


def record_engine(path: Path) -> None:
    """Adds a newly built engine to engines/checksums.json (rewritten atomically)."""
    sums = _engine_sums(path.parent)
    sums[path.name] = sha256_file(path)
    bundle = path.parent.parent
    tmp = bundle.parent / f".{bundle.name}-{ENGINES}-{CHECKSUMS}.tmp"  # outside the bundle
    tmp.write_text(json.dumps(sums, indent=2, sort_keys=True))
    tmp.replace(path.parent / CHECKSUMS)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, loaded for serving (no torch needed)."""

    path: Path
    config: ModelConfig
    vocab: list[str]
    item_embeddings: np.ndarray  # float32 [N+1, D]
    popularity: np.ndarray  # float64 [N+1], training counts per row
    metrics: dict[str, Any]
    checksum: str
    features: ItemFeatures | None = None
    """The property-token vocabulary, for a model that learnt from item properties."""
    next_items: NextItems | None = None
    """The training transitions SimilarItems blends in (bundles written before them have
    none, and SimilarItems ranks by the model alone)."""

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER

    @property
    def engines_dir(self) -> Path:
        return self.path / ENGINES

    def row_of(self) -> dict[str, int]:
        """External item id -> model row (1-based)."""
        return {item: row for row, item in enumerate(self.vocab, start=1)}


def load(directory: Path) -> Bundle:
    """Verifies and loads a bundle. Raises BundleError with the reason."""
    checksum = verify(directory)
    try:
        config = ModelConfig.model_validate_json((directory / CONFIG).read_text())
        vocab = json.loads((directory / VOCAB).read_text())
        embeddings = np.load(directory / EMBEDDINGS).astype(np.float32, copy=False)
        popularity = np.asarray(json.loads((directory / POPULARITY).read_text()), np.float64)
        metrics_path = directory / METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        features = None
        if config.property_tokens:
            features = ItemFeatures.from_json(json.loads((directory / FEATURES).read_text()))
            if features.size != config.property_tokens or not (directory / ENCODER).is_file():
                raise ValueError(
                    f"{FEATURES} has {features.size} token rows and the config "
                    f"{config.property_tokens}, or {ENCODER} is missing"
                )
        next_items = None
        if (directory / NEXT_ITEMS).is_file():
            next_items = NextItems.load(directory / NEXT_ITEMS, config.num_items + 1)
    except (ValueError, OSError) as exc:
        raise BundleError(f"bundle {directory} cannot be read: {exc}") from exc
    n = config.num_items
    if len(vocab) != n:
        raise BundleError(f"bundle {directory}: vocab has {len(vocab)} items, config says {n}")
    if embeddings.shape != (n + 1, config.d_model):
        raise BundleError(
            f"bundle {directory}: item_embeddings shape {embeddings.shape}, "
            f"expected {(n + 1, config.d_model)}"
        )
    if popularity.shape != (n + 1,):
        raise BundleError(f"bundle {directory}: popularity has {popularity.shape[0]} rows")
    return Bundle(
        directory, config, vocab, embeddings, popularity, metrics, checksum, features, next_items
    )
