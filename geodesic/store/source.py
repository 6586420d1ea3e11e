"""What a run starts from, as a small value that travels to worker processes and Ray tasks: a checkpoint (with
`model`, the zoo architecture of a card-less file, or `arch`, a user's "FILE.py:FACTORY" whose code runs when
it is opened), the data it was trained on (`dataset` None: the card's), where the data comes from and how many
test images score a run (0 or None: all). Importing this module imports neither torch nor pandas."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Source:
    checkpoint: str
    dataset: str | None = None
    data_source: str = "auto"
    eval_size: int | None = None
    model: str | None = None
    arch: str | None = None

    def open(self):
        """(checkpoint, dataset name, train split, test split), as the CLI loads them (`geodesic.store.inputs`)."""
        from .inputs import dataset_of, open_checkpoint, splits

        ckpt = open_checkpoint(self.checkpoint, self.model, self.arch)
        name = dataset_of(ckpt, self.dataset)
        return (ckpt, name, *splits(name, self.data_source, self.eval_size))

    def as_dict(self) -> dict:
        return asdict(self)

    def absolute(self) -> "Source":
        """The same source with absolute file paths: a worker process (a Ray task) may run in another folder."""
        from os.path import abspath

        from .arch import normalize

        return replace(self, checkpoint=abspath(self.checkpoint), arch=normalize(self.arch) if self.arch else None)
