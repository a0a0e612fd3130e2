"""Zipping a model folder for upload and unpacking a downloaded version, both streamed through disk."""

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from studio.cli.errors import CliError
from studio.cli.progress import transfer

CHUNK = 1024 * 1024


def folder_files(folder: Path, *, keep_top: bool = True) -> list[tuple[Path, str]]:
    """(file, name in the archive) for each file, under the folder's own name as the top-level directory.

    Azure keeps that top level (a model registered from `./model` is found at
    `$AZUREML_MODEL_DIR/model/...`), and scoring scripts written for Azure depend on it. Scoring code is
    the exception: its scoring_script is relative to the code folder itself, hence `keep_top=False`.
    Links and special files are refused: the server would refuse them anyway, after a long upload.
    """
    top = f"{folder_name(folder)}/" if keep_top else ""
    found: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in dirs + sorted(files):
            path = Path(root) / name
            mode = path.lstat().st_mode
            shown = str(path)
            if stat.S_ISLNK(mode):
                raise CliError(
                    f"{shown} is a symbolic link. Studio stores plain files only: replace the link with a "
                    f"copy of what it points to, or remove it."
                )
            if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
                raise CliError(f"{shown} is not a regular file (a device, socket or pipe); remove it.")
            if stat.S_ISREG(mode):
                found.append((path, f"{top}{path.relative_to(folder).as_posix()}"))
    if not found:
        raise CliError(f"The folder {folder} holds no files; there is nothing to register.")
    return found


def folder_name(folder: Path) -> str:
    """The folder's own name, also for `.` or `..` as given on the command line."""
    return Path(os.path.abspath(folder)).name


def content_digest(files: list[tuple[Path, str]]) -> str:
    """The digest the server gives this content when it is uploaded as a folder (registry/archives.py).

    The sha256 over each file's archive name and own sha256, in path order: knowing it before uploading
    lets a command reuse a version the server holds already instead of registering the same bytes again.
    """
    combined = hashlib.sha256()
    # The server sorts paths part by part (pathlib order), which differs from plain string order.
    for path, name in sorted(files, key=lambda item: PurePosixPath(item[1]).parts):
        sha = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                sha.update(chunk)
        combined.update(name.encode() + b"\0" + sha.hexdigest().encode() + b"\n")
    return combined.hexdigest()


@contextlib.contextmanager
def zipped_folder(folder: Path, *, keep_top: bool = True) -> Iterator[Path]:
    """Yield a temporary `<folder name>.zip` of the folder, made with a progress bar; removed afterwards.

    `keep_top` as for `folder_files`.
    """
    files = folder_files(folder, keep_top=keep_top)
    total = sum(path.stat().st_size for path, _ in files)
    with tempfile.TemporaryDirectory(prefix="studio-upload-") as scratch:
        target = Path(scratch) / f"{folder_name(folder)}.zip"
        with (
            zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
            transfer(f"Zipping {folder_name(folder)}", total) as advance,
        ):
            for path, arcname in files:
                info = zipfile.ZipInfo.from_file(path, arcname, strict_timestamps=False)
                info.compress_type = zipfile.ZIP_DEFLATED
                # Copied in chunks rather than with ZipFile.write so the bar moves inside large files.
                with (
                    path.open("rb") as source,
                    archive.open(info, "w", force_zip64=info.file_size >= zipfile.ZIP64_LIMIT) as out,
                ):
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                        advance(len(chunk))
        yield target


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or (relative.parts and ":" in relative.parts[0]):
        raise CliError(
            f"The downloaded archive holds an unsafe path {info.filename!r}; nothing was unpacked."
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise CliError(f"The downloaded archive holds a link {info.filename!r}; nothing was unpacked.")
    return relative


def unpack(zip_path: Path, dest: Path) -> list[str]:
    """Unpack a zip into `dest`, which must not exist yet; paths escaping `dest` and links are refused.

    Everything is unpacked beside `dest` first and moved into place at the end, so a failure leaves
    nothing half-written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    names: list[str] = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [(info, _member_path(info)) for info in archive.infolist()]
            for info, relative in members:
                target = staging.joinpath(*relative.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, target.open("xb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                names.append(relative.as_posix())
        staging.rename(dest)
    except zipfile.BadZipFile as exc:
        raise CliError(f"The downloaded file is not a readable zip ({exc}).") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return names
