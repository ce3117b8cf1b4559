"""Files in and out: the row readers every dataset goes through, and the one atomic writer.

Readers name the file and line (or row) of anything they cannot read, so a bad file is a one-line error.
Writers never leave half a file or half a directory: they fill a temporary sibling and rename it into
place, so a crash, a full disk or a bad input leaves the old contents (or nothing) behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from tinyseek.errors import TinyseekError

# ----------------------------------------------------------------------------------------------
# reading


def read_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Rows of a JSONL / JSON-array / Parquet file or a `datasets` directory, as (where, row) pairs;
    `where` is "file:line" (or "file:row N") for error messages."""
    p = Path(path)
    if p.is_dir():
        try:
            import datasets

            ds = datasets.load_from_disk(str(p))
        except Exception as e:
            raise TinyseekError(f"{p}: not a datasets directory ({str(e).splitlines()[0]})") from None
        if hasattr(ds, "keys"):  # a DatasetDict: take "train"
            if "train" not in ds:
                raise TinyseekError(f"{p}: a DatasetDict without a 'train' split")
            ds = ds["train"]
        for i, row in enumerate(ds):
            yield f"{p}:row {i}", row
        return
    if not p.is_file():
        raise TinyseekError(f"{p}: no such data file")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as e:
            raise TinyseekError(f"{p}: unreadable Parquet file ({str(e).splitlines()[0]})") from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{p}:row {i}", row
        return
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TinyseekError(f"{p}: invalid JSON ({e})") from None
        if not isinstance(data, list):
            raise TinyseekError(f"{p}: expected a JSON array of rows")
        for i, row in enumerate(data):
            yield f"{p}:item {i}", row
        return
    with open(p, encoding="utf-8") as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TinyseekError(f"{p}:{n}: invalid JSON ({e.msg} at column {e.colno})") from None
                yield f"{p}:{n}", row
        except UnicodeDecodeError as e:
            raise TinyseekError(f"{p}: not UTF-8 ({e.reason} at byte {e.start})") from None


def text_documents(path: str | Path) -> list[str]:
    """Plain-text documents of a file: `.txt` paragraphs (split at blank lines), or `text` of each JSONL row."""
    p = Path(path)
    if p.suffix in (".txt", ".md", ""):
        if not p.is_file():
            raise TinyseekError(f"{p}: no such text file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TinyseekError(f"{p}: not UTF-8 ({e.reason} at byte {e.start})") from None
        docs, cur = [], []
        for line in text.splitlines():
            if line.strip():
                cur.append(line)
            elif cur:
                docs.append("\n".join(cur))
                cur = []
        if cur:
            docs.append("\n".join(cur))
        return docs
    out = []
    for where, row in read_rows(p):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise TinyseekError(f"{where}: expected an object with a string field 'text'")
        out.append(row["text"])
    return out


# ----------------------------------------------------------------------------------------------
# writing


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc: no window in which another
    thread would create files with umask 0); elsewhere set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def share_modes(path: Path) -> None:
    """Give `path` (and, for a directory, everything in it) the mode an ordinary `open` or `mkdir` gives under the
    umask (0644 / 0755 under the usual 022). Some writers create their files 0600 (safetensors writes through a
    private temporary file), and what a user exports or shares must be readable by the others a umask allows."""
    mask = umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` for a writer that takes a file name (safetensors, tokenizers,
    torch.save); rename it to `path` only if the block succeeds (with the umask's mode, `share_modes`). On any
    exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        if tmp.exists():
            share_modes(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a whole file (text as UTF-8) or nothing: the one writer every file goes through."""
    with atomic_file(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """`obj` as a JSON file (UTF-8 kept as is; anything JSON has no type for written as its str), atomically."""
    return write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object a line, atomically."""
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to fill; rename it to `out` only if the block succeeds, its files and
    directories given the umask's modes (`share_modes`).

    On any exception the temporary directory is removed and `out` is left exactly as it was.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise TinyseekError(f"{out}: already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    share_modes(tmp)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
