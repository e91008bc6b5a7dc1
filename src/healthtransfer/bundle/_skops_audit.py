"""What a skops file would construct, read from its ``schema.json`` without importing anything.

skops trusts a long default list (every scikit-learn estimator, numpy/scipy ufuncs) and its
``get_untrusted_types`` reports only what lies outside that list, so it cannot enforce an
exact whitelist by itself. :func:`skops_names` walks the schema tree and returns every type,
function and method the file names, whatever skops' defaults; :func:`check_archive` bounds the
archive before anything is decompressed in memory.

Example
-------
>>> import skops.io as sio
>>> from sklearn.preprocessing import FunctionTransformer
>>> names = skops_names(sio.dumps(FunctionTransformer(func=print)))
>>> "builtins.print" in names, "sklearn.preprocessing._function_transformer.FunctionTransformer" in names
(True, True)
"""

from __future__ import annotations

import io
import json
import zipfile

__all__ = ["ArchiveError", "check_archive", "skops_names", "MAX_MEMBERS", "MAX_UNPACKED_BYTES"]

# Our largest real model (a GBM on eICU) unpacks to a few MB; these bounds leave ample room
# and keep a crafted archive from exhausting memory or disk.
MAX_MEMBERS = 20_000
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 200


class ArchiveError(ValueError):
    """A skops archive that is malformed or larger than the bounds allow (message: no data)."""


def check_archive(data: bytes) -> None:
    """Raise :class:`ArchiveError` unless ``data`` is a zip within the size bounds whose
    member names are plain file names (no folders, no '..')."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArchiveError("is not a zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"has {len(infos)} members (limit {MAX_MEMBERS})")
        total = sum(i.file_size for i in infos)
        if total > MAX_UNPACKED_BYTES:
            raise ArchiveError(f"unpacks to {total} bytes (limit {MAX_UNPACKED_BYTES})")
        for i in infos:
            if "/" in i.filename or "\\" in i.filename or i.filename.startswith("."):
                raise ArchiveError("has a member whose name is a path")
        try:
            schema = zf.getinfo("schema.json")
        except KeyError:
            raise ArchiveError("has no schema.json") from None
        if schema.file_size > MAX_SCHEMA_BYTES:
            raise ArchiveError(f"has a schema.json of {schema.file_size} bytes "
                               f"(limit {MAX_SCHEMA_BYTES})")


def skops_names(data: bytes) -> dict[str, str]:
    """Every ``module.name`` the skops archive ``data`` names, mapped to its skops loader
    (``ObjectNode``, ``FunctionNode``, ``TypeNode``, ...). Nothing is imported or built."""
    check_archive(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        try:
            schema = json.loads(zf.read("schema.json"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArchiveError("has a schema.json that is not JSON") from None
    names: dict[str, str] = {}
    stack = [(schema, 0)]
    while stack:  # iterative: a deeply nested schema cannot exhaust the Python stack
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ArchiveError(f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if "__loader__" in node:
                cls, mod = node.get("__class__"), node.get("__module__")
                if not isinstance(cls, str) or not isinstance(mod, str):
                    raise ArchiveError("has a node without a type name")
                names[f"{mod}.{cls}"] = str(node["__loader__"])
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return names
