"""Publishing a drawn report into reports/: only files an earlier report wrote are replaced, never a user's.

The manifest lists what the last report wrote, with digests; a file someone changed since is left alone."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from robustbench_mm.common.storage import atomic_write_json, file_sha256, read_json
from robustbench_mm.errors import UsageError


REPORT_FORMAT = "mm-robust-report/1"
MODEL_INFO_DIR = "model_info"  # RobustBench-style model_info/<run>.json: the one subfolder a report writes into
# ... and RobustBench's own layout inside it, model_info/<dataset>/<threat model>/<file>, for these threat models.
CARD_THREATS = ("Linf", "L2", "corruptions")
REPORT_MANIFEST = ".mm-robust-report-files.json"  # what the last report wrote, so only those are ever replaced


def publish(staging: Path, reports_root: Path) -> None:
    """Move the staged report into `reports_root`, touching only files a report wrote there before.

    Files are named by their path relative to `reports_root` (``index.md``, ``model_info/<run>.json``,
    ``model_info/<dataset>/<threat>/<name>.json``); every folder on the way must be a real folder (not a
    file, not a link) or absent.
    A file already there may be replaced only if the manifest lists it with its current digest, or if
    it already holds exactly the new bytes (nothing is lost; e.g. a model_info written before the
    manifest listed them).
    """
    new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    ours = _files_written_before(reports_root)
    folders = _folders(new)  # outermost first
    foreign: list[str] = []
    for folder in folders:  # a folder inside one already refused is not named again
        if not any(folder.startswith(outer + "/") for outer in foreign) and _occupied(reports_root / folder) and \
                ((reports_root / folder).is_symlink() or not (reports_root / folder).is_dir()):
            foreign.append(folder)
    foreign += [name for name in new if _clashes(reports_root / name, ours.get(name), _digest(staging / name))]
    if foreign:
        raise UsageError(f"{str(reports_root)!r} holds files mm-robust report did not write ({_listed(foreign)}); "
                         "move them away or choose another --reports")
    locked = [name for name in new if _locked(reports_root / name)]
    if locked:
        raise UsageError(f"{str(reports_root)!r} holds report files that cannot be replaced ({_listed(locked)}: "
                         "immutable or append-only, e.g. chattr +i); make them writable or choose another --reports")
    written = {name: _digest(staging / name) for name in new}
    for folder in folders:
        (reports_root / folder).mkdir(exist_ok=True)  # checked above: absent or a real folder
    for done, name in enumerate(new):
        try:
            os.replace(staging / name, reports_root / name)
        except OSError as exc:  # what the checks above cannot foresee; the files replaced so far are the new ones
            raise UsageError(f"could not write {name!r} into {str(reports_root)!r} ({exc.strerror}); {done} of "
                             f"{len(new)} report files were replaced; fix the folder and rerun mm-robust report"
                             ) from None
    for name in sorted(set(ours) - set(new)):  # an earlier report's file this one no longer has would mislead
        if any((reports_root / folder).is_symlink() for folder in _folders([name])):
            continue  # a folder now linked elsewhere: what it holds is not the file the manifest names
        if _digest(reports_root / name) == ours[name]:
            (reports_root / name).unlink()
    emptied = set(_folders(ours)) - set(folders)
    for folder in sorted(emptied, key=lambda f: -f.count("/")):  # innermost first
        path = reports_root / folder
        if any((reports_root / outer).is_symlink() for outer in _folders([folder + "/x"])):
            continue
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # emptied of the files an earlier report put there
    atomic_write_json(reports_root / REPORT_MANIFEST, {"format": REPORT_FORMAT, "files": written})


def _folders(names) -> list[str]:
    """Every folder the relative file names lie in, outermost first ('a', 'a/b' for 'a/b/c.json')."""
    found = {"/".join(name.split("/")[:depth]) for name in names for depth in range(1, name.count("/") + 1)}
    return sorted(found, key=lambda f: (f.count("/"), f))


def _listed(names: list[str]) -> str:
    """The first three names, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _locked(path: Path) -> bool:
    """An existing file that no rename may replace, even by root: immutable or append-only (EPERM on opening it
    for appending, which changes nothing). A file merely without write permission can still be renamed over."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except PermissionError as exc:
        return exc.errno == errno.EPERM
    except OSError:
        return False
    return False


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _clashes(target: Path, written_before: str | None, new: str | None) -> bool:
    """Something is at `target` that is neither the file an earlier report wrote nor these very bytes."""
    if not _occupied(target):
        return False
    digest = _digest(target)
    return digest is None or digest not in (written_before, new)


def _digest(path: Path) -> str | None:
    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _files_written_before(reports_root: Path) -> dict[str, str]:
    """{relative path: SHA-256 when written} of the last report in `reports_root`.

    Only a file name, or one inside a report subfolder (``model_info/<run>.json``), is taken from
    the manifest: never an absolute path, ``..`` or a deeper path, so a damaged or hostile
    manifest cannot point the clean-up outside `reports_root`.
    """
    def plain(names):
        return {n for n in names if _safe_report_path(n)}

    try:
        manifest = read_json(reports_root / REPORT_MANIFEST)
        files = manifest["files"]
        return {name: files[name] for name in plain(files) if isinstance(files[name], str)}
    except (UsageError, KeyError, TypeError):
        pass
    # A report written before the manifest existed: the files its summary.json lists, as they are now.
    try:
        old = read_json(reports_root / "summary.json")
        if old.get("format") != REPORT_FORMAT:
            return {}
        names = {"summary.json", "index.md"} | {f"{t}.{ext}" for t in old["tables"] for ext in ("md", "csv")}
        names |= {name for group in old["groups"] for name in group["plots"]}
    except (UsageError, KeyError, TypeError, AttributeError):
        return {}
    return {name: digest for name in plain(names) if (digest := _digest(reports_root / name))}


def _safe_report_path(name: Any) -> bool:
    """'index.md', 'model_info/<run>.json' or 'model_info/<dataset>/<threat>/<file>' (RobustBench's layout, a
    threat of CARD_THREATS): plain names, never '..', an absolute path or any other depth."""
    if not isinstance(name, str) or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    if len(parts) not in (1, 2, 4) or (len(parts) > 1 and parts[0] != MODEL_INFO_DIR):
        return False
    if len(parts) == 4 and parts[2] not in CARD_THREATS:
        return False
    return all(part and part not in (".", "..") for part in parts)
