"""The one reader of files outside the lake (asset folders, background sources, real images): local paths,
``file://`` URIs and object stores, with the lake's ``storage_options`` (endpoint, keys, region)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def object_store(uri: str, options: dict[str, str]):
    """(pyarrow filesystem, path) for ``uri``; S3 takes the lake's ``storage_options`` (endpoint, keys, region)."""
    from pyarrow import fs

    parsed = urlparse(uri)
    if parsed.scheme == "s3" and options:
        endpoint = urlparse(options.get("aws_endpoint", ""))
        filesystem = fs.S3FileSystem(
            access_key=options.get("aws_access_key_id"), secret_key=options.get("aws_secret_access_key"),
            region=options.get("aws_region", "us-east-1"), endpoint_override=endpoint.netloc or None,
            scheme=endpoint.scheme or "https")
        return filesystem, f"{parsed.netloc}{parsed.path}".rstrip("/")
    return fs.FileSystem.from_uri(uri)


def list_sources(uri: str, suffixes: tuple[str, ...], scratch: Path,
                 storage_options: dict[str, str] | None = None) -> list[tuple[str, Path]]:
    """(source URI, local path) of every file under ``uri`` (a folder, a file, ``file://`` or an object store);
    object-store files are copied under ``scratch`` with their sidecars (.bin, textures)."""
    local = _local_files(uri)
    if local is not None:
        return [(str(p.resolve()), p) for p in local if p.suffix.lower() in suffixes]
    from pyarrow import fs

    parsed = urlparse(uri)
    filesystem, prefix = object_store(uri, dict(storage_options or {}))
    out = []
    for info in filesystem.get_file_info(fs.FileSelector(prefix, recursive=True)):
        if info.type != fs.FileType.File:
            continue
        local = scratch / "remote" / info.path  # sidecars (.bin, textures) come too
        local.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as src:
            local.write_bytes(src.read())
        if local.suffix.lower() in suffixes:
            out.append((f"{parsed.scheme}://{info.path}", local))
    return sorted(out)


def list_files(uri: str, suffixes: tuple[str, ...], storage_options: dict[str, str] | None = None) -> list[str]:
    """URIs (local paths as given) of the files under ``uri`` whose suffix is in ``suffixes``, sorted;
    nothing is downloaded."""
    local = _local_files(uri)
    if local is not None:
        return [str(p.resolve()) for p in local if p.suffix.lower() in suffixes]
    from pyarrow import fs

    parsed = urlparse(uri)
    filesystem, prefix = object_store(uri, dict(storage_options or {}))
    infos = filesystem.get_file_info(fs.FileSelector(prefix, recursive=True))
    return sorted(f"{parsed.scheme}://{i.path}" for i in infos
                  if i.type == fs.FileType.File and Path(i.path).suffix.lower() in suffixes)


def read_bytes(uri: str, storage_options: dict[str, str] | None = None) -> bytes:
    """The bytes of one file named as :func:`list_files` names it."""
    local = _local_path(uri)
    if local is not None:
        return local.read_bytes()
    filesystem, path = object_store(uri, dict(storage_options or {}))
    with filesystem.open_input_stream(path) as src:
        return src.read()



def _local_path(uri: str) -> Path | None:
    """The path of a local ``uri`` (a path or ``file://``); None for an object store."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:   # one letter: a Windows drive
        return Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
    return None


def _local_files(uri: str) -> list[Path] | None:
    """Every file under a local ``uri`` (itself when it is a file), sorted; None for an object store."""
    root = _local_path(uri)
    if root is None:
        return None
    if not root.exists():
        raise FileNotFoundError(f"source {uri!r} does not exist")
    return [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
