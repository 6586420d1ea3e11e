"""Re-measure every shipped checkpoint on its full test set, next to what its card states."""

from __future__ import annotations

import pandas as pd
import torch

from common import ROOT, save

from geodesic import data, models
from geodesic.params import spec_of
from geodesic.train import evaluate


def main() -> None:
    torch.set_num_threads(2)
    rows = []
    for path in sorted((ROOT / "assets" / "checkpoints").glob("*.safetensors")):
        model, card = models.load(path)
        loss, acc = evaluate(model, data.load(card["dataset"], "test", "full"))
        rows.append({"checkpoint": path.name, "weights": spec_of(model).n, "epochs": card["epochs"],
                     "train seconds (card)": card["train_seconds"], "test accuracy (card)": card["test_accuracy"],
                     "test accuracy (measured now)": acc, "test loss": loss})
    print(save("checkpoints", pd.DataFrame(rows), "Full 10,000-image test sets; training on the 2-core CPU, Adam, cosine schedule, seed 0."))


if __name__ == "__main__":
    main()
