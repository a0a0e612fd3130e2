"""Unpacking uploaded model archives safely, and describing a folder's content by digest.

An archive may hold only regular files and folders with relative paths inside the target: absolute
paths, '..', links and device files are refused, and the total size and file count are bounded by the
bytes actually written, not by what the archive claims. Every name is UTF-8 text without control
characters or bidirectional-text controls (which make a listing show another name than the file's), and
short enough for any file system: a name that breaks one of these rules is refused by name before
anything is written, so no upload fails half way on the disk's terms.
"""

import contextlib
import errno
import hashlib
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

CHUNK = 1024 * 1024
# What Linux file systems allow for one name, and a path bound well inside PATH_MAX once under a staging
# folder; both in UTF-8 bytes, as the file system counts them.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
# Invisible characters that reorder or isolate the text around them (Unicode's bidi controls).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class ArchiveRejected(ValueError):
    """The upload cannot be accepted; the message says why and what to do."""


class _Budget:
    def __init__(self, max_bytes: int, max_files: int):
        self.max_bytes, self.max_files = max_bytes, max_files
        self.bytes = 0
        self.files = 0

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise ArchiveRejected(
                f"The archive holds more than {self.max_files} files; upload fewer files or ask an admin "
                "to raise STUDIO_MAX_ARCHIVE_FILES."
            )

    def add_bytes(self, count: int) -> None:
        self.bytes += count
        if self.bytes > self.max_bytes:
            raise ArchiveRejected(
                f"The archive unpacks to more than {self.max_bytes} bytes; upload a smaller model or ask an "
                "admin to raise STUDIO_MAX_UPLOAD_BYTES."
            )


class UnusableName(ArchiveRejected):
    """A name no file should have: not UTF-8, with control characters, or too long."""


def shown(name: str, limit: int = 512) -> str:
    """The name as a message quotes it: escaped, and cut short if it is very long."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}… ({len(name)} characters)"


def check_name(name: str) -> None:
    """Refuse, naming it, a file or folder name that is not UTF-8, holds a control character, or is too
    long for a file system (UnusableName)."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnusableName(
            f"The name {shown(name)} is not UTF-8 text; rename the file and upload again."
        ) from None
    for character in name:
        if unicodedata.category(character) in ("Cc", "Zl", "Zp") or character in BIDI_CONTROLS:
            raise UnusableName(
                f"The name {shown(name)} holds a control character (U+{ord(character):04X}); names may "
                "hold only visible characters: rename the file and upload again."
            )
    if len(encoded) > MAX_PATH_BYTES or any(len(part.encode()) > MAX_NAME_BYTES for part in name.split("/")):
        raise UnusableName(
            f"The name {shown(name)} is too long: each folder or file name may be at most {MAX_NAME_BYTES} "
            f"bytes and the whole path {MAX_PATH_BYTES} bytes (UTF-8); shorten it and upload again."
        )


def safe_relative(name: str) -> PurePosixPath:
    """The entry's path, normalised, if it stays inside the folder and its name is usable (check_name);
    else ArchiveRejected saying why."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise ArchiveRejected(f"The archive entry {name!r} has an absolute path; paths must be relative.")
    if ".." in path.parts:
        raise ArchiveRejected(f"The archive entry {name!r} points outside the archive ('..').")
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts:
        raise ArchiveRejected(f"The archive entry {name!r} has an empty path.")
    relative = PurePosixPath(*parts)
    check_name(relative.as_posix())
    return relative


@contextlib.contextmanager
def _writing(name: str):
    """The file system's refusals while one entry is written, as that entry's fault."""
    try:
        yield
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        raise ArchiveRejected(
            f"The archive holds {shown(name)} twice, or both as a file and as a folder."
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
            raise UnusableName(f"The file system refuses the name {shown(name)}; rename it.") from None
        raise


def _copy(source: BinaryIO, target: Path, budget: _Budget) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        while chunk := source.read(CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)


def _unpack_zip(path: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            relative = safe_relative(info.filename)
            # Unix zips keep the file type in the high bits; many writers leave it zero for plain files.
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise ArchiveRejected(
                    f"The archive entry {info.filename!r} is a link; links are not accepted."
                )
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveRejected(f"The archive entry {info.filename!r} is not a regular file or folder.")
            with _writing(info.filename):
                if info.is_dir():
                    (dest / relative).mkdir(parents=True, exist_ok=True)
                    continue
                budget.add_file()
                with archive.open(info) as source:
                    _copy(source, dest / relative, budget)


def _unpack_tar(path: Path, dest: Path, budget: _Budget) -> None:
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            relative = safe_relative(member.name)
            if member.issym() or member.islnk():
                raise ArchiveRejected(f"The archive entry {member.name!r} is a link; links are not accepted.")
            if not member.isdir() and not member.isfile():
                raise ArchiveRejected(f"The archive entry {member.name!r} is not a regular file or folder.")
            with _writing(member.name):
                if member.isdir():
                    (dest / relative).mkdir(parents=True, exist_ok=True)
                    continue
                budget.add_file()
                source = archive.extractfile(member)
                if source is None:
                    raise ArchiveRejected(f"The archive entry {member.name!r} cannot be read.")
                with source:
                    _copy(source, dest / relative, budget)


def unpack(path: Path, original_name: str, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Unpack a .zip, .tar.gz, .tgz or .tar into dest, which must be empty."""
    budget = _Budget(max_bytes, max_files)
    lowered = original_name.lower()
    try:
        if lowered.endswith(".zip"):
            _unpack_zip(path, dest, budget)
        elif lowered.endswith((".tar.gz", ".tgz", ".tar")):
            _unpack_tar(path, dest, budget)
        else:
            raise ArchiveRejected(
                f"{original_name!r} is not a supported archive: upload a .zip or .tar.gz, or send a single "
                "file as 'file'."
            )
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        zlib.error,
        NotImplementedError,
        UnicodeDecodeError,  # a zip entry flagged as UTF-8 whose name is not
    ) as exc:
        raise ArchiveRejected(f"The archive {original_name!r} is corrupt or unreadable ({exc}).") from None
    if budget.files == 0:
        raise ArchiveRejected(f"The archive {original_name!r} holds no files.")


def copy_single(source: BinaryIO, dest: Path, *, max_bytes: int) -> None:
    """Store one uploaded file at dest, bounded like an archive."""
    _copy(source, dest, _Budget(max_bytes, 1))


def describe(root: Path, *, tree: bool = False) -> tuple[list[dict], int, str]:
    """The files under root as [{path, size}] sorted by path, their total size, and the content digest.

    The digest of a single file is the sha256 of its bytes (what `sha256sum` prints); for a folder it is
    the sha256 over each file's path and own digest, in path order, so it does not depend on how the
    folder was archived. `tree` takes the folder digest even for one file, so names count too.
    """
    files, digests, total = [], [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
        size = path.stat().st_size
        files.append({"path": relative, "size": size})
        digests.append((relative, sha.hexdigest()))
        total += size
    if len(files) == 1 and "/" not in files[0]["path"] and not tree:
        return files, total, digests[0][1]
    combined = hashlib.sha256()
    for relative, digest in digests:
        combined.update(relative.encode() + b"\0" + digest.encode() + b"\n")
    return files, total, combined.hexdigest()
