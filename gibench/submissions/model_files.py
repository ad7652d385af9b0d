"""The files of an exported model, byte by byte: weights as safetensors (never a pickle), written so that the same
weights give the same bytes, and read back only after their size, SHA-256 and structure are checked; files behind a
URL are fetched into the user cache only when the caller asks, and checked before anything reads them
(docs/models.md, "Loading").

Choices:

* **No pickle, ever.** A ``torch.save`` file is a pickle (inside a zip since torch 1.6) and unpickling runs code that
  the file names. Weights are written with ``safetensors.torch.save`` and read with ``safetensors.torch.load`` from
  bytes whose SHA-256 was checked first. A file that is a pickle, a zip, an HTML page or anything else is refused
  with a message naming it, the expected hash and what the file looks like (:func:`describe_bytes`).
* **Same weights, same bytes.** safetensors writes its ``__metadata__`` from a Rust hash map, whose key order changes
  from one process to the next; the weights file therefore holds exactly one metadata key, :data:`METADATA_KEY`,
  whose value is canonical JSON (sorted keys). Exporting the same checkpoint twice gives byte-identical files, so
  a published SHA-256 stays valid.
* **Downloads** go to ``<user cache>/models/<sha256><suffix>`` (platformdirs, :func:`gibench.core.paths.
  user_cache_root`), content-addressed, so a file is fetched once whatever URL names it; they are streamed into a
  temporary file, hashed on the way, and renamed into place only when the hash matches. A file that does not match
  is kept aside under ``models/rejected/`` for inspection and named in the error. A file already in the cache with
  the right hash is used without the network; otherwise nothing is fetched unless ``download=True``.
"""

from __future__ import annotations

__all__ = [
    "FileRef", "METADATA_KEY", "ModelFileError", "cache_folder", "describe_bytes", "fetch", "file_url_path",
    "read_verified",
    "read_weights", "sha256_hex", "weights_bytes", "write_weights",
]

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gibench.core.errors import GibenchError
from gibench.core.fsio import TMP_PREFIX, atomic_write_bytes, canonical_json, file_sha256
from gibench.core.paths import user_cache_root

#: The one key of a gibench weights file's safetensors metadata (its value: canonical JSON).
METADATA_KEY = "gibench"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEADER_LIMIT = 100_000_000  # safetensors' own limit on the JSON header (bytes)
_CHUNK = 1 << 20


class ModelFileError(GibenchError):
    """A model file (weights, card, index) that is missing, differs from its recorded SHA-256 or size, is not what
    it should be (an HTML page, a pickle, a truncated file), or could not be fetched. The message names the file or
    URL and the expected hash."""

    def __init__(self, where: str | Path, problem: str, sha256: str | None = None, size: int | None = None,
                 hint: str = "") -> None:
        self.where, self.problem, self.sha256, self.size = str(where), problem, sha256, size
        expected = ""
        if sha256:
            expected = f" (expected SHA-256 {sha256}" + (f", {size} bytes)" if size is not None else ")")
        super().__init__(f"{where}: {problem}{expected}." + (f" {hint}" if hint else ""))


@dataclass(frozen=True)
class FileRef:
    """One file as an index or a card records it: where it is (``path`` relative to the index's folder, or ``url``),
    its SHA-256 and its size in bytes."""

    sha256: str
    bytes: int
    path: str | None = None
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("path", self.path), ("url", self.url), ("sha256", self.sha256),
                                  ("bytes", self.bytes)) if v is not None}

    @classmethod
    def from_json(cls, data: Any, where: str) -> FileRef:
        """Validate a recorded file entry (``where`` names it in errors)."""
        if not isinstance(data, Mapping):
            raise ModelFileError(where, "is not an object with sha256, bytes and a path or url")
        sha, size, path, url = data.get("sha256"), data.get("bytes"), data.get("path"), data.get("url")
        if not (isinstance(sha, str) and _SHA256.match(sha)):
            raise ModelFileError(where, f"sha256 must be 64 lower-case hex digits, got {sha!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ModelFileError(where, f"bytes must be a non-negative integer, got {size!r}")
        if (path is None) == (url is None):
            raise ModelFileError(where, "needs exactly one of path (relative to the index) and url")
        if path is not None and (not isinstance(path, str) or not path or path.startswith(("/", "\\"))
                                 or ".." in Path(path).parts or ":" in path):
            raise ModelFileError(where, f"path must be a relative path inside the index's folder, got {path!r}")
        if url is not None and (not isinstance(url, str) or urllib.parse.urlparse(url).scheme not in URL_SCHEMES):
            raise ModelFileError(where, f"url must be an {', '.join(URL_SCHEMES)} URL, got {url!r}")
        return cls(sha, size, path, url)


#: The URL schemes a model file may be named by (http only for a server the user runs, e.g. on 127.0.0.1: every
#: fetched file is checked against its SHA-256 whatever its scheme).
URL_SCHEMES = ("https", "http", "file")


def file_url_path(url: str, base: str | Path | None = None) -> Path:
    """The local path a ``file:`` URL names: ``file:///absolute/path``, or ``file:relative/path`` resolved against
    ``base`` (the folder of the index that lists it), so that an index kept beside the files it names (a submission
    and a release folder next to it) works wherever the two are copied together."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not path.is_absolute() and base is not None:
        path = Path(os.path.normpath(Path(base) / path))
    return path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def weights_bytes(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> bytes:
    """The safetensors bytes of ``state_dict`` (every tensor copied to the CPU, contiguous and unshared) with
    ``metadata`` as canonical JSON under :data:`METADATA_KEY`: the same tensors and metadata give the same bytes."""
    from safetensors.torch import save

    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise GibenchError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor: safetensors "
                               "holds tensors only")
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return save(tensors, metadata={METADATA_KEY: canonical_json(metadata)})


def write_weights(path: Path, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> FileRef:
    """Write :func:`weights_bytes` to ``path`` atomically; returns its SHA-256 and size."""
    data = weights_bytes(state_dict, metadata)
    atomic_write_bytes(Path(path), data)
    return FileRef(sha256_hex(data), len(data))


# ----------------------------------------------------------------------------------------------------------------------
# Reading


def describe_bytes(data: bytes) -> str | None:
    """What is wrong with ``data`` as a safetensors file, in words, or None when its structure is sound (an 8-byte
    header length, a JSON header, and as many tensor bytes as the header declares)."""
    if not data:
        return "the file is empty"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<") and b"<html" in head):
        return ("it is an HTML page, not weights (what a download gets when the server answers with a web page: a "
                "sign-in, virus-scan, quota or error page)")
    if data[:4] == b"PK\x03\x04":
        return ("it is a zip archive (torch.save's format, which runs pickled code when loaded), not safetensors; "
                "gibench never unpickles weights")
    if data[0] == 0x80 and len(data) > 1 and 2 <= data[1] <= 5:
        return "it is a Python pickle, not safetensors; gibench never unpickles weights"
    if len(data) < 8:
        return f"it is too short ({len(data)} bytes) to be a safetensors file"
    header_bytes = int.from_bytes(data[:8], "little")
    if header_bytes > min(len(data) - 8, _HEADER_LIMIT):
        if data[8:9] == b"{" and header_bytes <= _HEADER_LIMIT:
            return f"it is truncated: its header alone should take {header_bytes} bytes, {len(data) - 8} follow"
        return "it is not a safetensors file (its first 8 bytes are not the length of a header that fits in it)"
    try:
        header = json.loads(data[8 : 8 + header_bytes].decode("utf-8"))
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "it is not a safetensors file (its header is not a safetensors JSON header)"
    body = len(data) - 8 - header_bytes
    if max(ends, default=0) > body:
        return f"it is truncated: its header declares {max(ends)} bytes of tensors, {body} follow"
    return None


def read_verified(path: Path, sha256: str | None = None, size: int | None = None, what: str = "file") -> bytes:
    """The bytes of ``path`` once they match ``size`` and ``sha256`` (each checked when given); ModelFileError
    naming the file, the expected hash and, for weights, what the file looks like otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(path, f"the {what} is missing", sha256, size) from None
    except IsADirectoryError:
        raise ModelFileError(path, f"is a folder, not the {what}", sha256, size) from None
    looks = describe_bytes(data) if what == "weights file" else None
    other = looks if looks and not looks.startswith("it is truncated") else None  # not weights at all
    if size is not None and len(data) != size:
        if other:
            problem = f"{other}; it has {len(data)} bytes where {size} were recorded"
        elif len(data) < size:
            problem = f"it is truncated: {len(data)} of the {size} bytes recorded"
        else:
            problem = f"it has {len(data)} bytes where {size} were recorded"
        raise ModelFileError(path, problem, sha256, size)
    if sha256 is not None:
        actual = sha256_hex(data)
        if actual != sha256:
            raise ModelFileError(path, f"{looks + '; ' if looks else ''}its SHA-256 is {actual}, not the recorded one"
                                 + ("" if looks else "; the file was changed or replaced"), sha256, size)
    return data


def read_weights(path: Path, sha256: str | None = None, size: int | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a weights file and its gibench metadata (None when it has none), after :func:`read_verified`
    and the structure check of :func:`describe_bytes`; nothing is read from a file that fails either."""
    from safetensors.torch import load

    data = read_verified(path, sha256, size, what="weights file")
    problem = describe_bytes(data)
    if problem:
        raise ModelFileError(path, problem, sha256, size)
    try:
        tensors = load(data)
    except Exception as exc:  # the library's own checks (dtype, overlapping offsets, ...)
        raise ModelFileError(path, f"safetensors refused it: {exc}", sha256, size) from None
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")].decode("utf-8"))
    text = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if text is None:
        return tensors, None
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(path, f"its {METADATA_KEY!r} metadata is not JSON ({exc})", sha256, size) from None
    return tensors, metadata if isinstance(metadata, dict) else None


# ----------------------------------------------------------------------------------------------------------------------
# Fetching


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """Where fetched model files are kept: ``cache_dir``, else ``models/`` in gibench's user cache folder."""
    return Path(cache_dir) if cache_dir is not None else user_cache_root() / "models"


def fetch(url: str, sha256: str, size: int | None = None, *, download: bool = False,
          cache_dir: str | Path | None = None, suffix: str = "", timeout_s: float = 60.0) -> Path:
    """A local file with the content of ``url`` whose SHA-256 is ``sha256`` (and size ``size``, when given).

    ``file://`` URLs are the local file itself (checked when it is read). An ``http(s)`` URL is looked up in the cache
    (:func:`cache_folder`, by its hash); when it is not there, it is downloaded only with ``download=True``, hashed
    while it streams, and renamed into the cache only when the hash (and size) match. Errors are ModelFileError
    naming the URL and the expected hash.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme not in URL_SCHEMES:
        raise ModelFileError(url, f"is not a URL gibench fetches (schemes: {', '.join(URL_SCHEMES)})", sha256, size)
    folder = cache_folder(cache_dir)
    cached = folder / f"{sha256}{suffix}"
    if cached.exists():
        data_ok = cached.stat().st_size == size if size is not None else True
        if data_ok and file_sha256(cached) == sha256:
            return cached
        cached.unlink()  # a cached copy damaged since: fetched again below, when allowed
    if not download:
        raise ModelFileError(url, f"is not in the cache ({folder}), and nothing is downloaded unless asked", sha256,
                             size, "Pass download=True (command line: --download) to fetch it.")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    digest, received, html = hashlib.sha256(), 0, False
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "gibench"})
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (scheme checked)
                html = "html" in (response.headers.get("Content-Type") or "").lower()
                limit = size + 1 if size is not None else None
                while limit is None or received < limit:
                    block = response.read(_CHUNK if limit is None else min(_CHUNK, limit - received))
                    if not block:
                        break
                    digest.update(block)
                    out.write(block)
                    received += len(block)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ModelFileError(url, f"could not be downloaded ({reason})", sha256, size) from None
    actual = digest.hexdigest()
    if actual != sha256 or (size is not None and received != size):
        rejected = folder / "rejected" / f"{sha256}{suffix}"
        rejected.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, rejected)
        looks = describe_bytes(rejected.read_bytes()) if suffix == ".safetensors" else None
        if html and not (looks or "").startswith("it is an HTML page"):
            looks = "the server sent an HTML page (Content-Type text/html), not the file"
        if size is not None and received < size:
            problem = f"the download is truncated: {received} of {size} bytes"
        elif size is not None and received > size:
            problem = f"the download is longer than the {size} bytes recorded"
        else:
            problem = f"the download's SHA-256 is {actual}, not the recorded one"
        raise ModelFileError(url, problem + (f"; {looks}" if looks and "truncated" not in (looks or "") else ""),
                             sha256, size, f"Nothing was read from it; the bytes received are kept in {rejected}.")
    os.replace(tmp, cached)
    return cached

