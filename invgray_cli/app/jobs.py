"""Planning a run: the files behind the command line's arguments, the names of their
outputs, and the name clashes between them, as a stream of :class:`Job`.

One planner serves every run, local folders, object storage and the cluster engine
alike. Each argument's files come in lexicographic order of where their outputs go
(:func:`~invgray_cli.app.storage.walk_files` lists in that order), the arguments'
streams are merged in that order, and a name clash (a.png and a.jpg both writing
a.gray.jpg) is found among neighbours: inputs that could clash share their output
folder and stem, a prefix of both, and strings that share a prefix sit together in
sorted order. So only the claims whose prefix is still open are remembered, and a
bucket of a million photos never sits in memory. Of two inputs that would write the
same output, the one whose name sorts first writes and the other fails. A run that
lists its plan in full (local files) reports in the order of the arguments instead
(:func:`in_argument_order`).

The photo suffixes and file signatures are imported where they are used: their modules
bring numpy and Pillow, which ``invgray --help`` does not need.
"""

from __future__ import annotations

import heapq
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from invgray_cli.app.storage import ObjectPath, head, location, one_line, walk_files
from invgray_cli.format.signatures import SNIFF_BYTES, is_gray_image, is_residual

GRAY_SUFFIXES = (".gray.jpg", ".gray.jpeg", ".gray.png")
RESIDUAL_SUFFIX = ".residual.bin"
COLOUR_SUFFIX = ".color.png"
STDIO = "-"

Name = Path | ObjectPath


class JobError(Exception):
    """A per-file failure, reported as one line; the batch goes on."""


@dataclass
class Job:
    label: str  # what messages name: the input as the user gave it, or the file found in a folder
    source: str  # a path, or "-" for stdin
    outputs: list[Path]
    companion: Path | None = None  # decode: the residual file, when not embedded
    error: str | None = None  # known before running (name clash, empty folder)
    argument: int = 0  # the index of the command-line argument it comes from


def stem_of(path: Name) -> str:
    """File name without its invgray suffix (.gray.jpg, .residual.bin) or extension."""
    name = path.name
    for suffix in (*GRAY_SUFFIXES, RESIDUAL_SUFFIX, COLOUR_SUFFIX):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_invgray_output(path: Name) -> bool:
    """What encode and decode write by default: never taken as a photo in folder mode."""
    return path.name.lower().endswith((*GRAY_SUFFIXES, RESIDUAL_SUFFIX, COLOUR_SUFFIX))


# A planned job and what orders it: (where its outputs go, argument index, job, clash prefix).
# Places are resolved paths, so that 'a.png' and './a.jpg' are seen to clash.
_Item = tuple[str, int, Job, str]


def _key(path: Name) -> str:
    return str(path.resolve())


class ClashGuard:
    """Finds name clashes in a stream sorted by output place, remembering only the claims
    whose prefix (output folder and stem) the stream has not left yet."""

    def __init__(self) -> None:
        self.claims: dict[str, tuple[str, str]] = {}  # output -> (clash prefix, label of the job writing it)

    def check(self, placement: str, job: Job, prefix: str) -> Job:
        """Mark ``job`` failed if an earlier job writes one of its outputs."""
        for key in [key for key, (open_prefix, _) in self.claims.items() if not placement.startswith(open_prefix)]:
            del self.claims[key]  # sorted order: no later job can reach this prefix again
        if not job.error:
            keys = [_key(out) for out in job.outputs]
            clash = next((i for i, key in enumerate(keys) if key in self.claims), None)
            if clash is not None:
                job.error = (f"output {job.outputs[clash]} would also be written for {self.claims[keys[clash]][1]} "
                             "(rename one, or use -o)")
            else:
                self.claims.update((key, (prefix, job.label)) for key in keys)
        return job


def _merged(streams: list[Iterator[_Item]]) -> Iterator[Job]:
    guard = ClashGuard()
    for placement, index, job, prefix in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        job.argument = index
        yield guard.check(placement, job, prefix)


def in_argument_order(plan: Iterable[Job]) -> list[Job]:
    """A plan listed in full, in the order of the arguments its jobs come from, each
    folder's files sorted by path: the order a run of local files reports in."""
    return sorted(plan, key=lambda job: (job.argument, location(job.source)))


def _single(index: int, job: Job, folder: Name, file: Name, stem: str) -> Iterator[_Item]:
    """The stream of an argument that is one file."""
    place = _key(folder)
    return iter([(f"{place}/{file.name}", index, job, f"{place}/{stem}")])


def _is_dir(path: Name) -> bool:
    try:
        return bool(path.is_dir())
    except Exception:  # noqa: BLE001 - unreachable or forbidden: taken as a file, whose read then says why
        return False


def _is_file(path: Name) -> bool:
    try:
        return bool(path.is_file())
    except Exception:  # noqa: BLE001 - as in _is_dir
        return False


def _kind(path: Name) -> str:
    """'residual', 'image' (JPEG or PNG) or '' (anything else, or unreadable), by the
    file's first bytes."""
    if isinstance(path, ObjectPath):
        first = head(path, SNIFF_BYTES)
    else:
        try:
            with open(path, "rb") as handle:
                first = handle.read(SNIFF_BYTES)
        except OSError:
            first = b""
    return "residual" if is_residual(first) else "image" if is_gray_image(first) else ""


def _folder_stream(root: Name, index: int, recursive: bool, out_dir: Name | None, what: str,
                   keep: Callable[[Name], bool], stem: Callable[[Name], str],
                   outputs_for: Callable[[Name, Name], list]) -> Iterator[_Item]:
    """The jobs of one folder argument, one per kept file, in output order; outputs go
    beside each file, or into ``out_dir`` mirroring the tree below ``root``."""
    base = out_dir if out_dir is not None else root
    base_place = _key(base)
    found = False
    try:
        for file in walk_files(root, recursive):
            if not keep(file):
                continue
            found = True
            below = file.relative_to(root)
            below = posixpath.dirname(below) if isinstance(below, str) else below.parent.as_posix()
            below = "" if below == "." else below
            folder = base / below
            place = f"{base_place}/{below}" if below else base_place
            yield (f"{place}/{file.name}", index, Job(str(file), str(file), outputs_for(folder, file)),
                   f"{place}/{stem(file)}")
    except Exception as exc:  # noqa: BLE001 - a store's own errors: this argument fails, the others go on
        kind = "bucket or prefix" if isinstance(root, ObjectPath) else "folder"
        yield _key(root), index, Job(str(root), str(root), [], error=f"cannot list this {kind} ({one_line(exc)})"), ""
        return
    if not found:
        hint = "" if recursive else " (use -r for subfolders)"
        yield _key(root), index, Job(str(root), str(root), [], error=f"no {what} found in this folder{hint}"), ""


def plan_encode(inputs: list[str], out_dir: Name | None, gray_suffix: str, embed: bool,
                recursive: bool) -> Iterator[Job]:
    """One job per photo: each input file, and the photos of each folder input (not
    invgray's own outputs). Outputs go beside the photo, or into ``out_dir``."""
    from invgray_cli.imaging.images import PHOTO_SUFFIXES

    def outputs(folder: Name, stem: str) -> list:
        gray = folder / f"{stem}{gray_suffix}"
        return [gray] if embed else [gray, folder / f"{stem}{RESIDUAL_SUFFIX}"]

    def is_photo(path: Name) -> bool:
        return path.suffix.lower() in PHOTO_SUFFIXES and not is_invgray_output(path)

    streams: list[Iterator[_Item]] = []
    for index, name in enumerate(inputs):
        path = location(name)
        if name != STDIO and _is_dir(path):
            streams.append(_folder_stream(path, index, recursive, out_dir, "photos", is_photo, lambda p: p.stem,
                                          lambda folder, file: outputs(folder, file.stem)))
        else:
            folder = out_dir if out_dir is not None else path.parent
            streams.append(_single(index, Job(name, name, outputs(folder, path.stem)), folder, path, path.stem))
    return _merged(streams)


def plan_decode(inputs: list[str], out_dir: Name | None, recursive: bool) -> Iterator[Job]:
    """A residual file pairs with the gray image right before it; a gray alone uses its
    embedded residual or the sidecar beside it (decided when it runs); a folder gives
    every *.gray.jpg/png in it. In the two-argument form ``GRAY RESIDUAL`` the second is
    the residual whatever its name, unless it is itself a JPEG or PNG."""
    paths = [location(name) for name in inputs]
    classic_pair = (len(inputs) == 2 and _is_file(paths[0]) and _is_file(paths[1]) and _kind(paths[1]) != "image")
    singles: list[tuple[int, Job]] = []
    streams: list[Iterator[_Item]] = []
    for index, (name, path) in enumerate(zip(inputs, paths)):
        is_file = _is_file(path)
        if (classic_pair and index == 1) or (is_file and (name.lower().endswith(RESIDUAL_SUFFIX)
                                                          or _kind(path) == "residual")):
            previous = singles[-1][1] if singles and singles[-1][0] == index - 1 else None
            if previous is None or previous.companion is not None or previous.error:
                singles.append((index, Job(name, name, [], error="a residual file must follow its gray image")))
            else:
                previous.companion = path
            continue
        if not is_file and _is_dir(path):
            streams.append(_folder_stream(
                path, index, recursive, out_dir, ".gray.jpg/.gray.png files",
                lambda p: p.name.lower().endswith(GRAY_SUFFIXES), stem_of,
                lambda folder, file: [folder / f"{stem_of(file)}{COLOUR_SUFFIX}"]))
            continue
        folder = out_dir if out_dir is not None else path.parent
        singles.append((index, Job(name, name, [folder / f"{stem_of(path)}{COLOUR_SUFFIX}"])))
    for index, job in singles:
        source = location(job.source)
        folder = job.outputs[0].parent if job.outputs else source.parent
        streams.append(_single(index, job, folder, source, stem_of(source)))
    return _merged(streams)
