"""What a dataset check found (:mod:`detkit.data.verify`): one
:class:`VerificationProblem` per bad file or annotation, gathered in a
:class:`VerificationReport` that prints itself with what to do about each kind of problem,
and the :class:`DatasetVerificationError` that ``DATASETS.VERIFY`` "stop" raises with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from detkit.data.image_file import IMAGE_FILE_ADVICE

__all__ = ["DatasetVerificationError", "VerificationProblem", "VerificationReport"]

# What to do about each kind of problem, printed once per kind under the report.
_ADVICE = {
    **IMAGE_FILE_ADVICE,
    "missing": "Check the dataset's path (and $DETKIT_DATASETS), or that the download or copy "
    "is complete.",
    "size_mismatch": "Correct the size in the annotation (VOC: <size>; COCO: the image's "
    "height/width), or replace the image with the one that was annotated.",
    "bad_box": "Correct the box in the annotation (or delete the object).",
    "bad_category": "Correct the category in the annotation, or register the dataset with the "
    "right class names.",
    "no_file_name": "Give every dict of the dataset a 'file_name'.",
}


class VerificationProblem(NamedTuple):
    """One problem of one image.

    ``index`` is the dict's position in the list that was checked; ``kind`` one of the keys
    of the advice ("missing", "truncated", "size_mismatch", "bad_box", ...); ``reason`` a
    predicate of the file ("is empty (0 bytes)").
    """

    dataset: str
    index: int
    file_name: str
    image_id: Any
    kind: str
    reason: str


@dataclass
class VerificationReport:
    """Outcome of checking one or several datasets.

    Attributes:
        datasets: names checked, in order.
        num_images: dicts checked.
        num_decoded: files decoded by this check.
        num_cached: files whose result came from the cache.
        problems: every problem found, by dataset then position.
        seconds: time the check took.
    """

    datasets: list[str] = field(default_factory=list)
    num_images: int = 0
    num_decoded: int = 0
    num_cached: int = 0
    problems: list[VerificationProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad_indices(self, dataset: str) -> set[int]:
        """Positions of ``dataset``'s dicts that have at least one problem."""
        return {p.index for p in self.problems if p.dataset == dataset}

    @property
    def num_bad_images(self) -> int:
        return len({(p.dataset, p.index) for p in self.problems})

    def extend(self, other: VerificationReport) -> VerificationReport:
        """Add ``other``'s datasets, counts and problems to this report; returns ``self``."""
        self.datasets += [n for n in other.datasets if n not in self.datasets]
        self.num_images += other.num_images
        self.num_decoded += other.num_decoded
        self.num_cached += other.num_cached
        self.problems += other.problems
        self.seconds += other.seconds
        return self

    def summary(self) -> str:
        """One line: what was checked, how, and how many problems."""
        names = ", ".join(self.datasets) or "(unnamed)"
        found = (
            f"{len(self.problems)} problem(s) in {self.num_bad_images} image(s)"
            if self.problems
            else "no problem"
        )
        return (
            f"Checked {self.num_images:,} images of {names} in {self.seconds:.1f} s "
            f"({self.num_decoded:,} files decoded, {self.num_cached:,} from the cache): {found}."
        )

    def format(self) -> str:
        """The whole report: the summary, one line per problem, and what to do."""
        lines = [self.summary()]
        lines += [
            f"  {p.dataset + ': ' if p.dataset else ''}{p.file_name} (image_id {p.image_id!r}) "
            f"{p.reason}"
            for p in self.problems
        ]
        kinds = Counter(p.kind for p in self.problems)
        if kinds:
            lines.append("What to do:")
            lines += [f"  {kind} ({count}): {_ADVICE[kind]}" for kind, count in kinds.items()]
        return "\n".join(lines)


class DatasetVerificationError(ValueError):
    """Images that failed the check with ``DATASETS.VERIFY`` "stop"; ``report`` has them all."""

    def __init__(self, report: VerificationReport):
        self.report = report
        super().__init__(
            f"{report.format()}\nThe run stopped before using these datasets "
            "(DATASETS.VERIFY 'stop'). Fix the files listed above, or set DATASETS.VERIFY "
            f"'skip' to go on without these {report.num_bad_images} image(s), or 'off' to not "
            "check (tools/verify_dataset.py runs the same check alone)."
        )
